package faults_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lpsdev/lps/faults"
)

// sigtermConfig is the timing of the SIGTERM scenarios: the suite's (a process down for 30 s
// with LPS_FAULTS_FULL=1), and in the short (CI) version half a second of load before the
// signal, half a second down and half a second after the restart, a one-second quiet window and
// quicker retries of the load, so that twelve runs stay well within a minute.
func sigtermConfig() (faults.RunConfig, func(*faults.ClusterConfig)) {
	runCfg, tune := suiteConfig()
	if !full {
		runCfg.Warmup, runCfg.Fault, runCfg.Settle = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
		runCfg.Quiet, runCfg.RetryInterval = time.Second, 250*time.Millisecond
	}
	// A drain over Mosquitto ends after its quiet window; on a busy machine Mosquitto has held
	// alarms for tens of seconds beyond it. Every acknowledged alarm gets the drain's time to
	// arrive, so that only an alarm that never comes counts as lost.
	runCfg.AwaitAcked = runCfg.DrainTimeout
	return runCfg, tune
}

// TestSigterm stops one process of each role gracefully (SIGTERM) under load, on both brokers:
// it must exit by itself with status 0 within its shutdown grace, and after its restart and the
// drain no alarm answered 2xx may be missing at rast-sim, nor reach it twice (runScenario's
// checks).
func TestSigterm(t *testing.T) {
	runCfg, tune := sigtermConfig()
	var mu sync.Mutex
	var results []faults.Result
	var shutdowns []string
	began := time.Now()
	for _, broker := range []faults.BrokerKind{faults.Embedded, faults.Mosquitto} {
		t.Run(string(broker), func(t *testing.T) {
			for _, s := range faults.SigtermScenarios() {
				t.Run(s.Role, func(t *testing.T) {
					t.Cleanup(func() {
						sd, ok := s.Shutdown()
						if !ok {
							return
						}
						mu.Lock()
						shutdowns = append(shutdowns, fmt.Sprintf("%-10s %-9s %-14s %4s %9s %6s %9s %8s", s.Role, broker, sd.Process,
							exitText(sd), sd.Took.Round(time.Millisecond), sd.Grace, inflightText(sd.InFlight), sd.Restart.Round(time.Millisecond)))
						mu.Unlock()
					})
					r := runScenario(t, broker, s.Scenario, runCfg, tune)
					mu.Lock()
					results = append(results, r)
					mu.Unlock()
					sd, ok := s.Shutdown()
					if !ok {
						t.Fatal("the scenario recorded no shutdown")
					}
					if err := sd.Err(); err != nil {
						t.Error(err)
					}
				})
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(shutdowns) > 0 {
		t.Logf("shutdowns after SIGTERM:\n%-10s %-9s %-14s %4s %9s %6s %9s %8s\n%s", "role", "broker", "process", "exit",
			"took", "grace", "inflight", "restart", strings.Join(shutdowns, "\n"))
	}
	if len(results) > 0 {
		t.Logf("SIGTERM scenarios (full=%v, %s in all):\n%s", full, time.Since(began).Round(100*time.Millisecond), faults.FormatTable(results))
	}
}

func exitText(sd faults.Shutdown) string {
	switch {
	case sd.Killed:
		return "kill"
	case sd.Signal != "":
		return "sig"
	}
	return fmt.Sprint(sd.ExitCode)
}

func inflightText(n float64) string {
	if n < 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", n)
}

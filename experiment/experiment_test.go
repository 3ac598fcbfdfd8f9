package experiment_test

import (
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lpsdev/lps/experiment"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/loadgen"
	"github.com/lpsdev/lps/report"
	"github.com/lpsdev/lps/topology"
)

var lpsBin string

func TestMain(m *testing.M) { testutil.MainWithLPS(m, &lpsBin, os.Getenv("LPS_EXPERIMENT_BIN")) }

// data returns the original's data folder (../shared/data/rast beside the repository).
func data(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", "..", "shared", "data", "rast")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("no %s: the experiment's production mapping and command names", dir)
	}
	return dir
}

// tiny is an experiment on a schedule a test can wait for, with the defaults a user gets
// otherwise (rast-sim's model on, the product's mqtt2http settings, the background workload).
func tiny(t *testing.T, kind string) experiment.Config {
	dir := data(t)
	names, err := loadgen.LoadNames(filepath.Join(dir, "all_request_names.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return experiment.Config{
		Kind: kind, Binary: lpsBin, Out: t.TempDir(), TimeScale: 0.03, Devices: 10, Background: 20,
		RequestNames: names, Mapping: filepath.Join(dir, "gs_requests_mapping_prod_workload.json"),
		Step: 5, StepDuration: 20 * time.Second, MaxSteps: 2, DrainTimeout: 2 * time.Minute,
		Progress: testWriter{t},
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestFailoverBothTopologies(t *testing.T) {
	cfg := tiny(t, experiment.Failover)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e, err := experiment.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Runs) != 2 || e.Runs[0].Topology != topology.Baseline || e.Runs[1].Topology != topology.LPS {
		t.Fatalf("runs %+v, want baseline then lps", e.Runs)
	}
	for _, r := range e.Runs {
		t.Logf("%s: sent=%d acked=%d received=%d lost=%d dup=%d given up=%d p99=%.0fms drain=%.0fms λ=%.1f μ=%.1f ρ=%.2f",
			r.Topology, r.Sent, r.Acked, r.Received, r.Lost, r.Duplicated, r.GivenUp, r.P99, r.Drain, r.Lambda, r.Mu, r.Rho)
		if r.Acked == 0 {
			t.Errorf("%s: no alarm acknowledged", r.Topology)
		}
		checkFaults(t, cfg, r)
		checkLedgerFile(t, cfg, r)
	}
	if lps := e.Runs[1]; lps.Lost != 0 || lps.Duplicated != 0 || lps.Received != lps.Acked {
		t.Errorf("LPS: lost %d, duplicated %d, received %d of %d acknowledged; want every alarm once", lps.Lost, lps.Duplicated, lps.Received, lps.Acked)
	}
	if lps := e.Runs[1]; len(lps.Consumers) != 3 {
		t.Errorf("LPS: alarms per consumer %v, want the three mqtt2http", lps.Consumers)
	}
	checkFiles(t, cfg, e)
}

// checkFaults: every fault of the seeded schedule happened at its time, in order.
func checkFaults(t *testing.T, cfg experiment.Config, r report.Run) {
	t.Helper()
	sched := experiment.FailoverSchedule(r.Topology, 42, cfg.TimeScale)
	if len(r.Faults) != len(sched.Faults) {
		t.Fatalf("%s: %d faults, want %d", r.Topology, len(r.Faults), len(sched.Faults))
	}
	for i, f := range r.Faults {
		p := sched.Faults[i]
		near := func(a, b time.Duration) bool { return (a - b).Abs() < time.Microsecond } // Millis is a float
		if f.Service != p.Service || !near(f.PlannedStop.Sub(r.Start), p.Stop) || !near(f.Downtime.Duration(), p.Downtime) {
			t.Errorf("%s: fault %d is %s at %s for %s, want %s at +%s for %s", r.Topology, i, f.Service,
				f.PlannedStop.Sub(r.Start), f.Downtime.Duration(), p.Service, p.Stop, p.Downtime)
		}
		// A stop takes up to the grace of SIGTERM; a start until the service is ready.
		if late := f.Stopped.Sub(f.PlannedStop); f.Stopped.IsZero() || late < 0 || late > 500*time.Millisecond {
			t.Errorf("%s: %s stopped %s after its time, want at it", r.Topology, f.Service, late)
		}
		if late := f.Started.Sub(f.PlannedStart); f.Started.IsZero() || late < 0 || late > 15*time.Second {
			t.Errorf("%s: %s started %s after its time", r.Topology, f.Service, late)
		}
	}
}

// checkLedgerFile: the per-request CSV has a line per alarm sent.
func checkLedgerFile(t *testing.T, cfg experiment.Config, r report.Run) {
	t.Helper()
	f, err := os.Open(filepath.Join(cfg.Out, r.Topology, "requests.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != r.Sent+1 {
		t.Errorf("%s: requests.csv has %d rows, want a header and %d alarms", r.Topology, len(rows), r.Sent)
	}
}

// checkFiles: results.json parses and agrees with the run; report.html has every plot.
func checkFiles(t *testing.T, cfg experiment.Config, e report.Experiment) {
	t.Helper()
	back, err := report.ReadResults(filepath.Join(cfg.Out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range back.Runs {
		w := e.Runs[i]
		if r.Sent != w.Sent || r.Acked != w.Acked || r.Received != w.Received || r.Lost != w.Lost || r.Duplicated != w.Duplicated || len(r.Faults) != len(w.Faults) {
			t.Errorf("results.json's %s run %+v disagrees with the ledger's %+v", r.Topology, r, w)
		}
	}
	page, err := os.ReadFile(filepath.Join(cfg.Out, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"cdf"}
	for _, r := range e.Runs {
		ids = append(ids, "latency-"+r.Topology, "throughput-"+r.Topology)
		if r.Topology == topology.LPS {
			ids = append(ids, "backlog", "consumers")
		}
	}
	if e.Kind == experiment.Performance {
		ids = append(ids, "steps")
	}
	for _, id := range ids {
		if !strings.Contains(string(page), `id="`+id+`"`) {
			t.Errorf("report.html lacks the plot %q", id)
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.Out, "summary.md")); err != nil {
		t.Error(err)
	}
}

func TestPerformanceSteps(t *testing.T) {
	cfg := tiny(t, experiment.Performance)
	cfg.Topologies = []string{topology.LPS}
	cfg.TimeScale = 0.05 // one-second steps
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e, err := experiment.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := e.Runs[0]
	if len(r.Steps) != 2 || r.Steps[0].Devices != 5 || r.Steps[1].Devices != 10 {
		t.Fatalf("steps %+v, want 5 then 10 devices", r.Steps)
	}
	for _, s := range r.Steps {
		if s.Acked == 0 || s.Stopped {
			t.Errorf("step of %d devices: %d acked, stopped %v; want alarms and no stop at this load", s.Devices, s.Acked, s.Stopped)
		}
	}
	if r.Lost != 0 || r.Duplicated != 0 {
		t.Errorf("LPS: lost %d, duplicated %d", r.Lost, r.Duplicated)
	}
	checkFiles(t, cfg, e)
}

func TestInvalidConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  experiment.Config
		want string
	}{
		{experiment.Config{Kind: "chaos", Out: t.TempDir()}, "chaos"},
		{experiment.Config{Kind: experiment.Failover}, "output folder"},
		{experiment.Config{Kind: experiment.Failover, Out: t.TempDir(), Topologies: []string{"mesh"}}, "mesh"},
		{experiment.Config{Kind: experiment.Failover, Out: t.TempDir(), Target: "k8s"}, "k8s"},
		{experiment.Config{Kind: experiment.Failover, Out: t.TempDir(), TimeScale: -1}, "TimeScale"},
	} {
		_, err := experiment.Run(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want one naming %q", tc.cfg, err, tc.want)
		}
	}
}

package experiment

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lpsdev/lps/loadgen"
	"github.com/lpsdev/lps/report"
	"github.com/lpsdev/lps/topology"
)

// Verify checks what an experiment wrote into cfg.Out against what it measured: the LPS lost
// and duplicated no alarm; every fault of the seeded schedule happened at its time (stopped
// within late of it, started no earlier than planned); results.json parses and agrees with
// the runs; report.html has each plot; each requests.csv has a line per alarm sent, and
// load.log a line with the error of each failed try that requests.csv counts. It is
// what the tests of both targets assert, and a researcher can run it on a finished run.
func Verify(cfg Config, e report.Experiment, late time.Duration) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, r := range e.Runs {
		if r.Topology == topology.LPS && (r.Lost != 0 || r.Duplicated != 0 || r.Received != r.Acked) {
			fail("lps: lost %d, duplicated %d, received %d of %d acknowledged", r.Lost, r.Duplicated, r.Received, r.Acked)
		}
		if e.Kind == Failover {
			verifyFaults(fail, cfg, r, late)
		}
		verifyLedger(fail, cfg, r)
		if cfg.Target == "local" {
			verifyCPU(fail, r)
			verifyMemory(fail, r)
		}
	}
	back, err := report.ReadResults(filepath.Join(cfg.Out, "results.json"))
	switch {
	case err != nil:
		fail("%v", err)
	case len(back.Runs) != len(e.Runs):
		fail("results.json has %d runs, want %d", len(back.Runs), len(e.Runs))
	default:
		for i, r := range back.Runs {
			w := e.Runs[i]
			if r.Topology != w.Topology || r.Sent != w.Sent || r.Acked != w.Acked || r.Received != w.Received ||
				r.Lost != w.Lost || r.Duplicated != w.Duplicated || r.GivenUp != w.GivenUp || len(r.Faults) != len(w.Faults) {
				fail("results.json's %s run disagrees with the ledger: %d/%d/%d/%d/%d, want %d/%d/%d/%d/%d (sent/acked/received/lost/duplicated)",
					r.Topology, r.Sent, r.Acked, r.Received, r.Lost, r.Duplicated, w.Sent, w.Acked, w.Received, w.Lost, w.Duplicated)
			}
			if !maps.Equal(r.CPU, w.CPU) {
				fail("results.json's %s run has CPU figures %v, want %v", r.Topology, r.CPU, w.CPU)
			}
			if !maps.Equal(r.IdleRSS, w.IdleRSS) || !maps.Equal(r.PeakRSS, w.PeakRSS) {
				fail("results.json's %s run has memory figures %v/%v, want %v/%v", r.Topology, r.IdleRSS, r.PeakRSS, w.IdleRSS, w.PeakRSS)
			}
		}
	}
	page, err := os.ReadFile(filepath.Join(cfg.Out, "report.html"))
	if err != nil {
		fail("%v", err)
	}
	for _, id := range PlotIDs(e) {
		if !strings.Contains(string(page), `id="`+id+`"`) {
			fail("report.html lacks the plot %q", id)
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.Out, "summary.md")); err != nil {
		fail("%v", err)
	}
	return errors.Join(errs...)
}

// verifyCPU checks that a local run measured the CPU time of every role of its topology, and
// that they used some.
func verifyCPU(fail func(string, ...any), r report.Run) {
	plan, err := topology.Describe(r.Topology, 0)
	if err != nil {
		fail("%v", err)
		return
	}
	var total float64
	for _, n := range plan.Services {
		v, ok := r.CPU[n.Role]
		if !ok || v < 0 {
			fail("%s: CPU of %s is %v (measured: %v)", r.Topology, n.Role, v, ok)
		}
		total += v
	}
	if total <= 0 {
		fail("%s: the roles used no CPU time: %v", r.Topology, r.CPU)
	}
}

// verifyMemory checks that a local run measured every role's resident memory, idle and at
// its peak. A failover restarts processes after the idle figure was taken, and VmHWM starts
// again with each run, so a peak may be below the idle figure; neither may be missing or 0.
func verifyMemory(fail func(string, ...any), r report.Run) {
	plan, err := topology.Describe(r.Topology, 0)
	if err != nil {
		fail("%v", err)
		return
	}
	for _, n := range plan.Services {
		if r.IdleRSS[n.Role] <= 0 || r.PeakRSS[n.Role] <= 0 {
			fail("%s: resident memory of %s: idle %v MB, peak %v MB", r.Topology, n.Role, r.IdleRSS[n.Role], r.PeakRSS[n.Role])
		}
	}
}

// PlotIDs are the HTML ids of the plots report.html must have for e.
func PlotIDs(e report.Experiment) []string {
	ids := []string{"cdf"}
	for _, r := range e.Runs {
		ids = append(ids, "latency-"+r.Topology, "throughput-"+r.Topology)
		if r.Topology == topology.LPS {
			ids = append(ids, "backlog", "consumers")
		}
	}
	if e.Kind == Performance {
		ids = append(ids, "steps")
	}
	return ids
}

func verifyFaults(fail func(string, ...any), cfg Config, r report.Run, late time.Duration) {
	sched := FailoverSchedule(r.Topology, cfg.Seed, cfg.TimeScale)
	if len(r.Faults) != len(sched.Faults) {
		fail("%s: %d faults, want %d", r.Topology, len(r.Faults), len(sched.Faults))
		return
	}
	near := func(a, b time.Duration) bool { return (a - b).Abs() < time.Microsecond } // Millis is a float
	for i, f := range r.Faults {
		p := sched.Faults[i]
		if f.Service != p.Service || !near(f.PlannedStop.Sub(r.Start), p.Stop) || !near(f.Downtime.Duration(), p.Downtime) {
			fail("%s: fault %d is %s at +%s for %s, want %s at +%s for %s", r.Topology, i, f.Service,
				f.PlannedStop.Sub(r.Start), f.Downtime.Duration(), p.Service, p.Stop, p.Downtime)
		}
		if d := f.Stopped.Sub(f.PlannedStop); f.Stopped.IsZero() || d < 0 || d > late {
			fail("%s: %s stopped %s after its time, want within %s", r.Topology, f.Service, d, late)
		}
		if d := f.Started.Sub(f.PlannedStart); f.Started.IsZero() || d < 0 || d > late+stopGrace {
			fail("%s: %s started %s after its time", r.Topology, f.Service, d)
		}
	}
}

func verifyLedger(fail func(string, ...any), cfg Config, r report.Run) {
	f, err := os.Open(filepath.Join(cfg.Out, r.Topology, "requests.csv"))
	if err != nil {
		fail("%v", err)
		return
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		fail("%s: requests.csv: %v", r.Topology, err)
		return
	}
	if len(rows) != r.Sent+1 {
		fail("%s: requests.csv has %d rows, want a header and %d alarms", r.Topology, len(rows), r.Sent)
	}
	// Every try but an alarm's acknowledged one failed, and load.log tells why.
	failed := 0
	for _, row := range rows[1:] {
		if len(row) < 4 {
			fail("%s: requests.csv: row %q", r.Topology, row)
			return
		}
		n, err := strconv.Atoi(row[2])
		if err != nil {
			fail("%s: requests.csv: row %q: %v", r.Topology, row, err)
			return
		}
		failed += n
		if row[3] == "true" {
			failed--
		}
	}
	logged, err := failedTries(filepath.Join(cfg.Out, r.Topology, "load.log"))
	if err != nil {
		fail("%s: %v", r.Topology, err)
	} else if logged != failed {
		fail("%s: load.log has %d failed tries with their error, requests.csv %d", r.Topology, logged, failed)
	}
}

// failedTries counts the load's lines about a failed try that name its error.
func failedTries(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct{ Msg, Error string }
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return n, fmt.Errorf("%s: %w", path, err)
		}
		if line.Msg == loadgen.MsgTryFailed && line.Error != "" {
			n++
		}
	}
	return n, sc.Err()
}

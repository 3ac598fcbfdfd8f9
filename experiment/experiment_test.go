package experiment_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lpsdev/lps/experiment"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/loadgen"
	"github.com/lpsdev/lps/topology"
)

var lpsBin string

func TestMain(m *testing.M) { testutil.MainWithLPS(m, &lpsBin, os.Getenv("LPS_EXPERIMENT_BIN")) }

// tiny is an experiment on a schedule a test can wait for, with the defaults a user gets
// otherwise (rast-sim's model on, the product's mqtt2http settings, the background workload).
func tiny(t *testing.T, kind string) experiment.Config {
	dir := testutil.SharedData(t, "")
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
	}
	if lps := e.Runs[1]; len(lps.Consumers) != 3 {
		t.Errorf("LPS: alarms per consumer %v, want the three mqtt2http", lps.Consumers)
	}
	if err := experiment.Verify(cfg, e, 500*time.Millisecond); err != nil {
		t.Error(err)
	}
}

func TestPerformanceSteps(t *testing.T) {
	cfg := tiny(t, experiment.Performance)
	cfg.TimeScale = 0.05 // one-second steps
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e, err := experiment.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range e.Runs {
		if len(r.Steps) != 2 || r.Steps[0].Devices != 5 || r.Steps[1].Devices != 10 {
			t.Fatalf("%s: steps %+v, want 5 then 10 devices", r.Topology, r.Steps)
		}
		for _, s := range r.Steps {
			if s.Acked == 0 || s.Stopped {
				t.Errorf("%s: step of %d devices: %d acked, stopped %v; want alarms and no stop at this load", r.Topology, s.Devices, s.Acked, s.Stopped)
			}
		}
	}
	if err := experiment.Verify(cfg, e, 0); err != nil {
		t.Error(err)
	}
}

// The open-model ramp: --rate R runs steps of R, 2R, ... alarms per second.
func TestPerformanceRateRamp(t *testing.T) {
	cfg := tiny(t, experiment.Performance)
	cfg.Topologies = []string{topology.LPS}
	cfg.TimeScale, cfg.Rate, cfg.Faithful = 0.05, 20, true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e, err := experiment.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := e.Runs[0]
	if len(r.Steps) != 2 || r.Steps[0].Rate != 20 || r.Steps[1].Rate != 40 || r.Steps[0].Devices != 0 {
		t.Fatalf("steps %+v, want 20 then 40 alarms/s", r.Steps)
	}
	// One second at 20/s, one at 40/s: about 60 alarms; a busy machine's late timers stretch a
	// step, never the rate.
	if r.Sent < 40 || r.Sent > 120 {
		t.Errorf("%d alarms sent, want about 60", r.Sent)
	}
	if !e.Faithful {
		t.Error("the report does not say the run was faithful")
	}
	if err := experiment.Verify(cfg, e, 0); err != nil {
		t.Error(err)
	}
	// --faithful reached every mqtt2http's command line.
	for _, n := range []string{"proxy2-1", "proxy2-2", "proxy2-3"} {
		log, err := os.ReadFile(filepath.Join(cfg.Out, topology.LPS, n+".log"))
		if err != nil {
			t.Fatal(err)
		}
		// The product's default retry doubles up to 10 s; the original's is a fixed second.
		if !regexp.MustCompile(`"max_inflight":1,.*"retry_base":("1s"|1),"retry_max":("1s"|1)`).Match(log) {
			t.Errorf("%s did not start with the original's settings; its log:\n%s", n, log[:min(len(log), 2000)])
		}
	}
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

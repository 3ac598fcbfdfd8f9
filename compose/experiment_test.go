package compose

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lpsdev/lps/experiment"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/loadgen"
	"github.com/lpsdev/lps/report"
)

// lps experiment --target compose: the failover experiment on a short schedule against the
// compose files' containers of both topologies, with the assertions of the local target's
// test (experiment.Verify): the LPS loses and duplicates nothing, every fault of the seeded
// schedule happens at its time, and the report's files agree with the ledger.
func TestExperimentCompose(t *testing.T) {
	cfg, e := runComposeExperiment(t, func(cfg *experiment.Config) {
		cfg.Kind, cfg.Devices, cfg.DrainTimeout = experiment.Failover, 20, 3*time.Minute
	})
	for _, r := range e.Runs {
		t.Logf("%s: sent=%d acked=%d received=%d lost=%d dup=%d p99=%.0fms drain=%.0fms λ=%.1f μ=%.1f consumers=%v",
			r.Topology, r.Sent, r.Acked, r.Received, r.Lost, r.Duplicated, r.P99, r.Drain, r.Lambda, r.Mu, r.Consumers)
		if r.Acked == 0 {
			t.Errorf("%s: no alarm acknowledged", r.Topology)
		}
	}
	// A fault's stop is timed when it is given; the engine's own latency is not in it.
	if err := experiment.Verify(cfg, e, 500*time.Millisecond); err != nil {
		t.Error(err)
	}
}

// The performance experiment against the containers: two short steps on both topologies.
func TestExperimentComposePerformance(t *testing.T) {
	cfg, e := runComposeExperiment(t, func(cfg *experiment.Config) {
		cfg.Kind, cfg.Step, cfg.MaxSteps, cfg.DrainTimeout = experiment.Performance, 10, 2, 3*time.Minute
	})
	for _, r := range e.Runs {
		if len(r.Steps) != 2 || r.Steps[0].Devices != 10 || r.Steps[1].Devices != 20 || r.Steps[1].Acked == 0 {
			t.Errorf("%s: steps %+v, want 10 then 20 devices, each with alarms", r.Topology, r.Steps)
		}
	}
	if err := experiment.Verify(cfg, e, 0); err != nil {
		t.Error(err)
	}
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// runComposeExperiment runs an experiment against the compose files' containers, with the
// original's data, a time scale of 0.1 and a background of 20 requests/s; set picks the kind
// and the rest. It skips without a Docker engine (fails under LPS_REQUIRE_DOCKER=1).
func runComposeExperiment(t *testing.T, set func(*experiment.Config)) (experiment.Config, report.Experiment) {
	t.Helper()
	newEngines(t)
	image := buildImage(t)
	names, err := loadgen.LoadNames(testutil.SharedData(t, "all_request_names.txt"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := experiment.Config{
		Target: "compose", ComposeFiles: ".", Image: image, Out: t.TempDir(), TimeScale: 0.1,
		Background: 20, RequestNames: names, Mapping: testutil.SharedData(t, "gs_requests_mapping_prod_workload.json"),
		Progress: logWriter{t},
	}
	set(&cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	e, err := experiment.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, e
}

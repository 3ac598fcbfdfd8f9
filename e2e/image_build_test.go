package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The image's build (make image: -tags noexperiment) leaves out lps experiment and nothing
// else: the experiment command exits 1 saying why, and every role is there.
func TestImageBuildLeavesOutOnlyTheExperimentKit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "lps")
	build := exec.CommandContext(ctx, "go", "build", "-tags", "noexperiment", "-o", bin, "github.com/lpsdev/lps")
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags noexperiment: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, bin, "experiment", "failover", "--time-scale", "0.1").CombinedOutput()
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), "without the experiment kit") {
		t.Errorf("lps experiment in the image's build: exit %d, %q; want 1 and why", code, out)
	}
	for _, role := range []string{"comp1", "comp2", "http2mqtt", "mqtt2http", "rast-sim", "broker", "load", "up", "probe"} {
		if out, err := exec.CommandContext(ctx, bin, role, "--help").CombinedOutput(); err != nil {
			t.Errorf("lps %s --help in the image's build: %v\n%s", role, err, out)
		}
	}
	// And the full build has it.
	if out, err := exec.CommandContext(ctx, lpsBin, "experiment", "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "--time-scale") {
		t.Errorf("lps experiment --help in the full build: %v\n%s", err, out)
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

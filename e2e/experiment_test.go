package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lpsdev/lps/internal/testutil"
)

// The README's main command, `lps experiment failover`, as a user runs it (here on a shorter
// schedule and fewer devices): it exits 0, prints the baseline-vs-LPS table with the LPS's lost
// and duplicated at 0 and the fault timeline, and names the report it wrote.
func TestExperimentCommand(t *testing.T) {
	data := testutil.SharedData(t, "")
	out := filepath.Join(t.TempDir(), "run")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, lpsBin, "experiment", "failover", "--time-scale", "0.03", "--devices", "10",
		"--background", "20", "--data", data, "--out", out)
	stdout, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("lps experiment failover: %v\n%s\n%s", err, stdout, stderr)
	}
	text := string(stdout)
	for _, re := range []string{
		`(?m)^\s+baseline\s+lps$`,
		`(?m)^lost\s+0\s+0$`,
		`(?m)^duplicated\s+\d+\s+0$`,
		`(?m)^lps\s+proxy2-1\s`,
		`report: ` + regexp.QuoteMeta(filepath.Join(out, "report.html")),
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("output lacks %s:\n%s", re, text)
		}
	}
	for _, f := range []string{"report.html", "summary.md", "results.json", "baseline/requests.csv", "lps/requests.csv", "baseline/load.log", "lps/load.log", "lps/broker.log"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	if strings.Count(text, "stopped for") != 12 {
		t.Errorf("want a line for each of the 12 faults (5 baseline, 7 LPS):\n%s", text)
	}
}

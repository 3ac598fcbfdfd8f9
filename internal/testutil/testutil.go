// Package testutil holds the helpers the integration tests of several packages share: polling
// instead of sleeping, and running a role until the test ends.
package testutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Eventually polls cond every few milliseconds until it returns nil or timeout passes, then
// fails the test with cond's last error. cond runs on the test's goroutine.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	if Poll(ctx, 5*time.Millisecond, func() error { last = cond(); return last }) != nil {
		t.Fatalf("condition not met within %s: %v", timeout, last)
	}
}

// Poll calls cond every interval until it returns nil or ctx ends, for the waits that need
// their own pace or a context rather than a test (Eventually is Poll with a test). It returns
// nil, or cond's last error together with ctx's. cond runs on the caller's goroutine, so a
// test may give up at once by calling t.Fatal in it.
func Poll(ctx context.Context, interval time.Duration, cond func() error) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// Runner is a role value.
type Runner interface {
	Run(ctx context.Context) error
	Addr() net.Addr
}

// Run runs r until the test ends (or the returned stop is called) and reports a Run error as a
// test failure. stop waits for Run to return, up to 70 s (longer than a graceful shutdown).
func Run(t testing.TB, r Runner) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var stopped bool
	var err error
	stop = func() error {
		if stopped {
			return err
		}
		stopped = true
		cancel()
		select {
		case err = <-done:
		case <-time.After(70 * time.Second):
			err = errors.New("role did not stop within 70s")
		}
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stopping role at %s: %v", r.Addr(), err)
		}
	})
	return stop
}

// Listen opens a listener on 127.0.0.1:0.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// RefusedAddr returns a loopback address where nothing listens.
func RefusedAddr(t testing.TB) string {
	t.Helper()
	ln := Listen(t)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Metric sums the samples of the metric called name in g whose labels include labels (nil:
// all): counter, gauge and untyped values, and the sample counts of histograms and summaries.
// A metric g does not have, or a label the metric does not have, fails the test. A vector
// none of whose label values was used yet is not gathered, so when g is a Collector (a
// *prometheus.Registry is) a name it describes counts as there, with 0.
func Metric(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gathering %s: %v", name, err)
	}
	var names []string
	for _, mf := range mfs {
		if mf.GetName() != name {
			names = append(names, mf.GetName())
			continue
		}
		var v float64
		known := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				known[lp.GetName()] = true
			}
			if hasLabels(m, labels) {
				v += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue() +
					float64(m.GetHistogram().GetSampleCount()+m.GetSummary().GetSampleCount())
			}
		}
		for l := range labels {
			if !known[l] {
				t.Fatalf("metric %s has no label %s", name, l)
			}
		}
		return v
	}
	if c, ok := g.(prometheus.Collector); ok && describes(c, name) {
		return 0
	}
	t.Fatalf("no metric %s; the gatherer has %s", name, strings.Join(names, ", "))
	return 0
}

// hasLabels reports whether m has every label of labels, with its value.
func hasLabels(m *dto.Metric, labels map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if want, ok := labels[lp.GetName()]; ok {
			if want != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(labels)
}

// describes reports whether c describes a metric called name. A Desc tells its name only in
// its String, `Desc{fqName: "name", ...`.
func describes(c prometheus.Collector, name string) bool {
	ch := make(chan *prometheus.Desc)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	found := false
	prefix := fmt.Sprintf("Desc{fqName: %q,", name)
	for d := range ch {
		found = found || strings.HasPrefix(d.String(), prefix)
	}
	return found
}

// BuildLPS builds the lps binary (static, as shipped) into a fresh temporary directory, for
// the tests that run it as a process. cleanup removes the directory.
func BuildLPS() (bin string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "lps-bin-")
	if err != nil {
		return "", nil, err
	}
	bin = filepath.Join(dir, "lps")
	build := exec.Command("go", "build", "-o", bin, "github.com/lpsdev/lps")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("building lps: %v\n%s", err, out)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// MainWithLPS is a TestMain for packages that run lps as a process: it sets *bin to prebuilt
// when that is not empty, else to a binary built with BuildLPS (removed afterwards), runs the
// tests and exits with their status.
func MainWithLPS(m *testing.M, bin *string, prebuilt string) {
	if prebuilt != "" {
		*bin = prebuilt
		os.Exit(m.Run())
	}
	built, cleanup, err := BuildLPS()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = built
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// SharedData is the path of a file of the original's data, which the workplace keeps beside
// the repository (../shared/data/rast; the repository's files never copy it), found from the
// module's root whichever package's test asks; "" names the folder. Without it the test is
// skipped, saying what is missing.
func SharedData(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's folder")
		}
		dir = parent
	}
	p := filepath.Join(dir, "..", "shared", "data", "rast", name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("the original's data %s is not there (../shared/data/rast beside the repository): %v", name, err)
	}
	return p
}

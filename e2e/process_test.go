package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lpsdev/lps/internal/testutil"
)

func TestInvalidConfigurationExitsAtStart(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"malformed upstream", []string{"comp2", "--upstream", "http//x"}, nil, "--upstream"},
		{"port out of range", []string{"comp1", "--upstream", "http://x", "--listen", "127.0.0.1:65536"}, nil, "--listen"},
		{"env port out of range", []string{"rast-sim"}, []string{"HTTP_PORT=70000"}, "HTTP_PORT"},
		{"unknown flag", []string{"comp2", "--nope"}, nil, "--nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(lpsBin, tc.args...)
			cmd.Env = tc.env
			out, err := cmd.CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() == 0 {
				t.Fatalf("want a failing exit, got %v: %s", err, out)
			}
			msg := strings.TrimSpace(string(out))
			if !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("want one line naming %q, got:\n%s", tc.want, msg)
			}
		})
	}
}

func TestSIGTERMCompletesRequestsInFlight(t *testing.T) {
	const n = 8
	var arrived atomic.Int32
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		<-release
		io.WriteString(w, "Success")
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})

	p := start(t, nil, "comp2", "--listen", "127.0.0.1:0", "--upstream", up.URL)
	var addr string
	testutil.Eventually(t, 10*time.Second, func() error {
		var ok bool
		if addr, ok = p.field("listening", "addr"); !ok {
			return io.ErrNoProgress
		}
		return nil
	})
	type result struct {
		status int
		err    error
	}
	results := make(chan result, n)
	for range n {
		go func() {
			resp, err := http.Post("http://"+addr+"/ID_REQ_KC_STORE7D3BPACKET", "application/json",
				strings.NewReader(`{"id":"1","body":"b"}`))
			if err != nil {
				results <- result{err: err}
				return
			}
			resp.Body.Close()
			results <- result{status: resp.StatusCode}
		}()
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if arrived.Load() < n {
			return io.ErrNoProgress
		}
		return nil
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if _, ok := p.field("shutting down, finishing requests in flight", "addr"); !ok {
			return io.ErrNoProgress
		}
		return nil
	})
	close(release)
	for range n {
		r := <-results
		if r.err != nil || r.status != 200 {
			t.Errorf("request in flight at SIGTERM: status %d err %v", r.status, r.err)
		}
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0; log:\n%s", code, p.log())
	}
}

func TestProbe(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(ok.Close)
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	t.Cleanup(bad.Close)
	for _, tc := range []struct {
		url  string
		code int
	}{
		{ok.URL + "/healthz", 0},
		{bad.URL + "/readyz", 1},
		{"http://" + testutil.RefusedAddr(t) + "/healthz", 1},
		{"::bad", 2},
	} {
		out, err := exec.Command(lpsBin, "probe", "--timeout", "3s", tc.url).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code {
			t.Errorf("probe %s: exit %d, want %d (%s)", tc.url, code, tc.code, out)
		}
	}
}

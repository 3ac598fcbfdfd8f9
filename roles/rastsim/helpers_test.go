package rastsim

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testDeadline bounds every wait in these tests.
const testDeadline = 10 * time.Second

// testSim is a Sim running on 127.0.0.1:0 for one test.
type testSim struct {
	*Sim
	url    string
	client *http.Client
	stop   func() error // cancels Run and waits for it; also called by t.Cleanup
}

// startSim starts a Sim with cfg, listening on a random loopback port, and stops it when the
// test ends.
func startSim(t *testing.T, cfg Config) *testSim {
	t.Helper()
	if cfg.Listen == "" && cfg.Listener == nil {
		cfg.Listen = "127.0.0.1:0"
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(testDeadline):
				runErr = errors.New("Run did not return after its context ended")
			}
		})
		return runErr
	}
	tr := &http.Transport{}
	ts := &testSim{Sim: s, url: "http://" + s.Addr().String(), client: &http.Client{Transport: tr, Timeout: testDeadline}, stop: stop}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return ts
}

// result is a response read whole.
type result struct {
	status int
	header http.Header
	body   string
}

// do sends one request; id "" sends no Request-Id.
func (ts *testSim) do(ctx context.Context, method, path, id string) (result, error) {
	req, err := http.NewRequestWithContext(ctx, method, ts.url+path, strings.NewReader(`{"id":"1","body":"x"}`))
	if err != nil {
		return result{}, err
	}
	if id != "" {
		req.Header.Set("Request-Id", id)
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return result{}, err
	}
	return result{status: resp.StatusCode, header: resp.Header, body: string(body)}, nil
}

// post sends a command and fails the test unless it answered 200 Success.
func (ts *testSim) post(t *testing.T, path, id string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	res, err := ts.do(ctx, http.MethodPost, path, id)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	if res.status != http.StatusOK || res.body != "Success" {
		t.Fatalf("POST %s = %d %q, want 200 Success", path, res.status, res.body)
	}
	return res
}

// get fetches path and fails the test unless it answered 200.
func (ts *testSim) get(t *testing.T, path string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	res, err := ts.do(ctx, http.MethodGet, path, "")
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if res.status != http.StatusOK {
		t.Fatalf("GET %s = %d %q, want 200", path, res.status, res.body)
	}
	return res
}

// hold sends a command in the background; its result arrives on the returned channel, and the
// returned cancel makes the client go away. The test waits for it at cleanup.
func (ts *testSim) hold(t *testing.T, path, id string) (<-chan result, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	out := make(chan result, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		res, err := ts.do(ctx, http.MethodPost, path, id)
		if err != nil {
			res.status = -1
			res.body = err.Error()
		}
		out <- res
	}()
	t.Cleanup(func() { cancel(); <-done })
	return out, cancel
}

// inFlight reads the lps_rastsim_in_flight gauge.
func (ts *testSim) inFlight() int { return int(testutil.ToFloat64(ts.metrics.inFlight)) }

// waitResult waits for a held request's result.
func waitResult(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case res := <-ch:
		return res
	case <-time.After(testDeadline):
		t.Fatal("timed out waiting for a response")
		return result{}
	}
}

// headerSeconds parses a header holding seconds.
func headerSeconds(t *testing.T, res result, name string) float64 {
	t.Helper()
	v := res.header.Get(name)
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		t.Fatalf("header %s = %q: not a decimal number of seconds: %v", name, v, err)
	}
	return f
}

// mustMapping loads an inline mapping.
func mustMapping(t *testing.T, doc string) *Mapping {
	t.Helper()
	m, err := LoadMapping(strings.NewReader(doc))
	if err != nil {
		t.Fatalf("LoadMapping(%s): %v", doc, err)
	}
	return m
}

package mqtt2http_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/mqttconn"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/mqtt2http"
)

// fastMQTT reconnects quickly, for tests that stop and start the broker.
var fastMQTT = mqttconn.Options{ReconnectBase: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond, ConnectTimeout: 2 * time.Second}

// upstream is a component 2 stand-in that records what it receives per Request-Id.
type upstream struct {
	URL  string
	addr string
	srv  *httptest.Server

	mu          sync.Mutex
	requests    []received
	ok          map[string]int // request id -> requests answered 2xx
	seen        map[string]int // request id -> requests
	inflight    int
	maxInflight int
	changed     chan struct{}
	// status decides the answer to the n-th request (from 1) of a request id; nil means 200.
	status func(id string, n int) int
	// gate, when set, is waited on before answering.
	gate chan struct{}
}

type received struct {
	RequestID   string
	Alarm       alarm.Alarm
	Path        string
	ContentType string
	Status      int
}

// startUpstream starts an upstream on a free loopback port.
func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{ok: map[string]int{}, seen: map[string]int{}, changed: make(chan struct{})}
	u.start(t, "127.0.0.1:0")
	return u
}

// downUpstream returns an upstream whose port refuses connections until Start.
func downUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{ok: map[string]int{}, seen: map[string]int{}, changed: make(chan struct{})}
	u.addr = testutil.RefusedAddr(t)
	u.URL = "http://" + u.addr
	return u
}

// Start serves a down upstream on its address.
func (u *upstream) Start(t *testing.T) { t.Helper(); u.start(t, u.addr) }

func (u *upstream) start(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(u.serve))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	u.srv, u.addr, u.URL = srv, ln.Addr().String(), "http://"+ln.Addr().String()
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var a alarm.Alarm
	json.Unmarshal(body, &a)
	id := r.Header.Get("Request-Id")

	u.mu.Lock()
	u.seen[id]++
	n := u.seen[id]
	u.inflight++
	u.maxInflight = max(u.maxInflight, u.inflight)
	gate, status := u.gate, u.status
	u.notifyLocked()
	u.mu.Unlock()

	if gate != nil {
		<-gate
	}
	code := http.StatusOK
	if status != nil {
		code = status(id, n)
	}

	u.mu.Lock()
	u.inflight--
	u.requests = append(u.requests, received{RequestID: id, Alarm: a, Path: r.URL.Path, ContentType: r.Header.Get("Content-Type"), Status: code})
	if code < 300 {
		u.ok[id]++
	}
	u.notifyLocked()
	u.mu.Unlock()
	w.WriteHeader(code)
	fmt.Fprintln(w, "Success")
}

func (u *upstream) notifyLocked() {
	close(u.changed)
	u.changed = make(chan struct{})
}

// hold makes the upstream hold every request until release, which the test's cleanup also
// calls (before the server closes, which waits for held requests).
func (u *upstream) hold(t *testing.T) (release func()) {
	g := make(chan struct{})
	u.mu.Lock()
	u.gate = g
	u.mu.Unlock()
	var once sync.Once
	release = func() { once.Do(func() { close(g) }) }
	t.Cleanup(release)
	return release
}

func (u *upstream) setStatus(f func(id string, n int) int) {
	u.mu.Lock()
	u.status = f
	u.mu.Unlock()
}

// waitFor waits until cond, evaluated under the lock, holds.
func (u *upstream) waitFor(t *testing.T, timeout time.Duration, what string, cond func(u *upstream) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		u.mu.Lock()
		ok, changed := cond(u), u.changed
		u.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			u.mu.Lock()
			defer u.mu.Unlock()
			t.Fatalf("upstream: %s not reached within %s (ok=%d distinct, %d requests, %d in flight)", what, timeout, len(u.ok), len(u.requests), u.inflight)
		}
	}
}

// okCounts returns the 2xx answers per request id.
func (u *upstream) okCounts() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make(map[string]int, len(u.ok))
	for k, v := range u.ok {
		out[k] = v
	}
	return out
}

func (u *upstream) all() []received {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]received(nil), u.requests...)
}

// exactlyOnce fails unless every id in ids was answered 2xx exactly once and nothing else was.
func exactlyOnce(t *testing.T, counts map[string]int, ids []string) {
	t.Helper()
	var missing, doubled []string
	for _, id := range ids {
		switch n := counts[id]; {
		case n == 0:
			missing = append(missing, id)
		case n > 1:
			doubled = append(doubled, fmt.Sprintf("%s×%d", id, n))
		}
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var extra []string
	for id := range counts {
		if !want[id] {
			extra = append(extra, id)
		}
	}
	sort.Strings(missing)
	sort.Strings(doubled)
	if len(missing)+len(doubled)+len(extra) > 0 {
		t.Fatalf("%d ids: %d lost %v, %d duplicated %v, %d unexpected %v", len(ids), len(missing), head(missing), len(doubled), head(doubled), len(extra), head(extra))
	}
}

func head(s []string) []string {
	if len(s) > 10 {
		return s[:10]
	}
	return s
}

type bridge struct {
	*mqtt2http.Bridge
	admin string
	reg   *prometheus.Registry
	stop  func() error
}

// startBridge runs an mqtt2http bridge until the test ends (or stop).
func startBridge(t *testing.T, brokerURL, upstreamURL, name string, tweak func(*mqtt2http.Config)) bridge {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := mqtt2http.Config{
		ServiceName: name,
		Admin:       roles.Server{Listener: testutil.Listen(t)},
		Broker:      brokerURL,
		Upstream:    roles.Upstream{URL: upstreamURL, Timeout: 5 * time.Second},
		RetryBase:   10 * time.Millisecond,
		RetryMax:    50 * time.Millisecond,
		Logger:      zap.NewNop(),
		Registry:    reg,
		MQTT:        fastMQTT,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	b, err := mqtt2http.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := testutil.Run(t, b)
	br := bridge{Bridge: b, admin: "http://" + b.Addr().String(), reg: reg, stop: stop}
	br.awaitReady(t)
	return br
}

func (b bridge) awaitReady(t *testing.T) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		if status, body := get(t, b.admin+"/readyz"); status != http.StatusOK {
			return fmt.Errorf("readyz %d %s", status, body)
		}
		return nil
	})
}

var client = &http.Client{Timeout: 30 * time.Second}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	status, body, err := probe(url)
	if err != nil {
		t.Fatal(err)
	}
	return status, body
}

// probe GETs url; an error means nothing answered.
func probe(url string) (int, string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// quiescent waits until every message the bridges received was handled and the broker has
// nothing more for them: deliveries equal originals plus retries, and nothing is in flight.
func quiescent(t *testing.T, originals int, bridges ...bridge) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		var deliveries, retries, inflight, dead float64
		for _, b := range bridges {
			deliveries += testutil.Metric(t, b.reg, "lps_mqtt_deliveries_total", nil)
			retries += testutil.Metric(t, b.reg, "lps_mqtt_retries_total", nil)
			inflight += testutil.Metric(t, b.reg, "lps_mqtt_inflight_forwards", nil)
			dead += testutil.Metric(t, b.reg, "lps_mqtt_dead_letters_total", nil)
		}
		if deliveries != float64(originals)+retries || inflight != 0 {
			return fmt.Errorf("%v deliveries of %d originals and %v retries, %v in flight, %v dead letters", deliveries, originals, retries, inflight, dead)
		}
		return nil
	})
}

func alarmJSON(id, body, requestID string) []byte {
	b, _ := json.Marshal(alarm.Alarm{ID: id, Body: body, RequestID: requestID})
	return b
}

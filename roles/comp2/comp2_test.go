package comp2_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/config"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/comp2"
)

// backend records what it received and answers with status.
type backend struct {
	mu       sync.Mutex
	received []alarm.Alarm
	ids      []string
	status   int
	delay    chan struct{}
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if b.delay != nil {
		select {
		case <-b.delay:
		case <-r.Context().Done():
			return
		}
	}
	body, _ := io.ReadAll(r.Body)
	var a alarm.Alarm
	json.Unmarshal(body, &a)
	b.mu.Lock()
	b.received = append(b.received, a)
	b.ids = append(b.ids, r.Header.Get("Request-Id"))
	status := b.status
	b.mu.Unlock()
	if status == 0 {
		status = 200
	}
	w.WriteHeader(status)
	io.WriteString(w, "Success")
}

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.received)
}

func start(t *testing.T, upstream string, timeout time.Duration) string {
	t.Helper()
	cfg := comp2.Config{Upstream: roles.Upstream{URL: upstream, Timeout: timeout}}
	cfg.Listener = testutil.Listen(t)
	cfg.MaxBodyBytes = 1024
	c, err := comp2.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, c)
	return "http://" + c.Addr().String()
}

func TestForwardsAlarmWithRequestID(t *testing.T) {
	b := &backend{}
	up := httptest.NewServer(b)
	t.Cleanup(up.Close)
	url := start(t, up.URL, 0)

	req, _ := http.NewRequest(http.MethodPost, url+alarm.CommandPath, strings.NewReader(`{"id":"0123","body":"Phone: 0123"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Request-Id", "rid-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"message":"Data published to Legacy System"`) {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.received) != 1 || b.received[0] != (alarm.Alarm{ID: "0123", Body: "Phone: 0123", RequestID: "rid-1"}) || b.ids[0] != "rid-1" {
		t.Errorf("backend got %+v with ids %v", b.received, b.ids)
	}
}

func TestErrorStatuses(t *testing.T) {
	b := &backend{}
	up := httptest.NewServer(b)
	t.Cleanup(up.Close)
	url := start(t, up.URL, 0)

	failing := &backend{status: 500}
	failUp := httptest.NewServer(failing)
	t.Cleanup(failUp.Close)
	failURL := start(t, failUp.URL, 0)
	refusedURL := start(t, "http://"+testutil.RefusedAddr(t), 0)
	slow := &backend{delay: make(chan struct{})}
	slowUp := httptest.NewServer(slow)
	t.Cleanup(func() { close(slow.delay); slowUp.Close() })
	slowURL := start(t, slowUp.URL, 200*time.Millisecond)

	good := `{"id":"1","body":"b"}`
	for _, tc := range []struct {
		name, base, method, path, ctype, body string
		status                                int
		reason                                string
	}{
		{"malformed", url, "POST", alarm.CommandPath, "application/json", `{"id":`, 400, "truncated JSON"},
		{"not an object", url, "POST", alarm.CommandPath, "application/json", `"x"`, 400, "JSON object"},
		{"wrong type", url, "POST", alarm.CommandPath, "application/json", `{"id":1,"body":"b"}`, 400, `field \"id\"`},
		{"missing field", url, "POST", alarm.CommandPath, "application/json", `{"id":"1"}`, 400, "body"},
		{"empty field", url, "POST", alarm.CommandPath, "application/json", `{"id":"","body":"b"}`, 400, "id"},
		{"empty body", url, "POST", alarm.CommandPath, "application/json", ``, 400, "empty"},
		{"not utf-8", url, "POST", alarm.CommandPath, "application/json", "{\"id\":\"\xff\",\"body\":\"b\"}", 400, "UTF-8"},
		{"too large", url, "POST", alarm.CommandPath, "application/json", `{"id":"1","body":"` + strings.Repeat("x", 2000) + `"}`, 413, "limit"},
		{"not json", url, "POST", alarm.CommandPath, "text/plain", good, 415, "not application/json"},
		{"other path", url, "POST", "/nope", "application/json", good, 404, "no such endpoint"},
		{"other method", url, "GET", alarm.CommandPath, "", "", 405, "not allowed"},
		{"upstream 500", failURL, "POST", alarm.CommandPath, "application/json", good, 502, "upstream answered 500"},
		{"upstream refused", refusedURL, "POST", alarm.CommandPath, "application/json", good, 502, "unreachable"},
		{"upstream timeout", slowURL, "POST", alarm.CommandPath, "application/json", good, 504, "timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, tc.base+tc.path, strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.reason) || !strings.Contains(string(body), `"status":"error"`) {
				t.Errorf("got %d %s, want %d with %q", resp.StatusCode, body, tc.status, tc.reason)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type %q, want application/json", ct)
			}
		})
	}
	if n := b.count(); n != 0 {
		t.Errorf("invalid input reached the backend %d times", n)
	}
}

func TestNewRejectsBadUpstream(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "http://", "::nope"} {
		cfg := comp2.Config{Upstream: roles.Upstream{URL: u}}
		cfg.Listen = "127.0.0.1:0"
		var fe *config.FieldError
		if _, err := comp2.New(cfg); !errors.As(err, &fe) || fe.Field != "Upstream.URL" {
			t.Errorf("upstream %q: error %v, want one about Upstream.URL", u, err)
		}
	}
}

func TestDedupByRequestID(t *testing.T) {
	for _, tc := range []struct {
		name string
		off  bool
		want int
	}{{"on by default", false, 1}, {"off", true, 2}} {
		t.Run(tc.name, func(t *testing.T) {
			b := &backend{}
			up := httptest.NewServer(b)
			t.Cleanup(up.Close)
			cfg := comp2.Config{Upstream: roles.Upstream{URL: up.URL}, NoDedup: tc.off}
			cfg.Listener = testutil.Listen(t)
			c, err := comp2.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			testutil.Run(t, c)
			for range 2 {
				req, _ := http.NewRequest(http.MethodPost, "http://"+c.Addr().String()+alarm.CommandPath, strings.NewReader(`{"id":"1","body":"b"}`))
				req.Header.Set("Request-Id", "same-id")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
			}
			if got := b.count(); got != tc.want {
				t.Errorf("backend received the alarm %d times, want %d", got, tc.want)
			}
		})
	}
}

func TestDedupForgetsFailures(t *testing.T) {
	b := &backend{status: 500}
	up := httptest.NewServer(b)
	t.Cleanup(up.Close)
	url := start(t, up.URL, 0)
	post := func() int {
		req, _ := http.NewRequest(http.MethodPost, url+alarm.CommandPath, strings.NewReader(`{"id":"1","body":"b"}`))
		req.Header.Set("Request-Id", "retry-id")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post(); got != 502 {
		t.Fatalf("status %d, want 502", got)
	}
	b.mu.Lock()
	b.status = 200
	b.mu.Unlock()
	if got := post(); got != 200 || b.count() != 2 {
		t.Errorf("retry after a failure: status %d, backend saw %d, want 200 and 2", got, b.count())
	}
}

func TestForwardOutlivesCallerSoRedeliveryIsSuppressed(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	var mu sync.Mutex
	forwarded := 0
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		forwarded++
		mu.Unlock()
		arrived <- struct{}{}
		<-release
		io.WriteString(w, "Success")
	}))
	t.Cleanup(up.Close)
	url := start(t, up.URL, 0)
	post := func(ctx context.Context) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+alarm.CommandPath, strings.NewReader(`{"id":"1","body":"b"}`))
		req.Header.Set("Request-Id", "crash-id")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() { _, err := post(ctx); gone <- err }()
	<-arrived
	cancel() // the caller (a bridge) dies while the backend holds the alarm
	if err := <-gone; err == nil {
		t.Fatal("the cancelled request should fail at the caller")
	}
	redelivered := make(chan int, 1)
	go func() { code, _ := post(context.Background()); redelivered <- code }()
	close(release)
	if code := <-redelivered; code != 200 {
		t.Errorf("redelivery answered %d, want 200", code)
	}
	mu.Lock()
	defer mu.Unlock()
	if forwarded != 1 {
		t.Errorf("backend got the alarm %d times, want 1", forwarded)
	}
}

// A backend slower than comp2's timeout still takes the alarm. comp2 answers 504 when its wait
// ends, but its forward goes on and the outcome is remembered, so the caller's retry — made
// while the forward is still running, and again after it succeeded — is not sent again.
func TestSlowBackendAnswerIsRememberedNotResent(t *testing.T) {
	b := &backend{delay: make(chan struct{})}
	up := httptest.NewServer(b)
	t.Cleanup(up.Close)
	cfg := comp2.Config{Upstream: roles.Upstream{URL: up.URL, Timeout: 100 * time.Millisecond}, ForwardTimeout: 30 * time.Second}
	cfg.Listener = testutil.Listen(t)
	c, err := comp2.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, c)
	release := sync.OnceFunc(func() { close(b.delay) })
	t.Cleanup(release) // before comp2 stops, which waits for its forward
	url := "http://" + c.Addr().String() + alarm.CommandPath
	post := func() (int, string) {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"id":"1","body":"b"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Request-Id", "slow-id")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := post(); code != http.StatusGatewayTimeout || !strings.Contains(body, "the forward goes on") {
		t.Fatalf("first copy: %d %s, want 504 saying the forward goes on", code, body)
	}
	if code, body := post(); code != http.StatusGatewayTimeout || !strings.Contains(body, "still forwarding an earlier copy") {
		t.Fatalf("retry while the backend holds the first: %d %s, want 504 still forwarding", code, body)
	}
	release()
	testutil.Eventually(t, 10*time.Second, func() error {
		if code, body := post(); code != http.StatusOK {
			return fmt.Errorf("retry after the backend answered: %d %s", code, body)
		}
		return nil
	})
	if n := b.count(); n != 1 {
		t.Fatalf("the backend got the alarm %d times, want 1", n)
	}
}

// Without the dedup window nothing would remember a late outcome, so the forward ends with
// the caller's wait.
func TestWithoutDedupForwardEndsWithTheWait(t *testing.T) {
	arrived := make(chan struct{}, 1)
	cut := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // net/http notices a closed connection only once the body is read
		arrived <- struct{}{}
		<-r.Context().Done() // never answers; sees the forward cut
		close(cut)
	}))
	t.Cleanup(up.Close)
	cfg := comp2.Config{Upstream: roles.Upstream{URL: up.URL, Timeout: 100 * time.Millisecond}, NoDedup: true, ForwardTimeout: time.Hour}
	cfg.Listener = testutil.Listen(t)
	c, err := comp2.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, c)
	resp, err := http.Post("http://"+c.Addr().String()+alarm.CommandPath, "application/json", strings.NewReader(`{"id":"1","body":"b"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("got %d, want 504", resp.StatusCode)
	}
	<-arrived
	select {
	case <-cut:
	case <-time.After(10 * time.Second):
		t.Fatal("the forward was not cut when the wait ended")
	}
}

// TestOverloadIsShedWith503: with --max-concurrent 1 and the backend holding the first alarm,
// a second alarm is answered 503 with Retry-After at once and not forwarded, counted in the
// request metrics, while /healthz still answers; the first completes when the backend does.
func TestOverloadIsShedWith503(t *testing.T) {
	b := &backend{delay: make(chan struct{})}
	up := httptest.NewServer(b)
	defer up.Close()
	reg := prometheus.NewRegistry()
	cfg := comp2.Config{Upstream: roles.Upstream{URL: up.URL}}
	cfg.Listener = testutil.Listen(t)
	cfg.MaxConcurrent = 1
	cfg.Registry = reg
	c, err := comp2.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, c)
	base := "http://" + c.Addr().String()
	post := func(id string) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodPost, base+alarm.CommandPath, strings.NewReader(`{"id":"0151","body":"Phone: 0151, Branch: 2001, Headnumber: 8023, TriggerTime: 2026-11-26T04:00:00Z"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Request-Id", id)
		return http.DefaultClient.Do(req)
	}
	first := make(chan int, 1)
	go func() {
		resp, err := post("held")
		if err != nil {
			t.Error(err)
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := testutil.Metric(t, reg, "lps_http_requests_in_flight", nil); n != 1 {
			return fmt.Errorf("%v requests in flight", n)
		}
		return nil
	})
	resp, err := post("shed")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second alarm: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	health, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	health.Body.Close()
	if health.StatusCode != 200 {
		t.Errorf("/healthz under overload: %d", health.StatusCode)
	}
	close(b.delay)
	if code := <-first; code != 200 {
		t.Errorf("the alarm in progress got %d", code)
	}
	b.mu.Lock()
	ids := slices.Clone(b.ids)
	b.mu.Unlock()
	if !slices.Equal(ids, []string{"held"}) {
		t.Errorf("the backend received %v, want only the alarm taken", ids)
	}
	if n := testutil.Metric(t, reg, "lps_http_requests_total", map[string]string{"code": "503"}); n != 1 {
		t.Errorf("%v requests counted with 503, want 1", n)
	}
}

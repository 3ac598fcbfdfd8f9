package transport

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lpsdev/lps/internal/testutil"
)

// TestLimitConcurrentSheds: with two requests in progress the third is answered at once with
// 503, Retry-After and a JSON reason; once one finished, the next is served again.
func TestLimitConcurrentSheds(t *testing.T) {
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(2)
	h := LimitConcurrent(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("wait") != "" {
			started.Done()
			<-release
		}
		w.Write([]byte("ok"))
	}), 2)
	srv := httptest.NewServer(h)
	defer srv.Close()

	var held sync.WaitGroup
	for range 2 {
		held.Add(1)
		go func() {
			defer held.Done()
			resp, err := http.Get(srv.URL + "?wait=1")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("a request within the limit got %d", resp.StatusCode)
			}
		}()
	}
	started.Wait()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var body ErrorBody
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || err != nil || body.Status != "error" || body.Reason == "" {
		t.Errorf("beyond the limit: %d, Retry-After %q, body %+v (%v); want 503, 1 and a JSON reason",
			resp.StatusCode, resp.Header.Get("Retry-After"), body, err)
	}
	close(release)
	held.Wait()
	resp, err = http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("after the others finished: %d", resp.StatusCode)
	}

	plain := &plainHandler{}
	if LimitConcurrent(plain, 0) != http.Handler(plain) || LimitConcurrent(plain, -1) != http.Handler(plain) {
		t.Error("a limit of 0 or less wraps the handler")
	}
}

type plainHandler struct{}

func (*plainHandler) ServeHTTP(http.ResponseWriter, *http.Request) {}

// TestClientBoundsConnectionsPerHost: ten concurrent requests to an upstream that holds them
// open at most MaxConnsPerHost connections; the others wait for one and all succeed.
func TestClientBoundsConnectionsPerHost(t *testing.T) {
	var open, most atomic.Int64
	var inHandler atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inHandler.Add(1)
		<-release
		w.Write([]byte("ok"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			n := open.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	defer srv.Close()

	c := &Client{MaxConnsPerHost: 3}
	errs := make(chan error, 10)
	for i := range 10 {
		go func() {
			_, err := c.Post(context.Background(), srv.URL, "text/plain", fmt.Appendf(nil, "%d", i))
			errs <- err
		}()
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := inHandler.Load(); n < 3 {
			return fmt.Errorf("%d requests at the upstream", n)
		}
		return nil
	})
	close(release)
	for range 10 {
		if err := <-errs; err != nil {
			t.Errorf("request: %v", err)
		}
	}
	if m := most.Load(); m > 3 {
		t.Errorf("%d connections open at once, want at most 3", m)
	}
	var zero Client
	zero.init()
	if n := zero.hc.Transport.(*http.Transport).MaxConnsPerHost; n != DefaultMaxConnsPerHost || n <= 0 {
		t.Errorf("a zero Client bounds connections per host at %d, want %d", n, DefaultMaxConnsPerHost)
	}
}

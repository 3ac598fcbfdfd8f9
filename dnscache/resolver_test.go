package dnscache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/internal/testutil"
)

// fakeDNS answers lookups from a table that tests change while the Resolver runs, and counts
// the queries it got.
type fakeDNS struct {
	mu      sync.Mutex
	answers map[string][]string
	errs    map[string]error
	calls   map[string]int
}

func newFakeDNS() *fakeDNS {
	return &fakeDNS{answers: map[string][]string{}, errs: map[string]error{}, calls: map[string]int{}}
}

// set makes host resolve to addrs from now on.
func (f *fakeDNS) set(host string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[host] = addrs
	delete(f.errs, host)
}

// fail makes lookups of host fail with err from now on.
func (f *fakeDNS) fail(host string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs[host] = err
}

func (f *fakeDNS) count(host string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[host]
}

func (f *fakeDNS) LookupHost(ctx context.Context, host string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[host]++
	if err := f.errs[host]; err != nil {
		return nil, err
	}
	if addrs, ok := f.answers[host]; ok {
		return slices.Clone(addrs), nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// fakeClock is a Now hook that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testContext bounds a test, so that a broken Resolver fails it instead of hanging it.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startServer serves an HTTP server on l that answers every request with name, so that a test
// can tell which server answered.
func startServer(t *testing.T, l net.Listener, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, name)
	}))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// listen listens on ip:port (port 0 for any) until the test ends.
func listen(t *testing.T, ip string, port int) (net.Listener, error) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { l.Close() })
	return l, nil
}

// refusingPort returns a port on 127.0.0.1 that nothing listens on.
func refusingPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	return port
}

// get fetches url through c and returns the body.
func get(t *testing.T, ctx context.Context, c *http.Client, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading answer of %s: %v", url, err)
	}
	return string(body)
}

// newClient returns an HTTP client that dials through r and opens a new connection for every
// request, so that every request exercises the resolver.
func newClient(t *testing.T, r *Resolver) *http.Client {
	t.Helper()
	tr := &http.Transport{DialContext: r.DialContext, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func TestDialReusesLookup(t *testing.T) {
	ctx := testContext(t)
	dns := newFakeDNS()
	dns.set("backend.test", "127.0.0.1")
	r := &Resolver{LookupHost: dns.LookupHost, Logger: zap.NewNop()}
	l, err := listen(t, "127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	startServer(t, l, "backend")
	_, port, _ := net.SplitHostPort(l.Addr().String())
	c := newClient(t, r)

	const requests = 10
	for range requests {
		if got := get(t, ctx, c, "http://backend.test:"+port+"/"); got != "backend" {
			t.Fatalf("answer = %q, want %q", got, "backend")
		}
	}
	if n := dns.count("backend.test"); n != 1 {
		t.Errorf("LookupHost called %d times for %d dials, want 1", n, requests)
	}
	want := Stats{Hits: requests - 1, Misses: 1, Lookups: 1}
	if got := r.Stats(); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

func TestLookupExpiry(t *testing.T) {
	for _, tt := range []struct {
		name     string
		ttl      time.Duration
		lifetime time.Duration // how long an answer is reused
	}{
		{"zero means default", 0, DefaultTTL},
		{"explicit", 5 * time.Second, 5 * time.Second},
		{"negative expires at once", -time.Second, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			dns := newFakeDNS()
			dns.set("backend.test", "127.0.0.2")
			clock := newFakeClock()
			r := &Resolver{TTL: tt.ttl, LookupHost: dns.LookupHost, Now: clock.Now}

			lookup := func() {
				t.Helper()
				addrs, err := r.Lookup(ctx, "backend.test")
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(addrs, []string{"127.0.0.2"}) {
					t.Fatalf("Lookup = %v, want [127.0.0.2]", addrs)
				}
			}
			lookup()
			if tt.lifetime > 0 {
				clock.Advance(tt.lifetime - time.Nanosecond)
				lookup()
				if n := dns.count("backend.test"); n != 1 {
					t.Fatalf("LookupHost called %d times before expiry, want 1", n)
				}
				clock.Advance(time.Nanosecond)
			}
			lookup()
			if n := dns.count("backend.test"); n != 2 {
				t.Fatalf("LookupHost called %d times after expiry, want 2", n)
			}
		})
	}
}

func TestLookupErrorsAreNotCached(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
	}{
		{"not found", &net.DNSError{Err: "no such host", Name: "backend.test", IsNotFound: true}},
		{"server failure", &net.DNSError{Err: "server misbehaving", Name: "backend.test", IsTemporary: true}},
		{"other", errors.New("boom")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			dns := newFakeDNS()
			dns.fail("backend.test", tt.err)
			r := &Resolver{LookupHost: dns.LookupHost}

			_, err := r.Lookup(ctx, "backend.test")
			if !errors.Is(err, tt.err) {
				t.Fatalf("Lookup error = %v, want it to wrap %v", err, tt.err)
			}
			if !strings.HasPrefix(err.Error(), "looking up backend.test: ") {
				t.Errorf("Lookup error = %q, want prefix %q", err, "looking up backend.test: ")
			}

			dns.set("backend.test", "127.0.0.2")
			for range 2 {
				addrs, err := r.Lookup(ctx, "backend.test")
				if err != nil || !slices.Equal(addrs, []string{"127.0.0.2"}) {
					t.Fatalf("Lookup after the error = %v, %v; want [127.0.0.2]", addrs, err)
				}
			}
			if n := dns.count("backend.test"); n != 2 {
				t.Errorf("LookupHost called %d times, want 2 (the error, then one answer reused)", n)
			}
			if s := r.Stats(); s.LookupErrors != 1 || s.Hits != 1 {
				t.Errorf("Stats() = %+v, want 1 lookup error and 1 hit", s)
			}
		})
	}
}

func TestExpiredEntryServedWhenDNSFails(t *testing.T) {
	for _, tt := range []struct {
		name      string
		err       error
		wantStale bool
	}{
		{"server failure serves stale", &net.DNSError{Err: "server misbehaving", Name: "backend.test", IsTemporary: true}, true},
		{"timeout serves stale", &net.DNSError{Err: "i/o timeout", Name: "backend.test", IsTimeout: true}, true},
		{"not found fails", &net.DNSError{Err: "no such host", Name: "backend.test", IsNotFound: true}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			dns := newFakeDNS()
			dns.set("backend.test", "127.0.0.2")
			clock := newFakeClock()
			r := &Resolver{LookupHost: dns.LookupHost, Now: clock.Now}
			if _, err := r.Lookup(ctx, "backend.test"); err != nil {
				t.Fatal(err)
			}
			clock.Advance(DefaultTTL)
			dns.fail("backend.test", tt.err)

			addrs, err := r.Lookup(ctx, "backend.test")
			if tt.wantStale {
				if err != nil || !slices.Equal(addrs, []string{"127.0.0.2"}) {
					t.Fatalf("Lookup = %v, %v; want the expired [127.0.0.2]", addrs, err)
				}
			} else if !errors.Is(err, tt.err) {
				t.Fatalf("Lookup error = %v, want %v", err, tt.err)
			}
			// A stale answer stays expired: the next caller asks the server again.
			r.Lookup(ctx, "backend.test")
			if n := dns.count("backend.test"); n != 3 {
				t.Errorf("LookupHost called %d times, want 3", n)
			}
			wantStale := uint64(0)
			if tt.wantStale {
				wantStale = 2
			}
			if s := r.Stats(); s.Stale != wantStale || s.LookupErrors != 2 {
				t.Errorf("Stats() = %+v, want Stale %d and 2 lookup errors", s, wantStale)
			}
		})
	}
}

// TestDialFollowsMovedTarget is the failover case the original cache could not serve: the
// backend restarts on a new IP, and the next request reaches it without disabling the cache.
func TestDialFollowsMovedTarget(t *testing.T) {
	ctx := testContext(t)

	// Both addresses are bound before anything is served, so that the port is known to be
	// free on the second one too. The second listener queues nothing meanwhile: nobody is told
	// its address until the move.
	var oldL, newL net.Listener
	for attempt := 0; newL == nil; attempt++ {
		l, err := listen(t, "127.0.0.2", 0)
		if err != nil {
			t.Skipf("no loopback address 127.0.0.2 on this host: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if newL, err = listen(t, "127.0.0.3", port); err != nil {
			if attempt == 10 {
				t.Skipf("cannot listen on 127.0.0.3:%d: %v", port, err)
			}
			l.Close()
			continue
		}
		oldL = l
	}
	port := strconv.Itoa(oldL.Addr().(*net.TCPAddr).Port)
	url := "http://backend.test:" + port + "/"

	dns := newFakeDNS()
	dns.set("backend.test", "127.0.0.2")
	r := &Resolver{LookupHost: dns.LookupHost, Logger: zap.NewNop()}
	c := newClient(t, r)

	oldSrv := startServer(t, oldL, "old")
	for range 3 {
		if got := get(t, ctx, c, url); got != "old" {
			t.Fatalf("answer before the move = %q, want %q", got, "old")
		}
	}

	// The backend "restarts" on a new IP, and DNS says so.
	oldSrv.Close()
	startServer(t, newL, "new")
	dns.set("backend.test", "127.0.0.3")

	if got := get(t, ctx, c, url); got != "new" {
		t.Fatalf("first answer after the move = %q, want %q", got, "new")
	}
	s := r.Stats()
	if s.Drops != 1 || s.Lookups != 2 {
		t.Fatalf("after the move Stats() = %+v, want 1 drop and 2 lookups", s)
	}
	// The cache is still on: the new address is reused without asking again.
	for range 3 {
		if got := get(t, ctx, c, url); got != "new" {
			t.Fatalf("answer after the move = %q, want %q", got, "new")
		}
	}
	if n := dns.count("backend.test"); n != 2 {
		t.Errorf("LookupHost called %d times, want 2 (once per address)", n)
	}
	if got := r.Stats(); got.Hits != s.Hits+3 || got.Drops != 1 {
		t.Errorf("Stats() = %+v, want 3 more hits than %+v and still 1 drop", got, s)
	}
}

func TestDialFailureAfterFreshLookupDoesNotAskAgain(t *testing.T) {
	ctx := testContext(t)
	dns := newFakeDNS()
	dns.set("backend.test", "127.0.0.1")
	r := &Resolver{LookupHost: dns.LookupHost}
	address := net.JoinHostPort("backend.test", refusingPort(t))

	_, err := r.DialContext(ctx, "tcp", address)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("DialContext error = %v, want connection refused", err)
	}
	if prefix := "dialing " + address + ": "; !strings.HasPrefix(err.Error(), prefix) {
		t.Errorf("DialContext error = %q, want prefix %q", err, prefix)
	}
	// The answer was fresh, so asking again in the same call would be pointless; the entry is
	// still dropped, so the next call does ask.
	if s := r.Stats(); s.Lookups != 1 || s.Drops != 1 {
		t.Errorf("Stats() = %+v, want 1 lookup and 1 drop", s)
	}
	r.DialContext(ctx, "tcp", address)
	if s := r.Stats(); s.Lookups != 2 {
		t.Errorf("after a second dial Stats() = %+v, want 2 lookups", s)
	}
}

func TestDialTriesEveryCachedAddress(t *testing.T) {
	ctx := testContext(t)
	l, err := listen(t, "127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	startServer(t, l, "second")
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	// 127.0.0.4 refuses on that port (nothing listens there), 127.0.0.1 answers.
	dns := newFakeDNS()
	dns.set("backend.test", "127.0.0.4", "127.0.0.1")
	r := &Resolver{LookupHost: dns.LookupHost}
	c := newClient(t, r)

	if got := get(t, ctx, c, "http://backend.test:"+port+"/"); got != "second" {
		t.Fatalf("answer = %q, want %q", got, "second")
	}
	if s := r.Stats(); s.Drops != 1 || s.Lookups != 1 {
		t.Errorf("Stats() = %+v, want 1 drop (the failed first address) and 1 lookup", s)
	}
}

func TestDialCanceledKeepsEntry(t *testing.T) {
	ctx := testContext(t)
	dns := newFakeDNS()
	dns.set("backend.test", "127.0.0.1")
	entered := make(chan struct{}, 1)
	r := &Resolver{
		LookupHost: dns.LookupHost,
		// The connect blocks until the dial's context ends, like a SYN nobody answers.
		Dialer: &net.Dialer{ControlContext: func(ctx context.Context, _, _ string, _ syscall.RawConn) error {
			entered <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}},
	}
	if _, err := r.Lookup(ctx, "backend.test"); err != nil {
		t.Fatal(err)
	}

	dialCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := r.DialContext(dialCtx, "tcp", "backend.test:80")
		errc <- err
	}()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("dial never started")
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("DialContext error = %v, want context.Canceled", err)
		}
	case <-ctx.Done():
		t.Fatal("DialContext did not return after its context ended")
	}
	if s := r.Stats(); s.Drops != 0 || s.Lookups != 1 {
		t.Errorf("Stats() = %+v, want no drop and 1 lookup: a canceled dial says nothing about the address", s)
	}
}

func TestDialErrors(t *testing.T) {
	lookupErr := errors.New("dns down")
	for _, tt := range []struct {
		name      string
		network   string
		address   string
		answer    []string // nil: the lookup fails with lookupErr
		wantIs    error
		wantInMsg string
	}{
		{"missing port", "tcp", "backend.test", []string{"127.0.0.1"}, nil, "dialing backend.test: "},
		{"lookup fails", "tcp", "backend.test:80", nil, lookupErr, "dialing backend.test:80: looking up backend.test: dns down"},
		{"no address of the family", "tcp6", "backend.test:80", []string{"127.0.0.1"}, nil, "dialing backend.test:80: address backend.test: no suitable address found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			dns := newFakeDNS()
			if tt.answer != nil {
				dns.set("backend.test", tt.answer...)
			} else {
				dns.fail("backend.test", lookupErr)
			}
			r := &Resolver{LookupHost: dns.LookupHost}
			conn, err := r.DialContext(ctx, tt.network, tt.address)
			if err == nil {
				conn.Close()
				t.Fatal("DialContext succeeded, want an error")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("DialContext error = %v, want it to wrap %v", err, tt.wantIs)
			}
			if !strings.HasPrefix(err.Error(), tt.wantInMsg) {
				t.Errorf("DialContext error = %q, want prefix %q", err, tt.wantInMsg)
			}
			if s := r.Stats(); s.Drops != 0 {
				t.Errorf("Stats() = %+v, want no drops", s)
			}
		})
	}
}

func TestIPLiteralsBypassCache(t *testing.T) {
	ctx := testContext(t)
	dns := newFakeDNS()
	r := &Resolver{LookupHost: dns.LookupHost}
	for _, host := range []string{"127.0.0.1", "::1", "fe80::1%lo"} {
		addrs, err := r.Lookup(ctx, host)
		if err != nil || !slices.Equal(addrs, []string{host}) {
			t.Errorf("Lookup(%q) = %v, %v; want the literal itself", host, addrs, err)
		}
	}
	l, err := listen(t, "127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	startServer(t, l, "literal")
	if got := get(t, ctx, newClient(t, r), "http://"+l.Addr().String()+"/"); got != "literal" {
		t.Errorf("answer = %q, want %q", got, "literal")
	}
	if s := r.Stats(); s != (Stats{}) {
		t.Errorf("Stats() = %+v, want all zero: literals never touch the cache", s)
	}
}

func TestConcurrentMissesShareOneLookup(t *testing.T) {
	ctx := testContext(t)
	release := make(chan struct{})
	var mu sync.Mutex
	calls := 0
	r := &Resolver{LookupHost: func(ctx context.Context, host string) ([]string, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		select {
		case <-release:
			return []string{"127.0.0.2"}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}}

	const callers = 16
	type result struct {
		addrs []string
		err   error
	}
	results := make(chan result, callers)
	for range callers {
		go func() {
			addrs, err := r.Lookup(ctx, "backend.test")
			results <- result{addrs, err}
		}()
	}
	// Every caller has missed and is waiting (or is the one running the lookup).
	testutil.Eventually(t, 10*time.Second, func() error {
		if s := r.Stats(); s.Misses != callers {
			return fmt.Errorf("%d of %d callers missed", s.Misses, callers)
		}
		return nil
	})
	close(release)
	for range callers {
		select {
		case res := <-results:
			if res.err != nil || !slices.Equal(res.addrs, []string{"127.0.0.2"}) {
				t.Errorf("Lookup = %v, %v; want [127.0.0.2]", res.addrs, res.err)
			}
		case <-ctx.Done():
			t.Fatal("a caller never got an answer")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Errorf("LookupHost called %d times for %d concurrent misses, want 1", calls, callers)
	}
}

// TestAbandonedLookupIsRetried checks that a caller whose context ends does not fail the
// callers that were waiting for its lookup.
func TestAbandonedLookupIsRetried(t *testing.T) {
	ctx := testContext(t)
	started := make(chan struct{}, 1)
	var mu sync.Mutex
	calls := 0
	r := &Resolver{LookupHost: func(ctx context.Context, host string) ([]string, error) {
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if !first {
			return []string{"127.0.0.2"}, nil
		}
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}}

	leaderCtx, cancelLeader := context.WithCancel(ctx)
	leaderErr := make(chan error, 1)
	go func() {
		_, err := r.Lookup(leaderCtx, "backend.test")
		leaderErr <- err
	}()
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("lookup never started")
	}
	waiter := make(chan []string, 1)
	go func() {
		addrs, err := r.Lookup(ctx, "backend.test")
		if err != nil {
			t.Errorf("waiter's Lookup: %v", err)
		}
		waiter <- addrs
	}()
	testutil.Eventually(t, 10*time.Second, func() error {
		if s := r.Stats(); s.Misses != 2 {
			return fmt.Errorf("the waiter has not joined: %d misses, want 2", s.Misses)
		}
		return nil
	})
	cancelLeader()

	for range 2 {
		select {
		case err := <-leaderErr:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("leader's Lookup error = %v, want context.Canceled", err)
			}
		case addrs := <-waiter:
			if !slices.Equal(addrs, []string{"127.0.0.2"}) {
				t.Errorf("waiter's Lookup = %v, want [127.0.0.2]", addrs)
			}
		case <-ctx.Done():
			t.Fatal("a Lookup never returned")
		}
	}
	if s := r.Stats(); s.Lookups != 2 || s.Misses != 2 {
		t.Errorf("Stats() = %+v, want 2 lookups and 2 misses", s)
	}
}

func TestForget(t *testing.T) {
	ctx := testContext(t)
	dns := newFakeDNS()
	dns.set("backend.test", "127.0.0.2")
	r := &Resolver{LookupHost: dns.LookupHost}
	r.Forget("backend.test") // nothing cached: not a drop
	r.Lookup(ctx, "backend.test")
	r.Forget("backend.test")
	r.Lookup(ctx, "backend.test")
	if s := r.Stats(); s.Drops != 1 || s.Lookups != 2 {
		t.Errorf("Stats() = %+v, want 1 drop and 2 lookups", s)
	}
}

func TestCollector(t *testing.T) {
	ctx := testContext(t)
	dns := newFakeDNS()
	dns.set("backend.test", "127.0.0.2")
	r := &Resolver{LookupHost: dns.LookupHost}
	for range 3 {
		r.Lookup(ctx, "backend.test")
	}
	r.Forget("backend.test")

	// The pedantic registry also checks that Collect sends only what Describe announced.
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(r); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"lps_dnscache_hits_total":          2,
		"lps_dnscache_misses_total":        1,
		"lps_dnscache_drops_total":         1,
		"lps_dnscache_lookups_total":       1,
		"lps_dnscache_lookup_errors_total": 0,
		"lps_dnscache_stale_total":         0,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("gathered %v, want %v", got, want)
	}
}

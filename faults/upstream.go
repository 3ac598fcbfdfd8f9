package faults

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// FaultyUpstream is an HTTP reverse proxy on a loopback port in front of the legacy backend
// (rast-sim), for the faults the backend cannot play itself: answering 500 for a while, or
// answering later than its callers wait. Passing, it is transparent; a backend that cannot be
// reached makes it drop the caller's connection, so the caller sees what it would see without
// the proxy (an unreachable upstream), not a 502 made up by the proxy.
type FaultyUpstream struct {
	ln     net.Listener
	srv    *http.Server
	target *url.URL
	done   chan struct{}

	mu     sync.Mutex
	status int           // answer this status without forwarding; 0: forward
	delay  time.Duration // hold the backend's answer this long

	forwarded, failed, delayed atomic.Int64
}

// ListenFaultyUpstream starts a passing proxy on 127.0.0.1 with a free port in front of
// target (http://host:port).
func ListenFaultyUpstream(target string) (*FaultyUpstream, error) {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("invalid upstream %q", target)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for a faulty upstream: %w", err)
	}
	f := &FaultyUpstream{ln: ln, target: u, done: make(chan struct{})}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host
		},
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 512,
			DisableCompression:  true,
		},
		ModifyResponse: f.hold,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// Drop the caller's connection: the caller sees the backend unreachable.
			panic(http.ErrAbortHandler)
		},
	}
	f.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		status := f.status
		f.mu.Unlock()
		if status != 0 {
			f.failed.Add(1)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(status)
			fmt.Fprintf(w, "fault injected: %d %s", status, http.StatusText(status))
			return
		}
		f.forwarded.Add(1)
		rp.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(f.done)
		f.srv.Serve(ln)
	}()
	return f, nil
}

// hold delays the backend's answer while a delay is set; the backend has done the work, its
// caller learns of it late (or, after its timeout, never).
func (f *FaultyUpstream) hold(resp *http.Response) error {
	f.mu.Lock()
	d := f.delay
	f.mu.Unlock()
	if d <= 0 {
		return nil
	}
	f.delayed.Add(1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-resp.Request.Context().Done():
		return resp.Request.Context().Err()
	}
}

// URL is the proxy's base URL (http://127.0.0.1:port).
func (f *FaultyUpstream) URL() string { return "http://" + f.ln.Addr().String() }

// Pass makes the proxy transparent again.
func (f *FaultyUpstream) Pass() { f.set(0, 0) }

// Fail makes the proxy answer status (e.g. 500) to every request without forwarding it, until
// Pass.
func (f *FaultyUpstream) Fail(status int) { f.set(status, 0) }

// Delay makes the proxy forward every request at once and hold the backend's answer for d
// before returning it, until Pass: a backend that is slower than its callers wait.
func (f *FaultyUpstream) Delay(d time.Duration) { f.set(0, d) }

func (f *FaultyUpstream) set(status int, d time.Duration) {
	f.mu.Lock()
	f.status, f.delay = status, d
	f.mu.Unlock()
}

// UpstreamCounts are what a FaultyUpstream did.
type UpstreamCounts struct {
	// Forwarded counts requests passed to the backend, Delayed those whose answer was held,
	// Failed those answered with the injected status.
	Forwarded, Delayed, Failed int64
}

// Counts returns the counters now.
func (f *FaultyUpstream) Counts() UpstreamCounts {
	return UpstreamCounts{Forwarded: f.forwarded.Load(), Delayed: f.delayed.Load(), Failed: f.failed.Load()}
}

// Close stops the proxy, dropping the requests in flight.
func (f *FaultyUpstream) Close() error {
	err := f.srv.Close()
	<-f.done
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

package transport

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// recorder is an upstream that counts the request ids it was sent and answers status.
type recorder struct {
	mu     sync.Mutex
	ids    map[string]int
	status int
	delay  time.Duration
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.ids[req.Header.Get(RequestIDHeader)]++
	status, delay := r.status, r.delay
	r.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	w.WriteHeader(status)
}

func (r *recorder) seen(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id]
}

func (r *recorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.ids {
		n += c
	}
	return n
}

// startRecorders starts n upstreams and returns them with their URLs.
func startRecorders(t *testing.T, n int) ([]*recorder, []string) {
	t.Helper()
	var recs []*recorder
	var urls []string
	for range n {
		r := &recorder{ids: map[string]int{}, status: http.StatusOK}
		u, _ := serve(t, &Server{Handler: r})
		recs = append(recs, r)
		urls = append(urls, u+"/x")
	}
	return recs, urls
}

func idCtx(id string) context.Context { return WithRequestID(context.Background(), id) }

func TestUpstreamsSameIDSameUpstreamAndEvenSpread(t *testing.T) {
	recs, urls := startRecorders(t, 3)
	u := NewUpstreams(&Client{Timeout: 5 * time.Second}, urls, 0, nil)
	const n = 1500
	for i := range n {
		id := fmt.Sprintf("alarm-%d", i)
		for range 2 { // every copy of one alarm
			if _, _, err := u.Post(idCtx(id), "application/json", []byte("{}")); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range n {
		id := fmt.Sprintf("alarm-%d", i)
		got := 0
		for _, r := range recs {
			switch r.seen(id) {
			case 0:
			case 2:
				got++
			default:
				t.Fatalf("%s: copies split over upstreams (%d here)", id, r.seen(id))
			}
		}
		if got != 1 {
			t.Fatalf("%s reached %d upstreams, want 1", id, got)
		}
	}
	for i, r := range recs {
		share := float64(r.total()) / (2 * n)
		if share < 0.28 || share > 0.39 {
			t.Errorf("upstream %d got %.1f%% of the ids, want about a third", i, 100*share)
		}
	}
}

func TestUpstreamsRemovingOneMovesOnlyItsIDs(t *testing.T) {
	urls := []string{"http://a/x", "http://b/x", "http://c/x"}
	all := NewUpstreams(&Client{}, urls, 0, nil)
	two := NewUpstreams(&Client{}, urls[:2], 0, nil)
	moved := 0
	for i := range 1000 {
		id := fmt.Sprintf("id-%d", i)
		first := all.Order(id)[0]
		if first == 2 {
			continue // c's ids must go somewhere
		}
		if two.Order(id)[0] != first {
			moved++
		}
	}
	if moved != 0 {
		t.Fatalf("%d ids of a and b moved when c was removed", moved)
	}
}

func TestUpstreamsFailOverOnlyWhenNotConnected(t *testing.T) {
	recs, urls := startRecorders(t, 2)
	dead := "http://" + refusedAddr(t) + "/x"
	urls = append([]string{dead}, urls...)
	u := NewUpstreams(&Client{Timeout: 5 * time.Second}, urls, time.Minute, nil)
	now := time.Unix(1000, 0)
	u.now = func() time.Time { return now }

	// An id whose first choice is the dead upstream.
	id := ""
	for i := 0; id == ""; i++ {
		if c := fmt.Sprintf("id-%d", i); u.Order(c)[0] == 0 {
			id = c
		}
	}
	second := u.Order(id)[1]
	_, used, err := u.Post(idCtx(id), "application/json", []byte("{}"))
	if err != nil {
		t.Fatalf("fail-over: %v", err)
	}
	if used != urls[second] || recs[second-1].seen(id) != 1 {
		t.Fatalf("answered by %s, want the id's second choice %s", used, urls[second])
	}
	if o := u.Order(id); o[len(o)-1] != 0 {
		t.Fatalf("a refusing upstream is not tried last during its cooldown: order %v", o)
	}
	now = now.Add(2 * time.Minute)
	if o := u.Order(id); o[0] != 0 {
		t.Fatalf("after the cooldown the id's first choice is not tried first again: order %v", o)
	}

	// An answer, even an error, is final: the upstream may have acted on the request.
	for _, r := range recs {
		r.mu.Lock()
		r.status = http.StatusInternalServerError
		r.mu.Unlock()
	}
	id2 := ""
	for i := 0; id2 == ""; i++ {
		if c := fmt.Sprintf("other-%d", i); u.Order(c)[0] != 0 {
			id2 = c
		}
	}
	_, _, err = u.Post(idCtx(id2), "application/json", []byte("{}"))
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusInternalServerError {
		t.Fatalf("500: got %v, want the StatusError", err)
	}
	if n := recs[0].seen(id2) + recs[1].seen(id2); n != 1 {
		t.Fatalf("a 500 was sent on to another upstream: %d requests", n)
	}
}

func TestUpstreamsTimeoutIsNotFailedOver(t *testing.T) {
	recs, urls := startRecorders(t, 2)
	for _, r := range recs {
		r.mu.Lock()
		r.delay = 2 * time.Second
		r.mu.Unlock()
	}
	u := NewUpstreams(&Client{Timeout: 200 * time.Millisecond}, urls, 0, nil)
	_, _, err := u.Post(idCtx("slow"), "application/json", []byte("{}"))
	if !errors.Is(err, ErrUpstreamTimeout) || errors.Is(err, ErrNotConnected) {
		t.Fatalf("got %v, want a timeout that is not ErrNotConnected", err)
	}
	if n := recs[0].seen("slow") + recs[1].seen("slow"); n != 1 {
		t.Fatalf("a timed-out request was sent to %d upstreams, want 1", n)
	}
}

func TestUpstreamsAllRefused(t *testing.T) {
	urls := []string{"http://" + refusedAddr(t) + "/x", "http://" + refusedAddr(t) + "/x"}
	u := NewUpstreams(&Client{Timeout: 5 * time.Second}, urls, 0, nil)
	_, _, err := u.Post(context.Background(), "application/json", []byte("{}"))
	if !errors.Is(err, ErrNotConnected) || !errors.Is(err, ErrUpstreamUnreachable) || UpstreamStatus(err) != http.StatusBadGateway {
		t.Fatalf("got %v (status %d), want unreachable and not connected, 502", err, UpstreamStatus(err))
	}
	if len(u.URLs()) != 2 {
		t.Fatal("URLs changed")
	}
}

func TestUpstreamsWithoutIDMakesOneForEveryAttempt(t *testing.T) {
	recs, urls := startRecorders(t, 1)
	urls = append([]string{"http://" + refusedAddr(t) + "/x"}, urls...)
	u := NewUpstreams(&Client{Timeout: 5 * time.Second}, urls, 0, nil)
	for range 20 {
		if _, _, err := u.Post(context.Background(), "application/json", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	recs[0].mu.Lock()
	defer recs[0].mu.Unlock()
	if len(recs[0].ids) != 20 {
		t.Fatalf("%d distinct ids for 20 requests", len(recs[0].ids))
	}
	for id := range recs[0].ids {
		if id == "" {
			t.Fatal("a request went without an id")
		}
	}
}

func refusedAddr(t *testing.T) string {
	ln := listen(t)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

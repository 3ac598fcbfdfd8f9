// Package dedup makes forwarding an alarm idempotent: component 2 forwards an alarm to the
// legacy backend once, however many copies of it arrive. MQTT QoS 2 is exactly once per hop
// only, so a bridge that crashes between the backend's 2xx and its acknowledgement redelivers
// the alarm, a device resends one whose answer it missed, and without this the backend would
// run it twice.
//
// A copy is the same alarm again: the same Request-Id and the same content (Key). The
// Request-Id alone is not enough: the original Python comp1 forwards the literal header
// "Request-Id: None" when its caller sent none, and a client may send a constant one, so
// keying on the id would take every later alarm for a copy of the first and drop it.
//
// What was forwarded is remembered for a window of time in a Store: in memory (Memory, lost
// with the process), on disk (Bolt, kept across a restart or kill -9 of comp2), or in Redis or
// Valkey (Redis), shared by the comp2 instances that fail over to each other, so that a copy
// that reaches another instance than the first is still recognised. Window runs a forward
// through a store: one forward per key at a time, its success recorded before the caller hears
// of it, its failure forgotten so that a retry runs again.
package dedup

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Defaults of the window and its stores.
const (
	// DefaultTTL is how long a forwarded alarm is remembered: it covers a redelivery after a
	// bridge restart, a device's retries and mqtt2http's retry backoff with room to spare.
	DefaultTTL = 10 * time.Minute
	// SizingRate is the alarm rate a store's default capacity is sized for: the whole window at
	// 5,000 alarms/s (3,000,000 keys for DefaultTTL), beyond what one comp2 forwards.
	SizingRate = 5000
	// DefaultLease is how long a claim in a shared store lasts unless renewed: the holder renews
	// it every third of it while its forward runs, so only a holder that died leaves a claim,
	// and the key is free again this long after.
	DefaultLease = 10 * time.Second
	// DefaultPoll is how often a key that another instance is forwarding is looked at again.
	DefaultPoll = 50 * time.Millisecond
)

// DefaultMax is the capacity that holds ttl's worth of keys at SizingRate.
func DefaultMax(ttl time.Duration) int {
	return max(1, int(ttl.Seconds()*SizingRate))
}

// Key identifies one alarm: a digest of its Request-Id and its content.
type Key [16]byte

// KeyOf returns the key of an alarm with requestID and content (for comp2: the alarm's id and
// body). Each part is length-prefixed, so no two different alarms share their input.
func KeyOf(requestID string, content ...string) Key {
	h := sha256.New()
	var n [8]byte
	for _, s := range append([]string{requestID}, content...) {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	var k Key
	copy(k[:], h.Sum(nil))
	return k
}

// String is the key in hex.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// State is what a store knows of a key when a forward wants to claim it.
type State uint8

const (
	// Claimed: nobody forwarded the alarm within the window; the caller now holds the key and
	// must call Done or Release.
	Claimed State = iota
	// Forwarded: it was forwarded successfully within the window.
	Forwarded
	// Busy: another instance holds the key and is forwarding it now (shared stores only).
	Busy
)

// Store remembers which alarms were forwarded, for a window of time.
type Store interface {
	// Claim takes key for a forward, unless it was forwarded within the window or another
	// instance holds it. A claim lasts until Done or Release; in a shared store at most lease,
	// so that an instance that died mid-forward does not hold the key forever.
	Claim(ctx context.Context, key Key, lease time.Duration) (State, error)
	// Done records that key's alarm was forwarded. When it returns without error the record is
	// kept as the store promises (on disk for Bolt, in Redis for Redis) for the window.
	Done(ctx context.Context, key Key) error
	// Release gives up a claim whose forward failed: a retry may forward again.
	Release(ctx context.Context, key Key) error
	// Close releases the store's resources.
	Close() error
}

// Renewer is a Store whose claims expire (a shared store): Window renews a claim while its
// forward runs.
type Renewer interface {
	// Renew extends this instance's claim of key to lease from now; false when it no longer
	// holds it.
	Renew(ctx context.Context, key Key, lease time.Duration) (bool, error)
}

// ErrStore wraps the errors of a store: the alarm was not forwarded, since it could not be
// told whether that would be a second time.
var ErrStore = errors.New("dedup store unavailable")

// Window runs forwards through a Store. In-process, one forward per key runs at a time; the
// callers that bring the same key meanwhile wait for it and share its outcome.
type Window struct {
	// Store remembers what was forwarded; required.
	Store Store
	// Lease is how long a claim in a shared store lasts without renewal; zero means
	// DefaultLease.
	Lease time.Duration
	// Poll is how often a key another instance holds is looked at again; zero means
	// DefaultPoll.
	Poll time.Duration
	// Logger reports failures to record a forward (the alarm was delivered; a copy may reach
	// the backend again); nil means none.
	Logger *zap.Logger

	mu      sync.Mutex
	running map[Key]*call
}

// call is one forward in progress.
type call struct {
	done chan struct{}
	err  error
}

// Do runs work for key unless its alarm was forwarded within the window (it returns dup=true
// and a nil error without running it) or its forward is running now, here or in another
// instance sharing the store (it waits for that one: here it shares its outcome, dup=true;
// there it looks again every Poll). A failed work is forgotten, so a retry runs again. A
// successful one is recorded before Do returns. When ctx ends while waiting, Do returns ctx's
// error; when the store fails, an error wrapping ErrStore, and work does not run.
func (w *Window) Do(ctx context.Context, key Key, work func() error) (dup bool, err error) {
	w.mu.Lock()
	if w.running == nil {
		w.running = map[Key]*call{}
	}
	if c, ok := w.running[key]; ok {
		w.mu.Unlock()
		select {
		case <-c.done:
			return true, c.err
		case <-ctx.Done():
			return true, ctx.Err()
		}
	}
	c := &call{done: make(chan struct{})}
	w.running[key] = c
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.running, key)
		w.mu.Unlock()
		c.err = err
		close(c.done)
	}()

	for {
		st, err := w.Store.Claim(ctx, key, w.lease())
		if err != nil {
			return false, fmt.Errorf("%w: %w", ErrStore, err)
		}
		switch st {
		case Forwarded:
			return true, nil
		case Claimed:
			return false, w.run(key, work)
		}
		t := time.NewTimer(w.poll())
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return true, ctx.Err()
		}
	}
}

// run runs work under a claim and records its outcome. The record does not depend on the
// caller's context: the outcome is what matters to the next copy.
func (w *Window) run(key Key, work func() error) error {
	if r, ok := w.Store.(Renewer); ok {
		stop := w.renew(r, key)
		defer stop()
	}
	err := work()
	ctx, cancel := context.WithTimeout(context.Background(), w.lease())
	defer cancel()
	if err != nil {
		if rerr := w.Store.Release(ctx, key); rerr != nil && w.Logger != nil {
			w.Logger.Warn("releasing a dedup claim failed; the alarm's retry waits until the claim's lease ends",
				zap.Stringer("key", key), zap.Error(rerr))
		}
		return err
	}
	if derr := w.Store.Done(ctx, key); derr != nil && w.Logger != nil {
		w.Logger.Error("recording a forwarded alarm failed; a copy of it may reach the backend again",
			zap.Stringer("key", key), zap.Error(derr))
	}
	return nil
}

// renew keeps the claim of key alive, renewing it every third of the lease, until stop.
func (w *Window) renew(r Renewer, key Key) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(w.lease() / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), w.lease()/3)
			held, err := r.Renew(ctx, key, w.lease())
			cancel()
			if (err != nil || !held) && w.Logger != nil {
				w.Logger.Warn("renewing a dedup claim failed; if it runs out, a copy of the alarm may be forwarded meanwhile",
					zap.Stringer("key", key), zap.Bool("held", held), zap.Error(err))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func (w *Window) lease() time.Duration {
	if w.Lease > 0 {
		return w.Lease
	}
	return DefaultLease
}

func (w *Window) poll() time.Duration {
	if w.Poll > 0 {
		return w.Poll
	}
	return DefaultPoll
}

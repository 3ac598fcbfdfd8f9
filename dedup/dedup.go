// Package dedup suppresses repeated work by key within a time window. Component 2 uses it to
// make forwarding idempotent by Request-Id: MQTT QoS 2 is exactly once per hop only, so a
// bridge that crashes between the backend's 2xx and its acknowledgement redelivers the alarm,
// and without this the backend would see it twice.
package dedup

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// Defaults of Window.
const (
	// DefaultTTL covers a redelivery after a bridge restart and the retry backoff of mqtt2http
	// with room to spare.
	DefaultTTL = 10 * time.Minute
	// DefaultMax bounds memory: about 100 bytes per entry, so 10 MB at the default. At the
	// original's 300 alarms/s it holds 5.5 minutes of ids; the bound wins over the TTL then.
	DefaultMax = 100_000
)

// Window remembers keys whose work succeeded for TTL, at most Max of them (the oldest are
// forgotten first). The zero value uses the defaults; a Window must not be copied after use.
type Window struct {
	TTL time.Duration
	Max int
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu    sync.Mutex
	m     map[string]*entry
	order list.List // of *entry that completed, oldest first
}

type entry struct {
	key     string
	done    chan struct{} // closed when the running work finished
	err     error         // its result
	expires time.Time
	elem    *list.Element // in order, once completed successfully
}

func (w *Window) init() {
	if w.m == nil {
		w.m = map[string]*entry{}
	}
	if w.TTL == 0 {
		w.TTL = DefaultTTL
	}
	if w.Max == 0 {
		w.Max = DefaultMax
	}
	if w.Now == nil {
		w.Now = time.Now
	}
}

// Do runs work for key unless work for key succeeded within the window (then it returns
// dup=true and a nil error without running it) or is running now (then it waits for that one
// and shares its outcome, dup=true). A failed work is forgotten, so a retry runs again. When
// ctx ends while waiting for another caller's work, Do returns ctx's error.
func (w *Window) Do(ctx context.Context, key string, work func() error) (dup bool, err error) {
	w.mu.Lock()
	w.init()
	now := w.Now()
	w.evict(now)
	if e, ok := w.m[key]; ok {
		w.mu.Unlock()
		select {
		case <-e.done:
			return true, e.err
		case <-ctx.Done():
			return true, ctx.Err()
		}
	}
	e := &entry{key: key, done: make(chan struct{})}
	w.m[key] = e
	w.mu.Unlock()

	err = work()

	w.mu.Lock()
	e.err = err
	if err != nil {
		delete(w.m, key)
	} else {
		e.expires = w.Now().Add(w.TTL)
		e.elem = w.order.PushBack(e)
		w.evict(w.Now())
	}
	w.mu.Unlock()
	close(e.done)
	return false, err
}

// Len is the number of keys remembered, running ones included.
func (w *Window) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.m)
}

// evict forgets completed keys that expired, and the oldest beyond Max. Called with w.mu held.
func (w *Window) evict(now time.Time) {
	for front := w.order.Front(); front != nil; front = w.order.Front() {
		e := front.Value.(*entry)
		if now.Before(e.expires) && w.order.Len() <= w.Max {
			return
		}
		w.order.Remove(front)
		delete(w.m, e.key)
	}
}

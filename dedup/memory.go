package dedup

import (
	"context"
	"math"
	"sync"
	"time"
)

// Memory is a Store in the process's memory: lost when comp2 stops. It keeps a key for TTL,
// and at most Max keys (the oldest go first; a window that overflows is counted in Evicted).
//
// A key costs one map entry, about 60 bytes of heap (about 90 with an eviction ring beside the map,
// as it had before): at 1,000 alarms/s the default window is 600,000 keys, and the heap is what
// decides comp2's memory. Expired keys are deleted by a sweep of the map every TTL/16, from
// Claim or Done; until then Claim already treats them as absent, and Len counts them.
// The zero value is ready to use with the defaults.
type Memory struct {
	// TTL is the window; zero means DefaultTTL.
	TTL time.Duration
	// Max bounds the keys kept; zero means DefaultMax(TTL).
	Max int
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu        sync.Mutex
	m         map[Key]int64 // key -> expiry (unix nanoseconds)
	nextSweep int64         // when the next sweep for expired keys is due
	evicted   int
}

var _ Store = (*Memory)(nil)

// memSweeps is how many sweeps for expired keys a window gets: a key is gone from the map at
// most TTL/memSweeps after it expired.
const memSweeps = 16

func (s *Memory) init() {
	if s.m == nil {
		s.m = map[Key]int64{}
	}
	if s.TTL == 0 {
		s.TTL = DefaultTTL
	}
	if s.Max == 0 {
		s.Max = DefaultMax(s.TTL)
	}
	if s.Now == nil {
		s.Now = time.Now
	}
}

// Claim reports Forwarded for a key recorded within the window, else Claimed. It holds no
// claim: Window keeps forwards of one key apart within a process, and nothing is shared.
func (s *Memory) Claim(_ context.Context, key Key, _ time.Duration) (State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	now := s.Now().UnixNano()
	s.sweep(now)
	if exp, ok := s.m[key]; ok && now < exp {
		return Forwarded, nil
	}
	return Claimed, nil
}

// Done records key for the window.
func (s *Memory) Done(_ context.Context, key Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	now := s.Now().UnixNano()
	s.m[key] = now + int64(s.TTL)
	s.sweep(now)
	if len(s.m) > s.Max {
		s.sweepAll(now) // expired keys go before any is evicted
		if over := len(s.m) - s.Max; over > 0 {
			// Room for a sixteenth of the window at once, so that an overflowing window
			// does not scan the map for every alarm.
			s.evictOldest(over + s.Max/memSweeps)
		}
	}
	return nil
}

// Release does nothing: Memory holds no claims.
func (s *Memory) Release(context.Context, Key) error { return nil }

// Close does nothing.
func (s *Memory) Close() error { return nil }

// Len is the number of keys kept, those expired since the last sweep included.
func (s *Memory) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// Evicted counts keys forgotten before their time because the window held Max.
func (s *Memory) Evicted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.evicted
}

// sweep deletes the expired keys when a sweep is due. s.mu must be held.
func (s *Memory) sweep(now int64) {
	if now >= s.nextSweep {
		s.sweepAll(now)
	}
}

// sweepAll deletes the expired keys. s.mu must be held.
func (s *Memory) sweepAll(now int64) {
	for k, exp := range s.m {
		if exp <= now {
			delete(s.m, k)
		}
	}
	s.nextSweep = now + int64(s.TTL)/memSweeps
}

// evictOldest forgets n of the keys that expire first (all of them when n is the map's size or
// more). Every key expires TTL after it was recorded, so expiry is the order of recording. Two
// passes and no allocation: a histogram of the expiries over evictBuckets buckets finds the
// bucket where n is reached; the buckets before it go whole, and from it as many keys as are
// still missing, in no particular order among themselves (they were recorded within a bucket's
// width of each other: a window of 10 minutes has buckets of 0.6 s). s.mu must be held.
func (s *Memory) evictOldest(n int) {
	if n <= 0 {
		return
	}
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for _, exp := range s.m {
		lo, hi = min(lo, exp), max(hi, exp)
	}
	const evictBuckets = 1024
	width := (hi-lo)/evictBuckets + 1
	var counts [evictBuckets]int
	for _, exp := range s.m {
		counts[(exp-lo)/width]++
	}
	below, need := hi+1, 0 // keys with exp < below go; need more from [below, below+width)
	seen := 0
	for i, c := range counts {
		if seen+c >= n {
			below, need = lo+int64(i)*width, n-seen
			break
		}
		seen += c
	}
	for k, exp := range s.m {
		if exp < below || (exp < below+width && need > 0) {
			if exp >= below {
				need--
			}
			delete(s.m, k)
			s.evicted++
		}
	}
}

package dedup

import (
	"context"
	"sync"
	"time"
)

// Memory is a Store in the process's memory: lost when comp2 stops. It keeps a key for TTL,
// and at most Max keys (the oldest go first; a window that overflows is counted in Evicted).
// A key costs about 60 bytes: 16 in a map entry with its expiry, 24 in the eviction ring.
// The zero value is ready to use with the defaults.
type Memory struct {
	// TTL is the window; zero means DefaultTTL.
	TTL time.Duration
	// Max bounds the keys kept; zero means DefaultMax(TTL).
	Max int
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	m       map[Key]int64 // key -> expiry (unix nanoseconds)
	ring    []memEntry    // keys in the order recorded, from head on
	head    int
	evicted int
}

// memEntry is one record, in the order recorded: with a fixed TTL, also the order of expiry.
type memEntry struct {
	key Key
	exp int64
}

var _ Store = (*Memory)(nil)

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
	s.evict(now)
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
	exp := now + int64(s.TTL)
	s.m[key] = exp
	s.ring = append(s.ring, memEntry{key, exp})
	s.evict(now)
	return nil
}

// Release does nothing: Memory holds no claims.
func (s *Memory) Release(context.Context, Key) error { return nil }

// Close does nothing.
func (s *Memory) Close() error { return nil }

// Len is the number of keys kept.
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

// evict forgets expired keys, and the oldest beyond Max. s.mu must be held.
func (s *Memory) evict(now int64) {
	for s.head < len(s.ring) {
		e := s.ring[s.head]
		expired := e.exp <= now
		if !expired && len(s.ring)-s.head <= s.Max {
			break
		}
		if !expired {
			s.evicted++
		}
		s.ring[s.head] = memEntry{}
		s.head++
		if s.m[e.key] == e.exp { // not recorded again since
			delete(s.m, e.key)
		}
	}
	// Reclaim the ring's consumed front once it is half of the slice.
	if s.head > 1024 && s.head > len(s.ring)/2 {
		s.ring = append([]memEntry(nil), s.ring[s.head:]...)
		s.head = 0
	}
}

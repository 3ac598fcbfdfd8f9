package dedup

import (
	"context"
	"encoding/binary"
	"math/bits"
	"slices"
	"sync"
	"time"
)

// Memory is a Store in the process's memory: lost when comp2 stops. It keeps a key for TTL,
// and at most Max keys (the oldest go first; a window that overflows is counted in Evicted).
// The zero value is ready to use with the defaults.
//
// The heap is what decides comp2's memory: at 1,000 alarms/s the default window is 600,000
// keys. So the window is cut into generations of TTL/memSweeps by the time a key was recorded.
// Only the current one is a map; a generation that ends is frozen into a sorted array of
// 20-byte records (the key and when it was recorded within its generation) with a byte of
// index: 24 bytes of heap per key with the current generation's map, against 54 to 67 for one
// map of all keys (BenchmarkStoreRecord). A generation whose every key has expired is dropped
// whole, without a sweep. A lookup asks the map and then each frozen
// generation, newest first, through an index of its keys' leading bits.
type Memory struct {
	// TTL is the window; zero means DefaultTTL.
	TTL time.Duration
	// Max bounds the keys kept; zero means DefaultMax(TTL).
	Max int
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu       sync.Mutex
	width    int64          // a generation's length (ns), TTL/memSweeps
	unit     int64          // the resolution (ns) of a record's time within its generation
	cur      map[Key]uint32 // the current generation: key -> (recorded-curStart)/unit
	curStart int64          // unix ns
	frozen   []*generation  // the ended generations, oldest first
	n        int            // keys kept: in cur and frozen, expired ones not yet dropped included
	evicted  int
}

var _ Store = (*Memory)(nil)

// memSweeps is how many generations a window spans: a key is gone from memory at most
// TTL/memSweeps after it expired.
const memSweeps = 16

// generation is an ended generation: its records sorted by key, and where in them each value of
// the keys' leading idxBits bits begins.
type generation struct {
	start   int64
	recs    []record
	idxBits uint
	idx     []uint32 // len 1<<idxBits + 1: recs[idx[p]:idx[p+1]] have the prefix p
}

// record is one key of a frozen generation; off is its time within the generation in units.
type record struct {
	key Key
	off uint32
}

func (s *Memory) init() {
	if s.cur != nil {
		return
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
	s.width = max(1, int64(s.TTL)/memSweeps)
	// A record's time within its generation fits in 32 bits at this resolution: 1 ns for
	// windows up to about a minute, 9 ns for the default 10 minutes.
	s.unit = s.width>>32 + 1
	s.cur = map[Key]uint32{}
	s.curStart = s.genStart(s.Now().UnixNano())
}

// genStart is the start of the generation that holds time t.
func (s *Memory) genStart(t int64) int64 {
	r := t % s.width
	if r < 0 {
		r += s.width
	}
	return t - r
}

// Claim reports Forwarded for a key recorded within the window, else Claimed. It holds no
// claim: Window keeps forwards of one key apart within a process, and nothing is shared.
func (s *Memory) Claim(_ context.Context, key Key, _ time.Duration) (State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	now := s.Now().UnixNano()
	s.advance(now)
	if exp, ok := s.expiry(key); ok && now < exp {
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
	s.advance(now)
	var off uint32
	if now > s.curStart { // a clock set back records at the generation's start
		off = uint32((now - s.curStart) / s.unit)
	}
	if _, ok := s.cur[key]; !ok {
		s.n++
	}
	s.cur[key] = off
	if s.n > s.Max {
		// Room for a sixteenth of the window at once, so that an overflowing window does
		// not sort a generation for every alarm.
		s.evictOldest(s.n - s.Max + s.Max/memSweeps)
	}
	return nil
}

// Release does nothing: Memory holds no claims.
func (s *Memory) Release(context.Context, Key) error { return nil }

// Close does nothing.
func (s *Memory) Close() error { return nil }

// Len is the number of keys kept, those expired but not yet dropped with their generation
// included (and a key recorded again after it expired counts twice until then).
func (s *Memory) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Evicted counts keys forgotten before their time because the window held Max.
func (s *Memory) Evicted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.evicted
}

// expiry is when key's newest record expires. s.mu must be held.
func (s *Memory) expiry(key Key) (int64, bool) {
	ttl := int64(s.TTL)
	if off, ok := s.cur[key]; ok {
		return s.curStart + int64(off)*s.unit + ttl, true
	}
	for i := len(s.frozen) - 1; i >= 0; i-- {
		g := s.frozen[i]
		if off, ok := g.find(key); ok {
			return g.start + int64(off)*s.unit + ttl, true
		}
	}
	return 0, false
}

// advance ends the current generation when now is past it, and drops the generations whose
// every key has expired. s.mu must be held.
func (s *Memory) advance(now int64) {
	if now >= s.curStart+s.width {
		if len(s.cur) > 0 {
			s.frozen = append(s.frozen, freeze(s.curStart, s.cur))
		}
		// The next generation will hold about as many keys as this one did.
		s.cur = make(map[Key]uint32, len(s.cur))
		s.curStart = s.genStart(now)
	}
	drop := 0
	for _, g := range s.frozen {
		if g.start+s.width+int64(s.TTL) > now {
			break
		}
		s.n -= len(g.recs)
		drop++
	}
	s.dropFrozen(drop)
}

// dropFrozen forgets the k oldest frozen generations.
func (s *Memory) dropFrozen(k int) {
	s.frozen = slices.Delete(s.frozen, 0, k) // it clears the slots it frees
}

// evictOldest forgets the n keys recorded first: whole generations while they are no more than
// what is left to forget, then from the next one (frozen, or the map) the oldest records. Keys
// recorded at the same time go in no particular order among themselves. s.mu must be held.
func (s *Memory) evictOldest(n int) {
	n = min(n, s.n)
	s.n -= n
	s.evicted += n
	drop := 0
	for _, g := range s.frozen {
		if n == 0 {
			break
		}
		if len(g.recs) <= n {
			n -= len(g.recs)
			drop++
			continue
		}
		offs := make([]uint32, len(g.recs))
		for i, r := range g.recs {
			offs[i] = r.off
		}
		keep := keepNewest(offs, n)
		recs := make([]record, 0, len(g.recs)-n)
		for _, r := range g.recs {
			if keep(r.off) {
				recs = append(recs, r)
			}
		}
		*g = *index(g.start, recs)
		n = 0
	}
	s.dropFrozen(drop)
	if n == 0 {
		return
	}
	offs := make([]uint32, 0, len(s.cur))
	for _, off := range s.cur {
		offs = append(offs, off)
	}
	keep := keepNewest(offs, n)
	for k, off := range s.cur {
		if !keep(off) {
			delete(s.cur, k)
		}
	}
}

// keepNewest returns a filter that, applied once to each of offs (in any order), rejects
// exactly n of them, none newer than any it keeps. It sorts offs.
func keepNewest(offs []uint32, n int) func(uint32) bool {
	slices.Sort(offs)
	cut := offs[n-1]                      // the n oldest are <= cut
	ties := n - (slices.Index(offs, cut)) // of the records at cut, how many go
	return func(off uint32) bool {
		switch {
		case off < cut:
			return false
		case off == cut && ties > 0:
			ties--
			return false
		}
		return true
	}
}

// freeze turns a generation's map into its frozen form.
func freeze(start int64, m map[Key]uint32) *generation {
	recs := make([]record, 0, len(m))
	for k, off := range m {
		recs = append(recs, record{k, off})
	}
	slices.SortFunc(recs, func(a, b record) int { return compareKeys(&a.key, &b.key) })
	return index(start, recs)
}

// index builds the prefix index of recs, sorted by key: about 4 records per prefix, 1 byte of
// index per key.
func index(start int64, recs []record) *generation {
	g := &generation{start: start, recs: recs, idxBits: uint(min(16, bits.Len(uint(len(recs)/4))))}
	g.idx = make([]uint32, 1<<g.idxBits+1)
	p := 0
	for i, r := range recs {
		for q := prefix(&r.key, g.idxBits); p <= q; p++ {
			g.idx[p] = uint32(i)
		}
	}
	for ; p < len(g.idx); p++ {
		g.idx[p] = uint32(len(recs))
	}
	return g
}

// find looks key up among the few records that share its prefix.
func (g *generation) find(key Key) (uint32, bool) {
	p := prefix(&key, g.idxBits)
	for _, r := range g.recs[g.idx[p]:g.idx[p+1]] {
		if r.key == key {
			return r.off, true
		}
	}
	return 0, false
}

// prefix is key's leading b bits (b <= 16).
func prefix(k *Key, b uint) int {
	return int(binary.BigEndian.Uint16(k[:2]) >> (16 - b))
}

func compareKeys(a, b *Key) int {
	for i := 0; i < len(a); i += 8 {
		x, y := binary.BigEndian.Uint64(a[i:]), binary.BigEndian.Uint64(b[i:])
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

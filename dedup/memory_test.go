package dedup

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestMemoryMatchesAModel drives Memory through hours of simulated time (bursts, quiet spells
// longer than the window, keys recorded again) and checks every answer against a plain map of
// exact expiries: a key is Forwarded exactly until TTL after its last record, across the
// generations it was frozen into. Len counts at least the live keys and no key recorded more than
// a window and a generation ago.
func TestMemoryMatchesAModel(t *testing.T) {
	ctx := context.Background()
	for _, ttl := range []time.Duration{DefaultTTL, 1500 * time.Millisecond} {
		t.Run(ttl.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(ttl)))
			c := &clock{now: time.Unix(1e9, 0)}
			s := &Memory{TTL: ttl, Now: c.Now}
			expiry := map[Key]time.Time{} // the model
			var keys []Key
			var records []time.Time // every Done, in order
			step := ttl / 3000      // about 3,000 alarms per window
			for op := range 40_000 {
				switch r := rng.IntN(1000); {
				case r == 0: // a quiet spell longer than the window
					c.Add(ttl + time.Duration(rng.Int64N(int64(ttl))))
				case r < 5: // a pause within it
					c.Add(time.Duration(rng.Int64N(int64(ttl / 2))))
				default:
					c.Add(time.Duration(rng.Int64N(int64(2 * step))))
				}
				now := c.Now()
				var k Key
				if len(keys) > 0 && rng.IntN(4) == 0 {
					k = keys[rng.IntN(len(keys))] // an alarm seen before
				} else {
					k = KeyOf(fmt.Sprint(op))
					keys = append(keys, k)
				}
				st, err := s.Claim(ctx, k, 0)
				if err != nil {
					t.Fatal(err)
				}
				if want := now.Before(expiry[k]); (st == Forwarded) != want {
					t.Fatalf("op %d at +%s: %v, model says forwarded=%v (expiry +%s)", op, now.Sub(time.Unix(1e9, 0)), st, want, expiry[k].Sub(time.Unix(1e9, 0)))
				}
				if st == Claimed && rng.IntN(8) > 0 { // most forwards succeed
					if err := s.Done(ctx, k); err != nil {
						t.Fatal(err)
					}
					expiry[k] = now.Add(ttl)
					records = append(records, now)
				}
				if op%500 == 0 {
					live, recent := 0, 0
					for _, e := range expiry {
						if now.Before(e) {
							live++
						}
					}
					for _, r := range records {
						if now.Sub(r) < ttl+ttl/memSweeps {
							recent++
						}
					}
					if n := s.Len(); n < live || n > recent {
						t.Fatalf("op %d: Len %d, want between %d live keys and %d recorded within a window and a generation", op, n, live, recent)
					}
				}
			}
			if s.Evicted() != 0 {
				t.Errorf("%d keys evicted below Max", s.Evicted())
			}
		})
	}
}

// TestMemoryOverflowEvictsInRecordOrder: a window over Max across many generations forgets
// exactly the keys recorded first, whole generations and part of one, frozen or current, and
// counts them.
func TestMemoryOverflowEvictsInRecordOrder(t *testing.T) {
	ctx := context.Background()
	const max, total = 1000, 5000
	c := &clock{now: time.Unix(1e9, 0)}
	s := &Memory{TTL: time.Minute, Max: max, Now: c.Now}
	evicted := 0 // the model: keys 0 .. evicted-1 are gone
	for i := range total {
		if err := s.Done(ctx, KeyOf(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		c.Add(7 * time.Millisecond) // 35 s in all: nothing expires, about 10 generations
		if kept := i + 1 - evicted; kept > max {
			evicted += kept - max + max/memSweeps
		}
		if s.Len() != i+1-evicted || s.Evicted() != evicted {
			t.Fatalf("after %d records: Len %d evicted %d, model %d and %d", i+1, s.Len(), s.Evicted(), i+1-evicted, evicted)
		}
	}
	for i := range total {
		st, _ := s.Claim(ctx, KeyOf(fmt.Sprint(i)), 0)
		if want := i >= evicted; (st == Forwarded) != want {
			t.Fatalf("key %d with the first %d evicted: %v", i, evicted, st)
		}
	}
}

// TestMemoryClockSetBack: a key recorded after the wall clock went back is kept (from the
// generation's start) and still forgotten a window later, not taken for one recorded in the far
// future.
func TestMemoryClockSetBack(t *testing.T) {
	ctx := context.Background()
	c := &clock{now: time.Unix(1e9, 0)}
	s := &Memory{TTL: time.Minute, Now: c.Now}
	a, b := KeyOf("a"), KeyOf("b")
	s.Done(ctx, a)
	c.Add(-time.Hour)
	s.Done(ctx, b)
	if st, _ := s.Claim(ctx, b, 0); st != Forwarded {
		t.Fatalf("the key recorded after the clock went back: %v", st)
	}
	// b counts as recorded at the start of the generation that was current.
	expires := time.Unix(0, s.curStart).Add(time.Minute)
	c.Add(expires.Sub(c.Now()) - 1)
	if st, _ := s.Claim(ctx, b, 0); st != Forwarded {
		t.Fatalf("b just before a window from its generation's start: %v", st)
	}
	c.Add(1)
	if st, _ := s.Claim(ctx, b, 0); st != Claimed {
		t.Fatalf("b a window after its generation's start: %v", st)
	}
	c.Add(time.Minute / memSweeps)
	for _, k := range []Key{a, b} {
		if st, _ := s.Claim(ctx, k, 0); st != Claimed {
			t.Errorf("key %s a window later: %v", k, st)
		}
	}
	if s.Len() != 0 {
		t.Errorf("%d keys kept a window later", s.Len())
	}
}

package dedup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/lpsdev/lps/internal/testutil"
)

// clock is a settable time for the stores that take one.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// storeCase is one Store under test; expire makes what was recorded older than the window.
type storeCase struct {
	name   string
	open   func(t *testing.T, ttl time.Duration) (Store, func())
	shared bool
}

func stores() []storeCase {
	return []storeCase{
		{name: "memory", open: func(t *testing.T, ttl time.Duration) (Store, func()) {
			c := &clock{now: time.Unix(1e9, 0)}
			return &Memory{TTL: ttl, Now: c.Now}, func() { c.Add(ttl) }
		}},
		{name: "bolt", open: func(t *testing.T, ttl time.Duration) (Store, func()) {
			s, err := OpenBolt(t.TempDir(), ttl)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			c := &clock{now: time.Now()}
			s.now = c.Now
			return s, func() { c.Add(ttl) }
		}},
		{name: "redis", shared: true, open: func(t *testing.T, ttl time.Duration) (Store, func()) {
			r := testutil.StartRedis(t)
			s := openRedis(t, r.URL, ttl)
			return s, func() {
				// Redis keeps time itself: wait until the record is gone.
				testutil.Eventually(t, 10*ttl+5*time.Second, func() error {
					n, err := redis.Strings(s.command(context.Background(), "KEYS", RedisPrefix+"*"))
					if err != nil || len(n) > 0 {
						return fmt.Errorf("%d keys left (%v)", len(n), err)
					}
					return nil
				})
			}
		}},
	}
}

func openRedis(t *testing.T, url string, ttl time.Duration) *Redis {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := NewRedis(url, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestKeyIsRequestIDAndContent(t *testing.T) {
	a := KeyOf("r-1", "0151", "Phone: 0151")
	for _, other := range []Key{
		KeyOf("r-2", "0151", "Phone: 0151"),
		KeyOf("r-1", "0152", "Phone: 0151"),
		KeyOf("r-1", "0151", "Phone: 0152"),
		KeyOf("r-1", "0151Phone: 0151"), // the parts are length-prefixed
		KeyOf("r-10151", "Phone: 0151"),
	} {
		if other == a {
			t.Errorf("%s equals the key of a different alarm", other)
		}
	}
	if KeyOf("r-1", "0151", "Phone: 0151") != a {
		t.Error("the same alarm has two keys")
	}
}

func TestWindow(t *testing.T) {
	ctx := context.Background()
	for _, sc := range stores() {
		t.Run(sc.name, func(t *testing.T) {
			t.Run("repeat suppressed within the window, run again after it", func(t *testing.T) {
				ttl := time.Minute
				if sc.shared {
					ttl = 300 * time.Millisecond // real time in Redis
				}
				store, expire := sc.open(t, ttl)
				w := &Window{Store: store}
				var runs int
				work := func() error { runs++; return nil }
				k := KeyOf("r-1", "a")
				if dup, err := w.Do(ctx, k, work); dup || err != nil {
					t.Fatalf("first: dup %v err %v", dup, err)
				}
				if dup, err := w.Do(ctx, k, work); !dup || err != nil || runs != 1 {
					t.Fatalf("repeat: dup %v err %v runs %d", dup, err, runs)
				}
				// The same Request-Id with other content is another alarm (the original comp1
				// sends "None" for every alarm).
				if dup, err := w.Do(ctx, KeyOf("r-1", "b"), work); dup || err != nil || runs != 2 {
					t.Fatalf("other alarm, same id: dup %v err %v runs %d", dup, err, runs)
				}
				expire()
				if dup, _ := w.Do(ctx, k, work); dup || runs != 3 {
					t.Fatalf("after the window: dup %v runs %d", dup, runs)
				}
			})
			t.Run("failure forgotten", func(t *testing.T) {
				store, _ := sc.open(t, time.Minute)
				w := &Window{Store: store}
				boom := errors.New("boom")
				k := KeyOf("r-1", "a")
				if _, err := w.Do(ctx, k, func() error { return boom }); err != boom {
					t.Fatal(err)
				}
				ran := false
				if dup, err := w.Do(ctx, k, func() error { ran = true; return nil }); dup || err != nil || !ran {
					t.Fatalf("retry after failure: dup %v err %v ran %v", dup, err, ran)
				}
			})
			t.Run("concurrent copies run once", func(t *testing.T) {
				store, _ := sc.open(t, time.Minute)
				w := &Window{Store: store}
				var runs atomic.Int32
				release := make(chan struct{})
				var wg sync.WaitGroup
				var dups atomic.Int32
				for range 10 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						dup, err := w.Do(ctx, KeyOf("r-1", "a"), func() error { runs.Add(1); <-release; return nil })
						if err != nil {
							t.Error(err)
						}
						if dup {
							dups.Add(1)
						}
					}()
				}
				testutil.Eventually(t, 5*time.Second, func() error {
					if runs.Load() != 1 {
						return fmt.Errorf("%d runs", runs.Load())
					}
					return nil
				})
				close(release)
				wg.Wait()
				if runs.Load() != 1 || dups.Load() != 9 {
					t.Errorf("runs %d dups %d, want 1 and 9", runs.Load(), dups.Load())
				}
			})
		})
	}
}

// TestSharedWindowAcrossInstances: two comp2 instances with one Redis. A copy that reaches the
// second while the first forwards waits for the outcome; one that comes after it is
// recognised; a claim of an instance that died runs out with its lease.
func TestSharedWindowAcrossInstances(t *testing.T) {
	ctx := context.Background()
	r := testutil.StartRedis(t)
	a := &Window{Store: openRedis(t, r.URL, time.Minute), Poll: 10 * time.Millisecond}
	b := &Window{Store: openRedis(t, r.URL, time.Minute), Poll: 10 * time.Millisecond}
	k := KeyOf("r-1", "a")
	started, release := make(chan struct{}), make(chan struct{})
	go a.Do(ctx, k, func() error { close(started); <-release; return nil })
	<-started
	bDone := make(chan bool, 1)
	go func() {
		dup, err := b.Do(ctx, k, func() error { t.Error("the second instance forwarded a copy"); return nil })
		if err != nil {
			t.Error(err)
		}
		bDone <- dup
	}()
	select {
	case <-bDone:
		t.Fatal("the second instance did not wait for the first's forward")
	case <-time.After(100 * time.Millisecond): // it must still be waiting: it polls every 10 ms
	}
	close(release)
	if dup := <-bDone; !dup {
		t.Error("the copy at the second instance was not a duplicate")
	}

	// An instance that claimed and died: its claim lasts the lease, then the key is free.
	dead := openRedis(t, r.URL, time.Minute)
	k2 := KeyOf("r-2", "a")
	if st, err := dead.Claim(ctx, k2, 200*time.Millisecond); err != nil || st != Claimed {
		t.Fatalf("claim: %v %v", st, err)
	}
	if st, _ := b.Store.Claim(ctx, k2, time.Minute); st != Busy {
		t.Fatalf("claimed elsewhere: %v, want Busy", st)
	}
	if err := b.Store.Release(ctx, k2); err != nil {
		t.Fatal(err)
	}
	if st, _ := a.Store.Claim(ctx, k2, time.Minute); st != Busy {
		t.Fatalf("another instance's release freed the key (%v)", st)
	}
	ran := false
	if dup, err := b.Do(ctx, k2, func() error { ran = true; return nil }); dup || err != nil || !ran {
		t.Fatalf("after the dead claim's lease: dup %v err %v ran %v", dup, err, ran)
	}
}

func TestStoreDownIsAnErrorNotAForward(t *testing.T) {
	r := testutil.StartRedis(t)
	w := &Window{Store: openRedis(t, r.URL, time.Minute)}
	r.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ran := false
	_, err := w.Do(ctx, KeyOf("r-1", "a"), func() error { ran = true; return nil })
	if !errors.Is(err, ErrStore) || ran {
		t.Fatalf("with Redis down: err %v ran %v; want ErrStore and no forward", err, ran)
	}
	r.Start()
	if dup, err := w.Do(ctx, KeyOf("r-1", "a"), func() error { ran = true; return nil }); dup || err != nil || !ran {
		t.Fatalf("with Redis back: dup %v err %v ran %v", dup, err, ran)
	}
}

func TestMemoryBoundedByTimeAndMax(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	s := &Memory{TTL: time.Minute, Max: 3, Now: c.Now}
	ctx := context.Background()
	for i := range 5 {
		s.Done(ctx, KeyOf(fmt.Sprint(i)))
		c.Add(time.Second)
	}
	if s.Len() != 3 || s.Evicted() != 2 {
		t.Fatalf("len %d evicted %d, want 3 and 2", s.Len(), s.Evicted())
	}
	if st, _ := s.Claim(ctx, KeyOf("0"), 0); st != Claimed {
		t.Error("the oldest key beyond Max is still kept")
	}
	if st, _ := s.Claim(ctx, KeyOf("4"), 0); st != Forwarded {
		t.Error("the newest key is gone")
	}
	c.Add(time.Minute)
	if st, _ := s.Claim(ctx, KeyOf("4"), 0); st != Claimed || s.Len() != 0 {
		t.Errorf("after the window: %v, %d kept", st, s.Len())
	}
	if DefaultMax(DefaultTTL) != 3_000_000 {
		t.Errorf("default capacity %d for %s, want 3,000,000", DefaultMax(DefaultTTL), DefaultTTL)
	}
}

func TestBoltEvictsExpired(t *testing.T) {
	s, err := OpenBolt(t.TempDir(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := &clock{now: time.Now()}
	s.now = c.Now
	ctx := context.Background()
	for i := range 100 {
		if err := s.Done(ctx, KeyOf(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	c.Add(30 * time.Second)
	s.Done(ctx, KeyOf("0")) // recorded again: its new expiry keeps it
	c.Add(31 * time.Second)
	if n, err := s.evict(); err != nil || n != 100 {
		t.Fatalf("evicted %d (%v), want the 100 first records", n, err)
	}
	if s.Len() != 1 {
		t.Errorf("%d keys left, want the one recorded again", s.Len())
	}
	if st, _ := s.Claim(ctx, KeyOf("0"), 0); st != Forwarded {
		t.Error("the key recorded again is gone")
	}
}

// TestBoltSurvivesKill: a process records keys and is killed (SIGKILL) without closing the
// store; what it recorded is there after a restart.
func TestBoltSurvivesKill(t *testing.T) {
	if dir := os.Getenv("LPS_DEDUP_HELPER_DIR"); dir != "" {
		s, err := OpenBolt(dir, time.Hour)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		for i := range 1000 {
			if err := s.Done(context.Background(), KeyOf(fmt.Sprint(i))); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(3)
			}
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBoltSurvivesKill$")
	cmd.Env = append(os.Environ(), "LPS_DEDUP_HELPER_DIR="+dir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper: %v, want killed by SIGKILL; output %s", err, out)
	}
	s, err := OpenBolt(dir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 1000 {
		if st, err := s.Claim(context.Background(), KeyOf(fmt.Sprint(i)), 0); err != nil || st != Forwarded {
			t.Fatalf("key %d after the kill: %v %v", i, st, err)
		}
	}
}

// TestClaimRenewedWhileForwarding: a forward longer than the lease keeps its claim, so a copy
// at another instance waits for it instead of forwarding again.
func TestClaimRenewedWhileForwarding(t *testing.T) {
	ctx := context.Background()
	r := testutil.StartRedis(t)
	lease := 300 * time.Millisecond
	a := &Window{Store: openRedis(t, r.URL, time.Minute), Lease: lease}
	b := &Window{Store: openRedis(t, r.URL, time.Minute), Lease: lease, Poll: 10 * time.Millisecond}
	k := KeyOf("r-1", "a")
	started, release := make(chan struct{}), make(chan struct{})
	aDone := make(chan error, 1)
	go func() {
		_, err := a.Do(ctx, k, func() error { close(started); <-release; return nil })
		aDone <- err
	}()
	<-started
	// Five leases long: without renewal the claim would run out and b would forward.
	bctx, cancel := context.WithTimeout(ctx, 5*lease)
	defer cancel()
	if _, err := b.Do(bctx, k, func() error { t.Error("a copy was forwarded while the first forward ran"); return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the copy's wait ended with %v, want its deadline", err)
	}
	close(release)
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
	if dup, err := b.Do(ctx, k, func() error { t.Error("forwarded after the record"); return nil }); !dup || err != nil {
		t.Errorf("after the first forward: dup %v err %v", dup, err)
	}
}

// TestMemoryEvictsTheOldestAndSweepsTheExpired: a full window forgets its oldest keys first, as
// many as it must (and a sixteenth of Max for room), also when keys share their expiry; expired
// keys leave the map at the next sweep, TTL/16 later at most, and are not counted as evicted.
func TestMemoryEvictsTheOldestAndSweepsTheExpired(t *testing.T) {
	ctx := context.Background()
	for _, step := range []time.Duration{time.Millisecond, 0} {
		c := &clock{now: time.Unix(1e9, 0)}
		s := &Memory{TTL: time.Minute, Max: 64, Now: c.Now}
		for i := range 200 {
			s.Done(ctx, KeyOf(fmt.Sprint(i)))
			c.Add(step)
			if s.Len() > 64 {
				t.Fatalf("step %s: %d keys kept after %d records, Max 64", step, s.Len(), i+1)
			}
		}
		kept := s.Len()
		if kept < 64-64/16 || s.Evicted()+kept != 200 {
			t.Errorf("step %s: %d kept and %d evicted of 200, want 60 to 64 kept and the rest evicted", step, kept, s.Evicted())
		}
		if step > 0 { // distinct expiries: exactly the newest are kept
			for i := range 200 {
				st, _ := s.Claim(ctx, KeyOf(fmt.Sprint(i)), 0)
				if want := i >= 200-kept; (st == Forwarded) != want {
					t.Errorf("key %d of 200 with %d kept: %v", i, kept, st)
				}
			}
		}
		evicted := s.Evicted()
		c.Add(time.Minute + time.Minute/16)
		if st, _ := s.Claim(ctx, KeyOf("199"), 0); st != Claimed || s.Len() != 0 || s.Evicted() != evicted {
			t.Errorf("step %s, a window later: %v, %d kept, %d evicted (was %d)", step, st, s.Len(), s.Evicted(), evicted)
		}
	}
}

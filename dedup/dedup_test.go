package dedup

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSuppressesRepeatWithinWindow(t *testing.T) {
	now := time.Unix(0, 0)
	w := &Window{TTL: time.Minute, Now: func() time.Time { return now }}
	var runs int
	work := func() error { runs++; return nil }
	ctx := context.Background()
	if dup, err := w.Do(ctx, "a", work); dup || err != nil {
		t.Fatalf("first: dup %v err %v", dup, err)
	}
	if dup, err := w.Do(ctx, "a", work); !dup || err != nil || runs != 1 {
		t.Fatalf("repeat: dup %v err %v runs %d", dup, err, runs)
	}
	now = now.Add(time.Minute)
	if dup, _ := w.Do(ctx, "a", work); dup || runs != 2 {
		t.Fatalf("after the window: dup %v runs %d", dup, runs)
	}
}

func TestFailureIsForgotten(t *testing.T) {
	w := &Window{}
	boom := errors.New("boom")
	if _, err := w.Do(context.Background(), "a", func() error { return boom }); err != boom {
		t.Fatal(err)
	}
	ran := false
	if dup, err := w.Do(context.Background(), "a", func() error { ran = true; return nil }); dup || err != nil || !ran {
		t.Fatalf("retry after failure: dup %v err %v ran %v", dup, err, ran)
	}
}

func TestConcurrentSameKeyRunsOnce(t *testing.T) {
	w := &Window{}
	release := make(chan struct{})
	var runs atomic.Int32
	started := make(chan struct{})
	var wg sync.WaitGroup
	results := make(chan bool, 10)
	wg.Add(1)
	go func() {
		defer wg.Done()
		dup, _ := w.Do(context.Background(), "a", func() error { runs.Add(1); close(started); <-release; return nil })
		results <- dup
	}()
	<-started
	for range 9 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dup, err := w.Do(context.Background(), "a", func() error { runs.Add(1); return nil })
			if err != nil {
				t.Error(err)
			}
			results <- dup
		}()
	}
	close(release)
	wg.Wait()
	close(results)
	dups := 0
	for d := range results {
		if d {
			dups++
		}
	}
	if runs.Load() != 1 || dups != 9 {
		t.Errorf("runs %d dups %d, want 1 and 9", runs.Load(), dups)
	}
}

func TestWaiterHonoursContext(t *testing.T) {
	w := &Window{}
	release := make(chan struct{})
	started := make(chan struct{})
	go w.Do(context.Background(), "a", func() error { close(started); <-release; return nil })
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := w.Do(ctx, "a", func() error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
	close(release)
}

func TestBoundedByMax(t *testing.T) {
	w := &Window{Max: 3}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		w.Do(context.Background(), k, func() error { return nil })
	}
	if w.Len() != 3 {
		t.Errorf("len %d, want 3", w.Len())
	}
	if dup, _ := w.Do(context.Background(), "a", func() error { return nil }); dup {
		t.Error("the oldest key should have been forgotten")
	}
	if dup, _ := w.Do(context.Background(), "e", func() error { return nil }); !dup {
		t.Error("the newest key should be remembered")
	}
}

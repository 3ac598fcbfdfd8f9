package testutil

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatal ends only the goroutine that called it, so that a
// test can check that a helper gives up and what it says.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *fatalRecorder) Fatal(args ...any) {
	r.msg = fmt.Sprint(args...)
	runtime.Goexit()
}

// fails runs f with a fatalRecorder and returns what it failed with ("" if it did not).
func fails(t *testing.T, f func(tb testing.TB)) string {
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.msg
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, 5*time.Second, func() error {
		if n++; n < 3 {
			return fmt.Errorf("call %d", n)
		}
		return nil
	})
	if n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}
	msg := fails(t, func(tb testing.TB) {
		Eventually(tb, 20*time.Millisecond, func() error { return errors.New("still waiting") })
	})
	if !strings.Contains(msg, "within 20ms: still waiting") {
		t.Errorf("Eventually failed with %q, want the timeout and cond's last error", msg)
	}
}

func TestPoll(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	n := 0
	err := Poll(ctx, 10*time.Millisecond, func() error {
		n++
		return errors.New("not yet")
	})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not yet") {
		t.Errorf("Poll = %v, want cond's last error and the context's", err)
	}
	if n < 2 || n > 10 {
		t.Errorf("cond called %d times in 50ms at a 10ms interval", n)
	}
	if err := Poll(context.Background(), time.Hour, func() error { return nil }); err != nil {
		t.Errorf("Poll of a met condition = %v", err)
	}
}

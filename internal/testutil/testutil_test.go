package testutil

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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

func TestMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	forwards := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "forwards_total", Help: "h"}, []string{"result", "conn"})
	unused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dead_letters_total", Help: "h"}, []string{"reason"})
	inflight := prometheus.NewGauge(prometheus.GaugeOpts{Name: "in_flight", Help: "h"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "latency_seconds", Help: "h"}, []string{"result"})
	reg.MustRegister(forwards, unused, inflight, latency)
	forwards.WithLabelValues("ok", "a").Add(3)
	forwards.WithLabelValues("ok", "b").Add(4)
	forwards.WithLabelValues("http_5xx", "a").Add(2)
	inflight.Set(5)
	latency.WithLabelValues("ok").Observe(1)
	latency.WithLabelValues("ok").Observe(2)
	latency.WithLabelValues("error").Observe(3)

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"forwards_total", nil, 9},
		{"forwards_total", map[string]string{"result": "ok"}, 7},
		{"forwards_total", map[string]string{"result": "ok", "conn": "b"}, 4},
		{"forwards_total", map[string]string{"result": "timeout"}, 0},
		{"in_flight", nil, 5},
		{"latency_seconds", nil, 3},
		{"latency_seconds", map[string]string{"result": "ok"}, 2},
		{"dead_letters_total", nil, 0}, // registered, no label values used yet
	} {
		if got := Metric(t, reg, c.name, c.labels); got != c.want {
			t.Errorf("Metric(%s, %v) = %g, want %g", c.name, c.labels, got, c.want)
		}
	}

	if msg := fails(t, func(tb testing.TB) { Metric(tb, reg, "forward_total", nil) }); !strings.Contains(msg, "no metric forward_total") {
		t.Errorf("a metric the registry does not have: failed with %q", msg)
	}
	if msg := fails(t, func(tb testing.TB) { Metric(tb, reg, "forwards_total", map[string]string{"reslt": "ok"}) }); !strings.Contains(msg, "no label reslt") {
		t.Errorf("a label the metric does not have: failed with %q", msg)
	}
	// A Gatherer that is not a Collector cannot tell an unused vector from a name it lacks.
	if msg := fails(t, func(tb testing.TB) { Metric(tb, prometheus.Gatherers{reg}, "dead_letters_total", nil) }); msg == "" {
		t.Error("a metric a Gatherers did not gather: did not fail")
	}
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

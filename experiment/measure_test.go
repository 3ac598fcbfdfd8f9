package experiment

import (
	"math"
	"testing"
	"time"

	"github.com/lpsdev/lps/report"
)

func TestQueueingFigures(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	// Ten seconds of load at 30 alarms/s; a backlog from second 2 on, served at 20/s except
	// in second 5, when the backend was down; drained after the load.
	var secs []report.Second
	for s := range 16 {
		sec := report.Second{T: s, Backlog: 0, Received: 30}
		if s < 10 {
			sec.Acked = 30
		}
		if s >= 2 {
			sec.Backlog, sec.Received = 50, 20
		}
		if s == 5 {
			sec.Received = 0
		}
		if s == 15 {
			sec.Backlog = 0
		}
		secs = append(secs, sec)
	}
	lambda, mu, rho := queueing(report.Run{Seconds: secs}, start, start.Add(10*time.Second))
	if lambda != 30 || mu != 20 || math.Abs(rho-1.5) > 1e-9 {
		t.Errorf("λ=%g μ=%g ρ=%g, want 30, 20 (busy seconds only, the outage left out), 1.5", lambda, mu, rho)
	}

	// No backlog ever (the baseline): μ is the backend's rate over the load window.
	for i := range secs {
		secs[i].Backlog, secs[i].Received = -1, 25
	}
	if lambda, mu, _ := queueing(report.Run{Seconds: secs}, start, start.Add(10*time.Second)); lambda != 30 || mu != 25 {
		t.Errorf("without a backlog λ=%g μ=%g, want 30 and 25", lambda, mu)
	}
	if l, m, r := queueing(report.Run{}, start, start); l != 0 || m != 0 || r != 0 {
		t.Errorf("an empty window gave λ=%g μ=%g ρ=%g", l, m, r)
	}
}

func TestEvenSample(t *testing.T) {
	var ds []time.Duration
	for i := range 1000 {
		ds = append(ds, time.Duration(1000-i)*time.Millisecond)
	}
	got := evenSample(ds, 10)
	if len(got) != 10 || got[0] != time.Millisecond || got[9] != 901*time.Millisecond {
		t.Errorf("sample %v, want 10 sorted values from the smallest on", got)
	}
	if got := evenSample(ds[:5], 10); len(got) != 5 {
		t.Errorf("a short list was sampled to %d", len(got))
	}
}

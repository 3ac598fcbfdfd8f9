package mqtt2http

import (
	"testing"
	"time"

	"github.com/lpsdev/lps/mqttconn"
)

// TestOutageTracker walks the tracker through an outage: failures of the upstream's below the
// threshold change nothing, the threshold stops everything but one probe at the backoff's
// pace, a failed probe pushes the next one out, and the first answer from the upstream (even
// a 4xx) ends it. A message's own failures (4xx) and skipped turns never start one.
func TestOutageTracker(t *testing.T) {
	o := outage{backoff: mqttconn.Backoff{Base: time.Second, Max: 4 * time.Second}, threshold: 3}
	now := time.Unix(1000, 0)
	admit := func(wantOK, wantProbe bool) {
		t.Helper()
		ok, probe, _ := o.admit(now)
		if ok != wantOK || probe != wantProbe {
			t.Fatalf("admit = %v, %v; want %v, %v", ok, probe, wantOK, wantProbe)
		}
	}
	done := func(probe bool, r result, wantBegan, wantEnded bool) {
		t.Helper()
		began, ended := o.done(now, probe, r)
		if began != wantBegan || ended != wantEnded {
			t.Fatalf("done = %v, %v; want %v, %v", began, ended, wantBegan, wantEnded)
		}
	}

	for range 2 {
		admit(true, false)
		done(false, unavailable, false, false)
	}
	admit(true, false)
	done(false, rejected, false, false) // the upstream answered: the streak is over
	admit(true, false)
	done(false, skipped, false, false)
	for range 2 {
		admit(true, false)
		done(false, unavailable, false, false)
	}
	admit(true, false)
	done(false, unavailable, true, false) // the third in a row

	// Down: nothing until the first probe is due (0.5 to 1 s), then one probe at a time.
	admit(false, false)
	if _, _, wait := o.admit(now); wait.Sub(now) < 500*time.Millisecond || wait.Sub(now) > time.Second {
		t.Fatalf("first probe due in %s, want 0.5 to 1 s", wait.Sub(now))
	}
	now = now.Add(time.Second)
	admit(true, true)
	admit(false, false) // one probe at a time
	if _, _, wait := o.admit(now); !wait.IsZero() {
		t.Fatalf("while a probe runs, wait until it ends; got %s", wait)
	}
	done(false, unavailable, false, false) // a forward started before the outage fails late
	done(true, unavailable, false, false)
	if _, _, wait := o.admit(now); wait.Sub(now) < time.Second || wait.Sub(now) > 2*time.Second {
		t.Fatalf("second probe due in %s, want 1 to 2 s", wait.Sub(now))
	}
	now = now.Add(2 * time.Second)
	admit(true, true)
	done(true, skipped, false, false) // the probe was a retry not yet due: no verdict
	admit(true, true)
	done(true, rejected, false, true) // a 4xx: the upstream is there

	admit(true, false)
	admit(true, false)
}

package experiment

import (
	"testing"
	"time"

	"github.com/lpsdev/lps/topology"
)

func TestFailoverScheduleIsTheOriginalsModel(t *testing.T) {
	for _, kind := range []string{topology.Baseline, topology.LPS} {
		s := FailoverSchedule(kind, 42, 1)
		if len(s.Faults) != len(FaultPath[kind]) {
			t.Fatalf("%s: %d faults, want one per service on the path (%d)", kind, len(s.Faults), len(FaultPath[kind]))
		}
		at := Warmup
		for i, f := range s.Faults {
			if f.Service != FaultPath[kind][i] {
				t.Errorf("%s: fault %d stops %s, want %s", kind, i, f.Service, FaultPath[kind][i])
			}
			if f.Stop != at {
				t.Errorf("%s: %s stops at %s, want %s (%s after the previous restart)", kind, f.Service, f.Stop, at, FaultGap)
			}
			extra := Detection + Operator + Recovery
			if f.Downtime < DowntimeMin+extra || f.Downtime > DowntimeMax+extra {
				t.Errorf("%s: %s down for %s, outside uniform(26, 34) s + 3.5 s", kind, f.Service, f.Downtime)
			}
			at = f.Start() + FaultGap
		}
		if want := s.Faults[len(s.Faults)-1].Start() + Cooldown; s.Load != want {
			t.Errorf("%s: load runs %s, want %s (the cooldown after the last restart)", kind, s.Load, want)
		}
	}
}

func TestFailoverScheduleIsSeeded(t *testing.T) {
	a, b := FailoverSchedule(topology.LPS, 42, 1), FailoverSchedule(topology.LPS, 42, 1)
	c := FailoverSchedule(topology.LPS, 43, 1)
	same := true
	for i := range a.Faults {
		if a.Faults[i] != b.Faults[i] {
			t.Errorf("seed 42 drew %v, then %v", a.Faults[i], b.Faults[i])
		}
		same = same && a.Faults[i].Downtime == c.Faults[i].Downtime
	}
	if same {
		t.Error("seeds 42 and 43 drew the same downtimes")
	}
	// A service is down as long in both topologies, so that they are compared on one draw.
	base := FailoverSchedule(topology.Baseline, 42, 1)
	for _, f := range base.Faults {
		for _, g := range a.Faults {
			if f.Service == g.Service && f.Downtime != g.Downtime {
				t.Errorf("%s: down %s in the baseline, %s in the LPS", f.Service, f.Downtime, g.Downtime)
			}
		}
	}
}

func TestFailoverScheduleScales(t *testing.T) {
	full, tenth := FailoverSchedule(topology.LPS, 42, 1), FailoverSchedule(topology.LPS, 42, 0.1)
	for i := range full.Faults {
		if d := tenth.Faults[i].Downtime - full.Faults[i].Downtime/10; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("%s: scaled downtime %s, want a tenth of %s", full.Faults[i].Service, tenth.Faults[i].Downtime, full.Faults[i].Downtime)
		}
	}
	// The default: both topologies' load about two minutes in all.
	total := FailoverSchedule(topology.Baseline, 42, DefaultTimeScale).Load + FailoverSchedule(topology.LPS, 42, DefaultTimeScale).Load
	if total < 50*time.Second || total > 100*time.Second {
		t.Errorf("default schedule loads %s in all, want about a minute and a half (two minutes with starts and drains)", total)
	}
	t.Logf("default schedule: %s of load over both topologies", total)
}

func TestCounterAcrossRestarts(t *testing.T) {
	var c counter
	for _, v := range []float64{0, 5, 9, 2, 4, 10} { // restart after 9: 2 is the new run's
		c.see(v)
	}
	if c.total != 9+10 {
		t.Errorf("total %g, want 19 (9 before the restart, 10 after)", c.total)
	}
}

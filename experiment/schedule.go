package experiment

import (
	"math/rand/v2"
	"time"

	"github.com/lpsdev/lps/topology"
)

// The original's failover model (SPEC section 6), before --time-scale: each instance on the
// path is stopped in turn for a downtime of uniform(26, 34) s plus 2 s detection, 1 s operator
// and 0.5 s recovery, and the next fault comes 20 s after the previous instance is back.
const (
	DowntimeMin = 26 * time.Second
	DowntimeMax = 34 * time.Second
	Detection   = 2 * time.Second
	Operator    = time.Second
	Recovery    = 500 * time.Millisecond
	FaultGap    = 20 * time.Second
	// Warmup is the load before the first fault, and Cooldown the load after the last one is
	// back, so that the plots show the system before and after.
	Warmup   = 20 * time.Second
	Cooldown = 20 * time.Second
)

// FaultPath are the services a failover experiment stops, in the order an alarm passes them:
// the baseline's, and the LPS's, which adds its bridges. The backend is ars-comp-3.
var FaultPath = map[string][]string{
	topology.Baseline: {"ars-comp-1-1", "ars-comp-1-2", "ars-comp-1-3", "ars-comp-2-1", "ars-comp-3"},
	topology.LPS:      {"ars-comp-1-1", "ars-comp-1-2", "ars-comp-1-3", "proxy1-1", "proxy2-1", "ars-comp-2-1", "ars-comp-3"},
}

// Planned is one fault of a schedule, as offsets from the start of the load.
type Planned struct {
	Service  string
	Stop     time.Duration
	Downtime time.Duration
}

// Start is when the service is started again.
func (p Planned) Start() time.Duration { return p.Stop + p.Downtime }

// Schedule is a failover experiment's faults and the length of its load.
type Schedule struct {
	Faults []Planned
	// Load is how long the load runs: the warmup, every fault and its gap, the cooldown.
	Load time.Duration
}

// FailoverSchedule draws the schedule of kind's topology with seed, every duration multiplied by
// scale. A service gets the same downtime in both topologies: the draws are made in the
// order of the LPS's path, whose services include the baseline's, so that a comparison of the
// two is not a comparison of two draws.
func FailoverSchedule(kind string, seed uint64, scale float64) Schedule {
	rng := rand.New(rand.NewPCG(seed, seed))
	downtime := map[string]time.Duration{}
	for _, svc := range FaultPath[topology.LPS] {
		d := DowntimeMin + time.Duration(rng.Int64N(int64(DowntimeMax-DowntimeMin)+1))
		downtime[svc] = d + Detection + Operator + Recovery
	}
	scaled := func(d time.Duration) time.Duration { return time.Duration(float64(d) * scale) }
	var s Schedule
	at := scaled(Warmup)
	for _, svc := range FaultPath[kind] {
		p := Planned{Service: svc, Stop: at, Downtime: scaled(downtime[svc])}
		s.Faults = append(s.Faults, p)
		at = p.Start() + scaled(FaultGap)
	}
	s.Load = at - scaled(FaultGap) + scaled(Cooldown)
	return s
}

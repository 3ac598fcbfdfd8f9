package report

import "time"

// Experiment is one run of `lps experiment`: everything the report shows, and what
// results.json holds. Times are wall-clock; series are relative to each Run's Start.
type Experiment struct {
	// Kind is "failover" or "performance".
	Kind      string    `json:"kind"`
	Started   time.Time `json:"started"`
	Finished  time.Time `json:"finished"`
	Seed      uint64    `json:"seed"`
	TimeScale float64   `json:"time_scale"`
	// Target is "local" or "compose".
	Target   string `json:"target"`
	Faithful bool   `json:"faithful"`
	// Devices is the failover's closed-model device count; 0 for a performance run, whose
	// Steps say what load each step ran.
	Devices int `json:"devices,omitempty"`
	// Background is the background workload's requests per second straight to rast-sim.
	Background float64 `json:"background_rate"`
	// Runs has one entry per topology, baseline first.
	Runs []Run `json:"runs"`
}

// Run is one topology's part of an experiment.
type Run struct {
	// Topology is "baseline" or "lps".
	Topology string `json:"topology"`
	// Start and End bound the load: the first alarm sent, the last one started.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`

	// The ledger, per Request-Id: sent by the load, acknowledged (2xx) to it, received by
	// rast-sim; lost = acknowledged but never received; duplicated = received more than once;
	// given up = never acknowledged by the load's deadline.
	Sent       int `json:"sent"`
	Acked      int `json:"acked"`
	Received   int `json:"received"`
	Lost       int `json:"lost"`
	Duplicated int `json:"duplicated"`
	GivenUp    int `json:"given_up"`

	// Response times of the acknowledged alarms, from the first try to the success.
	P50 Millis `json:"p50_ms"`
	P90 Millis `json:"p90_ms"`
	P99 Millis `json:"p99_ms"`
	Max Millis `json:"max_ms"`

	// Queueing figures over the load window, as the original defines them: Lambda the arrival
	// rate (alarms accepted per second), Mu the service rate (alarms the backend received per
	// second while work was waiting), Rho = Lambda / Mu.
	Lambda float64 `json:"lambda"`
	Mu     float64 `json:"mu"`
	Rho    float64 `json:"rho"`
	// Drain is how long after the load the LPS took until the broker's queue was empty and every
	// acknowledged alarm had arrived (0 for the baseline).
	Drain Millis `json:"drain_ms"`

	// Faults are the failover schedule's stops and starts, planned and as done.
	Faults []Fault `json:"faults,omitempty"`
	// Steps are the performance experiment's load steps.
	Steps []Step `json:"steps,omitempty"`
	// Seconds is the per-second series from Start, up to the end of the drain.
	Seconds []Second `json:"seconds"`
	// Consumers counts the alarms each mqtt2http instance forwarded (LPS only), by service name.
	Consumers map[string]int `json:"consumers,omitempty"`
	// CPU is the CPU time each role used from the start of the load to the end of the drain, in
	// seconds per 1,000 acknowledged alarms, summed over its instances (local target only).
	CPU map[string]float64 `json:"cpu_s_per_1000_alarms,omitempty"`
	// IdleRSS is each role's resident memory when the load began (started, not yet loaded) and
	// PeakRSS the most it was resident until the end of the drain (VmHWM: since the process
	// last started), in MB (10^6 bytes), the largest of its instances (local target only).
	IdleRSS map[string]float64 `json:"idle_rss_mb,omitempty"`
	PeakRSS map[string]float64 `json:"peak_rss_mb,omitempty"`
	// Latencies are the response times of the acknowledged alarms (all of them, or an even
	// sample of at most 100,000), for the CDF. Not in results.json.
	Latencies []time.Duration `json:"-"`
}

// Fault is one stop and start of a service.
type Fault struct {
	Service string `json:"service"`
	// PlannedStop and PlannedStart are the seeded schedule's; Stopped and Started when the
	// runner did it (zero if it did not happen).
	PlannedStop  time.Time `json:"planned_stop"`
	PlannedStart time.Time `json:"planned_start"`
	Stopped      time.Time `json:"stopped"`
	Started      time.Time `json:"started"`
	// Downtime is the drawn downtime: uniform(26, 34) s + detection + operator + recovery,
	// scaled.
	Downtime Millis `json:"downtime_ms"`
}

// Step is one load step of the performance experiment.
type Step struct {
	// Devices of the closed model, or Rate of the open model's ramp.
	Devices int       `json:"devices,omitempty"`
	Rate    float64   `json:"rate,omitempty"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Acked   int       `json:"acked"`
	Avg     Millis    `json:"avg_ms"`
	Max     Millis    `json:"max_ms"`
	// Stopped says this step ended the experiment (average over 10 s or maximum over 30 s).
	Stopped bool `json:"stopped,omitempty"`
}

// Second is one second of a run, counted from Run.Start.
type Second struct {
	T int `json:"t"`
	// Response times of the alarms acknowledged in this second.
	P50 Millis `json:"p50_ms"`
	P99 Millis `json:"p99_ms"`
	Max Millis `json:"max_ms"`
	// Acked alarms acknowledged in this second; Failed tries that failed in it; Received alarms
	// rast-sim received in it.
	Acked    int `json:"acked"`
	Failed   int `json:"failed"`
	Received int `json:"received"`
	// Backlog is the broker's queue depth at the end of the second (LPS), -1 when unknown.
	Backlog int `json:"backlog"`
}

// Millis is a duration written as milliseconds in JSON.
type Millis float64

// Ms converts a duration.
func Ms(d time.Duration) Millis { return Millis(float64(d) / float64(time.Millisecond)) }

// Duration converts back.
func (m Millis) Duration() time.Duration {
	return time.Duration(float64(m) * float64(time.Millisecond))
}

package experiment

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/lpsdev/lps/faults"
	"github.com/lpsdev/lps/ledger"
	"github.com/lpsdev/lps/loadgen"
	"github.com/lpsdev/lps/report"
	"github.com/lpsdev/lps/roles/mqttbroker"
	"github.com/lpsdev/lps/topology"
	"go.uber.org/zap"
)

// drainQuiet is how long the LPS must stay drained (empty queue, nothing in flight, every
// acknowledged alarm received) before the drain counts as done.
const drainQuiet = 2 * time.Second

// workload is one topology's run of an experiment: its load, faults and accounting.
type workload struct {
	cfg    *Config
	kind   string
	t      target
	ledger *ledger.Ledger
	log    *zap.Logger // the load's: every failed try and its error (load.log)
	prefix string
	http   *http.Client

	mu    sync.Mutex
	loads []*loadgen.Load

	cpu0 map[string]time.Duration // the services' CPU time when the load began
	idle map[string]faults.Memory // their resident memory then, started and not yet loaded
}

func newWorkload(cfg *Config, kind string, t target, log *zap.Logger) *workload {
	return &workload{cfg: cfg, kind: kind, t: t, ledger: ledger.New(), log: log,
		prefix: fmt.Sprintf("%s-%s", cfg.Kind, kind), http: &http.Client{Timeout: 5 * time.Second}}
}

// failures sums the failed tries of every load so far.
func (w *workload) failures() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var n int64
	for _, l := range w.loads {
		n += l.Stats().Failures
	}
	return n
}

// newLoad makes a load of the alarm devices (or, with rate, the open model) with the
// workload's ledger.
func (w *workload) newLoad(prefix string, devices int, rate float64, d time.Duration) (*loadgen.Load, error) {
	l, err := loadgen.New(loadgen.Config{
		URLs: w.t.Comp1URLs(), Devices: devices, Rate: rate, Duration: d,
		Prefix: prefix, Seed: w.cfg.Seed, Ledger: w.ledger, Logger: w.log,
	})
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.loads = append(w.loads, l)
	w.mu.Unlock()
	return l, nil
}

// failover runs the seeded fault schedule under the closed model, then drains.
func (w *workload) failover(ctx context.Context) (report.Run, error) {
	sched := FailoverSchedule(w.kind, w.cfg.Seed, w.cfg.TimeScale)
	load, err := w.newLoad(w.prefix, w.cfg.Devices, 0, sched.Load)
	if err != nil {
		return report.Run{}, err
	}
	smp := newSampler(w.t, w.failures)
	sctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	start := time.Now()
	w.cpu0, w.idle = w.t.CPU(), w.t.Memory()
	go smp.run(sctx)
	stopBackground := w.background(ctx, sched.Load)
	defer stopBackground()

	faultsDone := make(chan []report.Fault, 1)
	fctx, stopFaults := context.WithCancel(ctx)
	defer stopFaults()
	go func() { faultsDone <- w.inject(fctx, start, sched) }()

	fmt.Fprintf(w.cfg.Progress, "%s: %d devices for %s, %d faults\n", w.kind, w.cfg.Devices, sched.Load.Round(time.Second), len(sched.Faults))
	if err := load.Run(ctx); err != nil {
		return report.Run{}, err
	}
	faults := <-faultsDone
	r, err := w.finish(ctx, smp, start, start.Add(sched.Load), stopBackground, stopSampling)
	r.Faults = faults
	return r, err
}

// finish ends a run after its load: the background stops, the LPS drains, the sampling stops,
// and every alarm is accounted for.
func (w *workload) finish(ctx context.Context, smp *sampler, start, end time.Time, stopBackground, stopSampling func()) (report.Run, error) {
	stopBackground()
	drain, err := w.drain(ctx, end)
	if err != nil {
		return report.Run{}, err
	}
	stopSampling()
	cpu, mem := w.t.CPU(), w.t.Memory()
	r, err := w.measure(ctx, smp, start, end, drain)
	r.CPU = w.cpuPerThousand(cpu, r.Acked)
	r.IdleRSS = w.perRoleMB(w.idle, func(m faults.Memory) int64 { return m.RSS })
	r.PeakRSS = w.perRoleMB(mem, func(m faults.Memory) int64 { return m.Peak })
	return r, err
}

// perRoleMB is the largest of each role's instances' figure of mem, in MB (10^6 bytes); nil
// when the target does not measure memory.
func (w *workload) perRoleMB(mem map[string]faults.Memory, figure func(faults.Memory) int64) map[string]float64 {
	if len(mem) == 0 {
		return nil
	}
	plan := w.t.Plan()
	out := map[string]float64{}
	for name, m := range mem {
		n, ok := plan.Node(name)
		if !ok {
			continue
		}
		out[n.Role] = max(out[n.Role], float64(figure(m))/1e6)
	}
	return out
}

// cpuPerThousand is the CPU time each role's processes used from the start of the load to the
// end of the drain, in seconds per 1,000 acknowledged alarms, summed over the role's instances
// (rast-sim's includes serving the background workload); nil when the target does not measure
// it.
func (w *workload) cpuPerThousand(now map[string]time.Duration, acked int) map[string]float64 {
	if now == nil || acked == 0 {
		return nil
	}
	plan := w.t.Plan()
	out := map[string]float64{}
	for name, d := range now {
		n, ok := plan.Node(name)
		if !ok {
			continue
		}
		out[n.Role] += (d - w.cpu0[name]).Seconds() * 1000 / float64(acked)
	}
	return out
}

// inject stops and starts the schedule's services at their times, and reports when each was
// done. Each fault keeps its own clock: a start that takes long (a container's engine under
// load) does not push the next fault back.
func (w *workload) inject(ctx context.Context, start time.Time, sched Schedule) []report.Fault {
	out := make([]report.Fault, len(sched.Faults))
	wait := func(at time.Time) bool {
		t := time.NewTimer(time.Until(at))
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var wg sync.WaitGroup
	for i, p := range sched.Faults {
		out[i] = report.Fault{
			Service: p.Service, PlannedStop: start.Add(p.Stop), PlannedStart: start.Add(p.Start()),
			Downtime: report.Ms(p.Downtime),
		}
		wg.Add(1)
		go func(f *report.Fault) {
			defer wg.Done()
			if !wait(f.PlannedStop) {
				return
			}
			// Stopped is when the stop was given, as the schedule times it; a graceful stop may
			// take seconds more (the requests in flight), which the response times show.
			f.Stopped = time.Now()
			if err := w.t.Stop(ctx, p.Service); err != nil {
				fmt.Fprintf(w.cfg.Progress, "%s: stopping %s: %v\n", w.kind, p.Service, err)
			}
			fmt.Fprintf(w.cfg.Progress, "%s: %s stopped for %s\n", w.kind, p.Service, p.Downtime.Round(100*time.Millisecond))
			if !wait(f.PlannedStart) {
				return
			}
			if err := w.t.Start(ctx, p.Service); err != nil {
				fmt.Fprintf(w.cfg.Progress, "%s: starting %s: %v\n", w.kind, p.Service, err)
				return
			}
			f.Started = time.Now()
		}(&out[i])
	}
	wg.Wait()
	return out
}

// background runs the background workload for d, when one is asked for; the returned func
// stops it and waits for it.
func (w *workload) background(ctx context.Context, d time.Duration) func() {
	if w.cfg.Background <= 0 || len(w.cfg.RequestNames) == 0 {
		return func() {}
	}
	bg, err := loadgen.NewBackground(loadgen.BackgroundConfig{
		URL: w.t.SimURL(), Rate: w.cfg.Background, Names: w.cfg.RequestNames, Seed: w.cfg.Seed, Duration: d,
	})
	if err != nil {
		fmt.Fprintf(w.cfg.Progress, "%s: no background workload: %v\n", w.kind, err)
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = bg.Run(ctx) }()
	var once sync.Once
	return func() { once.Do(func() { cancel(); <-done }) }
}

// drain waits until every acknowledged alarm reached rast-sim and, for the LPS, the broker's
// queue is empty and no consumer holds a message, for drainQuiet in a row; it returns how
// long after end that took. The deadline is the config's DrainTimeout.
func (w *workload) drain(ctx context.Context, end time.Time) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.DrainTimeout)
	defer cancel()
	fmt.Fprintf(w.cfg.Progress, "%s: draining\n", w.kind)
	var calm time.Time
	var last string
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		why, err := w.pending(ctx)
		switch {
		case err != nil:
			why = err.Error()
			calm = time.Time{}
		case why != "":
			calm = time.Time{}
		case calm.IsZero():
			calm = time.Now()
		case time.Since(calm) >= drainQuiet:
			return max(calm.Sub(end), 0), nil
		}
		last = why
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("not drained within %s: %s", w.cfg.DrainTimeout, last)
		case <-tick.C:
		}
	}
}

// pending says what is still to be delivered ("" nothing).
func (w *workload) pending(ctx context.Context) (string, error) {
	if admin := w.t.BrokerAdmin(); admin != "" {
		st, err := mqttbroker.NewClient(admin, w.http).Stats(ctx)
		if err != nil {
			return "", err
		}
		if st.QueueDepth > 0 {
			return fmt.Sprintf("%d alarms queued in the broker", st.QueueDepth), nil
		}
	}
	for name, url := range w.t.Consumers() {
		for _, m := range []string{"lps_mqtt_inflight_forwards", "lps_mqtt_held_retries"} {
			v, err := scrape(ctx, w.http, url, m, "", "")
			if err != nil {
				return "", err
			}
			if v > 0 {
				return fmt.Sprintf("%s: %s %g", name, m, v), nil
			}
		}
	}
	received, err := w.received(ctx)
	if err != nil {
		return "", err
	}
	if missing := w.ledger.Missing(received); missing > 0 {
		return fmt.Sprintf("%d acknowledged alarms not yet at rast-sim", missing), nil
	}
	return "", nil
}

// received is what rast-sim received of this workload's alarms (not the background's).
func (w *workload) received(ctx context.Context) (map[string]int, error) {
	all, err := w.t.Received(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(all))
	for id, n := range all {
		if strings.HasPrefix(id, w.prefix) {
			out[id] = n
		}
	}
	return out, nil
}

// performance runs steps of more devices (or a higher rate) until a step is too slow or
// MaxSteps ran, then drains.
func (w *workload) performance(ctx context.Context) (report.Run, error) {
	stepLen := w.cfg.scaled(w.cfg.StepDuration)
	smp := newSampler(w.t, w.failures)
	sctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	start := time.Now()
	w.cpu0, w.idle = w.t.CPU(), w.t.Memory()
	go smp.run(sctx)
	stopBackground := w.background(ctx, time.Duration(w.cfg.MaxSteps)*stepLen)
	defer stopBackground()

	var steps []report.Step
	var wg sync.WaitGroup
	errs := make(chan error, w.cfg.MaxSteps)
	var prev *loadgen.Load
	for k := 1; k <= w.cfg.MaxSteps && ctx.Err() == nil; k++ {
		st := report.Step{Start: time.Now()}
		devices, rate := w.cfg.Step*k, 0.0
		if w.cfg.Rate > 0 {
			devices, rate = 0, w.cfg.Rate*float64(k)
			st.Rate = rate
		} else {
			st.Devices = devices
		}
		l, err := w.newLoad(fmt.Sprintf("%s-s%02d", w.prefix, k), devices, rate, 0)
		if err != nil {
			return report.Run{}, err
		}
		wg.Add(1)
		go func() { defer wg.Done(); errs <- l.Run(ctx) }()
		if prev != nil {
			prev.Stop() // its alarms in progress go on; no new ones
		}
		prev = l
		fmt.Fprintf(w.cfg.Progress, "%s: step %d: %s for %s\n", w.kind, k, stepLabel(st), stepLen.Round(time.Second))
		t := time.NewTimer(stepLen)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		st.End = time.Now()
		w.stepFigures(&st, fmt.Sprintf("%s-s%02d-", w.prefix, k))
		steps = append(steps, st)
		fmt.Fprintf(w.cfg.Progress, "%s: step %d: %d acked, avg %s, max %s\n", w.kind, k, st.Acked,
			st.Avg.Duration().Round(time.Millisecond), st.Max.Duration().Round(time.Millisecond))
		if st.Stopped {
			break
		}
	}
	end := time.Now()
	if prev != nil {
		prev.Stop()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return report.Run{}, err
		}
	}
	if err := ctx.Err(); err != nil {
		return report.Run{}, err
	}
	r, err := w.finish(ctx, smp, start, end, stopBackground, stopSampling)
	r.Steps = steps
	return r, err
}

func stepLabel(s report.Step) string {
	if s.Rate > 0 {
		return fmt.Sprintf("%g alarms/s", s.Rate)
	}
	return fmt.Sprintf("%d devices", s.Devices)
}

// stepFigures fills a step's response times from the alarms of its load acknowledged so far,
// and marks it as the last when they exceed the original's limits.
func (w *workload) stepFigures(st *report.Step, prefix string) {
	// The step's load is still running: Summary keeps the ledger's lock short.
	sum := w.ledger.Summary(prefix, st.End) // an alarm still waiting counts as waiting since it was sent
	st.Acked = sum.Acked
	if n := st.Acked; n > 0 {
		st.Avg = report.Ms(sum.Sum / time.Duration(n))
	}
	st.Max = report.Ms(sum.Max)
	st.Stopped = st.Avg.Duration() > StepAvgLimit || sum.Max > StepMaxLimit
}

// writeLedger writes the per-request CSV.
func (w *workload) writeLedger(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := w.ledger.WriteEntriesCSV(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// isLPS says whether the workload's topology has a broker.
func (w *workload) isLPS() bool { return w.kind == topology.LPS }

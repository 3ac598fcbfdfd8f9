package faults

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/lpsdev/lps/ledger"
	"github.com/lpsdev/lps/loadgen"
	"github.com/lpsdev/lps/topology"
	"github.com/lpsdev/lps/transport"
)

// Defaults of RunConfig, applied in one place (RunConfig.defaults).
const (
	DefaultRate          = 50.0
	DefaultWarmup        = 2 * time.Second
	DefaultFault         = 3 * time.Second
	DefaultSettle        = 2 * time.Second
	DefaultRestartAfter  = 5 * time.Second
	DefaultDrainTimeout  = 2 * time.Minute
	DefaultQuiet         = 2 * time.Second
	DefaultLoadTimeout   = 15 * time.Second
	DefaultRetryDeadline = 2 * time.Minute
	// DefaultLongFault is the long outages' length in the short suite; the full suite
	// (LPS_FAULTS_FULL=1) runs them for five minutes, as real outages of a legacy backend last
	// minutes to hours.
	DefaultLongFault = 15 * time.Second
	// LightRate is the light traffic of a long outage, a quiet night: each consumer holds about
	// one alarm at a time. BacklogRate builds a backlog of thousands.
	LightRate   = 1.0
	BacklogRate = 100.0
	// inflightWait bounds the wait for a victim to have work in flight before it is killed;
	// the kill happens then anyway, and the note says so.
	inflightWait = 10 * time.Second
)

// RunConfig configures a scenario run. Zero fields take the documented defaults.
type RunConfig struct {
	// Rate is the load's open-model rate in alarms per second; zero means DefaultRate.
	Rate float64
	// Warmup is the load before the fault; zero means DefaultWarmup.
	Warmup time.Duration
	// Fault is how long a fault lasts (a process down, the backend failing, the network cut);
	// zero means DefaultFault. The SPEC's failover downtimes are 30 s.
	Fault time.Duration
	// Cut is how long the network cut lasts; zero means Fault.
	Cut time.Duration
	// LongFault is how long the long outages last; zero means DefaultLongFault.
	LongFault time.Duration
	// RestartAfter is how long a killed mqtt2http stays down in the one-instance kill
	// scenario; zero means DefaultRestartAfter (5 s, as the issue asks).
	RestartAfter time.Duration
	// Settle is the load after the recovery; zero means DefaultSettle.
	Settle time.Duration
	// DrainTimeout bounds the drain; Quiet is its quiet window (see Cluster.Drain). Zero means
	// DefaultDrainTimeout and DefaultQuiet.
	DrainTimeout, Quiet time.Duration
	// AwaitAcked, when positive, makes the run wait after the drain, at most this long, until
	// rast-sim has received every alarm the load got acknowledged. A drain over Mosquitto, which
	// tells no queue depth, ends after its quiet window, and a Mosquitto slowed down by a busy
	// machine (it fsyncs its snapshot after every change) can hold alarms longer than that:
	// they would count as lost. Zero leaves it off.
	AwaitAcked time.Duration
	// LoadTimeout bounds one request of the load; RetryInterval and RetryDeadline are the
	// load's (see loadgen.Config). Zero means DefaultLoadTimeout, loadgen's 1 s and
	// DefaultRetryDeadline.
	LoadTimeout, RetryInterval, RetryDeadline time.Duration
}

func (c *RunConfig) defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	set(&c.Warmup, DefaultWarmup)
	set(&c.Fault, DefaultFault)
	set(&c.Cut, c.Fault)
	set(&c.LongFault, DefaultLongFault)
	set(&c.RestartAfter, DefaultRestartAfter)
	set(&c.Settle, DefaultSettle)
	set(&c.DrainTimeout, DefaultDrainTimeout)
	set(&c.Quiet, DefaultQuiet)
	set(&c.LoadTimeout, DefaultLoadTimeout)
	set(&c.RetryInterval, loadgen.DefaultRetryInterval)
	set(&c.RetryDeadline, DefaultRetryDeadline)
}

// Env is what a scenario's Inject works with: the cluster under load and the run's timing.
type Env struct {
	Cluster *Cluster
	Config  RunConfig
	start   time.Time
	mu      sync.Mutex
	events  []Event
	detail  string
}

// Detail sets the run's one-line fault detail (such as what was in flight at a kill), shown
// in the results table.
func (e *Env) Detail(format string, args ...any) {
	e.mu.Lock()
	e.detail = fmt.Sprintf(format, args...)
	e.mu.Unlock()
	e.Note(format, args...)
}

// Event is one step of a run's timeline.
type Event struct {
	// At is the time since the load started.
	At   time.Duration
	What string
}

// String formats the event as "  12.34s what".
func (e Event) String() string { return fmt.Sprintf("%6.2fs %s", e.At.Seconds(), e.What) }

// Note adds an event to the timeline.
func (e *Env) Note(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, Event{At: time.Since(e.start), What: fmt.Sprintf(format, args...)})
}

// Wait waits d (the fault's length: a timer is the point here), or until ctx ends.
func (e *Env) Wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Scenario is one fault and its recovery.
type Scenario struct {
	// Name is short and stable ("comp2-down"); Title says what happens.
	Name, Title string
	// Setup adjusts the cluster's configuration for this scenario; nil changes nothing.
	Setup func(*ClusterConfig)
	// Inject injects the fault while the load runs and recovers from it: when it returns
	// every process must be running and ready again.
	Inject func(ctx context.Context, e *Env) error
	// Duplicates explains why the backend may see an alarm twice in this scenario although
	// comp2 deduplicates; "" means it must not (the suite asserts duplicated == 0).
	Duplicates string
	// Rate, when positive, is the load's rate in this scenario instead of RunConfig.Rate.
	Rate float64
}

// Result is the outcome of one scenario run.
type Result struct {
	Scenario string
	Broker   BrokerKind
	// Report compares the load's ledger with what rast-sim received.
	Report ledger.Report
	// Drain is how long the backlog took to drain after the load ended.
	Drain DrainResult
	// Load are the load's counters.
	Load loadgen.Stats
	// Timeline is what happened when; Detail the fault's one-line detail (see Env.Detail).
	Timeline []Event
	Detail   string
	// PeakQueue is the embedded broker's largest queue depth seen during the run (sampled every
	// 200 ms), the backlog the fault built; -1 for Mosquitto, which does not tell.
	PeakQueue int
	// Suppressed counts the alarms comp2's dedup windows did not forward again (the comp2
	// runs alive at the end; the duplicates there would have been without dedup).
	Suppressed int
	// Took is the whole run.
	Took time.Duration
}

// Run drives alarms at a steady rate through the cluster with retry-until-2xx, injects the
// scenario's fault after the warm-up, keeps the load on for Settle after the recovery, stops
// it, lets the alarms still failing be retried (up to the retry deadline), drains the LPS and
// compares the ledger with what rast-sim received.
func Run(ctx context.Context, c *Cluster, s Scenario, cfg RunConfig) (Result, error) {
	if s.Rate > 0 {
		cfg.Rate = s.Rate
	}
	cfg.defaults()
	res := Result{Scenario: s.Name, Broker: c.BrokerKind()}
	env := &Env{Cluster: c, Config: cfg, start: time.Now()}
	load, err := loadgen.New(loadgen.Config{
		URLs:          c.Comp1URLs(),
		Rate:          cfg.Rate,
		RetryInterval: cfg.RetryInterval,
		RetryDeadline: cfg.RetryDeadline,
		Prefix:        s.Name,
		Client:        &transport.Client{Timeout: cfg.LoadTimeout},
	})
	if err != nil {
		return res, err
	}
	loadCtx, cancelLoad := context.WithCancel(ctx)
	defer cancelLoad()
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.Run(loadCtx) }()
	env.Note("load started at %g alarms/s", cfg.Rate)
	res.PeakQueue = -1
	peak := make(chan int, 1)
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go func() { peak <- c.samplePeakQueue(sampleCtx) }()

	finish := func(err error) (Result, error) {
		res.Load = load.Stats()
		env.mu.Lock()
		res.Timeline, res.Detail = env.events, env.detail
		env.mu.Unlock()
		res.Took = time.Since(env.start)
		return res, err
	}
	if err := env.Wait(ctx, cfg.Warmup); err != nil {
		return finish(err)
	}
	env.Note("fault: %s", s.Title)
	if err := s.Inject(ctx, env); err != nil {
		return finish(fmt.Errorf("injecting %s: %w", s.Name, err))
	}
	env.Note("recovered: every process ready")
	if err := env.Wait(ctx, cfg.Settle); err != nil {
		return finish(err)
	}
	load.Stop()
	st := load.Stats()
	env.Note("load stopped after %d alarms; %d still being retried", st.Started, st.Outstanding)
	if err := <-loadDone; err != nil {
		return finish(fmt.Errorf("load: %w", err))
	}
	st = load.Stats()
	env.Note("load done: %d acked, %d given up, %d requests", st.Acked, st.GivenUp, st.Attempts)

	dctx, cancel := context.WithTimeout(ctx, cfg.DrainTimeout)
	res.Drain, err = c.Drain(dctx, cfg.Quiet)
	cancel()
	stopSampling()
	res.PeakQueue = <-peak
	if err != nil {
		if c.Broker != nil && c.cfg.Broker == Embedded && c.Broker.Running() {
			// A drain that never ends has so far meant a stuck broker: keep its stacks.
			if derr := c.Broker.Dump(); derr == nil {
				err = fmt.Errorf("%w; the broker's goroutine dump is in %s", err, c.Broker.cfg.LogPath)
			}
		}
		return finish(err)
	}
	env.Note("drained in %s", res.Drain.Took.Round(time.Millisecond))
	if cfg.AwaitAcked > 0 {
		awaitAcked(ctx, env, load.Ledger(), cfg.AwaitAcked)
	}
	received, err := c.Received(ctx)
	if err != nil {
		return finish(err)
	}
	for _, p := range c.Comp2 {
		v, err := c.Metric(ctx, p, "lps_comp2_duplicates_suppressed_total")
		if err != nil {
			return finish(fmt.Errorf("reading comp2's dedup counter: %w", err))
		}
		res.Suppressed += int(v)
	}
	res.Report = load.Ledger().Compare(received)
	res.Report.Name = s.Name + "/" + string(c.BrokerKind())
	return finish(nil)
}

// samplePeakQueue returns the embedded broker's largest queue depth until ctx ends; -1 for
// Mosquitto.
func (c *Cluster) samplePeakQueue(ctx context.Context) int {
	if c.BrokerKind() != Embedded {
		return -1
	}
	peak := 0
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if c.Broker.Running() {
			if st, err := c.brokerStats(ctx); err == nil {
				peak = max(peak, st.QueueDepth)
			}
		}
		select {
		case <-ctx.Done():
			return peak
		case <-tick.C:
		}
	}
}

// awaitInflight polls metric on ps until its sum reaches at least 1 or inflightWait passes,
// and returns the last sum.
func awaitInflight(ctx context.Context, c *Cluster, metric string, ps ...*Process) float64 {
	return awaitInflightN(ctx, c, 1, metric, ps...)
}

// awaitInflightN is awaitInflight until the sum reaches n: a kill then catches several.
func awaitInflightN(ctx context.Context, c *Cluster, n float64, metric string, ps ...*Process) float64 {
	ctx, cancel := context.WithTimeout(ctx, inflightWait)
	defer cancel()
	for {
		var sum float64
		for _, p := range ps {
			v, err := c.Metric(ctx, p, metric)
			if err == nil {
				sum += v
			}
		}
		if sum >= n || ctx.Err() != nil {
			return sum
		}
		t := time.NewTimer(time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// sumMetric is the sum of metric over ps (those that answer).
func sumMetric(ctx context.Context, c *Cluster, metric string, ps ...*Process) float64 {
	var sum float64
	for _, p := range ps {
		if v, err := c.Metric(ctx, p, metric); err == nil {
			sum += v
		}
	}
	return sum
}

// noBrokerKill is the setup of the scenarios that never kill the broker: Mosquitto snapshots
// its store every thousand changes instead of after each (see MosquittoAutosave), which with a
// backlog of tens of thousands (the full suite's long outages) would drain it at dozens of
// messages a second.
func noBrokerKill(cfg *ClusterConfig) { cfg.MosquittoAutosave = 1000 }

// longOutage stops ps (SIGTERM) for the long fault's length, starts them again and tells in
// the detail how the consumers waited it out: how many alarms they republished and how many
// probes they sent, against the alarms the load sent meanwhile. A backlog that cycled through
// the retry topic would show as republishes in the order of the alarms sent.
func longOutage(ctx context.Context, e *Env, ps ...*Process) error {
	c := e.Cluster
	retries := sumMetric(ctx, c, "lps_mqtt_retries_total", c.MQTT2HTTP...)
	probes := sumMetric(ctx, c, "lps_mqtt_outage_probes_total", c.MQTT2HTTP...)
	start := time.Now()
	if err := termAll(ctx, ps...); err != nil {
		return err
	}
	e.Note("stopped (SIGTERM) %s for %s", names(ps), e.Config.LongFault)
	if err := e.Wait(ctx, e.Config.LongFault); err != nil {
		return err
	}
	retries = sumMetric(ctx, c, "lps_mqtt_retries_total", c.MQTT2HTTP...) - retries
	probes = sumMetric(ctx, c, "lps_mqtt_outage_probes_total", c.MQTT2HTTP...) - probes
	sent := e.Config.Rate * time.Since(start).Seconds()
	e.Detail("down %s: ~%.0f alarms sent meanwhile, %.0f republished, %.0f probes", e.Config.LongFault, sent, retries, probes)
	return backAfter(ctx, e, 0, ps...)
}

// awaitPending waits (at most inflightWait) until retries are pending, and returns how many:
// messages waiting for their retry time in the embedded broker (delayed publish) or, with
// Mosquitto, held in the consumers.
func awaitPending(ctx context.Context, c *Cluster) int {
	ctx, cancel := context.WithTimeout(ctx, inflightWait)
	defer cancel()
	for {
		var n int
		if c.BrokerKind() == Embedded {
			if st, err := c.brokerStats(ctx); err == nil {
				n = st.Delayed
			}
		} else {
			n = int(sumMetric(ctx, c, "lps_mqtt_held_retries", c.MQTT2HTTP...))
		}
		if n > 0 || ctx.Err() != nil {
			return n
		}
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// withArgs returns extra with args added to role's.
func withArgs(extra map[string][]string, role string, args ...string) map[string][]string {
	out := map[string][]string{}
	for k, v := range extra {
		out[k] = v
	}
	out[role] = append(append([]string(nil), out[role]...), args...)
	return out
}

// backAfter waits d, starts ps again and waits until the whole cluster is ready.
func backAfter(ctx context.Context, e *Env, d time.Duration, ps ...*Process) error {
	if err := e.Wait(ctx, d); err != nil {
		return err
	}
	if err := e.Cluster.Restart(ctx, ps...); err != nil {
		return err
	}
	e.Note("restarted %s", names(ps))
	return e.Cluster.WaitReady(ctx)
}

// killMidForward slows the backend down until victim has at least n forwards in flight (by its
// metric; at most inflightWait), kills it (SIGKILL), lets the backend answer again, and starts
// the victim again after RestartAfter.
func killMidForward(ctx context.Context, e *Env, victim *Process, metric string, n float64) error {
	c := e.Cluster
	c.Backend.Delay(InflightDelay)
	inflight := awaitInflightN(ctx, c, n, metric, victim)
	err := victim.Kill()
	c.Backend.Pass()
	if err != nil {
		return err
	}
	e.Detail("killed %s with %.0f forwards in flight", victim.Name(), inflight)
	return backAfter(ctx, e, e.Config.RestartAfter, victim)
}

// termAll stops processes gracefully, in parallel.
func termAll(ctx context.Context, ps ...*Process) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second) // mqtt2http drains for 15 s at most
	defer cancel()
	return parallel(ctx, ps, func(ctx context.Context, p *Process) error { return p.Term(ctx) })
}

// killAll kills processes, in parallel.
func killAll(ctx context.Context, ps ...*Process) error {
	return parallel(ctx, ps, func(_ context.Context, p *Process) error { return p.Kill() })
}

func names(ps []*Process) string {
	var n []string
	for _, p := range ps {
		n = append(n, p.Name())
	}
	return strings.Join(n, ", ")
}

// downFor stops ps (gracefully, or with kill -9), waits d, starts them again and waits until
// every process of the cluster is ready.
func downFor(ctx context.Context, e *Env, d time.Duration, kill bool, ps ...*Process) error {
	how, stop := "stopped (SIGTERM)", termAll
	if kill {
		how, stop = "killed (SIGKILL)", killAll
	}
	if err := stop(ctx, ps...); err != nil {
		return err
	}
	e.Note("%s %s", how, names(ps))
	return backAfter(ctx, e, d, ps...)
}

// restartBroker stops the broker (SIGTERM, or SIGKILL when kill), waits the fault's length and
// starts it again on its data.
//
// Mosquitto 2.0 (2.0.11, Debian 12's) does not write shared subscriptions to its persistence
// file: persist__subs_save walks a topic node's plain subscribers and not its shared ones. After
// a restart, until every mqtt2http has connected again and re-subscribed, the share group does
// not exist, and Mosquitto discards what http2mqtt publishes — while confirming it: at QoS 2
// Mosquitto delivers on PUBREL and answers PUBREC and PUBCOMP with success whether or not a
// subscription matched, so http2mqtt cannot see the "no matching subscribers" it refuses at
// QoS 1, and answers 200 for alarms that are gone (the suite lost 38 and 64 of about 370 alarms
// in two of five runs before this). So for Mosquitto the restart brings the consumers back
// first: the publishers' network to the broker stays cut until every mqtt2http is subscribed
// again, as an operator must order a Mosquitto restart. The embedded broker keeps its shared
// subscriptions in its data dir and is restarted without that help.
func restartBroker(ctx context.Context, e *Env, kill bool) error {
	c := e.Cluster
	how, stop := "stopped (SIGTERM)", termAll
	if kill {
		how, stop = "killed (SIGKILL)", killAll
	}
	if err := stop(ctx, c.Broker); err != nil {
		return err
	}
	e.Note("%s the broker", how)
	if c.BrokerKind() == Mosquitto {
		// Publishers stay cut off during the outage too (see startBrokerAgain).
		for _, p := range c.PublisherProxies {
			p.Cut()
		}
		defer func() {
			for _, p := range c.PublisherProxies {
				p.Restore()
			}
		}()
	}
	if err := e.Wait(ctx, e.Config.Fault); err != nil {
		return err
	}
	return startBrokerAgain(ctx, e)
}

// Slow-upstream settings: comp2 waits SlowTimeout for the backend, which answers after
// SlowDelay.
const (
	SlowTimeout = time.Second
	SlowDelay   = 2 * time.Second
	// InflightDelay slows the backend down while a scenario waits for a victim to have
	// forwards in flight, so that there are some to lose.
	InflightDelay = 200 * time.Millisecond
)

// Why the backend could see an alarm twice although comp2 deduplicates, were the copies of an
// alarm not sent to one comp2 by their Request-Id (transport.Upstreams): each comp2's window is
// its own. With that affinity none of these makes a duplicate; they stay to explain one.
const (
	dupUnconfirmedPublish = "a publish whose PUBCOMP never came back (the connection or the broker went first) is " +
		"answered 503 although the broker may have taken the message; the load retries the alarm with the same " +
		"Request-Id, which becomes a second MQTT message, and the two copies can go through different mqtt2http and " +
		"comp2 instances, whose dedup windows are separate"
	dupLostAck = "an acknowledgement lost with the connection makes the broker deliver a message again that was " +
		"already forwarded, possibly to another member of the share group and so through another comp2, whose dedup " +
		"window never saw it"
)

// dupKilledMidForward is the residual case of every dedup store: nothing can tell whether the
// backend took an alarm whose comp2 died before recording the outcome, and the LPS delivers it
// again rather than risk losing it.
const dupKilledMidForward = "comp2 was killed (kill -9) after the backend took an alarm and before it recorded that: " +
	"no store can know, and the alarm is delivered again rather than risk losing it (at most the forwards in flight at the kill)"

// dupLocalWindowFailover is the residual case of a window of each comp2's own.
const dupLocalWindowFailover = "each comp2 has a window of its own: an alarm that comp2-2 forwarded while comp2-1 was down, " +
	"redelivered after comp2-1 is back (Mosquitto keeps a killed consumer's messages for it until it reconnects), goes to comp2-1, " +
	"whose window never saw it; --dedup-store redis:// shares one window"

// dedupScenarios are the faults of comp2's dedup window, each with comp2's window on disk (dir)
// and shared in Redis (redis).
func dedupScenarios() []Scenario {
	var out []Scenario
	for _, store := range []DedupStore{DedupDir, DedupRedis} {
		setup := func(cfg *ClusterConfig) { cfg.DedupStore = store }
		// Several forwards in flight at once, so that a kill catches a few, and among them
		// alarms that failed over to another comp2 than their own.
		busy := func(cfg *ClusterConfig) { cfg.DedupStore, cfg.MaxInflight = store, 8 }
		failoverDup := ""
		if store == DedupDir {
			failoverDup = dupLocalWindowFailover
		}
		out = append(out,
			Scenario{
				Name:       "comp2-kill-" + string(store),
				Title:      fmt.Sprintf("kill -9 of comp2-1 with forwards in flight, restarted 5 s later (window: %s)", store),
				Setup:      busy,
				Rate:       BacklogRate,
				Duplicates: dupKilledMidForward,
				Inject: func(ctx context.Context, e *Env) error {
					return killMidForward(ctx, e, e.Cluster.Comp2[0], "lps_http_requests_in_flight", 3)
				},
			},
			Scenario{
				Name:  "comp2-restart-all-" + string(store),
				Title: fmt.Sprintf("every comp2 stopped (SIGTERM) with forwards in flight and started again at once (window: %s)", store),
				Setup: setup,
				Inject: func(ctx context.Context, e *Env) error {
					c := e.Cluster
					c.Backend.Delay(InflightDelay)
					n := awaitInflight(ctx, c, "lps_http_requests_in_flight", c.Comp2...)
					// The slow backend still answers while they stop: each finishes and records
					// its forwards before it exits.
					err := termAll(ctx, c.Comp2...)
					c.Backend.Pass()
					if err != nil {
						return err
					}
					e.Detail("stopped every comp2 with %.0f forwards in flight", n)
					if err := c.Restart(ctx, c.Comp2...); err != nil {
						return err
					}
					e.Note("restarted every comp2")
					return c.WaitReady(ctx)
				},
			},
			Scenario{
				Name:       "comp2-failover-" + string(store),
				Title:      fmt.Sprintf("comp2-1 down, proxy2-1 killed (kill -9) while the others forward comp2-1's alarms, comp2-1 back, then proxy2-1 (window: %s)", store),
				Setup:      busy,
				Rate:       BacklogRate,
				Duplicates: failoverDup,
				Inject: func(ctx context.Context, e *Env) error {
					c := e.Cluster
					if err := termAll(ctx, c.Comp2[0]); err != nil {
						return err
					}
					e.Note("stopped %s: its alarms fail over", c.Comp2[0].Name())
					c.Backend.Delay(InflightDelay)
					victim := c.MQTT2HTTP[0]
					n := awaitInflightN(ctx, c, 3, "lps_mqtt_inflight_forwards", victim)
					err := victim.Kill()
					c.Backend.Pass()
					if err != nil {
						return err
					}
					e.Detail("killed %s with %.0f forwards in flight, %s down", victim.Name(), n, c.Comp2[0].Name())
					// comp2-1 first: the killed consumer's redelivered alarms then reach their own
					// comp2 again, not the one that forwarded them.
					if err := e.Wait(ctx, e.Config.Fault); err != nil {
						return err
					}
					if err := c.Restart(ctx, c.Comp2[0]); err != nil {
						return err
					}
					e.Note("restarted %s", c.Comp2[0].Name())
					return backAfter(ctx, e, 0, victim)
				},
			},
		)
	}
	return out
}

// Scenarios is the fault suite of the issue: each scenario injects one fault into a running
// LPS under load and recovers from it.
func Scenarios() []Scenario {
	return append([]Scenario{
		{
			Name:  "comp2-down",
			Title: "every comp2 down (SIGTERM), then started again",
			Inject: func(ctx context.Context, e *Env) error {
				return downFor(ctx, e, e.Config.Fault, false, e.Cluster.Comp2...)
			},
		},
		{
			Name:  "rastsim-down",
			Title: "rast-sim (the backend) down (SIGTERM), then started again",
			Inject: func(ctx context.Context, e *Env) error {
				return downFor(ctx, e, e.Config.Fault, false, e.Cluster.RastSim)
			},
		},
		{
			Name:  "mqtt2http-kill-one",
			Title: "kill -9 of one mqtt2http with forwards in flight, restarted 5 s later",
			Inject: func(ctx context.Context, e *Env) error {
				return killMidForward(ctx, e, e.Cluster.MQTT2HTTP[0], "lps_mqtt_inflight_forwards", 1)
			},
		},
		{
			Name:  "mqtt2http-kill-all",
			Title: "kill -9 of every mqtt2http with forwards in flight, restarted after the fault",
			Inject: func(ctx context.Context, e *Env) error {
				c := e.Cluster
				c.Backend.Delay(InflightDelay)
				n := awaitInflight(ctx, c, "lps_mqtt_inflight_forwards", c.MQTT2HTTP...)
				err := killAll(ctx, c.MQTT2HTTP...)
				c.Backend.Pass()
				if err != nil {
					return err
				}
				e.Detail("killed every mqtt2http with %.0f forwards in flight", n)
				return backAfter(ctx, e, e.Config.Fault, c.MQTT2HTTP...)
			},
		},
		{
			Name:  "http2mqtt-kill",
			Title: "kill -9 of one http2mqtt with requests in flight, restarted after the fault",
			Inject: func(ctx context.Context, e *Env) error {
				c := e.Cluster
				victim := c.HTTP2MQTT[0]
				n := awaitInflight(ctx, c, "lps_http_requests_in_flight", victim)
				if err := victim.Kill(); err != nil {
					return err
				}
				e.Detail("killed %s with %.0f requests in flight", victim.Name(), n)
				return backAfter(ctx, e, e.Config.Fault, victim)
			},
		},
		{
			Name:   "broker-restart",
			Title:  "broker stopped gracefully (SIGTERM), started again on its data after the fault",
			Inject: func(ctx context.Context, e *Env) error { return restartBroker(ctx, e, false) },
		},
		{
			Name:   "broker-kill",
			Title:  "broker killed (SIGKILL), started again on its data after the fault",
			Inject: func(ctx context.Context, e *Env) error { return restartBroker(ctx, e, true) },
		},
		{
			Name:  "network-cut",
			Title: "network between every mqtt2http and the broker cut (connections reset, new ones refused)",
			Inject: func(ctx context.Context, e *Env) error {
				c := e.Cluster
				for _, p := range c.ConsumerProxies {
					p.Cut()
				}
				e.Note("cut %d consumer links for %s", len(c.ConsumerProxies), e.Config.Cut)
				if err := e.Wait(ctx, e.Config.Cut); err != nil {
					return err
				}
				for _, p := range c.ConsumerProxies {
					p.Restore()
				}
				e.Note("network restored")
				return c.WaitReady(ctx)
			},
		},
		{
			Name:  "upstream-slow",
			Title: fmt.Sprintf("backend answers after %s, comp2 waits %s (--timeout)", SlowDelay, SlowTimeout),
			Setup: func(cfg *ClusterConfig) { cfg.Comp2Timeout = SlowTimeout },
			Inject: func(ctx context.Context, e *Env) error {
				c := e.Cluster
				c.Backend.Delay(SlowDelay)
				e.Note("backend slow")
				err := e.Wait(ctx, e.Config.Fault)
				c.Backend.Pass()
				e.Detail("%d answers held past comp2's timeout", c.Backend.Counts().Delayed)
				return err
			},
		},
		{
			Name:  "comp2-outage-light",
			Setup: noBrokerKill,
			Title: "every comp2 down for the long outage (5 min in the full suite), light traffic: a quiet night",
			Rate:  LightRate,
			Inject: func(ctx context.Context, e *Env) error {
				return longOutage(ctx, e, e.Cluster.Comp2...)
			},
		},
		{
			Name:  "comp2-outage-backlog",
			Setup: noBrokerKill,
			Title: "every comp2 down for the long outage under load: a backlog of thousands",
			Rate:  BacklogRate,
			Inject: func(ctx context.Context, e *Env) error {
				return longOutage(ctx, e, e.Cluster.Comp2...)
			},
		},
		{
			Name:  "rastsim-outage-light",
			Setup: noBrokerKill,
			Title: "the backend down for the long outage, light traffic",
			Rate:  LightRate,
			Inject: func(ctx context.Context, e *Env) error {
				return longOutage(ctx, e, e.Cluster.RastSim)
			},
		},
		{
			Name:  "rastsim-outage-backlog",
			Setup: noBrokerKill,
			Title: "the backend down for the long outage under load",
			Rate:  BacklogRate,
			Inject: func(ctx context.Context, e *Env) error {
				return longOutage(ctx, e, e.Cluster.RastSim)
			},
		},
		{
			Name:  "before-consumers",
			Title: "alarms sent before any mqtt2http ever subscribed (a first start), consumers started after the fault",
			Setup: func(cfg *ClusterConfig) {
				cfg.ConsumersLater = true
				if cfg.Broker == Mosquitto {
					// Mosquitto has no declared queues and confirms a QoS 2 publish that matches
					// no subscription (no 0x10 in its PUBREC); at QoS 1 its PUBACK says 0x10, and
					// http2mqtt answers 503, so the load keeps the alarm. The README's advice.
					cfg.ExtraArgs = withArgs(cfg.ExtraArgs, topology.RoleHTTP2MQTT, "--qos", "1")
				}
			},
			Inject: func(ctx context.Context, e *Env) error {
				if err := e.Wait(ctx, e.Config.Fault); err != nil {
					return err
				}
				if err := e.Cluster.StartConsumers(ctx); err != nil {
					return err
				}
				e.Note("started every mqtt2http for the first time")
				return nil
			},
		},
		{
			Name:  "mqtt2http-sigterm-retry-pending",
			Title: "every mqtt2http stopped (SIGTERM) while retries are pending, the backend failing, then all back",
			Inject: func(ctx context.Context, e *Env) error {
				c := e.Cluster
				c.Backend.Fail(http.StatusInternalServerError)
				e.Note("backend failing")
				// Pending: in the embedded broker's delayed set, or held in the bridges (Mosquitto).
				pending := awaitPending(ctx, c)
				err := termAll(ctx, c.MQTT2HTTP...)
				c.Backend.Pass()
				if err != nil {
					return err
				}
				e.Detail("stopped every mqtt2http with %d retries pending", pending)
				return backAfter(ctx, e, e.Config.Fault, c.MQTT2HTTP...)
			},
		},
		{
			Name:  "upstream-500",
			Title: "backend answers 500 to everything",
			Inject: func(ctx context.Context, e *Env) error {
				c := e.Cluster
				c.Backend.Fail(http.StatusInternalServerError)
				e.Note("backend failing")
				err := e.Wait(ctx, e.Config.Fault)
				c.Backend.Pass()
				e.Detail("%d requests answered 500", c.Backend.Counts().Failed)
				return err
			},
		},
	}, dedupScenarios()...)
}

func peakq(n int) string {
	if n < 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

// FormatTable formats results as a fixed-width table: one line per result.
func FormatTable(results []Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-20s %-9s %6s %6s %8s %5s %5s %5s %7s %8s %9s %9s %8s %6s  %s\n", "scenario", "broker", "sent", "acked",
		"received", "lost", "dup", "supp", "unacked", "retried", "p99", "max", "drain", "peakq", "fault detail")
	for _, r := range results {
		fmt.Fprintf(&b, "%-20s %-9s %6d %6d %8d %5d %5d %5d %7d %8d %9s %9s %8s %6s  %s\n", r.Scenario, r.Broker, r.Report.Sent,
			r.Report.Acked, r.Report.Received, r.Report.Lost, r.Report.Duplicated, r.Suppressed, r.Report.Unacked, r.Report.Retried,
			r.Report.Latency.P99.Round(time.Millisecond), r.Report.Latency.Max.Round(time.Millisecond),
			r.Drain.Took.Round(10*time.Millisecond), peakq(r.PeakQueue), r.Detail)
	}
	return b.String()
}

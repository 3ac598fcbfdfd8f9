package faults

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/lpsdev/lps/ledger"
	"github.com/lpsdev/lps/topology"
)

// SigtermRoles are the roles of the LPS topology in the order an alarm passes them; each gets
// a "sigterm-<role>" scenario.
var SigtermRoles = []string{topology.RoleComp1, topology.RoleHTTP2MQTT, topology.RoleMQTT2HTTP, topology.RoleComp2, topology.RoleRastSim, topology.RoleBroker}

// Shutdown graces: how long a process of a role may take to stop after SIGTERM before it is
// killed, as compose/lps.yml's stop_grace_period gives them (Docker sends SIGKILL then).
const (
	// HTTPGrace is the HTTP roles' (comp1, comp2, http2mqtt, rast-sim): --shutdown-timeout's
	// default of 65 s for the requests in flight, plus 5 s.
	HTTPGrace = 70 * time.Second
	// MQTT2HTTPGrace is mqtt2http's (compose's stop_grace_period): --drain-timeout's 15 s for
	// the forwards in flight, up to 5 s until the acknowledgements are sent, 5 s to disconnect.
	MQTT2HTTPGrace = 30 * time.Second
	// BrokerGrace is the broker's (the embedded one or Mosquitto).
	BrokerGrace = 30 * time.Second
)

// ShutdownGrace is the shutdown grace of role.
func ShutdownGrace(role string) time.Duration {
	switch role {
	case topology.RoleMQTT2HTTP:
		return MQTT2HTTPGrace
	case topology.RoleBroker:
		return BrokerGrace
	default:
		return HTTPGrace
	}
}

// Shutdown is how one process stopped after SIGTERM and came back.
type Shutdown struct {
	Role, Process string
	// InFlight is the work the process (for the broker: every mqtt2http) had in flight just
	// before the signal; -1 when the scenario did not wait for any.
	InFlight float64
	// Took is the time from SIGTERM until the process had exited; Grace the most it may take.
	Took, Grace time.Duration
	// ExitCode is the exit status; -1 when a signal ended the process, Signal names it.
	ExitCode int
	Signal   string
	// Killed says the process was still running at the end of its grace and was killed.
	Killed bool
	// Restart is the time from the restart until every process of the cluster was ready again.
	Restart time.Duration
}

// Err says what is wrong with the shutdown: a process that was killed at the end of its grace
// or did not exit with status 0. Nil for a clean stop.
func (s Shutdown) Err() error {
	switch {
	case s.Killed:
		return fmt.Errorf("%s did not exit within its grace of %s after SIGTERM; killed", s.Process, s.Grace)
	case s.Signal != "":
		return fmt.Errorf("%s was ended by %s after SIGTERM, want exit status 0", s.Process, s.Signal)
	case s.ExitCode != 0:
		return fmt.Errorf("%s exited with status %d after SIGTERM, want 0", s.Process, s.ExitCode)
	case s.Took > s.Grace:
		return fmt.Errorf("%s took %s to exit after SIGTERM, more than its grace of %s", s.Process, s.Took, s.Grace)
	}
	return nil
}

// String is a one-line account, as the scenario's fault detail shows it.
func (s Shutdown) String() string {
	exit := fmt.Sprintf("exit %d", s.ExitCode)
	if s.Signal != "" {
		exit = "ended by " + s.Signal
	}
	if s.Killed {
		exit = "killed at the end of its grace"
	}
	inflight := "signalled at once"
	if s.InFlight >= 0 {
		inflight = fmt.Sprintf("%.0f in flight", s.InFlight)
	}
	return fmt.Sprintf("SIGTERM %s (%s): %s after %s (grace %s); ready %s after its restart", s.Process, inflight, exit,
		s.Took.Round(time.Millisecond), s.Grace, s.Restart.Round(time.Millisecond))
}

// SigtermScenario is the graceful shutdown of one process of a role under load: the process
// gets SIGTERM (with work in flight where the scenario can arrange that), must exit by itself
// with status 0 within its grace, stays down for the run's fault length (RunConfig.Fault) and
// is started again. Run checks the rest: no alarm answered 2xx is lost. The outcome of the
// shutdown is in Shutdown once the scenario ran.
type SigtermScenario struct {
	Scenario
	Role string

	mu       sync.Mutex
	shutdown *Shutdown
}

// Shutdown is how the victim stopped in the last run; false before the signal was sent.
func (s *SigtermScenario) Shutdown() (Shutdown, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown == nil {
		return Shutdown{}, false
	}
	return *s.shutdown, true
}

func (s *SigtermScenario) record(sd Shutdown) {
	s.mu.Lock()
	s.shutdown = &sd
	s.mu.Unlock()
}

// sigtermRole says how a role's scenario picks its victim and gets work in flight before the
// signal.
type sigtermRole struct {
	title  string
	victim func(*Cluster) *Process
	// metric is summed over watch until it is at least 1 before the signal (see awaitInflight);
	// "" sends the signal at once.
	metric string
	watch  func(*Cluster) []*Process
	// slowBackend delays the backend's answers while the scenario waits for work in flight, so
	// that forwards are in flight at the signal.
	slowBackend bool
	// hold, when set, holds the victim's work until its shutdown has begun (the victim logged
	// stopping), then the returned release lets it finish: what was in flight at the signal
	// must still be answered.
	hold func(*Cluster) (release func())
	// stopping is the message the victim logs when its shutdown begins.
	stopping string
	setup    func(*ClusterConfig)
}

func one(ps func(*Cluster) []*Process) func(*Cluster) *Process {
	return func(c *Cluster) *Process { return ps(c)[0] }
}

// httpStopping is what transport.Server logs when a graceful shutdown begins.
const httpStopping = "shutting down, finishing requests in flight"

// holdPublishes silences the network between the first http2mqtt and the broker: its
// publishes wait for their PUBCOMP, and so do the requests of the first comp1, whose upstream
// it is.
func holdPublishes(c *Cluster) func() {
	p := c.PublisherProxies[0]
	p.Blackhole()
	return p.Restore
}

var sigtermRoles = map[string]sigtermRole{
	topology.RoleComp1: {
		title:    "one comp1 gets SIGTERM with requests in flight; the load fails over to the others; restarted after the fault",
		victim:   one(func(c *Cluster) []*Process { return c.Comp1 }),
		metric:   "lps_http_requests_in_flight",
		hold:     holdPublishes,
		stopping: httpStopping,
	},
	topology.RoleHTTP2MQTT: {
		title:    "one http2mqtt gets SIGTERM with publishes in flight, restarted after the fault",
		victim:   one(func(c *Cluster) []*Process { return c.HTTP2MQTT }),
		metric:   "lps_http_requests_in_flight",
		hold:     holdPublishes,
		stopping: httpStopping,
	},
	topology.RoleMQTT2HTTP: {
		title:       "one mqtt2http gets SIGTERM with forwards in flight (backend slowed), restarted after the fault",
		victim:      one(func(c *Cluster) []*Process { return c.MQTT2HTTP }),
		metric:      "lps_mqtt_inflight_forwards",
		slowBackend: true,
	},
	topology.RoleComp2: {
		title:       "one comp2 gets SIGTERM with forwards in flight (backend slowed), restarted after the fault",
		victim:      one(func(c *Cluster) []*Process { return c.Comp2 }),
		metric:      "lps_http_requests_in_flight",
		slowBackend: true,
	},
	topology.RoleRastSim: {
		title:  "rast-sim (mascots2022 delays) gets SIGTERM with commands in flight, restarted after the fault",
		victim: func(c *Cluster) *Process { return c.RastSim },
		metric: "lps_http_requests_in_flight",
		// The cluster's rast-sim answers at once (--model none), so nothing would be in flight at
		// the signal; with the model's delays (about 35 ms at low load) commands are.
		setup: func(cfg *ClusterConfig) {
			cfg.ExtraArgs = cloneExtraArgs(cfg.ExtraArgs)
			cfg.ExtraArgs[topology.RoleRastSim] = append(cfg.ExtraArgs[topology.RoleRastSim], "--model", "mascots2022")
		},
	},
	topology.RoleBroker: {
		title:  "the broker gets SIGTERM with forwards in flight (backend slowed), restarted on its data after the fault",
		victim: func(c *Cluster) *Process { return c.Broker },
		// Messages delivered and not yet acknowledged are what the broker must keep.
		metric:      "lps_mqtt_inflight_forwards",
		watch:       func(c *Cluster) []*Process { return c.MQTT2HTTP },
		slowBackend: true,
		// The broker's stop drops every connection: a publish whose PUBCOMP had not come back is
		// answered 503 and sent again by the load, an acknowledgement lost with the connection
		// makes the broker deliver a forwarded message again. Both copies go to the comp2 their
		// Request-Id picks, whose dedup window answers the second: none reaches the backend.
	},
}

func cloneExtraArgs(m map[string][]string) map[string][]string {
	out := make(map[string][]string, len(m)+1)
	for k, v := range m {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// NewSigtermScenario returns the scenario "sigterm-<role>" for one of SigtermRoles.
func NewSigtermScenario(role string) (*SigtermScenario, error) {
	r, ok := sigtermRoles[role]
	if !ok {
		return nil, fmt.Errorf("no SIGTERM scenario for role %q (want one of %v)", role, SigtermRoles)
	}
	s := &SigtermScenario{Role: role}
	s.Scenario = Scenario{
		Name:   "sigterm-" + role,
		Title:  r.title,
		Setup:  r.setup,
		Inject: func(ctx context.Context, e *Env) error { return s.inject(ctx, e, r) },
	}
	return s, nil
}

// SigtermScenarios are the SIGTERM scenarios of every role, in the order of SigtermRoles.
func SigtermScenarios() []*SigtermScenario {
	var out []*SigtermScenario
	for _, role := range SigtermRoles {
		s, _ := NewSigtermScenario(role) // every role of SigtermRoles has one
		out = append(out, s)
	}
	return out
}

func (s *SigtermScenario) inject(ctx context.Context, e *Env, r sigtermRole) error {
	c := e.Cluster
	victim := r.victim(c)
	sd := Shutdown{Role: s.Role, Process: victim.Name(), InFlight: -1, Grace: ShutdownGrace(s.Role)}
	var afterSignal func()
	if r.metric != "" {
		if r.slowBackend {
			c.Backend.Delay(InflightDelay)
			defer c.Backend.Pass()
		}
		if r.hold != nil {
			release := r.hold(c)
			defer release()
			afterSignal = func() {
				if !awaitLogged(ctx, victim, r.stopping, inflightWait) {
					e.Note("%s did not log %q within %s", victim.Name(), r.stopping, inflightWait)
				}
				release()
				e.Note("%s is stopping; its work in flight let through", victim.Name())
			}
		}
		watch := []*Process{victim}
		if r.watch != nil {
			watch = r.watch(c)
		}
		sd.InFlight = awaitInflight(ctx, c, r.metric, watch...)
	}
	took, exitErr, killed, err := termWait(ctx, victim, sd.Grace, afterSignal)
	c.Backend.Pass()
	if err != nil {
		return err
	}
	sd.Took, sd.Killed = took, killed
	sd.ExitCode, sd.Signal = exitStatus(exitErr)
	s.record(sd)
	e.Note("%s exited after SIGTERM in %s: %v", victim.Name(), took.Round(time.Millisecond), exitErr)

	// Down for the fault's length: long enough that the load meets the gap (a comp1 that is
	// down refuses connections, and the load retries on the next one).
	if err := e.Wait(ctx, e.Config.Fault); err != nil {
		return err
	}
	start := time.Now()
	if s.Role == topology.RoleBroker {
		err = startBrokerAgain(ctx, e)
	} else if err = c.Restart(ctx, victim); err == nil {
		e.Note("restarted %s", victim.Name())
		err = c.WaitReady(ctx)
	}
	sd.Restart = time.Since(start)
	s.record(sd)
	e.Detail("%s", sd)
	return err
}

// termWait sends SIGTERM to p, calls afterSignal (when set) and waits until p exits by itself,
// at most grace from the signal; then it is killed (killed is true). took is the time from the
// signal to the exit, exitErr how the run ended (Process.ExitErr). err is set only when the
// signal could not be sent or ctx ended.
func termWait(ctx context.Context, p *Process, grace time.Duration, afterSignal func()) (took time.Duration, exitErr error, killed bool, err error) {
	done := p.exited()
	if done == nil || !p.Running() {
		return 0, nil, false, fmt.Errorf("%s is not running", p.Name())
	}
	start := time.Now()
	if err := p.signal(syscall.SIGTERM); err != nil {
		return 0, nil, false, fmt.Errorf("sending SIGTERM to %s: %w", p.Name(), err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	if afterSignal != nil {
		afterSignal()
	}
	select {
	case <-done:
		return time.Since(start), p.ExitErr(), false, nil
	case <-t.C:
		took = time.Since(start)
		if err := p.Kill(); err != nil {
			return took, nil, true, err
		}
		return took, p.ExitErr(), true, nil
	case <-ctx.Done():
		p.Kill()
		return time.Since(start), nil, false, fmt.Errorf("waiting for %s to exit after SIGTERM: %w", p.Name(), ctx.Err())
	}
}

// awaitLogged polls until p's current run logged msg, at most d; it reports whether it did.
func awaitLogged(ctx context.Context, p *Process, msg string, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		if _, ok := p.Field(msg, "level"); ok {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// exitStatus turns how a run ended into its exit status, or -1 and the signal that ended it.
func exitStatus(err error) (code int, signal string) {
	if err == nil {
		return 0, ""
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -1, ws.Signal().String()
		}
		return ee.ExitCode(), ""
	}
	return -1, err.Error()
}

// startBrokerAgain starts the stopped broker on its data and waits until every process is
// ready. Mosquitto does not persist shared subscriptions, so its
// publishers stay cut off until every mqtt2http has subscribed again.
func startBrokerAgain(ctx context.Context, e *Env) error {
	c := e.Cluster
	consumersFirst := c.BrokerKind() == Mosquitto
	if consumersFirst {
		for _, p := range c.PublisherProxies {
			p.Cut()
		}
		defer func() {
			for _, p := range c.PublisherProxies {
				p.Restore()
			}
		}()
	}
	if err := c.Restart(ctx, c.Broker); err != nil {
		return err
	}
	e.Note("restarted the broker")
	if consumersFirst {
		if err := parallel(ctx, c.MQTT2HTTP, func(ctx context.Context, p *Process) error { return p.WaitReady(ctx) }); err != nil {
			return err
		}
		for _, p := range c.PublisherProxies {
			p.Restore()
		}
		e.Note("every mqtt2http subscribed again; publishers let through to Mosquitto")
	}
	return c.WaitReady(ctx)
}

// AwaitReceived polls rast-sim until it has received every id of ids or d passes, and returns
// the ids still missing then.
func (c *Cluster) AwaitReceived(ctx context.Context, ids []string, d time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		received, err := c.Received(ctx)
		var missing []string
		if err == nil {
			for _, id := range ids {
				if received[id] == 0 {
					missing = append(missing, id)
				}
			}
			if len(missing) == 0 {
				return nil, nil
			}
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return nil, err
			}
			return missing, nil
		case <-tick.C:
		}
	}
}

// awaitAcked waits, at most d, until rast-sim has received every alarm the ledger has
// acknowledged (see RunConfig.AwaitAcked), and notes in the timeline when it had to wait.
func awaitAcked(ctx context.Context, e *Env, l *ledger.Ledger, d time.Duration) {
	var acked []string
	for _, en := range l.Entries() {
		if en.Acked {
			acked = append(acked, en.ID)
		}
	}
	start := time.Now()
	missing, err := e.Cluster.AwaitReceived(ctx, acked, d)
	took := time.Since(start)
	switch {
	case err != nil:
		e.Note("waiting for the acknowledged alarms at rast-sim: %v", err)
	case len(missing) > 0:
		e.Note("%d acknowledged alarms still not at rast-sim %s after the drain", len(missing), d)
	case took >= 100*time.Millisecond:
		e.Note("the last acknowledged alarms reached rast-sim %s after the drain", took.Round(time.Millisecond))
	}
}

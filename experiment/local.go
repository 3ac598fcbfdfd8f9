package experiment

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/lpsdev/lps/faults"
	"github.com/lpsdev/lps/roles/rastsim"
	"github.com/lpsdev/lps/topology"
)

// stopGrace is how long a stopped service may take after SIGTERM before it is killed: `docker
// stop`'s default, as the original's containers got.
const stopGrace = 10 * time.Second

// target is where an experiment runs one topology: started whole, then services stopped and
// started by name.
type target interface {
	// Plan is the topology that runs.
	Plan() topology.Plan
	// Comp1URLs are the devices' endpoints; SimURL is rast-sim's base URL; BrokerAdmin the
	// broker's admin base URL ("" without a broker); Consumers the mqtt2http admin base URLs
	// by service name.
	Comp1URLs() []string
	SimURL() string
	BrokerAdmin() string
	Consumers() map[string]string
	// Stop stops a service as `docker stop` does; Start starts it again (a process: until it
	// is ready; a container: as `docker start`, without waiting for its healthcheck).
	Stop(ctx context.Context, service string) error
	Start(ctx context.Context, service string) error
	// Received is every Request-Id rast-sim received and how often, over all its runs.
	Received(ctx context.Context) (map[string]int, error)
	// CPU is the CPU time each service used so far, over all its runs, by service name; nil
	// when the target cannot tell.
	CPU() map[string]time.Duration
	// Memory is each running service's resident memory now and its peak, by service name;
	// nil when the target cannot tell.
	Memory() map[string]faults.Memory
	Close()
}

// localConfig configures a local target.
type localConfig struct {
	Kind     string
	Binary   string // the lps binary
	Dir      string // logs and the broker's data
	Model    string // rast-sim's --model
	Mapping  string // rast-sim's --mapping ("" the alarm command only)
	Faithful bool
	// StartTimeout bounds the start of each tier.
	StartTimeout time.Duration
}

// local runs a topology as processes of the lps binary on loopback, as topology.Describe plans
// it: every service on a free port that it keeps across restarts.
type local struct {
	cfg   localConfig
	plan  topology.Plan
	procs map[string]*faults.Process
	sim   *faults.SimReceived
	http  *http.Client
}

func startLocal(ctx context.Context, cfg localConfig) (_ *local, err error) {
	plan, err := topology.Describe(cfg.Kind, 0)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	l := &local{cfg: cfg, plan: plan, procs: map[string]*faults.Process{}, sim: faults.NewSimReceived(),
		http: &http.Client{Timeout: 5 * time.Second}}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	for _, tier := range plan.Tiers() {
		var ps []*faults.Process
		for _, n := range tier {
			p := l.process(n)
			l.procs[n.Name] = p
			ps = append(ps, p)
		}
		if err := l.startAll(ctx, ps); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// process makes the process of one service: the plan's command line, JSON logs to
// <dir>/<name>.log, a free port pinned after the first start, readiness from /readyz.
func (l *local) process(n topology.Node) *faults.Process {
	addr := func(svc string) string { return l.procs[svc].Arg("--listen") }
	listen := "--listen"
	if n.Role == topology.RoleMQTT2HTTP {
		listen = "--admin-listen" // mqtt2http listens for nothing but its admin API
	}
	args := append(n.Args(addr), "--log-format", "json", listen, faults.LoopbackAddr())
	pins := []faults.Pin{{Flag: listen, Msg: "listening"}}
	ready := faults.HTTPReady(listen, "/readyz")
	var onLine func(int, []byte)
	switch n.Role {
	case topology.RoleRastSim:
		args = append(args, "--model", l.cfg.Model)
		if l.cfg.Mapping != "" {
			args = append(args, "--mapping", l.cfg.Mapping)
		}
		onLine = l.sim.OnLine
	case topology.RoleBroker:
		args = append(args, "--admin-listen", faults.LoopbackAddr(), "--data-dir", filepath.Join(l.cfg.Dir, "broker-data"))
		// The MQTT address is in the "started" line, the admin listener's in "listening".
		pins = []faults.Pin{{Flag: "--listen", Msg: "started"}, {Flag: "--admin-listen", Msg: "listening"}}
		ready = faults.HTTPReady("--admin-listen", "/readyz")
	case topology.RoleMQTT2HTTP:
		if l.cfg.Faithful {
			args = append(args, FaithfulMQTT2HTTP...)
		}
	}
	p := faults.NewProcess(faults.ProcessConfig{
		Name:    n.Name,
		Path:    l.cfg.Binary,
		Args:    args,
		LogPath: filepath.Join(l.cfg.Dir, n.Name+".log"),
		Pins:    pins,
		Ready:   ready,
		OnLine:  onLine,
	})
	if n.Role == topology.RoleRastSim {
		l.sim.Track(p)
	}
	return p
}

// FaithfulMQTT2HTTP are the original's settings of legacy_proxy_2: one message at a time, a
// fixed retry every second, forever.
var FaithfulMQTT2HTTP = []string{"--max-inflight", "1", "--retry-base", "1s", "--retry-max", "1s", "--max-attempts", "0"}

func (l *local) startAll(ctx context.Context, ps []*faults.Process) error {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.StartTimeout)
	defer cancel()
	return faults.StartAll(ctx, ps...)
}

func (l *local) Plan() topology.Plan { return l.plan }

func (l *local) Comp1URLs() []string {
	var urls []string
	for _, n := range l.plan.ByRole(topology.RoleComp1) {
		urls = append(urls, "http://"+l.procs[n.Name].Arg("--listen"))
	}
	return urls
}

func (l *local) SimURL() string {
	return "http://" + l.procs[l.plan.ByRole(topology.RoleRastSim)[0].Name].Arg("--listen")
}

func (l *local) BrokerAdmin() string {
	b := l.plan.ByRole(topology.RoleBroker)
	if len(b) == 0 {
		return ""
	}
	return "http://" + l.procs[b[0].Name].Arg("--admin-listen")
}

func (l *local) Consumers() map[string]string {
	out := map[string]string{}
	for _, n := range l.plan.ByRole(topology.RoleMQTT2HTTP) {
		out[n.Name] = "http://" + l.procs[n.Name].Arg("--admin-listen")
	}
	return out
}

func (l *local) service(name string) (*faults.Process, error) {
	p := l.procs[name]
	if p == nil {
		return nil, fmt.Errorf("no service %q in the %s topology", name, l.plan.Kind)
	}
	return p, nil
}

func (l *local) Stop(ctx context.Context, service string) error {
	p, err := l.service(service)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, stopGrace)
	defer cancel()
	err = p.Term(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return nil // killed after the grace, as docker stop does: not an error of the run
	}
	return err
}

func (l *local) Start(ctx context.Context, service string) error {
	p, err := l.service(service)
	if err != nil {
		return err
	}
	return l.startAll(ctx, []*faults.Process{p})
}

func (l *local) Received(ctx context.Context) (map[string]int, error) {
	return l.sim.Received(ctx, rastsim.NewClient(l.SimURL(), l.http))
}

// Close kills every process: an experiment's topology is thrown away after its run.
func (l *local) Close() {
	var wg sync.WaitGroup
	for _, p := range l.procs {
		wg.Add(1)
		go func() { defer wg.Done(); _ = p.Kill() }()
	}
	wg.Wait()
}

// Memory reads every running process's resident memory (faults.Process.Memory).
func (l *local) Memory() map[string]faults.Memory {
	out := make(map[string]faults.Memory, len(l.procs))
	for name, p := range l.procs {
		if m, ok := p.Memory(); ok {
			out[name] = m
		}
	}
	return out
}

// CPU reads every process's CPU time (faults.Process.CPU).
func (l *local) CPU() map[string]time.Duration {
	out := make(map[string]time.Duration, len(l.procs))
	for name, p := range l.procs {
		out[name] = p.CPU()
	}
	return out
}

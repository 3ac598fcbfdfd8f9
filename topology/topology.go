// Package topology starts a whole LPS or baseline topology in one process on loopback, each
// role a Go value started by the same code its subcommand uses, and can stop and restart any
// one of them on its address. `lps up`, the experiment kit and the integration tests stand on it.
package topology

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/comp1"
	"github.com/lpsdev/lps/roles/comp2"
	"github.com/lpsdev/lps/roles/http2mqtt"
	"github.com/lpsdev/lps/roles/mqtt2http"
	"github.com/lpsdev/lps/roles/mqttbroker"
	"github.com/lpsdev/lps/roles/rastsim"
)

// Kinds of topology.
const (
	Baseline = "baseline" // load -> comp1 -> comp2 -> rast-sim
	LPS      = "lps"      // load -> comp1 -> http2mqtt -> broker -> mqtt2http -> comp2 -> rast-sim
)

// Roles, as Service.Role names them.
const (
	RoleRastSim   = "rast-sim"
	RoleComp1     = "comp1"
	RoleComp2     = "comp2"
	RoleHTTP2MQTT = "http2mqtt"
	RoleMQTT2HTTP = "mqtt2http"
	RoleBroker    = "broker"
)

// The fixed ports of a topology, as compose/ publishes them.
const (
	DefaultComp1Port       = 7081 // and the next ones for the other comp1
	DefaultRastSimPort     = 8084
	DefaultBrokerPort      = 1883
	DefaultBrokerAdminPort = 9090
)

// ListenError is a service that could not listen on its address: most often a port another
// program (a second topology) holds.
type ListenError struct {
	Service, Role string
	Addr          string // the address it could not listen on
	Err           error
}

func (e *ListenError) Error() string {
	return fmt.Sprintf("%s (%s) cannot listen on %s: %v", e.Service, e.Role, e.Addr, e.Err)
}

func (e *ListenError) Unwrap() error { return e.Err }

// Config describes a topology. Zero fields take the documented defaults.
type Config struct {
	// Kind is Baseline or LPS; "" means Baseline.
	Kind string
	// Host is the loopback address every role binds; "" means 127.0.0.1.
	Host string
	// Comp1Port is the first of the comp1 ports (the original's 7081–7083); zero means
	// DefaultComp1Port.
	Comp1Port int
	// RastSimPort, BrokerPort and BrokerAdminPort are the ports of the other services a user
	// talks to, as the compose files publish them; zero means DefaultRastSimPort,
	// DefaultBrokerPort and DefaultBrokerAdminPort. The other services (comp2, the bridges) get
	// free ports.
	RastSimPort, BrokerPort, BrokerAdminPort int
	// Ephemeral gives every service a free port instead, so that tests and a second topology
	// can run beside one on the default ports.
	Ephemeral bool
	// Instances is how many comp1, comp2 and bridges of each kind run; zero means 3, as the
	// original.
	Instances int
	// Model is rast-sim's delay model; "" means its default.
	Model string
	// HTTP2 makes every HTTP hop speak h2c, the backend's included (the real backend speaks only
	// HTTP/1.1; rast-sim accepts both).
	HTTP2 bool
	// BrokerURL, for the LPS, points the bridges at an external MQTT v5 broker (Mosquitto, …);
	// "" starts the embedded broker.
	BrokerURL string
	// BrokerCAFile, for an mqtts:// BrokerURL, is the PEM bundle of the CAs the bridges verify
	// it with (mqttconn.Options.CAFile); "" means the system's.
	BrokerCAFile string
	// DataDir is the embedded broker's data directory; "" keeps its state in memory.
	DataDir string
	// MaxInflight is each mqtt2http's receive maximum and concurrency; zero means its default.
	MaxInflight int
	// RetryBase and RetryMax tune mqtt2http's retry backoff; zero means its defaults.
	RetryBase, RetryMax time.Duration
	// Logger: nil means none.
	Logger *zap.Logger
}

func (c *Config) defaults() error {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	for _, p := range []struct {
		port *int
		def  int
	}{{&c.Comp1Port, DefaultComp1Port}, {&c.RastSimPort, DefaultRastSimPort}, {&c.BrokerPort, DefaultBrokerPort}, {&c.BrokerAdminPort, DefaultBrokerAdminPort}} {
		if *p.port == 0 {
			*p.port = p.def
		}
		if *p.port < 0 || *p.port > 65535 {
			return fmt.Errorf("port %d is outside 1..65535", *p.port)
		}
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

// role is what every role value offers.
type role interface {
	Run(ctx context.Context) error
	Addr() net.Addr
}

// Service is one role of the topology. It keeps its address across Stop and Start.
type Service struct {
	Name string
	Role string
	// Addr is where it listens: its API, or for mqtt2http its admin listener, for the broker
	// its MQTT listener.
	Addr net.Addr

	// build makes the role anew, on the same addresses after the first time.
	build func() (role, *prometheus.Registry, error)

	mu      sync.Mutex
	current role
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
}

// Registry is the metrics registry of the service's current run.
func (s *Service) Registry() *prometheus.Registry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reg
}

// Value returns the current role value (e.g. *rastsim.Sim); nil after Stop until Start.
func (s *Service) Value() any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// Topology is a set of roles wired to each other.
type Topology struct {
	cfg      Config
	plan     Plan
	Services []*Service
	byName   map[string]*Service

	mu       sync.Mutex
	ctx      context.Context // of Run; nil before
	launched chan struct{}   // closed when Run has started every service
	failed   chan error
	stopped  bool
}

// New builds every role, backend first, each wired to the next, with its listener open. On
// error the roles already built are released; a service that cannot listen is a
// *ListenError.
func New(cfg Config) (*Topology, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	plan, err := Describe(cfg.Kind, cfg.Instances)
	if err != nil {
		return nil, err
	}
	t := &Topology{cfg: cfg, plan: plan, byName: map[string]*Service{}, failed: make(chan error, 64), launched: make(chan struct{})}
	if err := t.build(); err != nil {
		t.release()
		return nil, err
	}
	return t, nil
}

// build builds the roles of t's plan in its order, each wired to the addresses the services
// it talks to got.
func (t *Topology) build() error {
	cfg := t.cfg
	ephemeral := net.JoinHostPort(cfg.Host, "0")
	listen := func(port int) string {
		if cfg.Ephemeral || port == 0 {
			return ephemeral
		}
		return net.JoinHostPort(cfg.Host, strconv.Itoa(port))
	}
	url := map[string]string{} // how the others reach a service built so far
	upstream := func(n Node) roles.Upstream {
		urls := make([]string, len(n.Upstreams))
		for i, u := range n.Upstreams {
			urls[i] = url[u]
		}
		return roles.Upstream{URL: strings.Join(urls, ","), HTTP2: cfg.HTTP2}
	}
	for _, n := range t.plan.Services {
		var s *Service
		var err error
		switch n.Role {
		case RoleRastSim:
			c := rastsim.Config{Model: cfg.Model}
			c.Listen = listen(cfg.RastSimPort)
			s, err = t.add(n, &c.Server, func() (role, error) { return rastsim.New(c) })
		case RoleComp2:
			c := comp2.Config{Upstream: upstream(n)}
			c.Listen = listen(n.Port)
			s, err = t.add(n, &c.Server, func() (role, error) { return comp2.New(c) })
		case RoleBroker:
			if cfg.BrokerURL != "" { // an external broker stands in for the embedded one
				url[n.Name] = cfg.BrokerURL
				continue
			}
			bc := mqttbroker.Config{Listen: listen(cfg.BrokerPort), DataDir: cfg.DataDir}
			bc.Admin.Listen = listen(cfg.BrokerAdminPort)
			var mb *mqttbroker.Broker
			s, err = t.add(n, &bc.Admin, func() (role, error) {
				b, err := mqttbroker.New(bc)
				mb = b
				return b, err
			})
			if err != nil {
				return err
			}
			// The broker's Addr is its MQTT listener, not its server's: pin both.
			bc.Listen, bc.Admin.Listen = s.Addr.String(), mb.AdminAddr().String()
			url[n.Name] = "mqtt://" + s.Addr.String()
			continue
		case RoleMQTT2HTTP:
			c := mqtt2http.Config{
				ServiceName: n.Name,
				Broker:      url[n.Broker],
				Upstream:    upstream(n),
				MaxInflight: cfg.MaxInflight,
				RetryBase:   cfg.RetryBase,
				RetryMax:    cfg.RetryMax,
			}
			c.MQTT.CAFile = cfg.BrokerCAFile
			c.Admin.Listen = listen(n.Port)
			s, err = t.add(n, &c.Admin, func() (role, error) { return mqtt2http.New(c) })
		case RoleHTTP2MQTT:
			c := http2mqtt.Config{Broker: url[n.Broker]}
			c.MQTT.CAFile = cfg.BrokerCAFile
			c.Listen = listen(n.Port)
			s, err = t.add(n, &c.Server, func() (role, error) { return http2mqtt.New(c) })
		case RoleComp1:
			c := comp1.Config{Upstream: upstream(n)}
			c.Listen = listen(cfg.Comp1Port + n.Instance - 1)
			s, err = t.add(n, &c.Server, func() (role, error) { return comp1.New(c) })
		default:
			return fmt.Errorf("%s: no role %q", n.Name, n.Role)
		}
		if err != nil {
			return err
		}
		url[n.Name] = "http://" + s.Addr.String()
	}
	return nil
}

// add builds n's role once and registers it as a service. srv is the role's server settings,
// which add fills (name, logger, registry) and, after the first build, pins to the address the
// role got, so that a restart listens there again.
func (t *Topology) add(n Node, srv *roles.Server, build func() (role, error)) (*Service, error) {
	name, roleName := n.Name, n.Role
	s := &Service{Name: name, Role: roleName}
	s.build = func() (role, *prometheus.Registry, error) {
		srv.ServiceName = name
		srv.Logger = t.cfg.Logger.Named(name)
		srv.Registry = prometheus.NewRegistry()
		r, err := build()
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "listen" {
			addr := ""
			if oe.Addr != nil {
				addr = oe.Addr.String()
			}
			return nil, nil, &ListenError{Service: name, Role: roleName, Addr: addr, Err: oe.Err}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("starting %s: %w", name, err)
		}
		return r, srv.Registry, nil
	}
	r, reg, err := s.build()
	if err != nil {
		return nil, err
	}
	s.Addr, s.current, s.reg = r.Addr(), r, reg
	if roleName != RoleBroker { // the broker's Addr is MQTT, not its server's; New pins both
		srv.Listen = r.Addr().String()
	}
	t.Services = append(t.Services, s)
	t.byName[name] = s
	return s, nil
}

// release closes the listeners of roles built but never run.
func (t *Topology) release() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, s := range t.Services {
		if s.current != nil {
			s.current.Run(ctx) // a Run whose context is done closes what New opened
		}
	}
}

// Plan is the topology's description: its services and who talks to whom.
func (t *Topology) Plan() Plan { return t.plan }

// Service returns the service called name, or nil.
func (t *Topology) Service(name string) *Service { return t.byName[name] }

// ByRole returns the services of one role, in order.
func (t *Topology) ByRole(role string) []*Service {
	var out []*Service
	for _, s := range t.Services {
		if s.Role == role {
			out = append(out, s)
		}
	}
	return out
}

// Sim returns the running rast-sim, nil while it is stopped.
func (t *Topology) Sim() *rastsim.Sim {
	s, _ := t.ByRole(RoleRastSim)[0].Value().(*rastsim.Sim)
	return s
}

// Broker returns the running embedded broker, nil when stopped or external.
func (t *Topology) Broker() *mqttbroker.Broker {
	for _, s := range t.ByRole(RoleBroker) {
		b, _ := s.Value().(*mqttbroker.Broker)
		return b
	}
	return nil
}

// Comp1URLs are the URLs the load posts alarms to.
func (t *Topology) Comp1URLs() []string {
	var urls []string
	for _, s := range t.ByRole(RoleComp1) {
		urls = append(urls, "http://"+s.Addr.String()+alarm.DevicePath)
	}
	return urls
}

// Run runs every role until ctx is done or one of them fails on its own, then stops them all,
// front to back, and returns the first failure.
func (t *Topology) Run(ctx context.Context) error {
	t.mu.Lock()
	if t.ctx != nil {
		t.mu.Unlock()
		return errors.New("topology already ran")
	}
	t.ctx = ctx
	for _, s := range t.Services {
		t.launch(s, s.current)
	}
	close(t.launched)
	t.mu.Unlock()

	var err error
	select {
	case <-ctx.Done():
	case err = <-t.failed:
	}
	t.mu.Lock()
	t.stopped = true
	t.mu.Unlock()
	for i := len(t.Services) - 1; i >= 0; i-- {
		if serr := t.stop(t.Services[i]); serr != nil && err == nil {
			err = serr
		}
	}
	return err
}

// launch runs r as s's current role. Called with t.mu held.
func (t *Topology) launch(s *Service, r role) {
	// Not cancelled with Run's context: Run stops the services one by one, front to back, so
	// that the broker outlives the bridges that drain into it and the backend outlives comp2.
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.ctx))
	done := make(chan error, 1)
	s.mu.Lock()
	s.current, s.cancel, s.done = r, cancel, done
	s.mu.Unlock()
	// The labels name the role in a CPU profile of the whole topology: every goroutine the
	// role starts, its connections' and its HTTP client's included, inherits them.
	labels := pprof.Labels("role", string(s.Role), "service", s.Name)
	go pprof.Do(ctx, labels, func(ctx context.Context) {
		err := r.Run(ctx)
		if err != nil && ctx.Err() == nil {
			err = fmt.Errorf("%s: %w", s.Name, err)
			select {
			case t.failed <- err:
			default:
			}
		}
		done <- err
	})
}

// stop stops s gracefully and waits for it.
func (t *Topology) stop(s *Service) error {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.cancel, s.done = nil, nil
	s.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	err := <-done
	s.mu.Lock()
	s.current = nil
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("stopping %s: %w", s.Name, err)
	}
	return nil
}

// Stop stops the service called name gracefully, as an operator stopping a container would;
// it keeps its address for Start.
func (t *Topology) Stop(name string) error {
	s := t.byName[name]
	if s == nil {
		return fmt.Errorf("no service %q", name)
	}
	return t.stop(s)
}

// Start starts a stopped service again on its address, with fresh state (a rast-sim starts
// counting anew, a broker recovers from its data dir).
func (t *Topology) Start(name string) error {
	s := t.byName[name]
	if s == nil {
		return fmt.Errorf("no service %q", name)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ctx == nil || t.stopped {
		return errors.New("topology is not running")
	}
	if s.Value() != nil {
		return fmt.Errorf("%s is running", name)
	}
	r, reg, err := s.build()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.reg = reg
	s.mu.Unlock()
	t.launch(s, r)
	return nil
}

// WaitReady waits until Run has started the services and every running one answers /readyz
// with 200 (bridges connected to the broker, broker serving), or ctx ends.
func (t *Topology) WaitReady(ctx context.Context) error {
	select {
	case <-t.launched:
	case <-ctx.Done():
		return fmt.Errorf("waiting for the topology to run: %w", ctx.Err())
	}
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for _, s := range t.Services {
		addr := s.Addr
		switch v := s.Value().(type) {
		case nil:
			continue
		case *mqttbroker.Broker:
			addr = v.AdminAddr()
		}
		for {
			resp, err := client.Get("http://" + addr.String() + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for %s to be ready: %w", s.Name, ctx.Err())
			case <-tick.C:
			}
		}
	}
	return nil
}

// Status is what a topology has done so far: what a console status line shows.
type Status struct {
	// Accepted and Refused count the alarms comp1 answered 2xx and otherwise (POSTs only).
	Accepted, Refused int
	// Delivered counts what rast-sim received.
	Delivered int
	// Backlog is what the embedded broker still has to deliver (queued, in flight, delayed);
	// -1 when it does not tell (the baseline, an external broker, a stopped broker).
	Backlog int
}

// Status reads the counters of the running services.
func (t *Topology) Status() Status {
	st := Status{Backlog: -1}
	for _, s := range t.ByRole(RoleComp1) {
		reg := s.Registry()
		if reg == nil {
			continue
		}
		mfs, err := reg.Gather()
		if err != nil {
			continue
		}
		for _, mf := range mfs {
			if mf.GetName() != "lps_http_requests_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["method"] != http.MethodPost {
					continue
				}
				n := int(m.GetCounter().GetValue())
				if strings.HasPrefix(labels["code"], "2") {
					st.Accepted += n
				} else {
					st.Refused += n
				}
			}
		}
	}
	if sim := t.Sim(); sim != nil {
		st.Delivered = sim.Counts().Received
	}
	if b := t.Broker(); b != nil {
		st.Backlog = b.Stats().QueueDepth
	}
	return st
}

// Package topology starts a whole LPS or baseline topology in one process on loopback, each
// role a Go value started by the same code its subcommand uses. `lps up`, the experiment kit and
// the integration tests stand on it.
package topology

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/comp1"
	"github.com/lpsdev/lps/roles/comp2"
	"github.com/lpsdev/lps/roles/rastsim"
)

// Kinds of topology.
const (
	Baseline = "baseline" // load -> comp1 -> comp2 -> rast-sim
	LPS      = "lps"      // load -> comp1 -> http2mqtt -> broker -> mqtt2http -> comp2 -> rast-sim
)

// Config describes a topology. Zero fields take the documented defaults.
type Config struct {
	// Kind is Baseline or LPS; "" means Baseline.
	Kind string
	// Host is the loopback address every role binds; "" means 127.0.0.1.
	Host string
	// Comp1Port is the first of the comp1 ports (the original's 7081–7083); zero means 7081,
	// negative means ephemeral ports (tests).
	Comp1Port int
	// Instances is how many comp1, comp2 (and bridges) run; zero means 3, as the original.
	Instances int
	// Model is rast-sim's delay model; "" means its default.
	Model string
	// HTTP2 makes every HTTP hop speak h2c, the backend's included (the real backend speaks only
	// HTTP/1.1; rast-sim accepts both).
	HTTP2 bool
	// Logger: nil means none.
	Logger *zap.Logger
}

func (c *Config) defaults() error {
	if c.Kind == "" {
		c.Kind = Baseline
	}
	if c.Kind != Baseline && c.Kind != LPS {
		return fmt.Errorf("unknown topology %q (want %s or %s)", c.Kind, Baseline, LPS)
	}
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.Comp1Port == 0 {
		c.Comp1Port = 7081
	}
	if c.Instances == 0 {
		c.Instances = 3
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

// role is what every role value offers. Run with a context that is already done closes the
// role's listener and returns, which New uses to release a half-built topology.
type role interface {
	Run(ctx context.Context) error
	Addr() net.Addr
}

// Service is one started role.
type Service struct {
	Name     string
	Role     string
	Addr     net.Addr
	Registry *prometheus.Registry
	run      func(context.Context) error
}

// Topology is a started set of roles.
type Topology struct {
	cfg      Config
	Services []*Service
	// Sim is the simulated backend, for counting what arrived.
	Sim *rastsim.Sim
}

// New opens every role's listener, backend first, and wires each to the next. On error the
// listeners already opened are closed.
func New(cfg Config) (t *Topology, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	t = &Topology{cfg: cfg}
	var closers []func()
	defer func() {
		if err != nil {
			for _, c := range closers {
				c()
			}
		}
	}()
	add := func(name, role string, srv *roles.Server, build func() (role, error)) (net.Addr, error) {
		srv.ServiceName = name
		srv.Logger = cfg.Logger.Named(name)
		srv.Registry = prometheus.NewRegistry()
		r, err := build()
		if err != nil {
			return nil, fmt.Errorf("starting %s: %w", name, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // a cancelled Run only closes the listener it opened
		closers = append(closers, func() { r.Run(ctx) })
		t.Services = append(t.Services, &Service{Name: name, Role: role, Addr: r.Addr(), Registry: srv.Registry, run: r.Run})
		return r.Addr(), nil
	}
	ephemeral := net.JoinHostPort(cfg.Host, "0")

	simCfg := rastsim.Config{Model: cfg.Model}
	simCfg.Listen = ephemeral
	simAddr, err := add("ars-comp-3", "rast-sim", &simCfg.Server, func() (role, error) {
		s, err := rastsim.New(simCfg)
		t.Sim = s
		return s, err
	})
	if err != nil {
		return nil, err
	}

	var comp2Addrs []net.Addr
	for i := 1; i <= cfg.Instances; i++ {
		c := comp2.Config{Upstream: roles.Upstream{URL: "http://" + simAddr.String(), HTTP2: cfg.HTTP2}}
		c.Listen = ephemeral
		addr, err := add(fmt.Sprintf("ars-comp-2-%d", i), "comp2", &c.Server, func() (role, error) {
			return comp2.New(c)
		})
		if err != nil {
			return nil, err
		}
		comp2Addrs = append(comp2Addrs, addr)
	}
	if cfg.Kind == LPS {
		return nil, errors.New("the lps topology needs the MQTT bridges, which are not built yet")
	}
	for i := 1; i <= cfg.Instances; i++ {
		c := comp1.Config{Upstream: roles.Upstream{URL: "http://" + comp2Addrs[i-1].String(), HTTP2: cfg.HTTP2}}
		c.Listen = ephemeral
		if cfg.Comp1Port > 0 {
			c.Listen = net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Comp1Port+i-1))
		}
		if _, err := add(fmt.Sprintf("ars-comp-1-%d", i), "comp1", &c.Server, func() (role, error) {
			return comp1.New(c)
		}); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// Comp1URLs are the base URLs the load posts alarms to.
func (t *Topology) Comp1URLs() []string {
	var urls []string
	for _, s := range t.Services {
		if s.Role == "comp1" {
			urls = append(urls, "http://"+s.Addr.String()+comp1.Path)
		}
	}
	return urls
}

// Run runs every role until ctx is done or one of them fails, then stops them all.
func (t *Topology) Run(ctx context.Context) error {
	var g run.Group
	for _, s := range t.Services {
		sctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			if err := s.run(sctx); err != nil {
				return fmt.Errorf("%s: %w", s.Name, err)
			}
			return sctx.Err()
		}, func(error) { cancel() })
	}
	err := g.Run()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

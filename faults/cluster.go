package faults

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/topology"
)

// BrokerKind selects the cluster's MQTT broker.
type BrokerKind string

// Brokers a Cluster can run.
const (
	// Embedded is `lps broker --data-dir DIR` with its defaults: sessions and messages kept in a
	// bbolt file, fsynced before the broker confirms a publish (group commit).
	Embedded BrokerKind = "embedded"
	// Mosquitto is an external Mosquitto with persistence on. Mosquitto keeps its state in
	// memory and writes a snapshot (mosquitto.db) only on a clean shutdown and every
	// autosave_interval; with its default of 30 minutes a kill -9 loses every message it took
	// since the last snapshot. The cluster sets autosave_on_changes true with autosave_interval
	// 1, which snapshots after every change (each queued message counts), the shortest window
	// Mosquitto offers: a message it confirmed in the same event-loop pass as the kill can still
	// be lost, so kill -9 of Mosquitto is at best near-durable. max_queued_messages 0 lifts the
	// default bound of 1000 queued messages per client, beyond which Mosquitto silently drops
	// a disconnected consumer's backlog.
	Mosquitto BrokerKind = "mosquitto"
)

// DedupStore is where the cluster's comp2 keep their dedup window.
type DedupStore string

// Dedup stores of a Cluster.
const (
	// DedupMemory is comp2's default: each instance's window in its memory.
	DedupMemory DedupStore = "memory"
	// DedupDir gives each comp2 --dedup-dir: its own window on disk, kept across restarts.
	DedupDir DedupStore = "dir"
	// DedupRedis starts a redis-server and gives every comp2 --dedup-store: one window shared
	// by all.
	DedupRedis DedupStore = "redis"
)

// DefaultRedisPath is where Debian installs the Redis server; otherwise it is looked up in PATH.
const DefaultRedisPath = "/usr/bin/redis-server"

// ErrNoRedis means a DedupRedis cluster was asked for but no redis-server was found.
var ErrNoRedis = errors.New("redis-server not installed")

// DefaultMosquittoPath is where Debian installs Mosquitto; otherwise it is looked up in PATH.
const DefaultMosquittoPath = "/usr/sbin/mosquitto"

// ErrNoMosquitto means a Mosquitto cluster was asked for but no mosquitto binary was found.
var ErrNoMosquitto = errors.New("mosquitto not installed")

// ClusterConfig configures a Cluster. Zero fields take the documented defaults.
type ClusterConfig struct {
	// Binary is the built lps binary; required.
	Binary string
	// Dir holds every process's log (<name>.log) and the broker's data; required.
	Dir string
	// Broker is the broker to run; "" means Embedded.
	Broker BrokerKind
	// MosquittoDebug makes Mosquitto log every packet (log_type all), for finding where a
	// message went; its log grows by a few hundred bytes per message.
	MosquittoDebug bool
	// MosquittoPath is the mosquitto binary; "" means DefaultMosquittoPath, else PATH.
	MosquittoPath string
	// MosquittoAutosave is how many changes Mosquitto takes between two snapshots of its store;
	// zero means 1, every change, the most a kill -9 of Mosquitto can keep. A snapshot writes the
	// whole store, so with a backlog of thousands each change costs milliseconds and Mosquitto
	// delivers a few dozen messages a second: scenarios that build such a backlog and never kill
	// the broker take a larger value.
	MosquittoAutosave int
	// Instances is how many comp1, comp2 and bridges of each kind run; zero means 3, as the
	// original.
	Instances int
	// MaxInflight, MaxAttempts, RetryBase and RetryMax set mqtt2http's flags of those names;
	// zero leaves the product's defaults.
	MaxInflight, MaxAttempts int
	RetryBase, RetryMax      time.Duration
	// Comp2Timeout is comp2's --timeout towards the backend; zero leaves the default (60 s).
	Comp2Timeout time.Duration
	// ExtraArgs are further flags per role ("comp2", "mqtt2http", ...), e.g.
	// {"comp2": {"--dedup-window", "0"}}.
	ExtraArgs map[string][]string
	// StartTimeout bounds the start of each tier of the topology; zero means 30 s.
	StartTimeout time.Duration
	// DedupStore is where every comp2 keeps its dedup window; "" means DedupMemory.
	DedupStore DedupStore
	// ConsumersLater leaves every mqtt2http unstarted: the LPS takes alarms before any
	// consumer ever subscribed (a first start), and a scenario starts them (StartConsumers).
	ConsumersLater bool
}

func (c *ClusterConfig) defaults() error {
	if c.Binary == "" || c.Dir == "" {
		return errors.New("cluster needs the lps binary and a directory")
	}
	if c.Broker == "" {
		c.Broker = Embedded
	}
	if c.Broker != Embedded && c.Broker != Mosquitto {
		return fmt.Errorf("unknown broker %q (want %s or %s)", c.Broker, Embedded, Mosquitto)
	}
	if c.Instances == 0 {
		c.Instances = 3
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 30 * time.Second
	}
	switch c.DedupStore {
	case "":
		c.DedupStore = DedupMemory
	case DedupMemory, DedupDir, DedupRedis:
	default:
		return fmt.Errorf("unknown dedup store %q (want %s, %s or %s)", c.DedupStore, DedupMemory, DedupDir, DedupRedis)
	}
	if c.Broker == Mosquitto && c.MosquittoPath == "" {
		c.MosquittoPath = DefaultMosquittoPath
		if _, err := os.Stat(c.MosquittoPath); err != nil {
			p, err := exec.LookPath("mosquitto")
			if err != nil {
				return fmt.Errorf("%w: not at %s nor in PATH", ErrNoMosquitto, DefaultMosquittoPath)
			}
			c.MosquittoPath = p
		}
	}
	return nil
}

// Cluster is the LPS topology that topology.Describe plans, as separate processes on loopback:
//
//	load -> comp1-i -> http2mqtt-i -> proxy -> broker -> proxy -> mqtt2http-i -> every comp2 -> FaultyUpstream -> rast-sim
//
// Every bridge reaches the broker through its own Proxy, so that a test can cut one bridge off;
// comp2 reaches rast-sim through a FaultyUpstream. Processes have the plan's names (ars-comp-3,
// ars-comp-2-i, broker, proxy2-i, proxy1-i, ars-comp-1-i) and keep their ports across restarts.
// This file starts a cluster; observe.go reads what it did.
type Cluster struct {
	cfg  ClusterConfig
	plan topology.Plan

	RastSim *Process
	Backend *FaultyUpstream
	// Redis is the shared dedup store's server (DedupRedis), else nil.
	Redis     *Process
	Comp2     []*Process
	Broker    *Process
	MQTT2HTTP []*Process
	HTTP2MQTT []*Process
	Comp1     []*Process
	// ConsumerProxies[i] is mqtt2http i's network to the broker, PublisherProxies[i] http2mqtt
	// i's.
	ConsumerProxies  []*Proxy
	PublisherProxies []*Proxy
	// BrokerAddr is the broker's MQTT address (host:port); BrokerAdmin the embedded broker's
	// admin address ("" for Mosquitto).
	BrokerAddr, BrokerAdmin string

	client *http.Client

	sys *sysWatcher // Mosquitto's queue depth, from $SYS (Drain's goroutine only)

	received *SimReceived // what rast-sim received over its runs
}

// StartCluster starts the LPS topology that topology.Describe plans, tier by tier in the
// plan's order, each tier once the one before it is ready. On error what was started is
// stopped.
func StartCluster(ctx context.Context, cfg ClusterConfig) (c *Cluster, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	plan, err := topology.Describe(topology.LPS, cfg.Instances)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("making the cluster directory: %w", err)
	}
	c = &Cluster{cfg: cfg, plan: plan, client: &http.Client{Timeout: 5 * time.Second}, received: NewSimReceived()}
	defer func() {
		if err != nil {
			c.Close()
			c = nil
		}
	}()
	for _, tier := range plan.Tiers() {
		if err := c.startTierOf(ctx, tier); err != nil {
			return c, err
		}
	}
	return c, nil
}

// startTierOf makes the processes of one tier of the plan and starts them. What the plan's
// wiring names is reached through the test's fault points: comp2 reaches rast-sim through
// Backend, each bridge the broker through its own Proxy.
func (c *Cluster) startTierOf(ctx context.Context, tier []topology.Node) error {
	listening := func(ps []*Process) map[string]string {
		m := map[string]string{}
		for _, p := range ps {
			m[p.cfg.Name] = p.Arg("--listen")
		}
		return m
	}
	switch role := tier[0].Role; role {
	case topology.RoleRastSim:
		c.RastSim = c.lps(tier[0], nil, "--listen", "--model", "none")
		c.RastSim.cfg.OnLine = c.received.OnLine
		c.received.Track(c.RastSim)
		if err := c.startTier(ctx, c.RastSim); err != nil {
			return err
		}
		var err error
		c.Backend, err = ListenFaultyUpstream("http://" + c.RastSim.Arg("--listen"))
		return err

	case topology.RoleComp2:
		if c.cfg.DedupStore == DedupRedis {
			if err := c.startRedis(ctx); err != nil {
				return err
			}
		}
		backend := strings.TrimPrefix(c.Backend.URL(), "http://")
		for _, n := range tier {
			var args []string
			if c.cfg.Comp2Timeout > 0 {
				args = append(args, "--timeout", c.cfg.Comp2Timeout.String())
			}
			switch c.cfg.DedupStore {
			case DedupDir:
				args = append(args, "--dedup-dir", filepath.Join(c.cfg.Dir, n.Name+"-dedup"))
			case DedupRedis:
				args = append(args, "--dedup-store", "redis://"+c.Redis.Arg("--bind")+":"+c.Redis.Arg("--port"))
			}
			c.Comp2 = append(c.Comp2, c.lps(n, func(string) string { return backend }, "--listen", args...))
		}
		return c.startTier(ctx, c.Comp2...)

	case topology.RoleBroker:
		return c.startBroker(ctx, tier[0])

	case topology.RoleMQTT2HTTP:
		comp2 := listening(c.Comp2)
		for _, n := range tier {
			p, err := ListenProxy(c.BrokerAddr)
			if err != nil {
				return err
			}
			c.ConsumerProxies = append(c.ConsumerProxies, p)
			addr := func(svc string) string {
				if svc == n.Broker {
					return p.Addr()
				}
				return comp2[svc]
			}
			var args []string
			for _, f := range []struct {
				flag string
				set  bool
				v    string
			}{
				{"--max-inflight", c.cfg.MaxInflight > 0, strconv.Itoa(c.cfg.MaxInflight)},
				{"--max-attempts", c.cfg.MaxAttempts > 0, strconv.Itoa(c.cfg.MaxAttempts)},
				{"--retry-base", c.cfg.RetryBase > 0, c.cfg.RetryBase.String()},
				{"--retry-max", c.cfg.RetryMax > 0, c.cfg.RetryMax.String()},
			} {
				if f.set {
					args = append(args, f.flag, f.v)
				}
			}
			c.MQTT2HTTP = append(c.MQTT2HTTP, c.lps(n, addr, "--admin-listen", args...))
		}
		if c.cfg.ConsumersLater {
			return nil
		}
		return c.startTier(ctx, c.MQTT2HTTP...)

	case topology.RoleHTTP2MQTT:
		for _, n := range tier {
			p, err := ListenProxy(c.BrokerAddr)
			if err != nil {
				return err
			}
			c.PublisherProxies = append(c.PublisherProxies, p)
			c.HTTP2MQTT = append(c.HTTP2MQTT, c.lps(n, func(string) string { return p.Addr() }, "--listen"))
		}
		return c.startTier(ctx, c.HTTP2MQTT...)

	case topology.RoleComp1:
		proxy1 := listening(c.HTTP2MQTT)
		for _, n := range tier {
			c.Comp1 = append(c.Comp1, c.lps(n, func(svc string) string { return proxy1[svc] }, "--listen"))
		}
		return c.startTier(ctx, c.Comp1...)

	default:
		return fmt.Errorf("the plan has a role the fault suite cannot run: %q", role)
	}
}

// lps makes the process of one service of the plan: the plan's command line, JSON logs, a
// free loopback port on listenFlag (pinned after the first start) and readiness from /readyz
// there. addr gives the address at which n reaches another service.
func (c *Cluster) lps(n topology.Node, addr func(service string) string, listenFlag string, args ...string) *Process {
	all := append(n.Args(addr), "--log-format", "json", listenFlag, LoopbackAddr())
	all = append(all, args...)
	all = append(all, c.cfg.ExtraArgs[n.Role]...)
	return NewProcess(ProcessConfig{
		Name:    n.Name,
		Path:    c.cfg.Binary,
		Args:    all,
		LogPath: filepath.Join(c.cfg.Dir, n.Name+".log"),
		Pins:    []Pin{{Flag: listenFlag, Msg: "listening"}},
		Ready:   HTTPReady(listenFlag, "/readyz"),
	})
}

// startBroker starts the embedded broker or Mosquitto.
func (c *Cluster) startBroker(ctx context.Context, n topology.Node) error {
	if c.cfg.Broker == Embedded {
		c.Broker = NewProcess(ProcessConfig{
			Name: n.Name,
			Path: c.cfg.Binary,
			Args: append(append(n.Args(nil), "--log-format", "json",
				"--listen", LoopbackAddr(), "--admin-listen", LoopbackAddr(),
				"--data-dir", filepath.Join(c.cfg.Dir, "broker-data")), c.cfg.ExtraArgs[n.Role]...),
			LogPath: filepath.Join(c.cfg.Dir, n.Name+".log"),
			// The MQTT address is in the "started" line, the admin listener's in "listening".
			Pins:  []Pin{{Flag: "--listen", Msg: "started"}, {Flag: "--admin-listen", Msg: "listening"}},
			Ready: HTTPReady("--admin-listen", "/readyz"),
		})
		if err := c.startTier(ctx, c.Broker); err != nil {
			return err
		}
		c.BrokerAddr, c.BrokerAdmin = c.Broker.Arg("--listen"), c.Broker.Arg("--admin-listen")
		return nil
	}
	return c.startMosquitto(ctx, n)
}

// startRedis starts the redis-server of the shared dedup store, without persistence: the test
// is about comp2, not about Redis's durability.
func (c *Cluster) startRedis(ctx context.Context) error {
	bin := DefaultRedisPath
	if _, err := os.Stat(bin); err != nil {
		p, lerr := exec.LookPath("redis-server")
		if lerr != nil {
			return fmt.Errorf("%w: not at %s nor in PATH", ErrNoRedis, DefaultRedisPath)
		}
		bin = p
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(addr)
	dir := filepath.Join(c.cfg.Dir, "redis-data")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	c.Redis = NewProcess(ProcessConfig{
		Name:    "redis",
		Path:    bin,
		Args:    []string{"--bind", host, "--port", port, "--save", "", "--appendonly", "no", "--dir", dir},
		LogPath: filepath.Join(c.cfg.Dir, "redis.log"),
		Ready:   TCPReady(addr),
	})
	return c.startTier(ctx, c.Redis)
}

// parallel runs f for every process at once and returns their errors joined; the first error
// cancels the others' context.
func parallel(ctx context.Context, ps []*Process, f func(context.Context, *Process) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = f(ctx, p); errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// freeAddr is a free address for a program that cannot say which port it got (Mosquitto,
// redis-server): LoopbackAddr's, or one the kernel picked when there is none.
func freeAddr() (string, error) {
	if addr := LoopbackAddr(); addr != "127.0.0.1:0" {
		return addr, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}

// startTier starts processes in parallel and waits until all are ready.
func (c *Cluster) startTier(ctx context.Context, ps ...*Process) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.StartTimeout)
	defer cancel()
	return StartAll(ctx, ps...)
}

// StartAll starts processes at once and waits until every one is ready; the first that
// fails cancels the others' starts, and its error ends with the last lines it logged.
func StartAll(ctx context.Context, ps ...*Process) error {
	return parallel(ctx, ps, func(ctx context.Context, p *Process) error {
		if err := p.StartReady(ctx); err != nil {
			return fmt.Errorf("starting %s: %w\n%s", p.Name(), err, p.LogTail(10))
		}
		return nil
	})
}

// Restart starts stopped processes again (on their ports) and waits until they are ready.
func (c *Cluster) Restart(ctx context.Context, ps ...*Process) error {
	return c.startTier(ctx, ps...)
}

// StartConsumers starts every mqtt2http of a cluster started with ConsumersLater (their
// first start) and waits until the whole cluster is ready.
func (c *Cluster) StartConsumers(ctx context.Context) error {
	if err := c.startTier(ctx, c.MQTT2HTTP...); err != nil {
		return err
	}
	return c.WaitReady(ctx)
}

// Processes are every process of the cluster, backend first.
func (c *Cluster) Processes() []*Process {
	var out []*Process
	for _, p := range append(append([]*Process{c.RastSim, c.Redis}, c.Comp2...), c.Broker) {
		if p != nil {
			out = append(out, p)
		}
	}
	out = append(out, c.MQTT2HTTP...)
	out = append(out, c.HTTP2MQTT...)
	return append(out, c.Comp1...)
}

// WaitReady waits until every process runs and is ready.
func (c *Cluster) WaitReady(ctx context.Context) error {
	return parallel(ctx, c.Processes(), func(ctx context.Context, p *Process) error { return p.WaitReady(ctx) })
}

// Comp1URLs are the URLs the load posts alarms to.
func (c *Cluster) Comp1URLs() []string {
	var urls []string
	for _, p := range c.Comp1 {
		urls = append(urls, "http://"+p.Arg("--listen")+alarm.DevicePath)
	}
	return urls
}

// Dir is where the logs are.
func (c *Cluster) Dir() string { return c.cfg.Dir }

// BrokerKind is the cluster's broker.
func (c *Cluster) BrokerKind() BrokerKind { return c.cfg.Broker }

// Close kills every process and closes the proxies.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, p := range c.Processes() {
		wg.Add(1)
		go func() { defer wg.Done(); p.Kill() }()
	}
	wg.Wait()
	for _, p := range append(append([]*Proxy(nil), c.ConsumerProxies...), c.PublisherProxies...) {
		p.Close()
	}
	if c.Backend != nil {
		c.Backend.Close()
	}
	if c.sys != nil {
		c.sys.close()
	}
}

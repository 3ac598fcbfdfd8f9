package experiment

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lpsdev/lps/faults"
	"github.com/lpsdev/lps/roles/mqtt2http"
	"github.com/lpsdev/lps/roles/rastsim"
	"github.com/lpsdev/lps/topology"
)

// composeConfig configures a compose target.
type composeConfig struct {
	Kind string
	// Files is the folder of baseline.yml and lps.yml.
	Files string
	// Image is the lps image the services run (LPS_IMAGE).
	Image string
	// Dir holds the services' logs and the override file.
	Dir      string
	Model    string
	Mapping  string // a host file, mounted into rast-sim; "" the alarm command only
	Faithful bool
	// StartTimeout bounds the wait for every service to be healthy.
	StartTimeout time.Duration
}

// mqtt2httpAdmin is mqtt2http's admin port inside its container (compose/lps.yml).
const mqtt2httpAdmin = 9090

// composeTarget runs a topology as the compose file of its kind, a project of its own whose
// services the engine stops and starts as the original's experiments did with `docker stop`.
// Every port it publishes is a free one on 127.0.0.1; an override file beside the logs mounts
// the production mapping into rast-sim, publishes each mqtt2http's admin port and, with
// Faithful, sets the original's mqtt2http settings.
type composeTarget struct {
	cfg      composeConfig
	plan     topology.Plan
	command  []string // docker compose, or docker-compose
	project  string
	files    []string
	env      []string
	comp1    []string
	sim      string
	broker   string
	consumer map[string]string
	http     *http.Client

	mu   sync.Mutex
	seen map[string]int // what rast-sim received in its ended runs, from its log
}

// composeCommand finds the compose command: v2's plugin, else v1's docker-compose.
func composeCommand(ctx context.Context) ([]string, error) {
	if err := exec.CommandContext(ctx, "docker", "compose", "version").Run(); err == nil {
		return []string{"docker", "compose"}, nil
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}, nil
	}
	return nil, errors.New("neither docker compose nor docker-compose is installed")
}

func startCompose(ctx context.Context, cfg composeConfig) (_ *composeTarget, err error) {
	plan, err := topology.Describe(cfg.Kind, 0)
	if err != nil {
		return nil, err
	}
	cmd, err := composeCommand(ctx)
	if err != nil {
		return nil, err
	}
	logs, err := filepath.Abs(filepath.Join(cfg.Dir, "logs"))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return nil, err
	}
	// The services run as uid 65532 and write their logs here.
	if err := os.Chmod(logs, 0o777|os.ModeSticky); err != nil {
		return nil, err
	}
	c := &composeTarget{
		cfg: cfg, plan: plan, command: cmd, consumer: map[string]string{},
		project: fmt.Sprintf("lpsexp%s%d", cfg.Kind, time.Now().UnixNano()%1_000_000),
		http:    &http.Client{Timeout: 5 * time.Second}, seen: map[string]int{},
	}
	// Below the ephemeral range: a port picked by listening on port 0 and then closed for the
	// engine to bind can meanwhile become another program's outgoing connection's (CI saw that).
	ports, err := faults.LoopbackPorts(6 + len(plan.ByRole(topology.RoleMQTT2HTTP)))
	if err != nil {
		return nil, err
	}
	c.env = []string{
		"LPS_IMAGE=" + cfg.Image, "LPS_LOGS=" + logs, "LPS_RAST_SIM_MODEL=" + cfg.Model,
		"LPS_PORT_RAST_SIM=" + strconv.Itoa(ports[3]),
		"LPS_PORT_BROKER=" + strconv.Itoa(ports[4]),
		"LPS_PORT_BROKER_ADMIN=" + strconv.Itoa(ports[5]),
		// The compose file's default is the original's one message at a time; the
		// experiment's default is the product's own.
		"LPS_MQTT2HTTP_MAX_INFLIGHT=" + strconv.Itoa(mqtt2http.DefaultMaxInflight),
	}
	for i := range 3 {
		c.env = append(c.env, fmt.Sprintf("LPS_PORT_COMP1_%d=%d", i+1, ports[i]))
		c.comp1 = append(c.comp1, fmt.Sprintf("http://127.0.0.1:%d", ports[i]))
	}
	c.sim = fmt.Sprintf("http://127.0.0.1:%d", ports[3])
	if cfg.Kind == topology.LPS {
		c.broker = fmt.Sprintf("http://127.0.0.1:%d", ports[5])
	}
	override, err := c.override(ports[6:])
	if err != nil {
		return nil, err
	}
	base, err := filepath.Abs(filepath.Join(cfg.Files, cfg.Kind+".yml"))
	if err != nil {
		return nil, err
	}
	c.files = []string{base, override}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if out, err := c.compose(ctx, "up", "-d"); err != nil {
		return nil, fmt.Errorf("compose up: %w\n%s", err, out)
	}
	return c, c.waitHealthy(ctx, nil)
}

// override writes the project's override file and returns its path.
func (c *composeTarget) override(consumerPorts []int) (string, error) {
	var b strings.Builder
	b.WriteString("# Written by lps experiment for this run.\nservices:\n")
	if c.cfg.Mapping != "" {
		m, err := filepath.Abs(c.cfg.Mapping)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "  ars-comp-3:\n    volumes: [%q]\n    environment: {LPS_MAPPING: /data/mapping.json}\n", m+":/data/mapping.json:ro")
	}
	for i, n := range c.plan.ByRole(topology.RoleMQTT2HTTP) {
		fmt.Fprintf(&b, "  %s:\n    ports: [\"127.0.0.1:%d:%d\"]\n", n.Name, consumerPorts[i], mqtt2httpAdmin)
		c.consumer[n.Name] = fmt.Sprintf("http://127.0.0.1:%d", consumerPorts[i])
		if c.cfg.Faithful {
			b.WriteString("    environment: {LPS_MAX_INFLIGHT: \"1\", LPS_RETRY_BASE: 1s, LPS_RETRY_MAX: 1s, LPS_MAX_ATTEMPTS: \"0\"}\n")
		}
	}
	path, err := filepath.Abs(filepath.Join(c.cfg.Dir, "compose.override.yml"))
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}

// compose runs the compose command on the project.
func (c *composeTarget) compose(ctx context.Context, args ...string) (string, error) {
	full := append([]string(nil), c.command[1:]...)
	full = append(full, "-p", c.project)
	for _, f := range c.files {
		full = append(full, "-f", f)
	}
	cmd := exec.CommandContext(ctx, c.command[0], append(full, args...)...)
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// waitHealthy waits until the services (nil: all) run and passed their healthcheck.
func (c *composeTarget) waitHealthy(ctx context.Context, services []string) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.StartTimeout)
	defer cancel()
	if services == nil {
		for _, n := range c.plan.Services {
			services = append(services, n.Name)
		}
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		states, err := c.states(ctx)
		missing := ""
		for _, s := range services {
			if !strings.Contains(states[s], "(healthy)") {
				missing = fmt.Sprintf("%s is %q", s, states[s])
				break
			}
		}
		if err == nil && missing == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for healthy services: %s (%v)", missing, err)
		case <-tick.C:
		}
	}
}

// states maps each service of the project to its container's status ("Up 5 seconds (healthy)").
func (c *composeTarget) states(ctx context.Context) (map[string]string, error) {
	out, err := exec.CommandContext(ctx, "docker", "ps", "-a", "--filter", "label=com.docker.compose.project="+c.project,
		"--format", `{{.Label "com.docker.compose.service"}}|{{.Status}}`).Output()
	if err != nil {
		return nil, err
	}
	states := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if svc, st, ok := strings.Cut(line, "|"); ok {
			states[svc] = st
		}
	}
	return states, nil
}

func (c *composeTarget) Plan() topology.Plan          { return c.plan }
func (c *composeTarget) Comp1URLs() []string          { return c.comp1 }
func (c *composeTarget) SimURL() string               { return c.sim }
func (c *composeTarget) BrokerAdmin() string          { return c.broker }
func (c *composeTarget) Consumers() map[string]string { return c.consumer }

func (c *composeTarget) known(service string) error {
	if _, ok := c.plan.Node(service); !ok {
		return fmt.Errorf("no service %q in the %s topology", service, c.plan.Kind)
	}
	return nil
}

// Stop stops a service's container (docker stop: SIGTERM, SIGKILL after 10 s). rast-sim
// counts in memory, and answers the commands in flight after SIGTERM: what its ended runs
// received is read from its log file once it is down.
func (c *composeTarget) Stop(ctx context.Context, service string) error {
	if err := c.known(service); err != nil {
		return err
	}
	if out, err := c.compose(ctx, "stop", "-t", strconv.Itoa(int(stopGrace/time.Second)), service); err != nil {
		return fmt.Errorf("compose stop %s: %w\n%s", service, err, out)
	}
	if n, _ := c.plan.Node(service); n.Role == topology.RoleRastSim {
		seen, err := c.logged(service)
		if err != nil {
			return fmt.Errorf("reading what %s received: %w", service, err)
		}
		c.mu.Lock()
		c.seen = seen
		c.mu.Unlock()
	}
	return nil
}

// logged is what a rast-sim service's log files (every run, rotated ones too) say it received.
func (c *composeTarget) logged(service string) (map[string]int, error) {
	files, err := filepath.Glob(filepath.Join(c.cfg.Dir, "logs", service+"*.log"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no log file of %s in %s (%v)", service, filepath.Join(c.cfg.Dir, "logs"), err)
	}
	r := faults.NewSimReceived()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for line := range bytes.Lines(data) {
			r.OnLine(0, line)
		}
	}
	return r.Logged(), nil
}

func (c *composeTarget) Start(ctx context.Context, service string) error {
	if err := c.known(service); err != nil {
		return err
	}
	if out, err := c.compose(ctx, "start", service); err != nil {
		return fmt.Errorf("compose start %s: %w\n%s", service, err, out)
	}
	// Started as the original's operator started it (docker start): its healthcheck, every 5 s,
	// would put seconds of the engine's polling into the schedule.
	return nil
}

func (c *composeTarget) Received(ctx context.Context) (map[string]int, error) {
	got, err := rastsim.NewClient(c.sim, c.http).Received(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, k := range c.seen {
		got[id] += k // the running one's log is not read: its API is exact and cheaper
	}
	return got, nil
}

// Close removes the project: containers, networks and volumes.
func (c *composeTarget) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, _ = c.compose(ctx, "down", "-v", "--remove-orphans", "-t", "10")
}

// CPU is not measured for containers: docker stats would give it per container, but the
// experiment's CPU figures are for the local target, where every role is a process of its own.
func (c *composeTarget) CPU() map[string]time.Duration { return nil }

func (c *composeTarget) Memory() map[string]faults.Memory { return nil }

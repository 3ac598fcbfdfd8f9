// Package experiment runs the original's experiments — failover and performance — against the
// baseline and the LPS, and writes their report (package report). Each topology runs as its
// own processes of the lps binary on loopback (topology.Describe's plan), under the
// alarm-device workload of package loadgen; every alarm is accounted per Request-Id.
package experiment

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/lpsdev/lps/config"
	"github.com/lpsdev/lps/report"
	"github.com/lpsdev/lps/topology"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Kinds of experiment.
const (
	Failover    = "failover"
	Performance = "performance"
)

// Defaults of Config.
const (
	// DefaultTimeScale makes the default failover run (both topologies) about two minutes.
	DefaultTimeScale = 0.1
	DefaultSeed      = 42
	// DefaultDevices is the failover experiment's alarm devices.
	DefaultDevices = 50
	// DefaultBackground is the original's background workload, requests per second.
	DefaultBackground = 70
	// DefaultStep and DefaultStepDuration are the performance experiment's steps, as the
	// original's: 250 more devices every minute (before --time-scale).
	DefaultStep         = 250
	DefaultStepDuration = time.Minute
	// DefaultMaxSteps bounds the performance experiment when no step is too slow.
	DefaultMaxSteps = 12
	// DefaultDrainTimeout bounds the wait for the LPS's backlog after the load.
	DefaultDrainTimeout = 15 * time.Minute
	// StepAvgLimit and StepMaxLimit end the performance experiment, as the original: a step
	// whose average response time exceeds 10 s or whose maximum exceeds 30 s.
	StepAvgLimit = 10 * time.Second
	StepMaxLimit = 30 * time.Second
)

// Config configures an experiment. Zero fields take the defaults above.
type Config struct {
	// Kind is Failover or Performance.
	Kind string
	// Topologies are the topologies to run, in order; nil means baseline then LPS.
	Topologies []string
	// Target is "local" (processes of Binary on loopback) or "compose" (the compose files in
	// ComposeFiles, running Image, through the Docker engine).
	Target       string
	ComposeFiles string
	Image        string
	// Binary is the lps binary the topology runs as; "" means this process's executable.
	Binary string
	// Out is the folder of the report; required.
	Out       string
	Seed      uint64
	TimeScale float64
	// Devices is the closed model's devices (failover; the performance experiment's first
	// step is Step).
	Devices int
	// Background is the background workload's requests per second straight to rast-sim, of
	// the commands in RequestNames; 0 is off (negative: off too, the zero means the default).
	Background   float64
	RequestNames []string
	// Faithful runs mqtt2http with the original's settings (FaithfulMQTT2HTTP).
	Faithful bool
	// Model is rast-sim's delay model; "" means mascots2022, the original's.
	Model string
	// Mapping is rast-sim's request mapping (the production one); "" the alarm command only.
	Mapping string
	// Step, StepDuration and MaxSteps shape the performance experiment; Rate > 0 makes it an
	// open-model ramp of Rate, 2·Rate, ... alarms per second instead of devices.
	Step         int
	StepDuration time.Duration
	MaxSteps     int
	Rate         float64
	// DrainTimeout bounds the LPS's drain after the load.
	DrainTimeout time.Duration
	// Progress gets a line per step of the run; nil discards them.
	Progress io.Writer
}

func (c *Config) defaults() error {
	if c.Kind != Failover && c.Kind != Performance {
		return config.Invalid("Kind", c.Kind, "unknown experiment (want %s or %s)", Failover, Performance)
	}
	if c.Out == "" {
		return config.Invalid("Out", nil, "no output folder")
	}
	if len(c.Topologies) == 0 {
		c.Topologies = []string{topology.Baseline, topology.LPS}
	}
	for _, t := range c.Topologies {
		if t != topology.Baseline && t != topology.LPS {
			return config.Invalid("Topology", t, "unknown topology (want %s or %s)", topology.Baseline, topology.LPS)
		}
	}
	if c.Target == "" {
		c.Target = "local"
	}
	if c.Target != "local" && c.Target != "compose" {
		return config.Invalid("Target", c.Target, "unknown target (want local or compose)")
	}
	if c.ComposeFiles == "" {
		c.ComposeFiles = "compose"
	}
	if c.Image == "" {
		c.Image = "lps:latest"
	}
	if c.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding the lps binary: %w", err)
		}
		c.Binary = exe
	}
	if c.Seed == 0 {
		c.Seed = DefaultSeed
	}
	if c.TimeScale == 0 {
		c.TimeScale = DefaultTimeScale
	}
	if c.TimeScale < 0 {
		return config.Invalid("TimeScale", c.TimeScale, "want more than 0")
	}
	if c.Devices == 0 {
		c.Devices = DefaultDevices
	}
	if c.Devices < 0 {
		return config.Invalid("Devices", c.Devices, "want at least 1")
	}
	if c.Background == 0 {
		c.Background = DefaultBackground
	}
	if c.Background < 0 {
		c.Background = 0
	}
	if c.Model == "" {
		c.Model = "mascots2022"
	}
	if c.Step == 0 {
		c.Step = DefaultStep
	}
	if c.StepDuration == 0 {
		c.StepDuration = DefaultStepDuration
	}
	if c.MaxSteps == 0 {
		c.MaxSteps = DefaultMaxSteps
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"Step", float64(c.Step)}, {"StepDuration", c.StepDuration.Seconds()}, {"MaxSteps", float64(c.MaxSteps)}, {"Rate", c.Rate}, {"DrainTimeout", c.DrainTimeout.Seconds()}} {
		if f.v < 0 {
			return config.Invalid(f.name, nil, "must not be negative")
		}
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return nil
}

// scaled multiplies a duration of the schedule by the time scale.
func (c *Config) scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * c.TimeScale)
}

// Run runs the experiment on every topology in turn and writes the report into cfg.Out:
// report.html, summary.md, results.json, and per topology its processes' logs and
// requests.csv (the ledger, one line per alarm).
func Run(ctx context.Context, cfg Config) (report.Experiment, error) {
	if err := cfg.defaults(); err != nil {
		return report.Experiment{}, err
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return report.Experiment{}, err
	}
	e := report.Experiment{
		Kind: cfg.Kind, Started: time.Now().UTC(), Seed: cfg.Seed, TimeScale: cfg.TimeScale,
		Target: cfg.Target, Faithful: cfg.Faithful, Background: cfg.Background,
	}
	if cfg.Kind == Failover {
		e.Devices = cfg.Devices
	}
	for _, kind := range cfg.Topologies {
		r, err := runTopology(ctx, &cfg, kind)
		if err != nil {
			return e, fmt.Errorf("%s: %w", kind, err)
		}
		e.Runs = append(e.Runs, r)
	}
	e.Finished = time.Now().UTC()
	if err := report.Write(cfg.Out, e); err != nil {
		return e, err
	}
	return e, nil
}

// runTopology starts one topology, runs the experiment's load and faults on it, drains it and
// accounts for every alarm.
func runTopology(ctx context.Context, cfg *Config, kind string) (report.Run, error) {
	dir := filepath.Join(cfg.Out, kind)
	fmt.Fprintf(cfg.Progress, "%s: starting the topology (logs in %s)\n", kind, dir)
	var t target
	var err error
	if cfg.Target == "compose" {
		t, err = startCompose(ctx, composeConfig{
			Kind: kind, Files: cfg.ComposeFiles, Image: cfg.Image, Dir: dir, Model: cfg.Model,
			Mapping: cfg.Mapping, Faithful: cfg.Faithful, StartTimeout: 3 * time.Minute,
		})
	} else {
		t, err = startLocal(ctx, localConfig{
			Kind: kind, Binary: cfg.Binary, Dir: dir, Model: cfg.Model, Mapping: cfg.Mapping,
			Faithful: cfg.Faithful, StartTimeout: time.Minute,
		})
	}
	if err != nil {
		return report.Run{}, err
	}
	defer t.Close()
	// The load's log: the ledger counts a failed try, this says why it failed.
	log, closeLog, err := fileLogger(filepath.Join(dir, "load.log"))
	if err != nil {
		return report.Run{}, err
	}
	defer closeLog()
	w := newWorkload(cfg, kind, t, log)
	var run report.Run
	switch cfg.Kind {
	case Failover:
		run, err = w.failover(ctx)
	default:
		run, err = w.performance(ctx)
	}
	if err != nil {
		return run, err
	}
	return run, w.writeLedger(filepath.Join(dir, "requests.csv"))
}

// fileLogger logs JSON lines at debug level to path, and nowhere else; close flushes and
// closes the file. (Not zap.Open: it parses a path as a URL, so a --out whose first segment
// has a colon would be read as a scheme.)
func fileLogger(path string) (log *zap.Logger, close func(), err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("the load's log: %w", err)
	}
	log = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(f), zapcore.DebugLevel))
	return log, func() { _ = log.Sync(); _ = f.Close() }, nil
}

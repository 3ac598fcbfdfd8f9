// Package cli is the lps command line: the cobra root and one command per role. A command only
// turns flags and environment variables into a role's Config, then runs the role; every role's
// behaviour lives in its package under roles/.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/logging"
)

// Options are what the root command needs from its surroundings; tests give their own.
type Options struct {
	// Version is the release version, set at link time; "" means "dev".
	Version string
	// LookupEnv reads the environment; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// Stdout and Stderr: nil means the process's.
	Stdout, Stderr io.Writer
	// Signals are the signals that stop a role; nil means SIGINT and SIGTERM.
	Signals []os.Signal
}

func (o *Options) defaults() {
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.LookupEnv == nil {
		o.LookupEnv = os.LookupEnv
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Signals == nil {
		o.Signals = []os.Signal{os.Interrupt, syscall.SIGTERM}
	}
}

// ConfigError is an invalid flag or environment value: the role did not start. Main exits 2 for
// it, as for a usage error.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// ExitCode maps an error of the root command to the process's exit code.
func ExitCode(err error) int {
	var ce *ConfigError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ce):
		return 2
	default:
		return 1
	}
}

// logFlags are the root's persistent logging flags.
type logFlags struct {
	format, level, dir string
}

// app holds what every command shares during one execution.
type app struct {
	opts       Options
	log        logFlags
	wanProfile string
	cpuProfile string // --cpuprofile: the file the command's CPU profile goes to
}

// NewRoot builds the lps command tree.
func NewRoot(opts Options) *cobra.Command {
	opts.defaults()
	a := &app{opts: opts}
	root := &cobra.Command{
		Use:   "lps",
		Short: "The Legacy Proxy System: legacy HTTP components decoupled through MQTT v5",
		Long: `lps is one binary for every part of the Legacy Proxy System (LPS): the two legacy
HTTP components, the HTTP<->MQTT bridges that decouple them through an MQTT v5 broker,
an embedded broker, the simulated legacy backend, and the tools that run experiments.
The subcommand selects the role. Every flag also reads the environment variable
LPS_<FLAG> and, where the original Python services had one, its original name.`,
		Example: `  lps up --topology baseline              # whole baseline chain on loopback
  lps rast-sim --listen :1337              # simulated legacy backend
  lps comp2 --listen :8081 --upstream http://127.0.0.1:1337
  lps comp1 --listen :7081 --upstream http://127.0.0.1:8081
  TARGET_URL=http://comp2:8080 HTTP_PORT=8080 lps comp1`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       versionString(opts.Version),
	}
	root.SetOut(opts.Stdout)
	root.SetErr(opts.Stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&a.log.format, "log-format", logging.FormatAuto, "log format: auto (console on a terminal, else json), console or json")
	pf.StringVar(&a.log.level, "log-level", "info", "log level: debug, info, warn or error")
	pf.StringVar(&a.log.dir, "log-file", "", "also write logs to DIR/<service-name>.log, rotated by size")
	addWANFlag(pf, a)
	pf.StringVar(&a.cpuProfile, "cpuprofile", "", "write a CPU profile of the command's whole run to FILE (go tool pprof); lps up labels every sample with its role and service (go tool pprof -tags)")
	root.AddCommand(
		a.newRastSimCmd(),
		a.newComp2Cmd(),
		a.newComp1Cmd(),
		a.newBrokerCmd(),
		a.newHTTP2MQTTCmd(),
		a.newMQTT2HTTPCmd(),
		a.newUpCmd(),
		a.newLoadCmd(),
		a.newExperimentCmd(),
		a.newDeadLettersCmd(),
		a.newProbeCmd(),
		a.newVersionCmd(),
	)
	// Every flag of every command reads its environment variables, applied before the command
	// runs; --help shows their names.
	for _, c := range append(root.Commands(), root) {
		describeEnv(c.Flags())
		describeEnv(c.PersistentFlags())
	}
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := applyEnv(cmd, a.opts.LookupEnv); err != nil {
			return &ConfigError{err}
		}
		return nil
	}
	for _, c := range root.Commands() {
		a.profiled(c)
	}
	return root
}

// profiled makes c's run write a CPU profile when --cpuprofile names a file: started after the
// flags and the environment were applied, stopped and flushed when the run returns, which a
// role does on SIGINT or SIGTERM too.
func (a *app) profiled(c *cobra.Command) {
	for _, sub := range c.Commands() {
		a.profiled(sub)
	}
	run := c.RunE
	if run == nil {
		return
	}
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if a.cpuProfile == "" {
			return run(cmd, args)
		}
		f, err := os.Create(a.cpuProfile)
		if err != nil {
			return &ConfigError{fmt.Errorf("--cpuprofile: %w", err)}
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		runErr := run(cmd, args)
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil && runErr == nil {
			runErr = fmt.Errorf("--cpuprofile: writing %s: %w", a.cpuProfile, err)
		}
		return runErr
	}
}

// Execute runs root with args and returns the process exit code, printing a one-line error.
func Execute(root *cobra.Command, args []string) int {
	root.SetArgs(args)
	err := root.Execute()
	if err != nil {
		fmt.Fprintf(root.ErrOrStderr(), "lps: %v\n", err)
	}
	return ExitCode(err)
}

// logger builds the logger of a role named service.
func (a *app) logger(service string) (*zap.Logger, func(), error) {
	l, closeLog, err := logging.New(logging.Config{Format: a.log.format, Level: a.log.level, FileDir: a.log.dir, ServiceName: service})
	if err != nil {
		return nil, nil, &ConfigError{err}
	}
	return l, closeLog, nil
}

// registry is a process's metrics registry, with Go runtime and process collectors (RSS, CPU).
func registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// signalContext is cancelled by the stop signals.
func (a *app) signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, a.opts.Signals...)
}

func versionString(v string) string {
	commit, modified := "unknown", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = "+dirty"
				}
			}
		}
	}
	if commit == "unknown" {
		// go run and go test build without version control information.
		return v + " (commit unknown: built without version control information, as go run does; make lps records it)"
	}
	return fmt.Sprintf("%s (commit %s%s)", v, commit, modified)
}

func (a *app) newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and commit of this lps binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "lps %s\n", versionString(a.opts.Version))
			return nil
		},
	}
}

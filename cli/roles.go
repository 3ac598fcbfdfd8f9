package cli

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/dedup"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/comp1"
	"github.com/lpsdev/lps/roles/comp2"
	"github.com/lpsdev/lps/roles/rastsim"
	"github.com/lpsdev/lps/tcptune"
)

// runner is a built role.
type runner interface {
	Run(ctx context.Context) error
	Addr() net.Addr
}

// preRun applies the original's HTTP_HOST/HTTP_PORT to --listen, then validates.
func (a *app) listenEnv(cmd *cobra.Command) error {
	return hostPortEnv(cmd, "listen", "HTTP_HOST", "HTTP_PORT", "0.0.0.0", "8080", a.opts.LookupEnv,
		func(h, p string) string { return net.JoinHostPort(h, p) })
}

// serve runs a role built by build, with the process's logger, metrics, kernel report and
// stop signals, until a signal arrives.
func (a *app) serve(cmd *cobra.Command, srv *roles.Server, build func() (runner, error)) error {
	logger, closeLog, err := a.logger(srv.ServiceName)
	if err != nil {
		return err
	}
	defer closeLog()
	undoWAN, err := a.applyWAN(logger)
	if err != nil {
		return err
	}
	defer undoWAN()
	srv.Logger = logger.Named(cmd.Name())
	srv.Registry = registry()
	r, err := build()
	if err != nil {
		// Before the kernel report, so that a bad flag is the one line a user sees.
		return &ConfigError{flagError(cmd.Flags(), err)}
	}
	tcptune.Report(logger.Named("tcptune"), "", srv.Backlog)
	ctx, stop := a.signalContext(cmd.Context())
	defer stop()
	logger.Info("started", zap.String("role", cmd.Name()), zap.Stringer("addr", r.Addr()), zap.String("version", a.opts.Version))
	err = r.Run(ctx)
	logger.Info("stopped", zap.String("role", cmd.Name()), zap.Error(err))
	return err
}

func (a *app) newComp2Cmd() *cobra.Command {
	var cfg comp2.Config
	cmd := &cobra.Command{
		Use:   "comp2",
		Short: "Component 2: accepts alarms and forwards them to the legacy backend",
		Example: `  lps comp2 --listen :8080 --upstream http://rast-sim:1337/ID_REQ_KC_STORE7D3BPACKET
  HTTP_PORT=8080 TARGET_URL=http://ars-comp-3:1337 lps comp2`,
		Args: cobra.NoArgs,
	}
	sf := addServerFlags(cmd.Flags(), &cfg.Server, "listen", roles.DefaultListen, "ars-comp-2")
	addConcurrencyFlag(cmd.Flags(), &cfg.Server)
	uf := addUpstreamFlags(cmd.Flags(), &cfg.Upstream, "the legacy backend, HTTP/1.1 unless --http2")
	var window time.Duration
	cmd.Flags().DurationVar(&window, "dedup-window", dedup.DefaultTTL, "answer an alarm (its Request-Id and content) that was forwarded within this window without forwarding it again (0: off)")
	cmd.Flags().IntVar(&cfg.DedupMax, "dedup-max", 0, fmt.Sprintf("most alarms the in-memory window remembers (0: the whole window at %d alarms/s)", dedup.SizingRate))
	cmd.Flags().StringVar(&cfg.DedupDir, "dedup-dir", "", "keep the dedup window in DIR/dedup.db (bbolt, fsynced): a restart or kill -9 of comp2 keeps it (empty: memory)")
	cmd.Flags().StringVar(&cfg.DedupStore, "dedup-store", "", "keep the dedup window in Redis/Valkey (redis://host:6379[/db]), shared by comp2 instances that fail over to each other")
	cmd.Flags().DurationVar(&cfg.ForwardTimeout, "forward-timeout", 0,
		fmt.Sprintf("with the dedup window on, how long a forward may go on after --timeout answered the caller 504; its outcome is remembered, so the caller's retry is not sent again (0: %d × --timeout)", comp2.DefaultForwardFactor))
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := a.validate(cmd, sf, uf); err != nil {
			return err
		}
		cfg.DedupWindow, cfg.NoDedup = window, window == 0
		return a.serve(cmd, &cfg.Server, func() (runner, error) { return comp2.New(cfg) })
	}
	return cmd
}

func (a *app) newComp1Cmd() *cobra.Command {
	var cfg comp1.Config
	cmd := &cobra.Command{
		Use:   "comp1",
		Short: "Component 1: takes alarms from devices on /api/v1/simple and forwards them to component 2",
		Example: `  lps comp1 --listen :7081 --upstream http://ars-comp-2-1:8080
  curl -X POST 'localhost:7081/api/v1/simple?Phone=0123&Branch=2001&Headnumber=8023&TriggerTime=2026-01-01T00:00:00Z'`,
		Args: cobra.NoArgs,
	}
	sf := addServerFlags(cmd.Flags(), &cfg.Server, "listen", roles.DefaultListen, "ars-comp-1")
	addConcurrencyFlag(cmd.Flags(), &cfg.Server)
	uf := addUpstreamFlags(cmd.Flags(), &cfg.Upstream, "component 2 or http2mqtt")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := a.validate(cmd, sf, uf); err != nil {
			return err
		}
		return a.serve(cmd, &cfg.Server, func() (runner, error) { return comp1.New(cfg) })
	}
	return cmd
}

func (a *app) newRastSimCmd() *cobra.Command {
	var cfg rastsim.Config
	cmd := &cobra.Command{
		Use:   "rast-sim",
		Short: "The simulated legacy backend: answers commands after the delay its model predicts",
		Example: `  lps rast-sim --listen :1337
  lps rast-sim --model none --mapping gs_requests_mapping_prod_workload.json`,
		Args: cobra.NoArgs,
	}
	sf := addServerFlags(cmd.Flags(), &cfg.Server, "listen", ":1337", "ars-comp-3")
	addConcurrencyFlag(cmd.Flags(), &cfg.Server)
	cmd.Flags().StringVar(&cfg.Model, "model", "mascots2022", "delay model: mascots2022 (the original's -m 0) or none")
	cmd.Flags().IntVar(&cfg.CorrMax, "corr-max", 0, "re-predict up to this many times as other requests finish (0: PR3 stays 0)")
	cmd.Flags().StringVar(&cfg.MappingFile, "mapping", "", "request mapping JSON of the original format (default: the alarm command only)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := a.validate(cmd, sf, nil); err != nil {
			return err
		}
		return a.serve(cmd, &cfg.Server, func() (runner, error) { return rastsim.New(cfg) })
	}
	return cmd
}

// validate applies the host/port environment and checks the flags.
func (a *app) validate(cmd *cobra.Command, sf serverFlags, uf *upstreamFlags) error {
	if err := a.listenEnv(cmd); err != nil {
		return &ConfigError{err}
	}
	if err := sf.validate(); err != nil {
		return &ConfigError{err}
	}
	if uf != nil {
		uf.apply()
	}
	return nil
}

//go:build !noexperiment

package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/lpsdev/lps/config"
	"github.com/lpsdev/lps/experiment"
	"github.com/lpsdev/lps/loadgen"
	"github.com/lpsdev/lps/report"
	"github.com/lpsdev/lps/topology"
)

// defaultDataDir is where the workplace keeps the original's data: the production request
// mapping rast-sim serves and the command names of the background workload.
const defaultDataDir = "../shared/data/rast"

// Files of the data dir.
const (
	prodMappingFile  = "gs_requests_mapping_prod_workload.json"
	requestNamesFile = "all_request_names.txt"
)

func (a *app) newExperimentCmd() *cobra.Command {
	var (
		cfg       experiment.Config
		topo      string
		dataDir   string
		outPrefix = "experiments"
	)
	cmd := &cobra.Command{
		Use:   "experiment failover|performance",
		Short: "Run the original's failover or performance experiment on the baseline and the LPS, and write a report",
		Long: `Runs the whole topology — baseline, then LPS — as lps processes on loopback, drives the
alarm devices and the background workload, and writes report.html, summary.md, results.json
and a per-request CSV per topology into --out.

failover: each instance on the path is stopped in turn (baseline: ars-comp-1-1..3,
ars-comp-2-1, rast-sim; LPS also proxy1-1 and proxy2-1) for uniform(26, 34) s + 3.5 s,
20 s apart, seeded; afterwards the LPS's backlog is drained.
performance: steps of --step more devices, --step-duration each, until a step's average
response time exceeds 10 s or its maximum 30 s (or --max-steps).

Every duration of the schedule is multiplied by --time-scale (1 = the original's).`,
		Example: `  lps experiment failover                      # both topologies, about 75 s
  lps experiment failover --time-scale 1       # the original's full length
  lps experiment performance --topology lps --max-steps 4`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{experiment.Failover, experiment.Performance},
	}
	f := cmd.Flags()
	f.StringVar(&topo, "topology", "both", "baseline, lps or both")
	f.StringVar(&cfg.Target, "target", "local", "local: lps processes on loopback; compose: the compose files' containers through the Docker engine")
	f.StringVar(&cfg.ComposeFiles, "compose-dir", "compose", "with --target compose: the folder of baseline.yml and lps.yml")
	f.StringVar(&cfg.Image, "image", "lps:latest", "with --target compose: the lps image (make image)")
	f.StringVar(&cfg.Out, "out", "", "report folder (default experiments/<kind>-<UTC time>)")
	f.Uint64Var(&cfg.Seed, "seed", experiment.DefaultSeed, "seed of the fault schedule and the workload")
	f.Float64Var(&cfg.TimeScale, "time-scale", experiment.DefaultTimeScale, "multiplies every duration of the schedule (1 = the original's)")
	f.IntVar(&cfg.Devices, "devices", experiment.DefaultDevices, "alarm devices of the failover experiment")
	f.Float64Var(&cfg.Background, "background", experiment.DefaultBackground, "background requests/s of random non-alarm commands straight to rast-sim (0: off)")
	f.BoolVar(&cfg.Faithful, "faithful", false, "the original's settings: mqtt2http --max-inflight 1, a fixed 1 s retry")
	f.StringVar(&cfg.Model, "model", "mascots2022", "rast-sim's delay model: mascots2022 or none")
	f.StringVar(&dataDir, "data", defaultDataDir, "folder of the original's "+prodMappingFile+" and "+requestNamesFile)
	f.IntVar(&cfg.Step, "step", experiment.DefaultStep, "devices added per performance step")
	f.DurationVar(&cfg.StepDuration, "step-duration", experiment.DefaultStepDuration, "length of a performance step (scaled)")
	f.IntVar(&cfg.MaxSteps, "max-steps", experiment.DefaultMaxSteps, "most performance steps")
	f.Float64Var(&cfg.Rate, "rate", 0, "performance: an open-model ramp of RATE, 2·RATE, … alarms/s instead of devices")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", experiment.DefaultDrainTimeout, "how long the LPS's backlog may take to drain")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cfg.Kind = args[0]
		if cfg.Kind != experiment.Failover && cfg.Kind != experiment.Performance {
			return &ConfigError{fmt.Errorf("unknown experiment %q: want failover or performance", cfg.Kind)}
		}
		switch topo {
		case "both":
			cfg.Topologies = []string{topology.Baseline, topology.LPS}
		case topology.Baseline, topology.LPS:
			cfg.Topologies = []string{topo}
		default:
			return &ConfigError{fmt.Errorf("invalid --topology %q: want baseline, lps or both", topo)}
		}
		if cfg.Background == 0 {
			cfg.Background = -1 // the flag's 0 is off; the config's zero is the default
		}
		if cfg.Out == "" {
			cfg.Out = filepath.Join(outPrefix, fmt.Sprintf("%s-%s", cfg.Kind, time.Now().UTC().Format("20060102T150405Z")))
		}
		if err := a.experimentData(&cfg, dataDir); err != nil {
			return &ConfigError{err}
		}
		ctx, stop := a.signalContext(cmd.Context())
		defer stop()
		out := cmd.OutOrStdout()
		cfg.Progress = out
		e, err := experiment.Run(ctx, cfg)
		var fe *config.FieldError
		if errors.As(err, &fe) {
			return &ConfigError{flagError(cmd.Flags(), err)}
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(out)
		if err := report.Summary(out, e); err != nil {
			return err
		}
		abs, _ := filepath.Abs(cfg.Out)
		fmt.Fprintf(out, "\nreport: %s\n", filepath.Join(abs, "report.html"))
		for _, r := range e.Runs {
			if r.Topology == topology.LPS && (r.Lost > 0 || r.Duplicated > 0) {
				return fmt.Errorf("the LPS lost %d and duplicated %d alarms", r.Lost, r.Duplicated)
			}
		}
		return nil
	}
	return cmd
}

// experimentData points rast-sim at the production mapping and the background at the command
// names, from dataDir. Without the folder the experiment runs on the alarm command alone and
// says so; a folder the user named that lacks a file is an error.
func (a *app) experimentData(cfg *experiment.Config, dataDir string) error {
	mapping := filepath.Join(dataDir, prodMappingFile)
	names := filepath.Join(dataDir, requestNamesFile)
	if _, err := os.Stat(dataDir); errors.Is(err, os.ErrNotExist) && dataDir == defaultDataDir {
		fmt.Fprintf(a.opts.Stderr, "lps: warning: no %s: rast-sim serves the alarm command only and there is no background workload (--data names the folder)\n", dataDir)
		cfg.Background = -1
		return nil
	}
	if _, err := os.Stat(mapping); err != nil {
		return fmt.Errorf("invalid --data %q: %w", dataDir, err)
	}
	cfg.Mapping = mapping
	if cfg.Background >= 0 {
		list, err := loadgen.LoadNames(names)
		if err != nil {
			return fmt.Errorf("invalid --data %q: %w", dataDir, err)
		}
		cfg.RequestNames = list
	}
	return nil
}

package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/lpsdev/lps/roles/mqtt2http"
	"github.com/lpsdev/lps/roles/mqttbroker"
	"github.com/lpsdev/lps/topology"
)

func (a *app) newUpCmd() *cobra.Command {
	var cfg topology.Config
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a whole topology (baseline or lps) in this process on loopback until Ctrl-C",
		Example: `  lps up --topology baseline
  lps up --topology lps --model none
  curl -X POST localhost:7081/api/v1/simple -d '{"phone":"0123","branch":"2001","headnumber":"8023","triggertime":"2026-01-01T00:00:00Z"}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, closeLog, err := a.logger("lps-up")
			if err != nil {
				return err
			}
			defer closeLog()
			cfg.Logger = logger
			t, err := topology.New(cfg)
			if err != nil {
				return &ConfigError{err}
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "SERVICE\tROLE\tLISTENS ON\n")
			for _, s := range t.Services {
				switch v := s.Value().(type) {
				case *mqttbroker.Broker:
					fmt.Fprintf(w, "%s\t%s\tmqtt://%s (admin http://%s)\n", s.Name, s.Role, s.Addr, v.AdminAddr())
				case *mqtt2http.Bridge:
					fmt.Fprintf(w, "%s\t%s\tadmin http://%s\n", s.Name, s.Role, s.Addr)
				default:
					fmt.Fprintf(w, "%s\t%s\thttp://%s\n", s.Name, s.Role, s.Addr)
				}
			}
			w.Flush()
			fmt.Fprintf(cmd.OutOrStdout(), "send alarms to %v; Ctrl-C stops\n", t.Comp1URLs())
			ctx, stop := a.signalContext(cmd.Context())
			defer stop()
			return t.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&cfg.Kind, "topology", topology.Baseline, "which topology: baseline or lps")
	cmd.Flags().StringVar(&cfg.Host, "host", "127.0.0.1", "address every role binds")
	cmd.Flags().IntVar(&cfg.Comp1Port, "comp1-port", 7081, "port of the first comp1; the others follow (-1: ephemeral)")
	cmd.Flags().IntVar(&cfg.Instances, "instances", 3, "instances of each proxy")
	cmd.Flags().StringVar(&cfg.Model, "model", "mascots2022", "rast-sim delay model: mascots2022 or none")
	cmd.Flags().BoolVar(&cfg.HTTP2, "http2", false, "every HTTP hop speaks h2c")
	cmd.Flags().StringVar(&cfg.BrokerURL, "broker", "", "lps topology: use this external MQTT v5 broker instead of the embedded one")
	cmd.Flags().StringVar(&cfg.DataDir, "data-dir", "", "lps topology: the embedded broker's data directory (empty: memory)")
	cmd.Flags().IntVar(&cfg.MaxInflight, "max-inflight", 0, "lps topology: each mqtt2http's receive maximum and concurrency (0: its default, 1)")
	return cmd
}

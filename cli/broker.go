package cli

import (
	"github.com/spf13/cobra"

	"github.com/lpsdev/lps/broker"
	"github.com/lpsdev/lps/roles/mqttbroker"
)

func (a *app) newBrokerCmd() *cobra.Command {
	var cfg mqttbroker.Config
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "The embedded MQTT v5 broker: QoS 2, persistent sessions, fair shared subscriptions",
		Example: `  lps broker --data-dir /var/lib/lps-broker
  lps broker --listen 0.0.0.0:1883 --admin-listen 0.0.0.0:9090 --username lps --password secret`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&cfg.Listen, "listen", broker.DefaultAddress, "MQTT address (loopback unless told otherwise)")
	sf := addServerFlags(fs, &cfg.Admin, "admin-listen", mqttbroker.DefaultAdminListen, "broker")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "keep sessions and messages here across restarts (empty: memory only)")
	fs.BoolVar(&cfg.SyncWrites, "sync-writes", false, "fsync every state change: survives power loss, not only kill -9")
	fs.StringVar(&cfg.Username, "username", "", "require this user name from every client")
	fs.StringVar(&cfg.Password, "password", "", "require this password from every client")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert", "", "serve MQTT over TLS with this certificate (PEM)")
	fs.StringVar(&cfg.TLSKeyFile, "tls-key", "", "key of --tls-cert (PEM)")
	fs.IntVar(&cfg.MaxQueued, "max-queued", 0, "bound of each client's or group's queue (0: the broker's default)")
	fs.IntVar(&cfg.MaxInflight, "max-inflight", 0, "messages in flight to one client at most (0: the broker's default)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := validateListen("listen", cfg.Listen); err != nil {
			return &ConfigError{err}
		}
		if err := sf.validate(); err != nil {
			return &ConfigError{err}
		}
		return a.serve(cmd, &cfg.Admin, func() (runner, error) { return mqttbroker.New(cfg) })
	}
	return cmd
}

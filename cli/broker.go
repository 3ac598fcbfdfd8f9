package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lpsdev/lps/broker"
	"github.com/lpsdev/lps/roles/mqttbroker"
)

// queueNone is the --queue value that declares no queue.
const queueNone = "none"

func (a *app) newBrokerCmd() *cobra.Command {
	var cfg mqttbroker.Config
	var queues []string
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "The embedded MQTT v5 broker: QoS 2, persistent sessions, fair shared subscriptions",
		Example: `  lps broker --data-dir /var/lib/lps-broker
  lps broker --listen 0.0.0.0:1883 --admin-listen 0.0.0.0:9090 --username lps --password secret
  lps broker --password-file /etc/lps/passwd --acl /etc/lps/acl          # users, and what each may do
  lps broker passwd /etc/lps/passwd proxy2-1                               # add a user (password on stdin)
  lps broker --queue legacy_proxy:+/message --queue alerts:site/+/alarm   # instead of the defaults
  LPS_QUEUE=none lps broker                                                 # no durable queue`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&cfg.Listen, "listen", broker.DefaultAddress, "MQTT address (loopback unless told otherwise)")
	sf := addServerFlags(fs, &cfg.Admin, "admin-listen", mqttbroker.DefaultAdminListen, "broker")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "keep sessions and messages here across restarts (empty: memory only)")
	syncWrites := fs.Bool("sync-writes", true, "fsync the data dir before a publish is acknowledged (group commit): survives power loss; false survives kill -9 only")
	fs.StringVar(&cfg.Username, "username", "", "require this user name from every client")
	fs.StringVar(&cfg.Password, "password", "", "require this password from every client")
	fs.StringVar(&cfg.PasswordFile, "password-file", "", "users and bcrypt hashes, user:hash a line (lps broker passwd writes it): clients must be one of them (or --username); a user's client ids are <user> and <user>-*")
	fs.StringVar(&cfg.ACLFile, "acl", "", "access rules in Mosquitto's acl_file format (user, topic, pattern lines): what each user may publish and subscribe to; the rest is refused")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert", "", "serve MQTT over TLS with this certificate (PEM)")
	fs.StringVar(&cfg.TLSKeyFile, "tls-key", "", "key of --tls-cert (PEM)")
	fs.IntVar(&cfg.MaxQueued, "max-queued", 0, "bound of each client's or group's queue (0: the broker's default, 1,000,000; 10,000,000 for a group queue with --data-dir, which waits on disk)")
	fs.IntVar(&cfg.MaxInflight, "max-inflight", 0, "messages in flight to one client at most (0: the broker's default)")
	fs.DurationVar(&cfg.MaxKeepAlive, "max-keep-alive", broker.DefaultMaxKeepAlive,
		"longest keep alive an MQTT 5 client may use: one asking for more or none is told this one (Server Keep Alive); whole seconds")
	fs.Int64Var(&cfg.MaxStoreBytes, "max-store-bytes", broker.DefaultMaxStoreBytes,
		"with --data-dir: bytes of the data dir in use at most; beyond, QoS 1/2 publishes are refused with 0x97 (http2mqtt answers 503) until consumers drain; -1: no bound")
	fs.Uint32Var(&cfg.MaxPacketSize, "max-packet-size", broker.DefaultMaxPacketSize, "largest MQTT packet a client may send, in bytes (announced in CONNACK)")
	fs.IntVar(&cfg.MaxConnections, "max-connections", broker.DefaultMaxConnections, "clients connected at once at most; one more gets CONNACK 0x89 server busy")
	fs.DurationVar(&cfg.MaxSessionExpiry, "max-session-expiry", broker.DefaultMaxSessionExpiry, "cap on the session expiry interval clients ask for (whole seconds)")
	// A string slice, not an array: it is repeatable and also splits at commas, so that
	// LPS_QUEUE=a:x,b:y declares two queues (the environment sets a flag with one value). A
	// filter with a comma in it is written in CSV quotes: --queue '"g:a,b"'.
	fs.StringSliceVar(&queues, "queue", queueStrings(mqttbroker.DefaultQueues()),
		"durable queue GROUP:FILTER declared at start: $share/GROUP/FILTER keeps matching messages before anyone subscribes; repeat or comma-separate; "+queueNone+" for no queue")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := sf.validate(); err != nil {
			return &ConfigError{err}
		}
		cfg.NoSync = !*syncWrites
		var err error
		if cfg.Queues, err = parseQueues(queues); err != nil {
			return &ConfigError{err}
		}
		return a.serve(cmd, &cfg.Admin, func() (runner, error) { return mqttbroker.New(cfg) })
	}
	passwd := newBrokerPasswdCmd()
	describeEnv(passwd.Flags())
	cmd.AddCommand(passwd)
	return cmd
}

// newBrokerPasswdCmd is `lps broker passwd FILE USER`: what mosquitto_passwd is to
// Mosquitto's password_file, for --password-file.
func newBrokerPasswdCmd() *cobra.Command {
	var password string
	cmd := &cobra.Command{
		Use:   "passwd FILE USER",
		Short: "Add a user to a --password-file, or change its password (bcrypt)",
		Long: `Adds USER to the password file FILE with a bcrypt hash of its password, or replaces the
hash if USER is there; every other line is kept. FILE is created with mode 0600 if missing.
The password is the first line of standard input, or --password.`,
		Example: `  lps broker passwd compose/broker.passwd proxy2-1 <<< 'its password'
  lps broker passwd --password 'its password' /etc/lps/passwd proxy2-1`,
		Args: cobra.ExactArgs(2),
	}
	cmd.Flags().StringVar(&password, "password", "", "the password (default: the first line of standard input)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		file, user := args[0], args[1]
		if err := broker.ValidateUserName(user); err != nil {
			return &ConfigError{err}
		}
		if password == "" {
			line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
			if err != nil && (line == "" || !errors.Is(err, io.EOF)) {
				return &ConfigError{fmt.Errorf("reading the password from standard input: %w (or give --password)", err)}
			}
			password = strings.TrimRight(line, "\r\n")
		}
		if password == "" {
			return &ConfigError{errors.New("the password is empty")}
		}
		if err := broker.SetPassword(file, user, password); err != nil {
			return fmt.Errorf("setting the password of %s in %s: %w", user, file, err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "set the password of %s in %s\n", user, file)
		return nil
	}
	return cmd
}

// parseQueues maps the values of --queue to the role's Queues: none declares none (a non-nil
// empty slice; nil would mean the defaults).
func parseQueues(vals []string) ([]broker.Queue, error) {
	if slices.Contains(vals, queueNone) {
		if len(vals) > 1 {
			return nil, fmt.Errorf("invalid --queue %q: %q declares no queue and cannot be combined with others", vals, queueNone)
		}
		return []broker.Queue{}, nil
	}
	qs := make([]broker.Queue, 0, len(vals))
	for _, v := range vals {
		q, err := broker.ParseQueue(v)
		if err != nil {
			return nil, fmt.Errorf("invalid --queue %q: %v", v, err)
		}
		qs = append(qs, q)
	}
	return qs, nil
}

func queueStrings(qs []broker.Queue) []string {
	out := make([]string, len(qs))
	for i, q := range qs {
		out[i] = q.String()
	}
	return out
}

package cli

import (
	"net"
	"net/url"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lpsdev/lps/mqttconn"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/http2mqtt"
	"github.com/lpsdev/lps/roles/mqtt2http"
)

// brokerFlags binds the MQTT connection flags both bridges share.
type brokerFlags struct {
	url, username, password *string
	opts                    *mqttconn.Options
}

func addBrokerFlags(fs *pflag.FlagSet, u, user, pass *string, opts *mqttconn.Options) brokerFlags {
	fs.StringVar(u, "broker", "mqtt://127.0.0.1:1883", "MQTT v5 broker URL: mqtt://, tcp://, mqtts:// (TLS), ssl://, tls://")
	fs.StringVar(user, "username", "", "broker user name")
	fs.StringVar(pass, "password", "", "broker password")
	fs.DurationVar(&opts.SessionExpiry, "session-expiry", mqttconn.DefaultSessionExpiry, "MQTT session expiry: how long the broker keeps the session while this bridge is away")
	fs.StringVar(&opts.SessionDir, "session-dir", "", "keep the client's half of the MQTT session here across restarts (empty: memory)")
	addCAFileFlag(fs, opts)
	aliasEnv(fs, "broker", alias{name: "MQTT_BROKER"})
	aliasEnv(fs, "username", alias{name: "MQTT_USERNAME"})
	aliasEnv(fs, "password", alias{name: "MQTT_PASSWORD"})
	return brokerFlags{url: u, username: user, password: pass, opts: opts}
}

// mqttHostPortEnv applies the original's MQTT_HOST/MQTT_PORT to --broker.
func (a *app) mqttHostPortEnv(cmd *cobra.Command) error {
	return hostPortEnv(cmd, "broker", "MQTT_HOST", "MQTT_PORT", "localhost", "1883", a.opts.LookupEnv,
		func(h, p string) string { return (&url.URL{Scheme: "mqtt", Host: net.JoinHostPort(h, p)}).String() })
}

// apply applies MQTT_HOST/MQTT_PORT to --broker; the bridge validates the rest.
func (f brokerFlags) apply(a *app, cmd *cobra.Command) error {
	return a.mqttHostPortEnv(cmd)
}

func (a *app) newHTTP2MQTTCmd() *cobra.Command {
	var cfg http2mqtt.Config
	cmd := &cobra.Command{
		Use:   "http2mqtt",
		Short: "HTTP to MQTT bridge: takes comp2's contract and publishes each alarm at QoS 2",
		Long: `http2mqtt accepts alarms as component 2 does and publishes each, as the original JSON
payload, at QoS 2 over MQTT v5 with a persistent session. It answers 200 only after the broker
completed the QoS 2 handshake (PUBCOMP), 503 when the broker is not connected.`,
		Example: `  lps http2mqtt --listen :8080 --broker mqtt://broker:1883 --service-name proxy1-1
  SERVICE_NAME=proxy1-1 MQTT_HOST=mosquitto MQTT_PORT=1883 MQTT_TOPIC=proxy1/message lps http2mqtt`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	sf := addServerFlags(fs, &cfg.Server, "listen", roles.DefaultListen, "proxy1")
	addConcurrencyFlag(fs, &cfg.Server)
	bf := addBrokerFlags(fs, &cfg.Broker, &cfg.Username, &cfg.Password, &cfg.MQTT)
	fs.StringVar(&cfg.Topic, "topic", "", `publish topic (default "<service-name>/message")`)
	fs.IntVar(&cfg.QoS, "qos", 2, "publish QoS, 1 or 2")
	fs.DurationVar(&cfg.PublishTimeout, "publish-timeout", http2mqtt.DefaultPublishTimeout, "how long to wait for the broker's PUBCOMP; then 504")
	fs.DurationVar(&cfg.HoldWhenDown, "hold-when-down", 0, "hold a request this long for a broker that is down (0: answer 503 at once)")
	aliasEnv(fs, "topic", alias{name: "MQTT_TOPIC"})
	aliasEnv(fs, "qos", alias{name: "MQTT_QOS"})
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := a.validate(cmd, sf, nil); err != nil {
			return err
		}
		if err := bf.apply(a, cmd); err != nil {
			return &ConfigError{err}
		}
		return a.serve(cmd, &cfg.Server, func() (runner, error) { return http2mqtt.New(cfg) })
	}
	return cmd
}

func (a *app) newMQTT2HTTPCmd() *cobra.Command {
	var cfg mqtt2http.Config
	cmd := &cobra.Command{
		Use:   "mqtt2http",
		Short: "MQTT to HTTP bridge: takes alarms from a shared subscription and delivers them to comp2",
		Long: `mqtt2http subscribes $share/<group>/<topic> and the retry topics at QoS 2 with persistent
sessions and acknowledges a message only after the upstream answered 2xx or after it was durably
republished for a later attempt (exponential backoff with jitter, waited out by the broker through
$delayed/<seconds>/<service-name>/retry/message where it can). It retries until the alarm is
delivered; while the upstream is down it takes no new messages and probes with one at a time.
After --max-attempts (if set), and at once for a payload it cannot decode, a message goes to the
dead-letter topic with the reason. Its admin listener serves /healthz, /readyz and /metrics.`,
		Example: `  lps mqtt2http --broker mqtt://broker:1883 --service-name proxy2-1 --upstream http://ars-comp-2-1:8080
  MQTT_TOPIC='$share/legacy_proxy/+/message' TARGET_URL=http://ars-comp-2-1:8080 lps mqtt2http`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	sf := addServerFlags(fs, &cfg.Admin, "admin-listen", mqtt2http.DefaultAdminListen, "proxy2")
	bf := addBrokerFlags(fs, &cfg.Broker, &cfg.Username, &cfg.Password, &cfg.MQTT)
	uf := addUpstreamFlags(fs, &cfg.Upstream, "component 2")
	fs.StringVar(&cfg.ShareGroup, "share-group", "", `shared subscription group (default "legacy_proxy", or the group of a $share/... --topic)`)
	fs.StringVar(&cfg.Topic, "topic", mqtt2http.DefaultTopic, "subscription filter; a $share/GROUP/FILTER value sets the group")
	fs.IntVar(&cfg.QoS, "qos", 2, "subscription and republish QoS, 1 or 2")
	fs.IntVar(&cfg.MaxInflight, "max-inflight", mqtt2http.DefaultMaxInflight, "MQTT receive maximum and concurrent forwards (1 reproduces the original)")
	fs.IntVar(&cfg.MaxAttempts, "max-attempts", mqtt2http.DefaultMaxAttempts, "forwards a message gets before it goes to the dead-letter topic (0: no limit, retry until delivered)")
	fs.StringVar(&cfg.DelayedPublish, "delayed-publish", mqtt2http.DelayedPublishAuto,
		"who waits out a retry's backoff: auto (the broker, through $delayed/<s>/<topic>, when it announces it as the embedded broker does; else mqtt2http), on (always the broker: EMQX), off (always mqtt2http)")
	fs.DurationVar(&cfg.RetryBase, "retry-base", mqtt2http.DefaultRetryBase, "first retry delay; it doubles, with jitter, up to --retry-max")
	fs.DurationVar(&cfg.RetryMax, "retry-max", mqtt2http.DefaultRetryMax, "longest retry delay")
	fs.StringVar(&cfg.DeadLetterTopic, "dead-letter-topic", mqtt2http.DefaultDeadLetterTopic, "where undeliverable messages go, with the reason")
	fs.IntVar(&cfg.MaxPayloadBytes, "max-payload-bytes", 1<<20, "largest payload forwarded; larger ones go to the dead-letter topic at once (negative: no limit)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", mqtt2http.DefaultDrainTimeout, "on shutdown, how long forwards in flight may finish before they are left to the broker")
	aliasEnv(fs, "topic", alias{name: "MQTT_TOPIC"})
	aliasEnv(fs, "qos", alias{name: "MQTT_QOS"})
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := a.validate(cmd, sf, uf); err != nil {
			return err
		}
		if err := bf.apply(a, cmd); err != nil {
			return &ConfigError{err}
		}
		cfg.ServiceName = cfg.Admin.ServiceName
		return a.serve(cmd, &cfg.Admin, func() (runner, error) { return mqtt2http.New(cfg) })
	}
	return cmd
}

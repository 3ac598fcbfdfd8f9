// Package http2mqtt is the HTTP to MQTT bridge (the original's legacy_proxy_1.py): it accepts
// an alarm on POST /ID_REQ_KC_STORE7D3BPACKET, as component 2 does, and publishes it at QoS 2
// over MQTT v5, answering 200 only once the broker completed the QoS 2 handshake (PUBCOMP).
//
// When the broker is unreachable it answers 503 at once, or, with HoldWhenDown, waits that long
// for the connection to come back; a publish that fails or is not confirmed in time is a 5xx,
// never a 2xx, so a caller that got 200 knows the broker has the alarm. A broker that confirms
// with reason code 0x10 (no matching subscribers) would discard the alarm, so that is a 503
// too: no consumer ever subscribed the topic.
package http2mqtt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/config"
	"github.com/lpsdev/lps/mqttconn"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/transport"
)

// Defaults of Config, applied in one place (Config.defaults).
const (
	// DefaultQoS is the original's QoS: exactly once, confirmed by PUBCOMP.
	DefaultQoS = 2
	// DefaultPublishTimeout bounds the wait for the broker's confirmation. It is well below the
	// callers' 60 s client timeout, so a stuck broker turns into a 504 the caller can act on.
	DefaultPublishTimeout = 10 * time.Second
	// TopicSuffix makes the default topic "<service-name>/message", as the original's
	// proxy1/message, which mqtt2http's default filter +/message matches.
	TopicSuffix = "/message"
)

// Config configures a Bridge.
type Config struct {
	roles.Server
	// Broker is the broker URL (mqtt://host:1883, mqtts://host:8883); required.
	Broker string
	// Username and Password authenticate with the broker; empty means none (or the URL's).
	Username, Password string
	// Topic is where alarms are published; "" means "<ServiceName>/message".
	Topic string
	// QoS is 1 or 2; zero means DefaultQoS. QoS 0 is refused: the broker never confirms it, so
	// a 200 would promise what nobody checked.
	QoS int
	// PublishTimeout bounds the wait for PUBCOMP (PUBACK at QoS 1); zero means
	// DefaultPublishTimeout. Running out answers 504.
	PublishTimeout time.Duration
	// HoldWhenDown is how long a request waits for a broker connection that is down; zero
	// answers 503 at once.
	HoldWhenDown time.Duration
	// MQTT are the connection's further settings (keepalive, session, TLS, reconnect).
	MQTT mqttconn.Options
}

func (c *Config) defaults() {
	c.SetDefaults()
	if c.Topic == "" {
		c.Topic = c.ServiceName + TopicSuffix
	}
	if c.QoS == 0 {
		c.QoS = DefaultQoS
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
}

func (c *Config) validate() error {
	if err := c.Server.Validate(); err != nil {
		return err
	}
	if c.ServiceName == "" {
		return config.Invalid("ServiceName", c.ServiceName, "is required: it is the MQTT client id and names the default topic")
	}
	if err := mqttconn.ValidateTopic(c.Topic); err != nil {
		return config.Invalid("Topic", c.Topic, "%v", err)
	}
	switch {
	case c.QoS < 1 || c.QoS > 2:
		return config.Invalid("QoS", c.QoS, "use 2 (or 1); at QoS 0 the broker confirms nothing")
	case c.PublishTimeout < 0:
		return config.Invalid("PublishTimeout", c.PublishTimeout, "must not be negative (0: the default)")
	case c.HoldWhenDown < 0:
		return config.Invalid("HoldWhenDown", c.HoldWhenDown, "must not be negative (0: answer 503 at once)")
	}
	return nil
}

// Bridge is a running HTTP to MQTT bridge.
type Bridge struct {
	cfg  Config
	svc  *roles.HTTPService
	conn *mqttconn.Conn
	log  *zap.Logger
	m    metrics
}

// New validates cfg, prepares the broker connection and opens the listener; Run connects and
// serves.
func New(cfg Config) (*Bridge, error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b := &Bridge{cfg: cfg, log: cfg.Logger, m: newMetrics(cfg.Registry)}
	conn, err := mqttconn.New(mqttconn.Config{
		Broker:     cfg.Broker,
		Username:   cfg.Username,
		Password:   cfg.Password,
		ClientID:   cfg.ServiceName,
		Options:    cfg.MQTT,
		Logger:     cfg.Logger.Named("mqtt"),
		Registerer: cfg.Registry,
	})
	if err != nil {
		return nil, err
	}
	b.conn = conn
	api := transport.Endpoint(http.MethodPost, alarm.CommandPath, http.HandlerFunc(b.serveAlarm))
	svc, err := roles.NewHTTPService(cfg.Server, api, conn.Ready)
	if err != nil {
		return nil, err
	}
	b.svc = svc
	return b, nil
}

// Addr is where the bridge listens.
func (b *Bridge) Addr() net.Addr { return b.svc.Addr() }

// Run connects to the broker and serves until ctx is done. Then it stops accepting requests,
// lets those in flight finish (their publishes need the connection), and only then
// disconnects from the broker.
func (b *Bridge) Run(ctx context.Context) error {
	mctx, stopMQTT := context.WithCancel(context.WithoutCancel(ctx))
	defer stopMQTT()
	mqttDone := make(chan error, 1)
	go func() { mqttDone <- b.conn.Run(mctx) }()
	b.log.Info("publishing alarms", zap.Stringer("broker", b.conn.Broker()), zap.String("topic", b.cfg.Topic), zap.Int("qos", b.cfg.QoS))

	err := b.svc.Run(ctx)
	stopMQTT()
	return errors.Join(err, <-mqttDone)
}

func (b *Bridge) serveAlarm(w http.ResponseWriter, r *http.Request) {
	body, err := transport.ReadJSONBody(r)
	if err != nil {
		roles.WriteErr(w, err)
		return
	}
	al, err := alarm.Parse(body)
	if err != nil {
		roles.WriteErr(w, err)
		return
	}
	al.RequestID = transport.RequestIDFrom(r.Context())

	if b.cfg.HoldWhenDown > 0 && !b.conn.Connected() {
		hctx, cancel := context.WithTimeout(r.Context(), b.cfg.HoldWhenDown)
		_ = b.conn.AwaitReady(hctx) // a failure shows as ErrNotConnected below
		cancel()
	}

	start := time.Now()
	ctx, cancel := context.WithTimeout(r.Context(), b.cfg.PublishTimeout)
	defer cancel()
	resp, err := b.conn.Publish(ctx, &paho.Publish{
		Topic:      b.cfg.Topic,
		QoS:        byte(b.cfg.QoS),
		Payload:    al.Marshal(),
		Properties: alarm.PublishProperties(al.RequestID),
	})
	elapsed := time.Since(start)
	if err != nil {
		status, result, reason := classify(err, b.cfg)
		b.m.observe(result, elapsed)
		if ce := b.log.Check(zapcore.WarnLevel, "publishing alarm failed"); ce != nil {
			ce.Write(zap.String("request_id", al.RequestID), zap.Int("status", status), zap.Error(err))
		}
		transport.WriteError(w, status, reason)
		return
	}
	if resp != nil && resp.ReasonCode == mqttconn.ReasonNoMatchingSubscribers {
		// The broker accepted the message but will deliver it to nobody: no mqtt2http instance
		// ever subscribed (a subscribed one keeps its persistent session, and the broker queues
		// for it while it is away). The alarm would be discarded, so it is not a success.
		b.m.observe("no_subscribers", elapsed)
		if ce := b.log.Check(zapcore.WarnLevel, "the broker has no subscription for the topic; alarm refused"); ce != nil {
			ce.Write(zap.String("request_id", al.RequestID), zap.String("topic", b.cfg.Topic))
		}
		transport.WriteError(w, http.StatusServiceUnavailable, fmt.Sprintf("the MQTT broker has no subscriber for %s and would discard the alarm; start mqtt2http first", b.cfg.Topic))
		return
	}
	b.m.observe("ok", elapsed)
	transport.WriteJSON(w, http.StatusOK, roles.SuccessBody)
}

// classify maps a publish error to the answer: 503 when there is no usable broker
// connection (the caller may retry elsewhere or later), 504 when the broker did not confirm in
// time, 502 when it refused the message for good, 503 when it refused it for now.
func classify(err error, cfg Config) (status int, result, reason string) {
	var rce *mqttconn.ReasonCodeError
	switch {
	case errors.Is(err, mqttconn.ErrNotConnected):
		reason := "MQTT broker not connected"
		if cfg.HoldWhenDown > 0 {
			reason += fmt.Sprintf(" (waited %s)", cfg.HoldWhenDown)
		}
		return http.StatusServiceUnavailable, "not_connected", reason
	case errors.Is(err, mqttconn.ErrConnectionLost):
		return http.StatusServiceUnavailable, "connection_lost", "connection to the MQTT broker lost before it confirmed the alarm"
	case errors.As(err, &rce):
		if rce.Transient() {
			return http.StatusServiceUnavailable, "refused", rce.Error()
		}
		return http.StatusBadGateway, "refused", rce.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "timeout", fmt.Sprintf("MQTT broker did not confirm the alarm within %s", cfg.PublishTimeout)
	case errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, "canceled", "request canceled before the broker confirmed"
	default:
		return http.StatusServiceUnavailable, "error", "publishing to the MQTT broker: " + err.Error()
	}
}

// metrics are the bridge's publish metrics; the connection's own are mqttconn's.
type metrics struct {
	publishes *prometheus.CounterVec
	latency   *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		publishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lps_mqtt_publishes_total",
			Help: "Alarms published to the MQTT broker, by result (ok, no_subscribers, not_connected, connection_lost, refused, timeout, canceled, error).",
		}, []string{"result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lps_mqtt_publish_duration_seconds",
			Help:    "Time from publishing an alarm to the broker's confirmation (PUBCOMP) or the failure.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.publishes, m.latency)
	return m
}

func (m metrics) observe(result string, d time.Duration) {
	m.publishes.WithLabelValues(result).Inc()
	outcome := "ok"
	if result != "ok" {
		outcome = "failed"
	}
	m.latency.WithLabelValues(outcome).Observe(d.Seconds())
}

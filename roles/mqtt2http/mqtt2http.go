// Package mqtt2http is the MQTT to HTTP bridge (the original's legacy_proxy_2.py): it takes
// alarms from a shared MQTT v5 subscription and POSTs each to component 2 with its
// Request-Id, acknowledging a message only when it is safe — after a 2xx, or after the message
// was durably republished for a later attempt, or after it was put on the dead-letter topic.
//
// # Delivery
//
// The bridge keeps two MQTT connections, each with a persistent session and manual
// acknowledgement: one (client id = service name) subscribes $share/<group>/<topic>, the alarms,
// and publishes; the other (client id "<service name>-retry") subscribes
// $share/<group>/+/retry/message, the retries. Each has MaxInflight as its receive maximum,
// and MaxInflight workers forward what both receive, oldest first. The retries have a window of
// their own because MQTT makes a client acknowledge in the order it received [MQTT-4.6.0-2]: a
// message that waits for anything holds back the acknowledgements of every later one on its
// connection, and with them the broker's window. For each message:
//
//   - A payload that is not UTF-8, not a valid alarm or larger than MaxPayloadBytes goes to the
//     dead-letter topic at once and is then acknowledged: nothing is dropped silently (the
//     original acknowledged and lost it).
//   - Otherwise it is POSTed upstream with its Request-Id (the payload's request_id, else the
//     request_id user property, else a new one that travels with the retries). A 2xx
//     acknowledges it.
//   - A failed forward is republished at once for its next attempt (QoS 2, waiting for PUBCOMP)
//     with the user property attempts=n, and the original is acknowledged right after: a
//     failing message never holds a worker or the window. The backoff (RetryBase doubling up to
//     RetryMax, with jitter) is waited out by the broker where it can: the retry goes to
//     "$delayed/<seconds>/<service-name>/retry/message", EMQX's delayed-publish convention,
//     which the embedded broker implements and announces in its CONNACK (DelayedPublish says
//     when to use it). A broker without it (Mosquitto) gets the retry on
//     "<service-name>/retry/message" at once with its due time in the retry_at user property;
//     the bridge then holds it, unacknowledged, until that time: only the retry connection's
//     window waits, never the alarms'.
//   - Retries never end by default (MaxAttempts 0): an outage of any length is a backlog. After
//     an operator-set MaxAttempts, or when the message's expiry (its MQTT v5 Message Expiry
//     Interval, carried over to every republish) would pass before its next attempt, it goes to
//     the dead-letter topic with the reason and is acknowledged. The embedded broker keeps the
//     dead-letter topic as a queue ($share/dead_letters/lps/dead-letter) until someone reads it
//     (lps dead-letters).
//   - When DefaultOutageAfter forwards in a row found the upstream unavailable (refused, timed
//     out, 5xx), the bridge stops taking messages and probes with one at a time, at the
//     backoff's pace, until one gets through (see outage): during an outage alarms wait in the
//     broker untouched instead of cycling through the retry topic.
//   - A republish or dead-letter publish that fails is tried again (with backoff) for as long
//     as the message's connection lasts; the original is never acknowledged before. When the
//     connection goes, the message is abandoned unacknowledged and the broker redelivers it.
//
// Dead letters are JSON (see DeadLetter) published at QoS 2 and also logged whole.
//
// # Shutdown
//
// When Run's context ends the bridge takes no new messages. It republishes the messages it
// received but had not started (and the retries it was holding) to its retry topic and
// acknowledges them, so that no acknowledgement of a forwarded message waits behind them; lets
// the forwards in flight finish for up to DrainTimeout (a failed one is republished as usual);
// waits until paho has sent every acknowledgement; and disconnects cleanly. The broker keeps the
// sessions and redelivers whatever was left unacknowledged.
package mqtt2http

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/mqttconn"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/transport"
)

// DeadLetter is the JSON payload published to the dead-letter topic.
type DeadLetter struct {
	// Reason says why the message could not be delivered.
	Reason string `json:"reason"`
	// Kind is the reason's class: undecodable, max_attempts or expired.
	Kind string `json:"kind,omitempty"`
	// Service is the instance that gave up on it.
	Service string `json:"service"`
	// Topic is the topic it arrived on.
	Topic string `json:"topic"`
	// Attempts is how many forwards were made (0 for an undecodable payload).
	Attempts int `json:"attempts"`
	// RequestID is the alarm's Request-Id, when known.
	RequestID string `json:"request_id,omitempty"`
	// Payload is the original payload: as text when PayloadEncoding is "utf-8", base64 when it
	// is "base64" (a payload that is not UTF-8).
	Payload         string `json:"payload"`
	PayloadEncoding string `json:"payload_encoding"`
	// Time is when it was dead-lettered.
	Time time.Time `json:"time"`
}

// Dead-letter kinds, the lps_mqtt_dead_letters_total label and DeadLetter.Kind.
const (
	DeadUndecodable = "undecodable"
	DeadMaxAttempts = "max_attempts"
	DeadExpired     = "expired"
)

// Bridge is a running MQTT to HTTP bridge.
type Bridge struct {
	cfg       settings
	conn      *mqttconn.Conn // the alarms; also publishes retries and dead letters
	retries   *mqttconn.Conn // the retry topics
	admin     *roles.HTTPService
	upstreams *transport.Upstreams
	backoff   mqttconn.Backoff
	log       *zap.Logger
	m         metrics

	mu       sync.Mutex
	seq      uint64
	queue    []*delivery // received, not yet taken by a worker, oldest first
	held     []*delivery // retries received before their time, soonest first
	stopping bool
	changed  chan struct{} // closed and replaced when a waiting worker may go on
	outage   outage
}

var _ interface {
	Run(context.Context) error
	Addr() net.Addr
} = (*Bridge)(nil)

// New validates cfg, prepares the broker connections and opens the admin listener; Run
// connects and works.
func New(cfg Config) (*Bridge, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	b := &Bridge{
		cfg:     s,
		backoff: mqttconn.Backoff{Base: s.RetryBase, Max: s.RetryMax},
		log:     s.Logger,
		changed: make(chan struct{}),
	}
	b.outage = outage{backoff: b.backoff, threshold: DefaultOutageAfter}
	qos := byte(s.QoS)
	newConn := func(clientID, filter, label string) (*mqttconn.Conn, error) {
		var conn *mqttconn.Conn
		conn, err := mqttconn.New(mqttconn.Config{
			Broker:         s.Broker,
			Username:       s.Username,
			Password:       s.Password,
			ClientID:       clientID,
			Options:        s.MQTT,
			ReceiveMaximum: uint16(s.MaxInflight),
			ManualAck:      true,
			OnPublish:      func(pr paho.PublishReceived) { b.receive(conn, pr) },
			Subscriptions:  []paho.SubscribeOptions{{Topic: mqttconn.SharedFilter(s.group, filter), QoS: qos}},
			Logger:         s.Logger.Named("mqtt").With(zap.String("connection", label)),
			// Both connections report the same metrics, told apart by this label.
			Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"connection": label}, s.Registry),
		})
		return conn, err
	}
	if b.conn, err = newConn(s.ServiceName, s.filter, "alarms"); err != nil {
		return nil, err
	}
	if b.retries, err = newConn(s.ServiceName+RetryClientSuffix, RetryFilter, "retries"); err != nil {
		return nil, err
	}
	b.m = newMetrics(s.Registry)
	notFound := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		transport.WriteError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %s; mqtt2http serves only /healthz, /readyz and /metrics", r.URL.Path))
	})
	ready := func(ctx context.Context) error {
		if err := b.conn.Ready(ctx); err != nil {
			return fmt.Errorf("alarm subscription: %w", err)
		}
		if err := b.retries.Ready(ctx); err != nil {
			return fmt.Errorf("retry subscription: %w", err)
		}
		return nil
	}
	admin, err := roles.NewHTTPService(s.Admin, notFound, ready)
	if err != nil {
		return nil, err
	}
	b.admin = admin
	b.upstreams = s.Upstream.NewUpstreams(alarm.CommandPath, s.Logger.Named("client"), s.Registry)
	return b, nil
}

// Addr is where the admin endpoints listen.
func (b *Bridge) Addr() net.Addr { return b.admin.Addr() }

// Run connects, subscribes and forwards until ctx is done, then shuts down as the package
// documentation describes.
func (b *Bridge) Run(ctx context.Context) error {
	soft, softCancel := context.WithCancel(ctx)
	defer softCancel()
	hard, hardCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hardCancel()
	connCtx, stopConns := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConns()

	connDone := make(chan error, 2)
	for _, c := range []*mqttconn.Conn{b.conn, b.retries} {
		go func() { connDone <- c.Run(connCtx) }()
	}
	adminDone := make(chan error, 1)
	go func() { adminDone <- b.admin.Run(soft) }()
	var workers sync.WaitGroup
	for range b.cfg.MaxInflight {
		workers.Add(1)
		go func() {
			defer workers.Done()
			b.work(soft, hard)
		}()
	}
	b.log.Info("forwarding alarms", zap.Stringer("broker", b.conn.Broker()),
		zap.String("subscription", mqttconn.SharedFilter(b.cfg.group, b.cfg.filter)),
		zap.String("retry_subscription", mqttconn.SharedFilter(b.cfg.group, RetryFilter)),
		zap.String("retry_topic", b.cfg.retryTopic), zap.String("dead_letter_topic", b.cfg.DeadLetterTopic),
		zap.Strings("upstream", b.upstreams.URLs()), zap.Int("max_inflight", b.cfg.MaxInflight),
		zap.Int("max_attempts", b.cfg.MaxAttempts), zap.Duration("retry_base", b.cfg.RetryBase), zap.Duration("retry_max", b.cfg.RetryMax),
		zap.String("delayed_publish", b.cfg.DelayedPublish))

	var adminErr error
	adminStopped := false
	select {
	case <-ctx.Done():
	case adminErr = <-adminDone:
		adminStopped = true
	}

	// Take nothing new, and hand back what was received but not started.
	left := b.stop()
	softCancel()
	b.log.Info("stopping: finishing the forwards in flight", zap.Int("handed_back", len(left)), zap.Duration("drain_timeout", b.cfg.DrainTimeout))
	drain := time.AfterFunc(b.cfg.DrainTimeout, hardCancel)
	b.handBack(hard, left)
	workers.Wait()
	drain.Stop()

	actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	for _, c := range []*mqttconn.Conn{b.conn, b.retries} {
		if err := c.WaitAcks(actx); err != nil {
			b.log.Warn("not every acknowledgement was sent; those messages will be redelivered", zap.Error(err))
		}
	}
	cancel()
	stopConns()
	connErr := errors.Join(<-connDone, <-connDone)
	if !adminStopped {
		adminErr = <-adminDone
	}
	b.upstreams.Client().CloseIdleConnections()
	return errors.Join(adminErr, connErr)
}

// work is one worker: it handles messages until soft ends.
func (b *Bridge) work(soft, hard context.Context) {
	for {
		d, ok := b.next(soft)
		if !ok {
			return
		}
		b.m.inflight.Inc()
		r := b.handle(hard, d)
		b.m.inflight.Dec()
		b.finished(d, r)
	}
}

// useDelayedPublish reports whether a retry's backoff is left to the broker.
func (b *Bridge) useDelayedPublish() bool {
	switch b.cfg.DelayedPublish {
	case DelayedPublishOn:
		return true
	case DelayedPublishOff:
		return false
	}
	return b.conn.DelayedPublish()
}

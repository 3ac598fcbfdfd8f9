// Package mqtt2http is the MQTT to HTTP bridge (the original's legacy_proxy_2.py): it takes
// alarms from a shared MQTT v5 subscription and POSTs each to component 2 with its
// Request-Id, acknowledging a message only when it is safe — after a 2xx, or after the message
// was durably republished for a later attempt, or after it was put on the dead-letter topic.
//
// # Delivery
//
// The bridge subscribes $share/<group>/<topic> and $share/<group>/+/retry/message at QoS 2 with
// a persistent session and manual acknowledgement; MaxInflight is both the MQTT receive maximum
// (how many unacknowledged messages the broker sends) and the number of workers. For each
// message:
//
//   - A payload that is not UTF-8, not a valid alarm or larger than MaxPayloadBytes goes to the
//     dead-letter topic at once and is then acknowledged: nothing is dropped silently (the
//     original acknowledged and lost it).
//   - Otherwise it is POSTed upstream with its Request-Id (the payload's request_id, else the
//     request_id user property, else a new one that travels with the retries). A 2xx
//     acknowledges it.
//   - A failure holds the message for an exponential backoff with jitter (RetryBase doubling up
//     to RetryMax), then republishes it (QoS 2, waiting for PUBCOMP) to
//     "<service-name>/retry/message" with the user property attempts=n, and only then
//     acknowledges the original. The message is unacknowledged in the broker during the hold,
//     so a crash of the bridge loses nothing; the worker is busy during the hold, so a dead
//     upstream is tried at the backoff's pace, not in a hot loop; and the retry goes to the end
//     of the queue, where any instance of the group may take it.
//   - After MaxAttempts failed forwards, or when the message's expiry (its MQTT v5 Message
//     Expiry Interval, carried over to every republish) would pass during the next hold, it goes
//     to the dead-letter topic with the reason and is acknowledged.
//   - A republish or dead-letter publish that fails is tried again (with backoff) for as long
//     as the message's connection lasts; the original is never acknowledged before. When the
//     connection goes, the message is abandoned unacknowledged and the broker redelivers it.
//
// Dead letters are JSON (see DeadLetter) published at QoS 2 and also logged whole, so they
// survive even where nobody subscribed to the dead-letter topic.
//
// # Shutdown
//
// When Run's context ends the bridge takes no new messages (queued ones stay unacknowledged),
// abandons held retries, lets the forwards in flight finish for up to DrainTimeout, waits until
// paho has sent the acknowledgements, and disconnects cleanly: the broker keeps the session and
// redelivers everything unacknowledged to the next instance under the same service name.
package mqtt2http

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lpsdev/lps/mqttconn"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/transport"
)

// DeadLetter is the JSON payload published to the dead-letter topic.
type DeadLetter struct {
	// Reason says why the message could not be delivered.
	Reason string `json:"reason"`
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

// Dead-letter reasons as the lps_mqtt_dead_letters_total label.
const (
	deadUndecodable = "undecodable"
	deadMaxAttempts = "max_attempts"
	deadExpired     = "expired"
)

// Bridge is a running MQTT to HTTP bridge.
type Bridge struct {
	cfg       settings
	conn      *mqttconn.Conn
	admin     *roles.HTTPService
	upstreams *transport.Upstreams
	backoff   mqttconn.Backoff
	log       *zap.Logger
	m         metrics

	mu       sync.Mutex
	queue    []delivery // received, not yet taken by a worker
	stopping bool
	wake     chan struct{} // a token when the queue may have work
}

// delivery is a received message waiting for a worker.
type delivery struct {
	pr       paho.PublishReceived
	received time.Time
}

var _ interface {
	Run(context.Context) error
	Addr() net.Addr
} = (*Bridge)(nil)

// New validates cfg, prepares the broker connection and opens the admin listener; Run
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
		wake:    make(chan struct{}, 1),
	}
	qos := byte(s.QoS)
	conn, err := mqttconn.New(mqttconn.Config{
		Broker:         s.Broker,
		Username:       s.Username,
		Password:       s.Password,
		ClientID:       s.ServiceName,
		Options:        s.MQTT,
		ReceiveMaximum: uint16(s.MaxInflight),
		ManualAck:      true,
		OnPublish:      b.onPublish,
		Subscriptions: []paho.SubscribeOptions{
			{Topic: mqttconn.SharedFilter(s.group, s.filter), QoS: qos},
			{Topic: mqttconn.SharedFilter(s.group, RetryFilter), QoS: qos},
		},
		Logger:     s.Logger.Named("mqtt"),
		Registerer: s.Registry,
	})
	if err != nil {
		return nil, err
	}
	b.conn = conn
	b.m = newMetrics(s.Registry)
	notFound := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		transport.WriteError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %s; mqtt2http serves only /healthz, /readyz and /metrics", r.URL.Path))
	})
	admin, err := roles.NewHTTPService(s.Admin, notFound, conn.Ready)
	if err != nil {
		return nil, err
	}
	b.admin = admin
	b.upstreams = s.Upstream.NewUpstreams(roles.AlarmPath, s.Logger.Named("client"), s.Registry)
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
	connCtx, stopConn := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConn()

	connDone := make(chan error, 1)
	go func() { connDone <- b.conn.Run(connCtx) }()
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
		zap.String("retry_topic", b.cfg.retryTopic), zap.String("dead_letter_topic", b.cfg.DeadLetterTopic),
		zap.Strings("upstream", b.upstreams.URLs()), zap.Int("max_inflight", b.cfg.MaxInflight))

	var adminErr error
	adminStopped := false
	select {
	case <-ctx.Done():
	case adminErr = <-adminDone:
		adminStopped = true
	}

	// Take nothing new; what is queued stays unacknowledged for redelivery.
	b.mu.Lock()
	b.stopping = true
	dropped := len(b.queue)
	b.queue = nil
	b.m.queued.Set(0)
	b.mu.Unlock()
	b.m.abandoned.WithLabelValues("shutdown").Add(float64(dropped))
	softCancel()
	b.log.Info("stopping: finishing the forwards in flight", zap.Int("queued_left_unacknowledged", dropped), zap.Duration("drain_timeout", b.cfg.DrainTimeout))
	drain := time.AfterFunc(b.cfg.DrainTimeout, hardCancel)
	workers.Wait()
	drain.Stop()

	actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := b.conn.WaitAcks(actx); err != nil {
		b.log.Warn("not every acknowledgement was sent; those messages will be redelivered", zap.Error(err))
	}
	cancel()
	stopConn()
	connErr := <-connDone
	if !adminStopped {
		adminErr = <-adminDone
	}
	b.upstreams.Client().CloseIdleConnections()
	return errors.Join(adminErr, connErr)
}

// onPublish queues a received message for the workers. It runs on paho's receiving goroutine
// and never blocks; the broker sends at most MaxInflight unacknowledged messages per
// connection, so the queue stays short.
func (b *Bridge) onPublish(pr paho.PublishReceived) {
	b.mu.Lock()
	if b.stopping {
		b.mu.Unlock()
		return // unacknowledged: redelivered to the next connection
	}
	b.queue = append(b.queue, delivery{pr: pr, received: time.Now()})
	b.m.queued.Set(float64(len(b.queue)))
	b.mu.Unlock()
	b.signal()
}

func (b *Bridge) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// next takes the oldest queued message, waiting for one until soft ends.
func (b *Bridge) next(soft context.Context) (delivery, bool) {
	for {
		b.mu.Lock()
		if b.stopping {
			b.mu.Unlock()
			return delivery{}, false
		}
		if len(b.queue) > 0 {
			d := b.queue[0]
			b.queue[0] = delivery{}
			b.queue = b.queue[1:]
			b.m.queued.Set(float64(len(b.queue)))
			more := len(b.queue) > 0
			b.mu.Unlock()
			if more {
				b.signal() // pass the wake-up on to another idle worker
			}
			return d, true
		}
		b.mu.Unlock()
		select {
		case <-b.wake:
		case <-soft.Done():
			return delivery{}, false
		}
	}
}

func (b *Bridge) work(soft, hard context.Context) {
	for {
		d, ok := b.next(soft)
		if !ok {
			return
		}
		b.m.inflight.Inc()
		b.handle(soft, hard, d)
		b.m.inflight.Dec()
	}
}

// message is one delivery being handled.
type message struct {
	delivery
	pub       *paho.Publish
	attempts  int       // failed forwards before this delivery
	requestID string    // from the payload or the user property
	expiresAt time.Time // zero: no expiry
	ctx       context.Context
}

// handle processes one delivery. soft ends at shutdown (no new holds or retries); hard ends
// when the drain time is up; the message's own context also ends when its connection goes,
// since an acknowledgement can then no longer be sent.
func (b *Bridge) handle(soft, hard context.Context, d delivery) {
	pub := d.pr.Packet
	source := "message"
	if mqttconn.Match(RetryFilter, pub.Topic) {
		source = "retry"
	}
	b.m.deliveries.WithLabelValues(source).Inc()

	ctx, cancel := context.WithCancel(hard)
	defer cancel()
	connGone := d.pr.Client.Done()
	go func() {
		select {
		case <-connGone:
			cancel()
		case <-ctx.Done():
		}
	}()
	select {
	case <-connGone:
		b.abandon(d, "connection_lost", "its connection is gone before it was handled")
		return
	default:
	}

	m := message{delivery: d, pub: pub, ctx: ctx}
	if pub.Properties != nil {
		m.requestID = pub.Properties.User.Get(RequestIDProperty)
		if v := pub.Properties.User.Get(AttemptsProperty); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				b.log.Warn("ignoring a malformed attempts property", zap.String("value", v), zap.String("topic", pub.Topic))
			} else {
				m.attempts = n
			}
		}
		if e := pub.Properties.MessageExpiry; e != nil {
			m.expiresAt = d.received.Add(time.Duration(*e) * time.Second)
		}
	}

	alarm, reason := decode(pub.Payload, b.cfg.MaxPayloadBytes)
	if reason != "" {
		b.deadLetter(soft, m, deadUndecodable, reason)
		return
	}
	if alarm.RequestID == "" {
		alarm.RequestID = m.requestID
	}
	if alarm.RequestID == "" {
		alarm.RequestID = transport.NewRequestID()
	}
	m.requestID = alarm.RequestID

	err := b.forward(hard, alarm)
	if err == nil {
		b.ack(m)
		return
	}
	attempts := m.attempts + 1
	if soft.Err() != nil {
		b.abandon(d, "shutdown", "the forward failed during shutdown")
		return
	}
	if attempts >= b.cfg.MaxAttempts {
		b.deadLetter(soft, m, deadMaxAttempts, fmt.Sprintf("upstream failed %d times, the maximum; last error: %v", attempts, err))
		return
	}
	delay := b.backoff.Delay(attempts)
	if !m.expiresAt.IsZero() && !time.Now().Add(delay).Before(m.expiresAt) {
		b.deadLetter(soft, m, deadExpired, fmt.Sprintf("message expires before its next attempt (after %d failed attempts); last error: %v", attempts, err))
		return
	}
	if ce := b.log.Check(zapcore.InfoLevel, "forward failed; holding the alarm before its retry"); ce != nil {
		ce.Write(zap.String("request_id", m.requestID), zap.Int("attempt", attempts), zap.Duration("delay", delay), zap.Error(err))
	}
	if !sleep(soft, ctx, delay) {
		b.abandon(d, reasonOf(soft), "stopped while holding it for a retry")
		return
	}
	if b.republish(soft, m, alarm, attempts) {
		b.m.retries.Inc()
		b.ack(m)
	}
}

// decode checks that a payload is a UTF-8 alarm of at most limit bytes (limit < 0: any size);
// the reason says what is wrong if not.
func decode(payload []byte, limit int) (roles.Alarm, string) {
	if limit >= 0 && len(payload) > limit {
		return roles.Alarm{}, fmt.Sprintf("payload of %d bytes exceeds the limit of %d bytes", len(payload), limit)
	}
	if !utf8.Valid(payload) {
		return roles.Alarm{}, "payload is not valid UTF-8"
	}
	a, err := roles.ParseAlarm(payload)
	if err != nil {
		var he *transport.HTTPError
		if errors.As(err, &he) {
			return roles.Alarm{}, "payload is not a valid alarm: " + he.Reason
		}
		return roles.Alarm{}, "payload is not a valid alarm: " + err.Error()
	}
	return a, ""
}

// forward POSTs the alarm upstream with its Request-Id.
func (b *Bridge) forward(ctx context.Context, alarm roles.Alarm) error {
	start := time.Now()
	_, _, err := b.upstreams.Post(transport.WithRequestID(ctx, alarm.RequestID), "application/json", alarm.Marshal())
	elapsed := time.Since(start)
	result := forwardResult(err)
	b.m.forwards.WithLabelValues(result).Inc()
	b.m.latency.WithLabelValues(outcome(err)).Observe(elapsed.Seconds())
	if err != nil {
		if ce := b.log.Check(zapcore.WarnLevel, "forwarding alarm failed"); ce != nil {
			ce.Write(zap.String("request_id", alarm.RequestID), zap.String("result", result), zap.Duration("duration", elapsed), zap.Error(err))
		}
	} else if ce := b.log.Check(zapcore.DebugLevel, "forwarded alarm"); ce != nil {
		ce.Write(zap.String("request_id", alarm.RequestID), zap.Duration("duration", elapsed))
	}
	return err
}

func forwardResult(err error) string {
	var se *transport.StatusError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &se):
		return "http_" + strconv.Itoa(se.Status/100) + "xx"
	case errors.Is(err, transport.ErrUpstreamTimeout):
		return "timeout"
	case errors.Is(err, transport.ErrUpstreamUnreachable):
		return "unreachable"
	case errors.Is(err, context.Canceled):
		return "canceled"
	default:
		return "error"
	}
}

func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	return "failed"
}

// republish puts the alarm on this instance's retry topic with its attempt count, trying
// again with backoff until the broker confirmed or the message's connection (or the bridge)
// goes. It reports whether the broker has the retry.
func (b *Bridge) republish(soft context.Context, m message, alarm roles.Alarm, attempts int) bool {
	props := &paho.PublishProperties{
		ContentType:   "application/json",
		PayloadFormat: utf8Format(),
		User: paho.UserProperties{
			{Key: RequestIDProperty, Value: m.requestID},
			{Key: AttemptsProperty, Value: strconv.Itoa(attempts)},
		},
	}
	p := &paho.Publish{Topic: b.cfg.retryTopic, QoS: byte(b.cfg.QoS), Payload: alarm.Marshal(), Properties: props}
	return b.publishReliably(soft, m, p, func() bool {
		if m.expiresAt.IsZero() {
			return true
		}
		left := time.Until(m.expiresAt)
		if left <= 0 {
			return false
		}
		secs := uint32(min(math.Ceil(left.Seconds()), math.MaxUint32))
		props.MessageExpiry = &secs
		return true
	}, "republishing for a retry")
}

// deadLetter publishes the message's envelope to the dead-letter topic and then acknowledges
// the message; if the broker never confirms, the message stays unacknowledged.
func (b *Bridge) deadLetter(soft context.Context, m message, kind, reason string) {
	dl := DeadLetter{
		Reason:    reason,
		Service:   b.cfg.ServiceName,
		Topic:     m.pub.Topic,
		Attempts:  m.attempts,
		RequestID: m.requestID,
		Time:      time.Now().UTC(),
	}
	dl.Payload, dl.PayloadEncoding = encodePayload(m.pub.Payload)
	if kind != deadUndecodable {
		dl.Attempts = m.attempts + 1
	}
	body, _ := json.Marshal(dl) // strings, ints and a time cannot fail to encode
	// Logged whole, so that a dead letter survives even where nobody subscribed to the topic.
	b.log.Warn("dead-lettering a message", zap.String("kind", kind), zap.ByteString("dead_letter", body))

	p := &paho.Publish{
		Topic: b.cfg.DeadLetterTopic, QoS: byte(b.cfg.QoS), Payload: body,
		Properties: &paho.PublishProperties{
			ContentType:   "application/json",
			PayloadFormat: utf8Format(),
			User: paho.UserProperties{
				{Key: "reason", Value: kind},
				{Key: RequestIDProperty, Value: m.requestID},
				{Key: AttemptsProperty, Value: strconv.Itoa(dl.Attempts)},
			},
		},
	}
	if b.publishReliably(soft, m, p, nil, "publishing a dead letter") {
		b.m.deadLetters.WithLabelValues(kind).Inc()
		b.ack(m)
	}
}

// publishReliably publishes p (after prepare, which may refuse), retrying with backoff while
// the message's connection lasts and the bridge is not stopping. A dead-letter publish that
// fails during shutdown is not retried either: the message stays unacknowledged.
func (b *Bridge) publishReliably(soft context.Context, m message, p *paho.Publish, prepare func() bool, what string) bool {
	for try := 0; ; try++ {
		if try > 0 && !sleep(soft, m.ctx, b.backoff.Delay(try)) {
			b.abandon(m.delivery, reasonOf(soft), what+" did not succeed before the bridge stopped or the connection went")
			return false
		}
		if prepare != nil && !prepare() {
			// Expired while the republish was being retried: nothing left to retry for.
			b.deadLetter(soft, m, deadExpired, "message expired while it was being republished for a retry")
			return false
		}
		ctx, cancel := context.WithTimeout(m.ctx, b.cfg.PublishTimeout)
		resp, err := b.conn.Publish(ctx, p)
		cancel()
		if err == nil {
			if resp != nil && resp.ReasonCode == mqttconn.ReasonNoMatchingSubscribers {
				b.log.Warn("the broker took the message but no subscription matches its topic; it is discarded",
					zap.String("topic", p.Topic), zap.String("request_id", m.requestID))
			}
			return true
		}
		b.m.publishFailures.Inc()
		b.log.Warn(what+" failed; trying again", zap.String("topic", p.Topic), zap.String("request_id", m.requestID), zap.Int("try", try+1), zap.Error(err))
		if m.ctx.Err() != nil {
			b.abandon(m.delivery, "connection_lost", what+" failed and the connection went")
			return false
		}
	}
}

// encodePayload is a payload as a dead letter carries it: as text if it is UTF-8, else base64.
func encodePayload(p []byte) (payload, encoding string) {
	if !utf8.Valid(p) {
		return base64.StdEncoding.EncodeToString(p), "base64"
	}
	return string(p), "utf-8"
}

func (b *Bridge) ack(m message) {
	if err := b.conn.Ack(m.pr); err != nil {
		b.m.abandoned.WithLabelValues("connection_lost").Inc()
		b.log.Info("acknowledgement not sent; the broker will redeliver the message", zap.String("request_id", m.requestID), zap.Error(err))
	}
}

// abandon leaves a message unacknowledged: the broker redelivers it on the next connection of
// this session.
func (b *Bridge) abandon(d delivery, reason, why string) {
	b.m.abandoned.WithLabelValues(reason).Inc()
	if ce := b.log.Check(zapcore.InfoLevel, "leaving a message unacknowledged for redelivery"); ce != nil {
		ce.Write(zap.String("topic", d.pr.Packet.Topic), zap.String("why", why))
	}
}

func reasonOf(soft context.Context) string {
	if soft.Err() != nil {
		return "shutdown"
	}
	return "connection_lost"
}

// sleep waits d unless soft or ctx ends first; it reports whether the wait was complete.
func sleep(soft, ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-soft.Done():
		return false
	case <-ctx.Done():
		return false
	}
}

func utf8Format() *byte {
	one := byte(1)
	return &one
}

// metrics are the bridge's delivery metrics; the connection's own are mqttconn's.
type metrics struct {
	deliveries      *prometheus.CounterVec
	forwards        *prometheus.CounterVec
	latency         *prometheus.HistogramVec
	retries         prometheus.Counter
	deadLetters     *prometheus.CounterVec
	abandoned       *prometheus.CounterVec
	publishFailures prometheus.Counter
	inflight        prometheus.Gauge
	queued          prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lps_mqtt_deliveries_total",
			Help: "Messages received from the broker, by source (message, retry).",
		}, []string{"source"}),
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lps_mqtt_forwards_total",
			Help: "Forwards to the upstream, by result (ok, http_4xx, http_5xx, timeout, unreachable, canceled, error).",
		}, []string{"result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lps_mqtt_forward_duration_seconds",
			Help:    "Time of one forward to the upstream.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"outcome"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lps_mqtt_retries_total",
			Help: "Messages republished to the retry topic after a failed forward.",
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lps_mqtt_dead_letters_total",
			Help: "Messages put on the dead-letter topic, by reason (undecodable, max_attempts, expired).",
		}, []string{"reason"}),
		abandoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lps_mqtt_abandoned_total",
			Help: "Messages left unacknowledged for the broker to redeliver, by reason (shutdown, connection_lost).",
		}, []string{"reason"}),
		publishFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lps_mqtt_republish_failures_total",
			Help: "Failed attempts to publish a retry or a dead letter (each is tried again).",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lps_mqtt_inflight_forwards",
			Help: "Messages being handled by a worker (forwarding, holding for a retry, republishing).",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lps_mqtt_queued_messages",
			Help: "Messages received and waiting for a worker; a broker that honours the receive maximum keeps this at 0.",
		}),
	}
	reg.MustRegister(m.deliveries, m.forwards, m.latency, m.retries, m.deadLetters, m.abandoned, m.publishFailures, m.inflight, m.queued)
	return m
}

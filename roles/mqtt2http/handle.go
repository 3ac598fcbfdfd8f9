package mqtt2http

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/paho"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/mqttconn"
	"github.com/lpsdev/lps/transport"
)

// message is one delivery being handled, with what its properties say.
type message struct {
	*delivery
	attempts  int       // failed forwards before this delivery
	requestID string    // from the payload or the user property
	expiresAt time.Time // zero: no expiry
	retryAt   time.Time // zero: due now
	// ctx ends when the message can no longer be acknowledged (its connection went) or the
	// drain time is up (hard); cancel releases it.
	ctx    context.Context
	cancel context.CancelFunc
	hard   context.Context
}

// open reads a delivery's properties and gives it a context that ends with its connection.
func (b *Bridge) open(d *delivery, hard context.Context) *message {
	ctx, cancel := context.WithCancel(hard)
	connGone := d.pr.Client.Done()
	go func() {
		select {
		case <-connGone:
			cancel()
		case <-ctx.Done():
		}
	}()
	m := &message{delivery: d, ctx: ctx, cancel: cancel, hard: hard}
	pub := d.pr.Packet
	if p := pub.Properties; p != nil {
		m.requestID = p.User.Get(alarm.RequestIDProperty)
		if v := p.User.Get(alarm.AttemptsProperty); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				b.log.Warn("ignoring a malformed attempts property", zap.String("value", v), zap.String("topic", pub.Topic))
			} else {
				m.attempts = n
			}
		}
		if v := p.User.Get(alarm.RetryAtProperty); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				b.log.Warn("ignoring a malformed retry_at property", zap.String("value", v), zap.String("topic", pub.Topic))
			} else {
				m.retryAt = t
			}
		}
		if e := p.MessageExpiry; e != nil {
			m.expiresAt = d.received.Add(time.Duration(*e) * time.Second)
		}
	}
	return m
}

func (m *message) expired(now time.Time) bool {
	return !m.expiresAt.IsZero() && !now.Before(m.expiresAt)
}

// handle processes one message; the result tells the outage tracker what the upstream did.
func (b *Bridge) handle(hard context.Context, d *delivery) result {
	m := b.open(d, hard)
	defer m.cancel()
	if m.ctx.Err() != nil {
		b.abandon(d, "connection_lost", "its connection is gone before it was handled")
		return skipped
	}

	al, reason := decode(d.pr.Packet.Payload, b.cfg.MaxPayloadBytes)
	if reason != "" {
		b.deadLetter(m, DeadUndecodable, reason)
		return skipped
	}
	if al.RequestID == "" {
		al.RequestID = m.requestID
	}
	if al.RequestID == "" {
		al.RequestID = transport.NewRequestID()
	}
	m.requestID = al.RequestID

	if !m.retryAt.IsZero() && time.Now().Before(m.retryAt) {
		// A broker without delayed publish passed the retry on at once.
		if !b.hold(d, m.retryAt) {
			b.handBack(hard, []*delivery{d})
		}
		return skipped
	}

	err := b.forward(hard, al)
	if err == nil {
		b.ack(m)
		return delivered
	}
	b.retry(m, al, err)
	var se *transport.StatusError
	if errors.As(err, &se) && se.Status < 500 {
		return rejected
	}
	if errors.Is(err, context.Canceled) {
		return skipped
	}
	return unavailable
}

// decode checks that a payload is a UTF-8 alarm of at most limit bytes (limit < 0: any size);
// the reason says what is wrong if not.
func decode(payload []byte, limit int) (alarm.Alarm, string) {
	if limit >= 0 && len(payload) > limit {
		return alarm.Alarm{}, fmt.Sprintf("payload of %d bytes exceeds the limit of %d bytes", len(payload), limit)
	}
	if !utf8.Valid(payload) {
		return alarm.Alarm{}, "payload is not valid UTF-8"
	}
	a, err := alarm.Parse(payload)
	if err != nil {
		return alarm.Alarm{}, "payload is not a valid alarm: " + err.Error()
	}
	return a, ""
}

// forward POSTs the alarm upstream with its Request-Id.
func (b *Bridge) forward(ctx context.Context, al alarm.Alarm) error {
	start := time.Now()
	_, _, err := b.upstreams.Post(transport.WithRequestID(ctx, al.RequestID), alarm.ContentType, al.Marshal())
	elapsed := time.Since(start)
	result := forwardResult(err)
	b.m.forwards.WithLabelValues(result).Inc()
	b.m.latency.WithLabelValues(outcome(err)).Observe(elapsed.Seconds())
	if err != nil {
		if ce := b.log.Check(zapcore.WarnLevel, "forwarding alarm failed"); ce != nil {
			ce.Write(zap.String("request_id", al.RequestID), zap.String("result", result), zap.Duration("duration", elapsed), zap.Error(err))
		}
	} else if ce := b.log.Check(zapcore.DebugLevel, "forwarded alarm"); ce != nil {
		ce.Write(zap.String("request_id", al.RequestID), zap.Duration("duration", elapsed))
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

// retry deals with a failed forward: the message goes to the dead-letter topic when its
// attempt budget (if any) is spent or it would expire first, else it is republished for its
// next attempt after the backoff; either way the original is acknowledged only once the broker
// has the new message.
func (b *Bridge) retry(m *message, al alarm.Alarm, err error) {
	attempts := m.attempts + 1
	if b.cfg.MaxAttempts > 0 && attempts >= b.cfg.MaxAttempts {
		b.deadLetter(m, DeadMaxAttempts, fmt.Sprintf("upstream failed %d times, the maximum; last error: %v", attempts, err))
		return
	}
	delay := b.backoff.Delay(attempts)
	if !m.expiresAt.IsZero() && !time.Now().Add(delay).Before(m.expiresAt) {
		b.deadLetter(m, DeadExpired, fmt.Sprintf("message expires before its next attempt (after %d failed attempts); last error: %v", attempts, err))
		return
	}
	if ce := b.log.Check(zapcore.InfoLevel, "forward failed; republishing the alarm for a retry"); ce != nil {
		ce.Write(zap.String("request_id", m.requestID), zap.Int("attempt", attempts), zap.Duration("delay", delay), zap.Error(err))
	}
	build := func() (*paho.Publish, bool) {
		props := alarm.PublishProperties(m.requestID, paho.UserProperty{Key: alarm.AttemptsProperty, Value: strconv.Itoa(attempts)})
		now := time.Now()
		if !m.expiresAt.IsZero() {
			if !now.Before(m.expiresAt) {
				// Expired while the republish was being retried: nothing left to retry for.
				b.deadLetter(m, DeadExpired, "message expired while it was being republished for a retry")
				return nil, false
			}
			props.MessageExpiry = expirySeconds(m.expiresAt.Sub(now))
		}
		topic := b.cfg.retryTopic
		if b.useDelayedPublish() {
			topic = mqttconn.DelayedTopic(delay, topic)
		} else {
			props.User = append(props.User, paho.UserProperty{Key: alarm.RetryAtProperty, Value: now.Add(delay).UTC().Format(time.RFC3339Nano)})
		}
		return &paho.Publish{Topic: topic, QoS: byte(b.cfg.QoS), Payload: al.Marshal(), Properties: props}, true
	}
	if b.publishReliably(m, build, "republishing for a retry", false) {
		b.m.retries.Inc()
		b.ack(m)
	}
}

// expirySeconds is a Message Expiry Interval covering d, rounded up.
func expirySeconds(d time.Duration) *uint32 {
	secs := uint32(min(math.Ceil(max(d.Seconds(), 1)), math.MaxUint32))
	return &secs
}

// deadLetter publishes the message's envelope to the dead-letter topic and then acknowledges
// the message; if the broker never confirms, the message stays unacknowledged.
func (b *Bridge) deadLetter(m *message, kind, reason string) {
	pub := m.pr.Packet
	dl := DeadLetter{
		Reason:    reason,
		Kind:      kind,
		Service:   b.cfg.ServiceName,
		Topic:     pub.Topic,
		Attempts:  m.attempts,
		RequestID: m.requestID,
		Time:      time.Now().UTC(),
	}
	dl.Payload, dl.PayloadEncoding = encodePayload(pub.Payload)
	if kind != DeadUndecodable {
		dl.Attempts = m.attempts + 1
	}
	body, _ := json.Marshal(dl) // strings, ints and a time cannot fail to encode
	// Logged whole, so that a dead letter survives even where nothing keeps the topic.
	b.log.Warn("dead-lettering a message", zap.String("kind", kind), zap.ByteString("dead_letter", body))

	p := &paho.Publish{
		Topic: b.cfg.DeadLetterTopic, QoS: byte(b.cfg.QoS), Payload: body,
		Properties: alarm.PublishProperties(m.requestID,
			paho.UserProperty{Key: "reason", Value: kind},
			paho.UserProperty{Key: alarm.AttemptsProperty, Value: strconv.Itoa(dl.Attempts)}),
	}
	build := func() (*paho.Publish, bool) { return p, true }
	if b.publishReliably(m, build, "publishing a dead letter", true) {
		b.m.deadLetters.WithLabelValues(kind).Inc()
		b.ack(m)
	}
}

// publishReliably publishes what build returns (build may refuse, having dealt with the
// message itself), retrying with backoff while the message can still be acknowledged. A
// broker answer of "no matching subscribers" means it discards the message: a failure, unless
// noSubscribersOK (a dead letter on a broker that keeps none: it lives on in the log).
func (b *Bridge) publishReliably(m *message, build func() (*paho.Publish, bool), what string, noSubscribersOK bool) bool {
	for try := 0; ; try++ {
		if (try > 0 && !sleep(m.ctx, b.backoff.Delay(try))) || m.ctx.Err() != nil {
			b.abandon(m.delivery, reasonOf(m), what+" did not succeed before the bridge stopped or the connection went")
			return false
		}
		p, ok := build()
		if !ok {
			return false
		}
		err := b.publish(m, p)
		if errors.Is(err, errNoSubscribers) && noSubscribersOK {
			b.log.Error("the broker keeps no dead letters on "+p.Topic+" (no queue, no subscriber): this one survives only in the log line above",
				zap.String("request_id", m.requestID))
			return true
		}
		if err == nil {
			return true
		}
		b.m.publishFailures.Inc()
		b.log.Warn(what+" failed; trying again", zap.String("topic", p.Topic), zap.String("request_id", m.requestID), zap.Int("try", try+1), zap.Error(err))
		if m.ctx.Err() != nil {
			b.abandon(m.delivery, reasonOf(m), what+" failed and the bridge stopped or the connection went")
			return false
		}
	}
}

// publishOnce publishes p once; it reports whether the broker took it for a subscriber.
func (b *Bridge) publishOnce(m *message, p *paho.Publish, what string) bool {
	err := b.publish(m, p)
	if err != nil {
		b.m.publishFailures.Inc()
		b.log.Warn(what+" failed", zap.String("topic", p.Topic), zap.String("request_id", m.requestID), zap.Error(err))
	}
	return err == nil
}

var errNoSubscribers = errors.New("the broker has no subscriber for the topic and would discard the message")

// publish sends p through the alarms connection within PublishTimeout.
func (b *Bridge) publish(m *message, p *paho.Publish) error {
	ctx, cancel := context.WithTimeout(m.ctx, b.cfg.PublishTimeout)
	defer cancel()
	resp, err := b.conn.Publish(ctx, p)
	if err == nil && resp != nil && resp.ReasonCode == mqttconn.ReasonNoMatchingSubscribers {
		return fmt.Errorf("publishing to %s: %w", p.Topic, errNoSubscribers)
	}
	return err
}

// encodePayload is a payload as a dead letter carries it: as text if it is UTF-8, else base64.
func encodePayload(p []byte) (payload, encoding string) {
	if !utf8.Valid(p) {
		return base64.StdEncoding.EncodeToString(p), "base64"
	}
	return string(p), "utf-8"
}

// ack acknowledges a message on the connection it came on.
func (b *Bridge) ack(m *message) {
	if err := m.conn.Ack(m.pr); err != nil {
		b.m.abandoned.WithLabelValues("connection_lost").Inc()
		b.log.Info("acknowledgement not sent; the broker will redeliver the message", zap.String("request_id", m.requestID), zap.Error(err))
	}
}

// abandon leaves a message unacknowledged: the broker redelivers it on the next connection of
// this session (the embedded broker: to any member of the group at once).
func (b *Bridge) abandon(d *delivery, reason, why string) {
	b.m.abandoned.WithLabelValues(reason).Inc()
	if ce := b.log.Check(zapcore.InfoLevel, "leaving a message unacknowledged for redelivery"); ce != nil {
		ce.Write(zap.String("topic", d.pr.Packet.Topic), zap.String("why", why))
	}
}

func reasonOf(m *message) string {
	if m.hard.Err() != nil {
		return "shutdown"
	}
	return "connection_lost"
}

// sleep waits d unless ctx ends first; it reports whether the wait was complete.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

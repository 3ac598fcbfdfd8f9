package mqtt2http

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/mqttconn"
)

// delivery is a received message on its way through the bridge.
type delivery struct {
	pr       paho.PublishReceived
	conn     *mqttconn.Conn // the connection it came on, which acknowledges it
	seq      uint64         // order of receipt over both connections
	received time.Time
	due      time.Time // while held: when its retry is due
	probe    bool      // its forward is the outage's probe
}

// receive queues a message for the workers. It runs on paho's receiving goroutine and never
// blocks; the broker sends each connection at most MaxInflight unacknowledged messages, so the
// queue stays short.
func (b *Bridge) receive(conn *mqttconn.Conn, pr paho.PublishReceived) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopping {
		return // unacknowledged: redelivered to the next connection
	}
	source := "message"
	if conn == b.retries {
		source = "retry"
	}
	b.m.deliveries.WithLabelValues(source).Inc()
	b.seq++
	b.queue = append(b.queue, &delivery{pr: pr, conn: conn, seq: b.seq, received: time.Now()})
	b.m.queued.Set(float64(len(b.queue)))
	b.broadcastLocked()
}

// broadcastLocked wakes every waiting worker. b.mu must be held.
func (b *Bridge) broadcastLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// next takes the oldest message a worker may handle now, waiting until there is one, the
// outage tracker lets it through, or soft ends. Retries that were held until their time come
// back into the queue in their place by receipt.
func (b *Bridge) next(soft context.Context) (*delivery, bool) {
	for {
		b.mu.Lock()
		if b.stopping {
			b.mu.Unlock()
			return nil, false
		}
		now := time.Now()
		for len(b.held) > 0 && !b.held[0].due.After(now) {
			d := b.held[0]
			b.held = b.held[1:]
			i, _ := slices.BinarySearchFunc(b.queue, d.seq, func(q *delivery, seq uint64) int { return cmp.Compare(q.seq, seq) })
			b.queue = slices.Insert(b.queue, i, d)
		}
		b.m.held.Set(float64(len(b.held)))
		var wake time.Time
		if len(b.held) > 0 {
			wake = b.held[0].due
		}
		if len(b.queue) > 0 {
			ok, probe, until := b.outage.admit(now)
			if ok {
				d := b.queue[0]
				b.queue[0] = nil
				b.queue = b.queue[1:]
				d.probe = probe
				b.m.queued.Set(float64(len(b.queue)))
				if probe {
					b.m.probes.Inc()
				}
				b.mu.Unlock()
				return d, true
			}
			if !until.IsZero() && (wake.IsZero() || until.Before(wake)) {
				wake = until
			}
		}
		changed := b.changed
		b.mu.Unlock()

		var timer *time.Timer
		var fire <-chan time.Time
		if !wake.IsZero() {
			timer = time.NewTimer(time.Until(wake))
			fire = timer.C
		}
		select {
		case <-changed:
		case <-fire:
		case <-soft.Done():
		}
		if timer != nil {
			timer.Stop()
		}
		if soft.Err() != nil {
			return nil, false
		}
	}
}

// finished records the end of a message's turn with the outage tracker.
func (b *Bridge) finished(d *delivery, r result) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	began, ended := b.outage.done(now, d.probe, r)
	switch {
	case began:
		b.m.outage.Set(1)
		b.log.Warn("upstream unavailable: pausing deliveries and probing it with one alarm at a time; alarms wait in the broker",
			zap.Int("failed_in_a_row", b.outage.streak), zap.Duration("next_probe_in", b.outage.nextProbe.Sub(now)))
	case ended:
		b.m.outage.Set(0)
		b.log.Info("upstream available again: resuming deliveries", zap.Duration("outage", now.Sub(b.outage.since)))
	}
	if d.probe || began || ended {
		b.broadcastLocked()
	}
}

// hold keeps a retry that arrived before its time (from a broker without delayed publish)
// until due; it stays unacknowledged, so a crash loses nothing. It reports false when the
// bridge is stopping: the caller hands the message back instead (see handBack).
func (b *Bridge) hold(d *delivery, due time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopping {
		return false
	}
	d.due = due
	i, _ := slices.BinarySearchFunc(b.held, due, func(h *delivery, t time.Time) int { return h.due.Compare(t) })
	b.held = slices.Insert(b.held, i, d)
	b.m.held.Set(float64(len(b.held)))
	b.broadcastLocked() // a new earliest due time
	return true
}

// stop makes the bridge take nothing new and returns the messages received but not started,
// and the held retries, oldest first.
func (b *Bridge) stop() []*delivery {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopping = true
	left := append(b.queue, b.held...)
	b.queue, b.held = nil, nil
	b.m.queued.Set(0)
	b.m.held.Set(0)
	slices.SortFunc(left, func(x, y *delivery) int { return cmp.Compare(x.seq, y.seq) })
	b.broadcastLocked()
	return left
}

// handBack republishes, as they are, the messages the bridge will not handle any more to its
// retry topic and acknowledges them: left unacknowledged, each would hold back the
// acknowledgements of every message received after it on its connection, already forwarded
// ones included, and those would be delivered again. One that cannot be republished is left
// to the broker.
func (b *Bridge) handBack(ctx context.Context, left []*delivery) {
	for _, d := range left {
		m := b.open(d, ctx)
		p := &paho.Publish{
			Topic:      b.cfg.retryTopic,
			QoS:        byte(b.cfg.QoS),
			Payload:    d.pr.Packet.Payload,
			Properties: handBackProperties(d.pr.Packet.Properties),
		}
		if m.expired(time.Now()) {
			b.m.abandoned.WithLabelValues("shutdown").Inc()
			m.cancel()
			continue // the broker would not deliver it either; left unacknowledged, it expires there
		}
		if !m.expiresAt.IsZero() {
			p.Properties.MessageExpiry = expirySeconds(time.Until(m.expiresAt))
		}
		if b.publishOnce(m, p, "handing a message back at shutdown") {
			b.m.handedBack.Inc()
			b.ack(m)
		} else {
			b.abandon(d, "shutdown", "could not hand it back at shutdown")
		}
		m.cancel()
	}
}

// handBackProperties keeps what a republished message must carry: its request id, attempts
// and due time, content type and payload format. The expiry is set by the caller.
func handBackProperties(p *paho.PublishProperties) *paho.PublishProperties {
	if p == nil {
		return alarm.PublishProperties("")
	}
	out := alarm.PublishProperties("")
	if p.ContentType != "" {
		out.ContentType = p.ContentType
	}
	out.PayloadFormat = p.PayloadFormat
	for _, k := range []string{alarm.RequestIDProperty, alarm.AttemptsProperty, alarm.RetryAtProperty} {
		if v := p.User.Get(k); v != "" {
			out.User = append(out.User, paho.UserProperty{Key: k, Value: v})
		}
	}
	return out
}

package broker

import (
	"container/heap"
	"errors"
	"slices"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/mqttconn"
)

// Delayed publish, EMQX's convention: a message published to
// "$delayed/<seconds>/<topic>" is kept by the broker and published to <topic>
// that many seconds later (mqttconn.ParseDelayed reads the topic). mqtt2http
// republishes a failed alarm this way, so a retry waiting for its backoff is
// the broker's to keep, not the bridge's.
//
// The rules, and why:
//   - The delayed message is accepted only if <topic> matches a subscription
//     or a declared queue when it is published, else it is answered 0x10 and
//     not kept: a retry nobody will ever take must not be acknowledged (the
//     same rule as for any publish).
//   - It is stored in the data dir before the publisher hears it was
//     accepted, and kept in memory in a heap ordered by due time.
//   - At its due time it is routed as if published then: by its publisher
//     (No Local), retained if it has the retain flag, its message expiry
//     still counted from the original publish. The routed copies and the
//     deletion of the delayed record are one bbolt transaction, so a crash
//     neither loses nor doubles it.
//   - If nothing matches at its due time it is dropped, logged and counted
//     (lps_broker_messages_dropped_total{reason="delayed_no_subscribers"}).
//     If routing is refused (a full queue, a failing data dir) it stays and
//     is tried again delayedRetry later.

// delayedRetry is how long a delayed message whose routing was refused at
// its due time waits before the next try.
const delayedRetry = time.Second

// delayedMsg is a message waiting for its time.
type delayedMsg struct {
	m   *outMsg // its seq names its record; its msg.topic is the target topic
	due time.Time
}

func delayedKey(seq uint64) []byte { return outKey(ownerDelayed, "", seq) }

func (dm *delayedMsg) record() outRecord {
	rec := dm.m.record("")
	rec.Due = dm.due.UnixMilli()
	return rec
}

// delayHeap orders delayed messages by due time, then arrival
// (container/heap).
type delayHeap []*delayedMsg

func (h delayHeap) Len() int { return len(h) }
func (h delayHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].m.seq < h[j].m.seq
}
func (h delayHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *delayHeap) Push(x any)   { *h = append(*h, x.(*delayedMsg)) }
func (h *delayHeap) Pop() any {
	old := *h
	dm := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return dm
}

// delay takes a message published to a valid delayed topic.
func (d *dispatcher) delay(cl *mqtt.Client, pk packets.Packet, after time.Duration, target string) (packets.Packet, error) {
	msg := newMessage(pk)
	msg.topic = target
	if msg.created == 0 {
		msg.created = time.Now().Unix()
	}
	subs := d.srv.Topics.Subscribers(target)

	d.mu.Lock()
	f, err := d.delayLocked(msg, subs, time.Now().Add(after))
	d.mu.Unlock()
	switch {
	case err == nil:
		if f != nil && pk.FixedHeader.Qos > 0 {
			return d.ackWhenStored(cl, pk, f)
		}
		return pk, packets.CodeSuccessIgnore
	case errors.Is(err, errNoSubscribers):
		return d.answerNoSubscribers(cl, pk)
	}
	return d.refuse(cl, pk, err)
}

func (d *dispatcher) delayLocked(msg *message, subs *mqtt.Subscribers, due time.Time) (*flush, error) {
	if d.closed {
		return nil, packets.ErrServerShuttingDown
	}
	if !d.matches(msg, subs, d.groupFilters(msg.topic, subs)) {
		return nil, errNoSubscribers
	}
	if msg.qos > 0 {
		if err := d.checkStore(); err != nil {
			return nil, err
		}
	}
	if len(d.delayed) >= d.maxQueued {
		return nil, d.refuseFull("delayed", msg.topic, len(d.delayed), d.maxQueued)
	}
	d.seq++
	dm := &delayedMsg{m: newOutMsg(msg), due: due}
	dm.m.seq = d.seq
	var f *flush
	if d.st != nil {
		var b batch
		b.put(delayedKey(dm.m.seq), dm.record())
		f = d.st.enqueue(&b)
	}
	d.pushDelayed(dm)
	return f, nil
}

// pushDelayed adds dm to the heap and wakes the timer goroutine when dm is
// due before everything else.
func (d *dispatcher) pushDelayed(dm *delayedMsg) {
	heap.Push(&d.delayed, dm)
	if d.delayed[0] == dm {
		select {
		case d.delayWake <- struct{}{}:
		default:
		}
	}
}

// refuseDelayed answers a publish to a malformed delayed topic: 0x90 "Topic
// Name invalid" at QoS 1/2; at QoS 0 it is dropped and counted.
func (d *dispatcher) refuseDelayed(cl *mqtt.Client, pk packets.Packet, err error) (packets.Packet, error) {
	if ce := d.log.Check(zap.DebugLevel, "refusing invalid delayed publish"); ce != nil {
		ce.Write(zap.String("client", cl.ID), zap.String("topic", pk.TopicName), zap.Error(err))
	}
	if pk.FixedHeader.Qos == 0 {
		d.drop("delayed_invalid", 1)
	} else {
		d.met.refused.WithLabelValues("delayed_invalid").Inc()
	}
	return d.refuse(cl, pk, packets.ErrTopicNameInvalid)
}

// runDelayed publishes delayed messages when they are due, until OnStopped.
// OnStarted starts it; wait waits for it.
func (d *dispatcher) runDelayed() {
	defer d.delayers.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		d.mu.Lock()
		next, ok := d.releaseDue(time.Now())
		d.mu.Unlock()
		if ok {
			t.Reset(next) // Go 1.23 timers: no stale tick survives Reset or Stop
		} else {
			t.Stop()
		}
		select {
		case <-d.delayStop:
			return
		case <-d.delayWake:
		case <-t.C:
		}
	}
}

// releaseDue publishes the delayed messages due at now and returns how long
// until the next one is due (ok false: none is waiting).
func (d *dispatcher) releaseDue(now time.Time) (next time.Duration, ok bool) {
	if d.closed {
		return 0, false
	}
	var again []*delayedMsg
	for len(d.delayed) > 0 && !d.delayed[0].due.After(now) {
		dm := heap.Pop(&d.delayed).(*delayedMsg)
		if !d.release(dm, now) {
			dm.due = now.Add(delayedRetry)
			again = append(again, dm)
		}
	}
	for _, dm := range again {
		heap.Push(&d.delayed, dm)
	}
	if len(d.delayed) == 0 {
		return 0, false
	}
	return d.delayed[0].due.Sub(now), true
}

// release publishes one due message to its target topic. It reports false
// when routing was refused and the message must be tried again.
func (d *dispatcher) release(dm *delayedMsg, now time.Time) bool {
	msg := dm.m.msg
	if dm.m.expired(now.Unix()) { // [MQTT-3.3.2-5]
		d.forgetDelayed(dm)
		d.drop("expired", 1)
		return true
	}
	if msg.retain {
		// Before routing: retaining again on a retry, or after a crash
		// between the two, only sets the same retained message again.
		d.retain(msg.packet())
	}
	var b batch
	if d.st != nil {
		b.del(delayedKey(dm.m.seq))
	}
	_, err := d.routeLocked(msg, d.srv.Topics.Subscribers(msg.topic), &b)
	switch {
	case err == nil:
		return true
	case errors.Is(err, errNoSubscribers):
		d.forgetDelayed(dm)
		if !msg.retain { // a retained one was taken: it is the topic's retained message now
			d.log.Warn("dropping delayed message: nothing subscribes to its topic at its due time",
				zap.String("topic", msg.topic), zap.String("publisher", msg.origin))
			d.drop("delayed_no_subscribers", 1)
		}
		return true
	}
	d.log.Warn("delayed message refused at its due time; trying again", zap.String("topic", msg.topic),
		zap.Duration("retry_in", delayedRetry), zap.Error(err))
	return false
}

// forgetDelayed deletes the record of a delayed message that is not routed.
func (d *dispatcher) forgetDelayed(dm *delayedMsg) {
	if d.st == nil {
		return
	}
	var b batch
	b.del(delayedKey(dm.m.seq))
	d.commit(&b)
}

// loadDelayed restores a delayed message read from the data dir; due is
// its record's Due.
func (d *dispatcher) loadDelayed(m *outMsg, due int64) {
	m.stored = false // names the client key of a copy; a delayed record is under its own
	heap.Push(&d.delayed, &delayedMsg{m: m, due: time.UnixMilli(due)})
}

// delayedTopicHasWildcard reports whether topic is a delayed topic with a
// wildcard in it: mochi refuses a PUBLISH whose topic has one before any hook
// sees it, by closing the connection (0x82), so OnPacketRead answers these
// itself, as the other invalid delayed topics are answered.
func delayedTopicHasWildcard(topic string) bool {
	return strings.HasPrefix(topic, mqttconn.DelayedPrefix) && strings.ContainsAny(topic, "+#")
}

// OnPacketEncode announces delayed publish in every CONNACK, as the user
// property mqttconn.DelayedPublishProperty = "$delayed": nothing in MQTT
// announces the feature, and mqtt2http uses $delayed only with a broker that
// does. It also announces Config.MaxPacketSize, which mochi does not.
func (d *dispatcher) OnPacketEncode(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ReasonCode < packets.ErrUnspecifiedError.Code {
		pk.Properties.User = append(slices.Clip(pk.Properties.User),
			packets.UserProperty{Key: mqttconn.DelayedPublishProperty, Val: strings.TrimSuffix(mqttconn.DelayedPrefix, "/")})
		// mochi enforces Capabilities.MaximumPacketSize on what it reads
		// but does not announce it; a client must be told [MQTT-3.2.2-15]
		// (MQTT 5 section 3.2.2.3.6) so that it does not send what would
		// cost it its connection.
		pk.Properties.MaximumPacketSize = d.srv.Options.Capabilities.MaximumPacketSize
	}
	return pk
}

package broker

import (
	"slices"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
)

// retain keeps (or, for an empty payload, clears) a topic's retained
// message [MQTT-3.3.1-5] [MQTT-3.3.1-6]; mochi's retain path is bypassed with
// its delivery path.
func (d *dispatcher) retain(pk packets.Packet) {
	if d.srv.Options.Capabilities.RetainAvailable == 0 {
		return
	}
	msg := newMessage(pk).packet()
	d.srv.Topics.RetainMessage(msg)
	atomic.StoreInt64(&d.srv.Info.Retained, int64(d.srv.Topics.Retained.Len()))
	if d.st != nil {
		if err := d.st.putRetained(msg); err != nil {
			d.log.Error("storing retained message", zap.String("topic", msg.TopicName), zap.Error(err))
		}
	}
}

// pendingSubscribe carries what OnSubscribe learned to OnPacketProcessed.
type pendingSubscribe struct {
	filters []packets.Subscription // as the client sent them
	existed []bool
}

// OnSubscribe notes what is needed to send retained messages once the
// SUBACK is out, and tells mochi not to send them itself (retain handling 2):
// mochi's publishRetainedToClient goes through its own delivery path.
func (d *dispatcher) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	p := pendingSubscribe{
		filters: slices.Clone(pk.Filters),
		existed: make([]bool, len(pk.Filters)),
	}
	for i, f := range pk.Filters {
		_, p.existed[i] = cl.State.Subscriptions.Get(f.Filter)
	}
	d.mu.Lock()
	d.subscribing[cl] = p
	d.mu.Unlock()

	filters := slices.Clone(pk.Filters) // the caller's slice is the packet OnPacketProcessed sees
	for i := range filters {
		filters[i].RetainHandling = 2
	}
	pk.Filters = filters
	return pk
}

// OnPacketProcessed sends retained messages after a SUBACK went out
// [MQTT-3.8.4-4].
func (d *dispatcher) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, err error) {
	if pk.FixedHeader.Type != packets.Subscribe {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.subscribing[cl]
	delete(d.subscribing, cl)
	s := d.sessions[cl.ID]
	if !ok || err != nil || s == nil || s.conn == nil || s.conn.cl != cl {
		return
	}
	var b batch
	now := time.Now().Unix()
	for i, f := range p.filters {
		if mqtt.IsSharedFilter(f.Filter) { // MQTT 5 section 4.8.2: no retained messages for shared subscriptions
			continue
		}
		if f.RetainHandling == 2 || (f.RetainHandling == 1 && p.existed[i]) { // [MQTT-3.3.1-10] [MQTT-3.3.1-11]
			continue
		}
		sub, ok := cl.State.Subscriptions.Get(f.Filter)
		if !ok {
			continue // refused
		}
		for _, rpk := range d.srv.Topics.Messages(f.Filter) {
			m := newOutMsg(newMessage(rpk))
			m.subscribe(sub, true)
			if m.expired(now) {
				continue
			}
			if m.qos == 0 {
				d.send(s.conn, m.publish())
				continue
			}
			if s.queue.len() >= d.maxQueued {
				d.log.Error("dropping retained message: subscriber queue full", zap.String("client", s.id), zap.String("topic", m.msg.topic))
				d.drop("queue_full", 1)
				continue
			}
			d.seq++
			m.seq = d.seq
			d.storeClientMsg(&b, s, m)
			s.queue.push(m)
		}
	}
	d.fill(s, &b)
	d.commit(&b)
}

package broker

import (
	"errors"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
)

// --- writing to connections ---

// maxPendingQoS0 bounds the QoS 0 messages waiting to be written to one
// connection; QoS 1/2 ones are bounded by the receive quota instead.
const maxPendingQoS0 = 8192

// conn is one network connection of a session and its writer.
type conn struct {
	cl   *mqtt.Client
	out  []packets.Packet // to be written, in order; guarded by dispatcher.mu
	qos0 int              // QoS 0 messages in out
	wake chan struct{}
	stop chan struct{}
}

// send queues pk for the connection's writer.
func (d *dispatcher) send(c *conn, pk packets.Packet) {
	if pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos == 0 {
		if c.qos0 >= maxPendingQoS0 {
			d.drop("qos0_slow_subscriber", 1)
			return
		}
		c.qos0++
	}
	c.out = append(c.out, pk)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) close() {
	close(c.stop)
}

// runSender writes a connection's packets in order. One writer per
// connection keeps a subscriber's messages in order and keeps publishers
// from ever blocking on a slow subscriber's socket.
func (d *dispatcher) runSender(c *conn) {
	defer d.senders.Done()
	for {
		select {
		case <-c.stop:
			return
		case <-c.wake:
		}
		for {
			d.mu.Lock()
			out := c.out
			c.out, c.qos0 = nil, 0
			d.mu.Unlock()
			if len(out) == 0 {
				break
			}
			for _, pk := range out {
				err := c.cl.WritePacket(pk)
				switch {
				case err == nil:
					if pk.FixedHeader.Type == packets.Publish {
						d.met.sent.Inc()
					}
				case errors.Is(err, packets.ErrPacketTooLarge):
					d.tooLarge(c, pk)
				default:
					// The connection is going; OnDisconnect cleans up and
					// the session resends on its next connection.
					d.log.Debug("writing to client", zap.String("client", c.cl.ID), zap.Error(err))
					return
				}
			}
		}
	}
}

// tooLarge handles a message larger than the subscriber's maximum packet
// size: it must not be sent, and counts as delivered [MQTT-3.1.2-25].
func (d *dispatcher) tooLarge(c *conn, pk packets.Packet) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.log.Warn("dropping message larger than the subscriber's maximum packet size",
		zap.String("client", c.cl.ID), zap.String("topic", pk.TopicName), zap.Int("size", len(pk.Payload)))
	d.drop("packet_too_large", 1)
	if pk.FixedHeader.Qos == 0 {
		return
	}
	s := d.sessions[c.cl.ID]
	if s == nil {
		return
	}
	m := s.inflight[pk.PacketID]
	if m == nil {
		return
	}
	var b batch
	delete(s.inflight, pk.PacketID)
	d.unstoreClientMsg(&b, s, m)
	d.fill(s, &b)
	d.commit(&b)
}

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

// maxSpare bounds the packets a connection's writer keeps room for between
// bursts (800 bytes each).
const maxSpare = 256

// conn is one network connection of a session and its writer.
type conn struct {
	cl   *mqtt.Client
	out  []packets.Packet // to be written, in order; guarded by dispatcher.mu
	qos0 int              // QoS 0 messages in out
	wake chan struct{}
	stop chan struct{}
	// aliases are the topic aliases the writer has given this connection;
	// they end with it [MQTT-3.3.2-7]. Only runSender uses them.
	aliases outAliases
}

// outAliases gives the topics of the PUBLISH packets sent on one connection
// topic aliases, when the client accepts them (Topic Alias Maximum in its
// CONNECT, MQTT 5 section 3.1.2.11.5): the first max distinct topics get
// aliases 1..max, sent with the topic name the first time and in its place
// afterwards (section 3.3.2.3.4); later topics are sent in full. Aliases
// are never reassigned: the LPS's subscribers see few topics, and a
// changing mapping would cost more bytes than it saves.
//
// The server may send topic aliases but need not; the broker does, because
// the Paho MQTT 5 conformance suite (test_server_topic_alias) expects a
// server to use the aliases a client allows. Nothing changes for a client
// that sends no Topic Alias Maximum (the default 0 forbids them
// [MQTT-3.1.2-27]), as the LPS's bridges do.
type outAliases struct {
	max uint16            // the client's Topic Alias Maximum; 0: none allowed
	ids map[string]uint16 // topic -> alias the client knows
}

// apply rewrites pk, a PUBLISH about to be written, to use an alias. It
// returns the alias the packet introduces (0 if none): the mapping counts
// only once the packet is written (commit), since a packet that cannot be
// written (too large) teaches the client nothing.
func (a *outAliases) apply(pk *packets.Packet) (introduced uint16) {
	if a.max == 0 || pk.TopicName == "" {
		return 0
	}
	if id, ok := a.ids[pk.TopicName]; ok {
		pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = id, true
		pk.TopicName = "" // the alias stands for it
		return 0
	}
	if len(a.ids) >= int(a.max) { // [MQTT-3.1.2-26]
		return 0
	}
	id := uint16(len(a.ids) + 1)
	pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = id, true
	return id
}

// commit records the alias a written packet introduced for topic.
func (a *outAliases) commit(topic string, id uint16) {
	if id == 0 {
		return
	}
	if a.ids == nil {
		a.ids = map[string]uint16{}
	}
	a.ids[topic] = id
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
	// spare is the slice the writer last emptied: send appends to it next,
	// so a busy connection reuses two arrays instead of growing a new one
	// for every burst (a packets.Packet is 800 bytes).
	var spare []packets.Packet
	for {
		select {
		case <-c.stop:
			return
		case <-c.wake:
		}
		for {
			d.mu.Lock()
			if len(c.out) == 0 {
				d.mu.Unlock()
				break
			}
			out := c.out
			c.out, c.qos0 = spare, 0 // never out's array: spare is the other one, or nil
			d.mu.Unlock()
			spare = nil // out becomes the spare once written
			for _, pk := range out {
				var alias uint16
				topic := pk.TopicName
				if pk.FixedHeader.Type == packets.Publish {
					alias = c.aliases.apply(&pk) // pk is this loop's copy
				}
				err := c.cl.WritePacket(pk)
				switch {
				case err == nil:
					if pk.FixedHeader.Type == packets.Publish {
						c.aliases.commit(topic, alias)
						d.met.sent.Inc()
					}
				case errors.Is(err, packets.ErrPacketTooLarge):
					d.tooLarge(c, pk, topic)
				default:
					// The connection is going; OnDisconnect cleans up and
					// the session resends on its next connection.
					d.log.Debug("writing to client", zap.String("client", c.cl.ID), zap.Error(err))
					return
				}
			}
			if cap(out) <= maxSpare { // a burst's large array is left to the GC
				clear(out) // the payloads and properties may go
				spare = out[:0]
			}
		}
	}
}

// tooLarge handles a message larger than the subscriber's maximum packet
// size: it must not be sent, and counts as delivered [MQTT-3.1.2-25].
// topic is pk's topic name, which an alias may have replaced.
func (d *dispatcher) tooLarge(c *conn, pk packets.Packet, topic string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.log.Warn("dropping message larger than the subscriber's maximum packet size",
		zap.String("client", c.cl.ID), zap.String("topic", topic), zap.Int("size", len(pk.Payload)))
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

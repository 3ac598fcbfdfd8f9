package broker

import (
	"errors"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
)

// ignored is what mochi gets in place of an acknowledgement the dispatcher
// handled: a PUBACK for packet id 0, which mochi's processPuback looks up
// in its inflight map, never finds, and ignores.
var ignored = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}}

// OnPacketRead intercepts the packets of the outbound QoS flows (PUBACK,
// PUBREC and PUBCOMP from a client always answer a PUBLISH or PUBREL of the
// server, and the dispatcher sent them all), and fixes mochi's answer to a
// retransmitted QoS 2 PUBLISH.
func (d *dispatcher) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
		d.acknowledge(cl, pk)
		return ignored, nil
	case packets.Publish:
		if cl.Properties.ProtocolVersion == 5 && (pk.FixedHeader.Qos == 0 || pk.PacketID != 0) && delayedTopicHasWildcard(pk.TopicName) {
			_, _ = d.refuseDelayed(cl, pk, errors.New("the target topic has a wildcard"))
			return ignored, nil
		}
		// A publisher that lost our PUBREC resends the PUBLISH with DUP set.
		// mochi answers a PUBREC "packet identifier in use" (0x91), which a
		// publisher reads as a failure although the message was taken; the
		// correct answer is another successful PUBREC without delivering
		// the message again [MQTT-4.3.3-10].
		if pk.FixedHeader.Qos == 2 && pk.FixedHeader.Dup {
			if prev, ok := cl.State.Inflight.Get(pk.PacketID); ok && prev.FixedHeader.Type == packets.Pubrec {
				var err error
				if prev.ReasonCode != 0 && cl.Properties.ProtocolVersion == 5 {
					err = writeAck(cl, packets.Pubrec, pk.PacketID, prev.ReasonCode) // the same answer as the first time: 0x10
				} else {
					err = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID})
				}
				if err != nil {
					d.log.Debug("writing PUBREC", zap.String("client", cl.ID), zap.Error(err))
				}
				return ignored, nil
			}
		}
	}
	return pk, nil
}

// acknowledge advances the outbound QoS flow an acknowledgement belongs to.
func (d *dispatcher) acknowledge(cl *mqtt.Client, pk packets.Packet) {
	d.mu.Lock()
	s := d.sessions[cl.ID]
	var m *outMsg
	if s != nil {
		m = s.inflight[pk.PacketID]
	}
	if m == nil {
		d.mu.Unlock()
		if pk.FixedHeader.Type == packets.Pubrec { // unknown id: end the client's flow (MQTT 5 section 4.3.3)
			if err := cl.WritePacket(pubrel(pk.PacketID, packets.ErrPacketIdentifierNotFound)); err != nil {
				d.log.Debug("writing PUBREL", zap.String("client", cl.ID), zap.Error(err))
			}
		}
		return
	}
	defer d.mu.Unlock()

	var b batch
	switch {
	case pk.FixedHeader.Type == packets.Pubrec && m.state == statePublished && pk.ReasonCode >= packets.ErrUnspecifiedError.Code:
		// The subscriber refused the message: a PUBREC of 0x80 or more ends
		// the flow without PUBREL (MQTT 5 section 4.3.3).
		d.log.Warn("subscriber refused message", zap.String("client", s.id),
			zap.String("topic", m.msg.topic), zap.Uint8("reason_code", pk.ReasonCode))
		d.drop("refused_by_subscriber", 1)
		d.complete(&b, s, m)
	case pk.FixedHeader.Type == packets.Pubrec:
		if m.state == statePublished {
			m.state = stateReleased
			d.storeClientMsg(&b, s, m)
		}
		if s.conn != nil {
			d.send(s.conn, m.packet())
		}
	default: // PUBACK ends QoS 1, PUBCOMP ends QoS 2
		d.complete(&b, s, m)
	}
	d.fill(s, &b)
	d.commit(&b)
}

// complete ends a message's flow, freeing its place in the window.
func (d *dispatcher) complete(b *batch, s *session, m *outMsg) {
	delete(s.inflight, m.packetID)
	d.unstoreClientMsg(b, s, m)
	d.met.acknowledged.Inc()
}

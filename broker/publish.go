package broker

import (
	"errors"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/mqttconn"
)

// OnPublish takes over a client's message: it stores and routes it, then
// answers CodeSuccessIgnore so that mochi acknowledges the publisher but
// neither retains nor delivers the message itself. A message to
// $delayed/<seconds>/<topic> is kept until its time (delayed.go). A publish
// the access rules refuse (to a delayed topic: to its target topic, where it
// will be published) is answered 0x87 and neither stored nor routed.
func (d *dispatcher) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if after, target, ok, err := mqttconn.ParseDelayed(pk.TopicName); ok {
		if err != nil {
			return d.refuseDelayed(cl, pk, err)
		}
		if !d.acc.mayWrite(cl, target) {
			return d.refuseNotAuthorized(cl, pk)
		}
		return d.delay(cl, pk, after, target)
	}
	if !d.acc.mayWrite(cl, pk.TopicName) {
		return d.refuseNotAuthorized(cl, pk)
	}
	f, err := d.route(pk)
	if err != nil && !errors.Is(err, errNoSubscribers) {
		return d.refuse(cl, pk, err)
	}
	if pk.FixedHeader.Retain { // also with no subscriber: retained for later ones
		d.retain(pk)
	}
	if err != nil {
		return d.answerNoSubscribers(cl, pk)
	}
	if d.st != nil && pk.FixedHeader.Qos > 0 {
		// Also when nothing was stored (f nil: only non-persistent
		// subscribers): the acknowledgement must not overtake those of
		// earlier publishes that wait for a write [MQTT-4.6.0-2].
		return d.ackWhenStored(cl, pk, f)
	}
	return pk, packets.CodeSuccessIgnore
}

// inOrder runs write, which writes an acknowledgement to a publisher, after
// the acknowledgements still waiting for the data dir (ackWhenStored), so
// that they keep the order of the publishes; without a data dir, at once.
func (d *dispatcher) inOrder(write func()) {
	if d.st == nil {
		write()
		return
	}
	d.st.commits.then(nil, func(error) { write() })
}

// ackWhenStored acknowledges a QoS 1/2 publish once the data dir's flush
// carrying it is written, and refuses it if that failed. The reader of the
// connection goes on to the client's next packet meanwhile: waiting here
// would allow one publish per fsync per connection, while deferred, every
// publish that arrives during a write joins the next one (commit.go).
//
// What processPublish does around the acknowledgement it no longer writes
// is done here: the receive quota is taken until the flow ends (PUBACK for
// QoS 1; for QoS 2 mochi gives it back at PUBCOMP, processPubrel), and a
// QoS 2 flow is entered in mochi's inflight state before its PUBREC exists,
// so that a PUBREL finds it and a resent PUBLISH is recognised. If the
// publisher's connection ended meanwhile, the write fails; mochi resends an
// inflight PUBREC to the session's next connection, and a QoS 1 publisher
// resends its PUBLISH.
func (d *dispatcher) ackWhenStored(cl *mqtt.Client, pk packets.Packet, f *flush) (packets.Packet, error) {
	qos := pk.FixedHeader.Qos
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}
	cl.State.Inflight.DecreaseReceiveQuota()
	if qos == 2 {
		ack.FixedHeader.Type = packets.Pubrec
		ack.Created = time.Now().Unix()
		if cl.State.Inflight.Set(ack) {
			atomic.AddInt64(&d.srv.Info.Inflight, 1)
			d.st.OnQosPublish(cl, ack, ack.Created, 0)
		}
	}
	d.st.commits.then(f, func(err error) {
		if err != nil {
			d.log.Error("refusing publish: storing it in the data dir failed", zap.String("topic", pk.TopicName), zap.Error(err))
			d.met.refused.WithLabelValues("store_error").Inc()
			// The flow ends here: give back what was taken for it.
			if qos == 2 && cl.State.Inflight.Delete(pk.PacketID) {
				atomic.AddInt64(&d.srv.Info.Inflight, -1)
				d.st.OnQosDropped(cl, ack)
			}
			cl.State.Inflight.IncreaseReceiveQuota()
			if cl.Properties.ProtocolVersion < 5 {
				cl.Stop(packets.ErrUnspecifiedError) // 3.1.1 has no negative acknowledgement
				return
			}
			ack.ReasonCode = packets.ErrUnspecifiedError.Code
			ack.Properties.ReasonString = "storing the message failed"
		} else if qos == 1 {
			cl.State.Inflight.IncreaseReceiveQuota()
		}
		// Written here, on the committer's callback goroutine, as every
		// acknowledgement that waits for the data dir is (inOrder), so that
		// they keep their order. mochi's write does not block (batchconn
		// queues it) unless a megabyte waits for this client already.
		if err := cl.WritePacket(ack); err != nil {
			d.log.Debug("writing acknowledgement to publisher", zap.String("client", cl.ID), zap.Error(err))
		}
	})
	return pk, packets.ErrRejectPacket // mochi writes nothing
}

// answerNoSubscribers answers a QoS 1/2 publish that matched no subscription
// and no declared queue: PUBACK or PUBREC with reason code 0x10 "No matching
// subscribers" (MQTT 5 sections 3.4.2.1 and 3.5.2.1). Nothing was stored, so
// a publisher must not take it for a success; a QoS 2 flow still completes
// (PUBREL, PUBCOMP 0x00). MQTT 3.1.1 has no reason codes: such a publisher
// gets its usual acknowledgement, and the message is counted as dropped.
//
// The acknowledgement is written here, as five bytes, because mochi cannot
// send it: its encoder (packets.encodePubAckRelRecComp) writes a reason code
// below 0x80 only when the packet also carries properties, and the only
// properties a PUBACK or PUBREC may carry (Reason String, User Property) are
// forbidden when the client asked for no problem information
// [MQTT-3.1.2-29], as paho.golang does unless told otherwise. Rewriting
// mochi's own acknowledgement in OnPacketEncode would therefore reach only
// some clients. The bytes go to the connection under the client's lock,
// which serialises every write of mochi's (Client.WritePacket), and New sets
// mochi's write buffer to one byte, so no packet written before can still
// wait in it: packets keep their order. For QoS 2, what processPublish does
// for a PUBREC it sends is done here too, so that mochi answers the PUBREL
// (processPubrel) and recognises a resent PUBLISH (OnPacketRead).
func (d *dispatcher) answerNoSubscribers(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	qos := pk.FixedHeader.Qos
	switch {
	case qos == 0:
		return pk, packets.CodeSuccessIgnore
	case cl.Properties.ProtocolVersion < 5:
		d.drop("no_subscribers", 1)
		return pk, packets.CodeSuccessIgnore
	}
	d.met.refused.WithLabelValues("no_subscribers").Inc()
	if ce := d.log.Check(zap.DebugLevel, "no subscription or queue for publish; answered 0x10"); ce != nil {
		ce.Write(zap.String("client", cl.ID), zap.String("topic", pk.TopicName))
	}
	ackType := packets.Puback
	if qos == 2 {
		ackType = packets.Pubrec
		ack := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Pubrec},
			PacketID:    pk.PacketID,
			ReasonCode:  packets.CodeNoMatchingSubscribers.Code,
			Created:     time.Now().Unix(),
		}
		cl.State.Inflight.DecreaseReceiveQuota()
		if cl.State.Inflight.Set(ack) {
			atomic.AddInt64(&d.srv.Info.Inflight, 1)
			if d.st != nil {
				d.st.OnQosPublish(cl, ack, ack.Created, 0)
			}
		}
	}
	d.inOrder(func() {
		if err := writeAck(cl, ackType, pk.PacketID, packets.CodeNoMatchingSubscribers.Code); err != nil {
			d.log.Debug("writing acknowledgement to publisher", zap.String("client", cl.ID), zap.Error(err))
		}
	})
	return pk, packets.ErrRejectPacket // mochi writes nothing more
}

// writeAck writes an MQTT 5 PUBACK or PUBREC with a reason code and no
// properties (see answerNoSubscribers for why not through mochi).
func writeAck(cl *mqtt.Client, ackType byte, id uint16, code byte) error {
	if cl.Net.Conn == nil {
		return nil
	}
	b := [5]byte{ackType << 4, 3, byte(id >> 8), byte(id), code}
	cl.Lock()
	defer cl.Unlock()
	_, err := cl.Net.Conn.Write(b[:])
	return err
}

// refuseNotAuthorized answers a publish the access rules refuse: 0x87 "Not
// authorized" at QoS 1/2 (an MQTT 3.1.1 publisher is disconnected, as mochi
// does); at QoS 0 it is dropped. Logged at debug level and counted: a
// client can send these as fast as it likes. The acknowledgement is five
// bytes without a reason string, written in order with those that wait for
// the data dir, as answerNoSubscribers writes its own: a client may have
// asked for no problem information [MQTT-3.1.2-29], and the Paho
// interoperability client takes a PUBACK with properties for a malformed one
// (test_dollar_topics publishes to a $ topic, which "topic readwrite #" does
// not grant). A refused QoS 2 flow ends with the PUBREC [MQTT-4.3.3], so
// nothing is kept for it.
func (d *dispatcher) refuseNotAuthorized(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if ce := d.log.Check(zap.DebugLevel, "refusing publish: the ACL does not grant it"); ce != nil {
		user, _ := d.acc.identity(cl)
		ce.Write(zap.String("client", cl.ID), zap.String("user", user), zap.String("topic", pk.TopicName))
	}
	if pk.FixedHeader.Qos == 0 {
		d.drop("not_authorized", 1)
		return pk, packets.CodeSuccessIgnore
	}
	d.met.refused.WithLabelValues("not_authorized").Inc()
	if cl.Properties.ProtocolVersion < 5 {
		return d.refuse(cl, pk, packets.ErrNotAuthorized)
	}
	ackType := packets.Puback
	if pk.FixedHeader.Qos == 2 {
		ackType = packets.Pubrec
	}
	d.inOrder(func() {
		if err := writeAck(cl, ackType, pk.PacketID, packets.ErrNotAuthorized.Code); err != nil {
			d.log.Debug("writing refusal to publisher", zap.String("client", cl.ID), zap.Error(err))
		}
	})
	return pk, packets.ErrRejectPacket
}

// refuse tells a publisher its message was not taken.
func (d *dispatcher) refuse(cl *mqtt.Client, pk packets.Packet, err error) (packets.Packet, error) {
	code, ok := err.(packets.Code)
	if !ok {
		code = packets.ErrUnspecifiedError
	}
	switch {
	case pk.FixedHeader.Qos == 0:
		return pk, packets.CodeSuccessIgnore // nothing to answer; route counted it
	case cl.Properties.ProtocolVersion < 5:
		// MQTT 3.1.1 has no negative acknowledgement: closing the
		// connection is the only way not to acknowledge. Acknowledgements
		// still waiting for the data dir are lost with it; their publishes
		// are sent again.
		cl.Stop(code)
		return pk, packets.ErrRejectPacket
	}
	// mochi answers a hook's error with a PUBACK even for QoS 2
	// (processPublish), so the ack is written here and mochi is told to
	// reject, which makes it write nothing.
	ackType := packets.Puback
	if pk.FixedHeader.Qos == 2 {
		ackType = packets.Pubrec
	}
	d.inOrder(func() {
		if werr := cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: ackType},
			PacketID:    pk.PacketID,
			ReasonCode:  code.Code,
			Properties:  packets.Properties{ReasonString: code.Reason},
		}); werr != nil {
			d.log.Debug("writing refusal to publisher", zap.String("client", cl.ID), zap.Error(werr))
		}
	})
	return pk, packets.ErrRejectPacket
}

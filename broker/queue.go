package broker

import (
	"sort"

	"github.com/mochi-mqtt/server/v2/packets"
)

// message is a published message as it travels to subscribers. It is
// immutable and shared by every copy routed to a subscriber; a queued copy
// costs an outMsg (about 100 bytes) plus this, instead of a packets.Packet
// (800 bytes) each.
type message struct {
	topic   string
	payload []byte
	props   *packets.Properties // the properties forwarded to subscribers (MQTT 5 section 3.3.2.3); nil when none
	origin  string              // client id of the publisher
	created int64               // unix seconds
	expiry  int64               // unix seconds; 0: never
	qos     byte                // as published
	retain  bool                // as published
}

// newMessage takes from an inbound PUBLISH what travels to subscribers;
// everything else (topic alias, packet id, DUP) stays behind.
func newMessage(pk packets.Packet) *message {
	msg := &message{
		topic:   pk.TopicName,
		payload: pk.Payload,
		origin:  pk.Origin,
		created: pk.Created,
		expiry:  pk.Expiry,
		qos:     pk.FixedHeader.Qos,
		retain:  pk.FixedHeader.Retain,
	}
	p := pk.Properties
	if p.PayloadFormatFlag || p.MessageExpiryInterval > 0 || p.ContentType != "" || p.ResponseTopic != "" ||
		len(p.CorrelationData) > 0 || len(p.User) > 0 {
		msg.props = &packets.Properties{
			PayloadFormat:         p.PayloadFormat,
			PayloadFormatFlag:     p.PayloadFormatFlag,
			MessageExpiryInterval: p.MessageExpiryInterval,
			ContentType:           p.ContentType,
			ResponseTopic:         p.ResponseTopic,
			CorrelationData:       p.CorrelationData,
			User:                  p.User,
		}
	}
	return msg
}

// packet returns the message as published, as mochi's retained index keeps it.
func (msg *message) packet() packets.Packet {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: msg.qos, Retain: msg.retain},
		TopicName:   msg.topic,
		Payload:     msg.payload,
		Origin:      msg.origin,
		Created:     msg.created,
		Expiry:      msg.expiry,
	}
	if msg.props != nil {
		pk.Properties = *msg.props
	}
	return pk
}

// msgState is where an outbound QoS 1/2 message is in its delivery.
type msgState uint8

const (
	stateQueued    msgState = iota // waiting for receive quota (or for the subscriber to connect)
	statePublished                 // PUBLISH sent (or about to be), awaiting PUBACK / PUBREC
	stateReleased                  // QoS 2: PUBREC received and PUBREL sent, awaiting PUBCOMP
)

// outMsg is one copy of a message owed to one subscriber (or, while in a
// group queue, to one member of a shared subscription group).
type outMsg struct {
	msg      *message
	seq      uint64 // arrival order, unique per copy
	group    string // shared subscription filter it was routed through; "" for a plain subscription
	subIDs   []int  // subscription identifiers of the subscriber [MQTT-3.3.4-3]
	packetID uint16 // while in flight
	qos      byte   // as delivered
	retain   bool   // as delivered
	state    msgState
	sent     bool // handed to a connection at least once: a resend carries DUP [MQTT-3.3.1-1]
	stored   bool // has a record under its client's key
}

// newOutMsg returns a copy of msg for a subscriber yet to be chosen.
func newOutMsg(msg *message) *outMsg {
	return &outMsg{msg: msg, qos: msg.qos, retain: msg.retain}
}

// subscribe applies the subscription the copy is delivered through: QoS
// capped by it [MQTT-3.8.4-8], retain flag kept only for retain-as-published
// subscriptions or retained-message delivery [MQTT-3.3.1-12]
// [MQTT-3.3.1-13], and its subscription identifiers [MQTT-3.3.4-3].
func (m *outMsg) subscribe(sub packets.Subscription, retained bool) {
	m.qos = min(m.msg.qos, sub.Qos)
	m.retain = m.msg.retain && (retained || sub.RetainAsPublished)
	m.subIDs = nil
	if sub.Identifier > 0 {
		m.subIDs = append(m.subIDs, sub.Identifier)
	}
	for _, id := range sub.Identifiers {
		if id > 0 && id != sub.Identifier {
			m.subIDs = append(m.subIDs, id)
		}
	}
	sort.Ints(m.subIDs)
}

// reset returns a copy to its state as published, when it goes back to its
// group for another member.
func (m *outMsg) reset() {
	m.qos, m.retain, m.subIDs = m.msg.qos, m.msg.retain, nil
	m.packetID, m.state, m.sent = 0, stateQueued, false
}

// publish returns the PUBLISH packet of the copy.
func (m *outMsg) publish() packets.Packet {
	pk := m.msg.packet()
	pk.FixedHeader.Qos, pk.FixedHeader.Retain = m.qos, m.retain
	pk.PacketID = m.packetID
	pk.Properties.SubscriptionIdentifier = m.subIDs
	return pk
}

// packet returns what to write for a copy in flight: the PUBLISH, with DUP
// if it was handed to a connection before, or, once the subscriber sent
// PUBREC, the PUBREL.
func (m *outMsg) packet() packets.Packet {
	if m.state == stateReleased {
		return pubrel(m.packetID, packets.CodeSuccess)
	}
	pk := m.publish()
	pk.FixedHeader.Dup = m.sent
	m.sent = true
	return pk
}

// pubrel builds a PUBREL; the fixed header flags of PUBREL are 0010.
func pubrel(id uint16, code packets.Code) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1},
		PacketID:    id,
		ReasonCode:  code.Code,
	}
}

// expired reports whether the message's expiry interval has passed [MQTT-3.3.2-5].
func (m *outMsg) expired(now int64) bool {
	return m.msg.expiry > 0 && now >= m.msg.expiry
}

// record is the stored form of m.
func (m *outMsg) record(client string) outRecord {
	return outRecord{
		Seq:       m.seq,
		Group:     m.group,
		State:     m.state,
		Expiry:    m.msg.expiry,
		PubQos:    m.msg.qos,
		PubRetain: m.msg.retain,
		Message:   toStorageMessage(m.publish(), client),
	}
}

// msgFromRecord rebuilds a copy read from the store.
func msgFromRecord(rec outRecord) *outMsg {
	pk := rec.Message.ToPacket() // a deep copy
	msg := newMessage(pk)
	msg.qos, msg.retain, msg.expiry = rec.PubQos, rec.PubRetain, rec.Expiry
	return &outMsg{
		msg:      msg,
		seq:      rec.Seq,
		group:    rec.Group,
		subIDs:   pk.Properties.SubscriptionIdentifier,
		packetID: pk.PacketID,
		qos:      pk.FixedHeader.Qos,
		retain:   pk.FixedHeader.Retain,
		state:    rec.State,
		sent:     rec.State != stateQueued, // whether it reached the subscriber is unknown
		stored:   true,
	}
}

// fifo is a queue of messages in sequence order.
type fifo struct {
	items []*outMsg
	head  int
}

func (q *fifo) len() int { return len(q.items) - q.head }

func (q *fifo) peek() *outMsg {
	if q.len() == 0 {
		return nil
	}
	return q.items[q.head]
}

func (q *fifo) push(m *outMsg) { q.items = append(q.items, m) }

func (q *fifo) pop() *outMsg {
	m := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	} else if q.head > 1024 && q.head > len(q.items)/2 {
		q.items = append([]*outMsg(nil), q.items[q.head:]...)
		q.head = 0
	}
	return m
}

// insert puts m at its place by sequence number; used when a message comes
// back to a queue (a group member left), so it goes before what arrived later.
func (q *fifo) insert(m *outMsg) {
	live := q.items[q.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].seq > m.seq })
	q.items = append(q.items, nil)
	live = q.items[q.head:]
	copy(live[i+1:], live[i:])
	live[i] = m
}

// all returns the queued messages, oldest first, without removing them.
func (q *fifo) all() []*outMsg { return q.items[q.head:] }

// drain removes and returns all messages.
func (q *fifo) drain() []*outMsg {
	out := append([]*outMsg(nil), q.items[q.head:]...)
	q.items, q.head = nil, 0
	return out
}

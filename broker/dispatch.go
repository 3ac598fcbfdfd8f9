package broker

import (
	"bytes"
	"cmp"
	"errors"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/mqttconn"
)

// maxPendingQoS0 bounds the QoS 0 messages waiting to be written to one
// connection; QoS 1/2 ones are bounded by the receive quota instead.
const maxPendingQoS0 = 8192

// dispatcher is the mochi hook that owns the delivery of every published
// message: routing, shared-subscription selection, per-subscriber queues,
// packet ids and the outbound QoS 1/2 handshakes.
//
// mochi's own delivery path (Server.publishToSubscribers and publishToClient
// in server.go) cannot give the broker what the LPS needs:
//   - a shared subscription gets one member chosen at random
//     (Subscribers.SelectShared picks the first entry of a map), whether or
//     not it has receive quota; OnSelectSubscribers can choose another
//     member but not hold a message back until one has quota;
//   - when a client's send quota is exhausted, publishToClient marks the
//     message "immediate" and processPacket sends one such message per
//     packet later received from the client, ordered by creation second,
//     and deletes it from the inflight map as it writes it, so its
//     acknowledgement is not recognised and the stored copy is never
//     removed (redelivered after every restart);
//   - beyond Capabilities.MaximumInflight messages per client, or when the
//     outbound channel is full, messages are dropped with only a counter;
//   - on reconnect ResendInflightMessages writes every inflight message at
//     once, ignoring the client's receive maximum (paho then blocks in its
//     receive channel);
//   - outbound and inbound QoS flows share one inflight map keyed by packet
//     id, so a client that both subscribes and publishes (mqtt2http
//     republishes to its retry topic) deletes the message in flight to it
//     when its own PUBLISH reuses the id, and the subscription stalls.
//
// So the dispatcher takes the message in OnPublish (before mochi sends PUBREC
// or PUBACK, so a message is durable before the publisher hears it was
// accepted) and answers CodeSuccessIgnore, which makes mochi complete the
// publisher's handshake but skip retaining and delivery. It keeps its own
// sessions, queues and inflight windows, writes PUBLISH and PUBREL itself,
// and takes the subscribers' PUBACK, PUBREC and PUBCOMP in OnPacketRead,
// handing mochi a harmless packet in their place. mochi's inflight map is
// left with the inbound QoS 2 state only.
type dispatcher struct {
	mqtt.HookBase

	srv         *mqtt.Server
	st          *store // nil: nothing persists
	log         *zap.Logger
	met         *metrics
	maxQueued   int
	maxInflight int

	mu          sync.Mutex
	closed      bool
	seq         uint64
	sessions    map[string]*session
	groups      map[string]*group
	declared    []*group // the groups of Config.Queues, sorted by filter; never forgotten
	subscribing map[*mqtt.Client]pendingSubscribe
	wills       map[string]*time.Timer
	delayed     delayHeap // messages published to $delayed/... waiting for their time

	senders   sync.WaitGroup // one goroutine per connected session
	delayers  sync.WaitGroup // runDelayed, from OnStarted to OnStopped
	delayWake chan struct{}  // a delayed message became the next one due
	delayStop chan struct{}  // closed by OnStopped
}

var _ mqtt.Hook = (*dispatcher)(nil)

// session is what the broker owes one client id, connected or not.
type session struct {
	id         string
	persistent bool // outlives its connection: its own messages are stored
	window     int  // receive quota: most messages in flight at once
	conn       *conn
	inflight   map[uint16]*outMsg
	queue      fifo                // messages of plain subscriptions waiting for quota
	groups     map[string]struct{} // shared subscription filters it is a member of
	lastID     uint16
}

// conn is one network connection of a session and its writer.
type conn struct {
	cl   *mqtt.Client
	out  []packets.Packet // to be written, in order; guarded by dispatcher.mu
	qos0 int              // QoS 0 messages in out
	wake chan struct{}
	stop chan struct{}
}

// group is a shared subscription: one filter, several members, one queue.
// Messages wait here, not with a member, until a member has receive quota,
// so a backlog is never stranded with a member that went away.
type group struct {
	filter   string
	declared *Queue // the declared queue this group is; nil for a group that exists while it has members or messages
	members  map[string]packets.Subscription
	order    []string // members sorted, for round robin; nil when stale
	next     int      // round robin cursor into order
	queue    fifo
}

// pendingSubscribe carries what OnSubscribe learned to OnPacketProcessed.
type pendingSubscribe struct {
	filters []packets.Subscription // as the client sent them
	existed []bool
}

func newDispatcher(srv *mqtt.Server, st *store, log *zap.Logger, met *metrics, maxQueued, maxInflight int, queues []Queue) *dispatcher {
	d := &dispatcher{
		srv:         srv,
		st:          st,
		log:         log,
		met:         met,
		maxQueued:   maxQueued,
		maxInflight: maxInflight,
		sessions:    map[string]*session{},
		groups:      map[string]*group{},
		subscribing: map[*mqtt.Client]pendingSubscribe{},
		wills:       map[string]*time.Timer{},
		delayWake:   make(chan struct{}, 1),
		delayStop:   make(chan struct{}),
	}
	for _, q := range queues {
		g := d.group(q.shared())
		g.declared = &q
		d.declared = append(d.declared, g)
	}
	slices.SortFunc(d.declared, func(a, b *group) int { return strings.Compare(a.filter, b.filter) })
	return d
}

// ID identifies the hook to mochi.
func (d *dispatcher) ID() string { return "lps-dispatcher" }

// Provides tells mochi which events the dispatcher handles.
func (d *dispatcher) Provides(b byte) bool {
	return bytes.IndexByte([]byte{
		mqtt.OnStarted,
		mqtt.OnStopped,
		mqtt.OnPacketRead,
		mqtt.OnPacketEncode,
		mqtt.OnPacketProcessed,
		mqtt.OnSessionEstablish,
		mqtt.OnSessionEstablished,
		mqtt.OnDisconnect,
		mqtt.OnClientExpired,
		mqtt.OnSubscribe,
		mqtt.OnSubscribed,
		mqtt.OnUnsubscribed,
		mqtt.OnPublish,
		mqtt.OnWill,
	}, b) >= 0
}

func (d *dispatcher) session(id string) *session {
	s := d.sessions[id]
	if s == nil {
		s = &session{id: id, window: d.maxInflight, inflight: map[uint16]*outMsg{}, groups: map[string]struct{}{}}
		d.sessions[id] = s
	}
	return s
}

func (d *dispatcher) group(filter string) *group {
	g := d.groups[filter]
	if g == nil {
		g = &group{filter: filter, members: map[string]packets.Subscription{}}
		d.groups[filter] = g
	}
	return g
}

// forgetGroup drops a group nobody belongs to and nothing waits in, unless
// it is a declared queue.
func (d *dispatcher) forgetGroup(g *group) {
	if g.declared == nil && len(g.members) == 0 && g.queue.len() == 0 {
		delete(d.groups, g.filter)
	}
}

// --- persistence helpers (all called with d.mu held) ---

func (d *dispatcher) storeClientMsg(b *batch, s *session, m *outMsg) {
	if d.st != nil && (s.persistent || m.group != "") {
		b.put(outKey(ownerClient, s.id, m.seq), m.record(s.id))
		m.stored = true
	}
}

func (d *dispatcher) unstoreClientMsg(b *batch, s *session, m *outMsg) {
	if m.stored {
		b.del(outKey(ownerClient, s.id, m.seq))
		m.stored = false
	}
}

func (d *dispatcher) storeGroupMsg(b *batch, g *group, m *outMsg) {
	if d.st != nil {
		b.put(outKey(ownerGroup, g.filter, m.seq), m.record(""))
	}
}

func (d *dispatcher) unstoreGroupMsg(b *batch, g *group, m *outMsg) {
	if d.st != nil {
		b.del(outKey(ownerGroup, g.filter, m.seq))
	}
}

// commit writes b. Memory already reflects it; if the write fails the data
// dir lags behind, and a restart redelivers (duplicates) rather than loses.
func (d *dispatcher) commit(b *batch) {
	if err := d.st.commit(b); err != nil {
		d.log.Error("writing delivery state to data dir; a restart may redeliver messages", zap.Error(err))
	}
}

// --- writing to connections ---

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

// drop counts messages the broker gives up on.
func (d *dispatcher) drop(reason string, n int) {
	d.met.dropped.WithLabelValues(reason).Add(float64(n))
}

// --- delivery ---

// nextPacketID returns a packet id not in use by the session's outbound
// flows. The window is at most 65535, so one is always free.
func (s *session) nextPacketID() uint16 {
	for {
		s.lastID++
		if s.lastID == 0 {
			s.lastID = 1
		}
		if _, used := s.inflight[s.lastID]; !used {
			return s.lastID
		}
	}
}

// next returns the oldest message the session may take: the head of its own
// queue or of one of its groups' queues, whichever arrived first.
func (d *dispatcher) next(s *session) (*outMsg, *group) {
	best := s.queue.peek()
	var from *group
	for f := range s.groups {
		g := d.groups[f]
		if g == nil {
			continue
		}
		if m := g.queue.peek(); m != nil && (best == nil || m.seq < best.seq) {
			best, from = m, g
		}
	}
	return best, from
}

// fill moves messages into the session's inflight window while it is
// connected and has receive quota, and hands them to its writer.
func (d *dispatcher) fill(s *session, b *batch) {
	c := s.conn
	if c == nil {
		return
	}
	now := time.Now().Unix()
	for len(s.inflight) < s.window {
		m, g := d.next(s)
		if m == nil {
			return
		}
		if g != nil {
			g.queue.pop()
			d.unstoreGroupMsg(b, g, m)
		} else {
			s.queue.pop()
		}
		if m.expired(now) { // [MQTT-3.3.2-5]
			d.unstoreClientMsg(b, s, m)
			d.drop("expired", 1)
			continue
		}
		if g != nil {
			m.subscribe(g.members[s.id], false)
			d.met.sharedDeliveries.WithLabelValues(g.filter, s.id).Inc()
		}
		if m.qos == 0 { // a member subscribed at QoS 0
			d.unstoreClientMsg(b, s, m)
			d.send(c, m.publish())
			continue
		}
		m.packetID = s.nextPacketID()
		m.state = statePublished
		s.inflight[m.packetID] = m
		d.storeClientMsg(b, s, m)
		d.send(c, m.packet())
	}
}

// dispatchGroup offers a group's queued messages to its members with receive
// quota, in round robin order.
func (d *dispatcher) dispatchGroup(g *group, b *batch) {
	for range len(g.members) {
		if g.queue.len() == 0 {
			return
		}
		s := d.pickMember(g, true)
		if s == nil {
			return
		}
		d.fill(s, b)
	}
}

// pickMember returns the next connected member of g after the round robin
// cursor (with free receive quota if needQuota), advancing the cursor.
func (d *dispatcher) pickMember(g *group, needQuota bool) *session {
	if g.order == nil {
		g.order = make([]string, 0, len(g.members))
		for id := range g.members {
			g.order = append(g.order, id)
		}
		sort.Strings(g.order)
		g.next = 0
	}
	n := len(g.order)
	for i := range n {
		idx := (g.next + i) % n
		s := d.sessions[g.order[idx]]
		if s == nil || s.conn == nil || (needQuota && len(s.inflight) >= s.window) {
			continue
		}
		g.next = (idx + 1) % n
		return s
	}
	return nil
}

// errNoSubscribers is route's answer for a message that matches no
// subscription and no declared queue: nobody will ever take it.
var errNoSubscribers error = packets.CodeNoMatchingSubscribers

// route hands a published message to every matching subscription and
// declared queue. It returns errNoSubscribers, storing nothing, when there
// are none, and a packets.Code when the message must be refused: a queue it
// would join is full, or it could not be stored.
func (d *dispatcher) route(in packets.Packet) error {
	msg := newMessage(in)
	if msg.created == 0 {
		msg.created = time.Now().Unix()
	}
	subs := d.srv.Topics.Subscribers(msg.topic)

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return packets.ErrServerShuttingDown
	}
	return d.routeLocked(msg, subs, nil)
}

// groupFilters returns the shared groups a message to topic goes to, sorted:
// those mochi's topic index names (a member subscribed) and the declared
// queues whose filter matches.
func (d *dispatcher) groupFilters(topic string, subs *mqtt.Subscribers) []string {
	filters := make([]string, 0, len(subs.Shared)+len(d.declared))
	for f := range subs.Shared {
		if !dollarExcluded(f, topic) {
			filters = append(filters, f)
		}
	}
	for _, g := range d.declared {
		if _, indexed := subs.Shared[g.filter]; !indexed && mqttconn.Match(g.declared.Filter, topic) {
			filters = append(filters, g.filter)
		}
	}
	sort.Strings(filters)
	return filters
}

// dollarExcluded reports whether a shared subscription must not get topic:
// a filter starting with a wildcard does not match a topic starting with $
// [MQTT-4.7.2-1]. mochi's topic index leaves that out for shared
// subscriptions (gatherSharedSubscriptions), and a declared queue, matched
// with mqttconn.Match, must take what its members' subscription takes.
func dollarExcluded(shared, topic string) bool {
	if !strings.HasPrefix(topic, "$") {
		return false
	}
	_, filter, _, err := mqttconn.SplitShared(shared)
	return err == nil && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#"))
}

// matches reports whether anyone takes msg: a plain subscription (No Local
// applied) of a client mochi knows, or a shared group in filters (see
// groupFilters), whose queue keeps the message while no member can take it.
func (d *dispatcher) matches(msg *message, subs *mqtt.Subscribers, filters []string) bool {
	if len(filters) > 0 {
		return true
	}
	for id, sub := range subs.Subscriptions {
		if sub.NoLocal && msg.origin == id { // [MQTT-3.8.3-3]
			continue
		}
		if _, ok := d.srv.Clients.Get(id); ok {
			return true
		}
	}
	return false
}

// routeLocked is route with d.mu held. pre, if not nil, holds changes to
// store in the same transaction as the routed copies (the deletion of a
// delayed message's record); it is committed only if the message is routed.
func (d *dispatcher) routeLocked(msg *message, subs *mqtt.Subscribers, pre *batch) error {
	filters := d.groupFilters(msg.topic, subs)
	if !d.matches(msg, subs, filters) {
		return errNoSubscribers
	}

	type target struct {
		s *session
		g *group
		m *outMsg
	}
	var targets []target
	var qos0 []target

	ids := make([]string, 0, len(subs.Subscriptions))
	for id := range subs.Subscriptions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		sub := subs.Subscriptions[id]
		if sub.NoLocal && msg.origin == id { // [MQTT-3.8.3-3]
			continue
		}
		cl, ok := d.srv.Clients.Get(id)
		if !ok {
			continue // a stale entry of mochi's topic index
		}
		s := d.sessions[id]
		if s == nil { // a session mochi restored that nothing was owed to yet
			s = d.session(id)
			s.persistent = persistent(cl)
		}
		out := newOutMsg(msg)
		out.subscribe(sub, false)
		if out.qos == 0 {
			if s.conn != nil {
				qos0 = append(qos0, target{s: s, m: out})
			} else {
				d.drop("qos0_offline", 1) // storing QoS 0 for a disconnected session is optional (MQTT 5 section 3.1.2.4)
			}
			continue
		}
		if s.queue.len() >= d.maxQueued {
			return d.refuseFull("client", id, s.queue.len())
		}
		targets = append(targets, target{s: s, m: out})
	}

	for _, f := range filters {
		g := d.group(f)
		if msg.qos == 0 {
			if s := d.pickMember(g, false); s != nil {
				out := newOutMsg(msg)
				out.subscribe(g.members[s.id], false)
				qos0 = append(qos0, target{s: s, m: out})
				d.met.sharedDeliveries.WithLabelValues(g.filter, s.id).Inc()
			} else {
				d.drop("qos0_offline", 1)
			}
			continue
		}
		if g.queue.len() >= d.maxQueued {
			return d.refuseFull("group", f, g.queue.len())
		}
		out := newOutMsg(msg)
		out.group = f
		targets = append(targets, target{g: g, m: out})
	}

	// Store first: the publisher is told "accepted" only once every copy is
	// on disk.
	var b batch
	if pre != nil {
		b = *pre
	}
	for _, t := range targets {
		d.seq++
		t.m.seq = d.seq
		if t.g != nil {
			d.storeGroupMsg(&b, t.g, t.m)
		} else {
			d.storeClientMsg(&b, t.s, t.m)
		}
	}
	if err := d.st.commit(&b); err != nil {
		d.log.Error("refusing publish: storing it in the data dir failed", zap.String("topic", msg.topic), zap.Error(err))
		d.met.refused.WithLabelValues("store_error").Inc()
		for _, t := range targets {
			t.m.stored = false
		}
		return packets.ErrUnspecifiedError
	}

	var fb batch
	for _, t := range targets {
		if t.g != nil {
			t.g.queue.push(t.m)
			d.dispatchGroup(t.g, &fb)
		} else {
			t.s.queue.push(t.m)
			d.fill(t.s, &fb)
		}
	}
	d.commit(&fb)
	for _, t := range qos0 {
		d.send(t.s.conn, t.m.publish())
	}
	return nil
}

// refuseFull logs and counts a publish refused because a queue is at
// Config.MaxQueued; the publisher gets "quota exceeded" and keeps the message.
func (d *dispatcher) refuseFull(kind, owner string, n int) error {
	d.log.Error("refusing publish: subscriber queue full",
		zap.String(kind, owner), zap.Int("queued", n), zap.Int("max_queued", d.maxQueued))
	d.met.refused.WithLabelValues("queue_full").Inc()
	return packets.ErrQuotaExceeded
}

// OnPublish takes over a client's message: it stores and routes it, then
// answers CodeSuccessIgnore so that mochi acknowledges the publisher but
// neither retains nor delivers the message itself. A message to
// $delayed/<seconds>/<topic> is kept until its time (delayed.go).
func (d *dispatcher) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if after, target, ok, err := mqttconn.ParseDelayed(pk.TopicName); ok {
		if err != nil {
			return d.refuseDelayed(cl, pk, err)
		}
		return d.delay(cl, pk, after, target)
	}
	err := d.route(pk)
	if err != nil && !errors.Is(err, errNoSubscribers) {
		return d.refuse(cl, pk, err)
	}
	if pk.FixedHeader.Retain { // also with no subscriber: retained for later ones
		d.retain(pk)
	}
	if err != nil {
		return d.answerNoSubscribers(cl, pk)
	}
	return pk, packets.CodeSuccessIgnore
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
	if err := writeAck(cl, ackType, pk.PacketID, packets.CodeNoMatchingSubscribers.Code); err != nil {
		d.log.Debug("writing acknowledgement to publisher", zap.String("client", cl.ID), zap.Error(err))
	}
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
		// connection is the only way not to acknowledge.
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
	if werr := cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: ackType},
		PacketID:    pk.PacketID,
		ReasonCode:  code.Code,
		Properties:  packets.Properties{ReasonString: code.Reason},
	}); werr != nil {
		d.log.Debug("writing refusal to publisher", zap.String("client", cl.ID), zap.Error(werr))
	}
	return pk, packets.ErrRejectPacket
}

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

// OnPacketEncode announces delayed publish in every CONNACK, as the user
// property mqttconn.DelayedPublishProperty = "$delayed": nothing in MQTT
// announces the feature, and mqtt2http uses $delayed only with a broker that
// does.
func (d *dispatcher) OnPacketEncode(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ReasonCode < packets.ErrUnspecifiedError.Code {
		pk.Properties.User = append(slices.Clip(pk.Properties.User),
			packets.UserProperty{Key: mqttconn.DelayedPublishProperty, Val: strings.TrimSuffix(mqttconn.DelayedPrefix, "/")})
	}
	return pk
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

// OnSessionEstablish ends the session a clean start discards
// [MQTT-3.1.2-4] before mochi sends the CONNACK (attachClient sends it
// between OnSessionEstablish and OnSessionEstablished): once the client has
// read "session present 0", nothing of the old session may still be seen —
// its queue, QueueDepth, the dropped count. OnSessionEstablished discards
// again whatever the old connection, or a publish to the subscriptions mochi
// drops only after this hook, added in between.
func (d *dispatcher) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if !pk.Connect.Clean {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.sessions[cl.ID]; s != nil && !d.closed {
		var b batch
		d.discard(&b, s, "clean_start")
		d.commit(&b)
	}
}

// OnSessionEstablished attaches a connection to its session, resends what
// was in flight and starts delivering.
func (d *dispatcher) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t := d.wills[cl.ID]; t != nil { // [MQTT-3.1.3-9] reconnecting cancels a delayed will
		t.Stop()
		delete(d.wills, cl.ID)
	}
	if d.closed {
		return
	}
	var b batch
	s := d.sessions[cl.ID]
	if s != nil && pk.Connect.Clean { // [MQTT-3.1.2-4]
		d.discard(&b, s, "clean_start")
		s = nil
	}
	if s == nil {
		s = d.session(cl.ID)
	}
	if s.conn != nil { // session taken over by a new connection
		s.conn.close()
	}
	if s.persistent = persistent(cl); s.persistent {
		// A session taken over by a connection with a session expiry: what
		// it held in memory only must now survive a restart.
		for _, m := range s.queue.all() {
			if !m.stored {
				d.storeClientMsg(&b, s, m)
			}
		}
		for _, m := range s.inflight {
			if !m.stored {
				d.storeClientMsg(&b, s, m)
			}
		}
	}
	s.window = d.windowFor(cl)
	c := &conn{cl: cl, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	s.conn = c

	// Resend unacknowledged PUBLISH and PUBREL packets in their original
	// order with their original packet ids [MQTT-4.4.0-1].
	inflight := make([]*outMsg, 0, len(s.inflight))
	for _, m := range s.inflight {
		inflight = append(inflight, m)
	}
	slices.SortFunc(inflight, func(a, b *outMsg) int { return cmp.Compare(a.seq, b.seq) })
	for _, m := range inflight {
		d.send(c, m.packet())
	}
	d.fill(s, &b)
	d.commit(&b)

	d.senders.Add(1)
	go d.runSender(c)
}

// windowFor is the receive quota of a client: its receive maximum (65535 when
// absent, MQTT 5 section 3.1.2.11.3; always for MQTT 3.1.1), capped by
// Config.MaxInflight.
func (d *dispatcher) windowFor(cl *mqtt.Client) int {
	w := int(cl.Properties.Props.ReceiveMaximum)
	if w == 0 {
		w = 65535
	}
	return min(w, d.maxInflight)
}

// OnDisconnect detaches a connection. Shared-subscription messages it had
// not acknowledged go back to their group at once, so another member takes
// them (allowed by MQTT 5 section 4.8.2); a subscriber killed mid-message
// thus delays nothing. Its own messages wait for it to reconnect, unless the
// session ends with the connection.
func (d *dispatcher) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.subscribing, cl)
	s := d.sessions[cl.ID]
	if s == nil {
		return
	}
	var b batch
	if s.conn != nil && s.conn.cl == cl {
		s.conn.close()
		s.conn = nil
		d.releaseShared(&b, s)
	}
	if expire && !cl.IsTakenOver() && s.conn == nil {
		d.discard(&b, s, "session_ended")
	}
	d.commit(&b)
}

// releaseShared returns the session's unacknowledged shared-subscription
// messages to their groups. Messages the subscriber acknowledged with PUBREC
// stay: it has processed them, and only owes the PUBCOMP.
func (d *dispatcher) releaseShared(b *batch, s *session) {
	touched := map[*group]struct{}{}
	for id, m := range s.inflight {
		if m.group == "" || m.state != statePublished {
			continue
		}
		delete(s.inflight, id)
		d.unstoreClientMsg(b, s, m)
		touched[d.requeue(b, m)] = struct{}{}
	}
	for g := range touched {
		d.dispatchGroup(g, b)
	}
}

// requeue puts a shared-subscription message back in its group queue, at its
// place by arrival, as it was published.
func (d *dispatcher) requeue(b *batch, m *outMsg) *group {
	g := d.group(m.group)
	m.reset()
	g.queue.insert(m)
	d.storeGroupMsg(b, g, m)
	return g
}

// discard ends a session: its own messages are dropped (counted), shared
// ones not yet acknowledged go back to their groups.
func (d *dispatcher) discard(b *batch, s *session, reason string) {
	if s.conn != nil {
		s.conn.close()
		s.conn = nil
	}
	dropped := 0
	for _, m := range s.queue.drain() {
		d.unstoreClientMsg(b, s, m)
		dropped++
	}
	touched := map[*group]struct{}{}
	for id, m := range s.inflight {
		delete(s.inflight, id)
		d.unstoreClientMsg(b, s, m)
		switch {
		case m.group != "" && m.state == statePublished:
			touched[d.requeue(b, m)] = struct{}{}
		case m.state == statePublished:
			dropped++
		}
	}
	for f := range s.groups {
		if g := d.groups[f]; g != nil {
			delete(g.members, s.id)
			g.order = nil
			touched[g] = struct{}{}
		}
	}
	delete(d.sessions, s.id)
	for g := range touched {
		d.dispatchGroup(g, b)
		d.forgetGroup(g)
	}
	if dropped > 0 {
		d.log.Warn("session ended with undelivered messages", zap.String("client", s.id),
			zap.String("reason", reason), zap.Int("dropped", dropped))
		d.drop(reason, dropped)
	}
}

// OnClientExpired ends an expired session.
func (d *dispatcher) OnClientExpired(cl *mqtt.Client) {
	d.mu.Lock()
	if s := d.sessions[cl.ID]; s != nil && s.conn == nil {
		var b batch
		d.discard(&b, s, "session_expired")
		d.commit(&b)
	}
	d.mu.Unlock()
	// mochi's clearExpiredClients deletes the client but leaves its
	// subscriptions in the topic index, where they would match forever.
	for filter := range cl.State.Subscriptions.GetAll() {
		if d.srv.Topics.Unsubscribe(filter, cl.ID) {
			atomic.AddInt64(&d.srv.Info.Subscriptions, -1)
		}
	}
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

// OnSubscribed records shared-subscription memberships and starts delivering
// to the new member.
func (d *dispatcher) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.session(cl.ID)
	for i, f := range pk.Filters {
		if i >= len(codes) || codes[i] >= packets.ErrUnspecifiedError.Code || !mqtt.IsSharedFilter(f.Filter) {
			continue
		}
		sub := f
		sub.Qos = codes[i] // the granted QoS
		g := d.group(f.Filter)
		g.members[cl.ID] = sub
		g.order = nil
		s.groups[f.Filter] = struct{}{}
	}
	var b batch
	d.fill(s, &b)
	d.commit(&b)
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

// OnUnsubscribed ends shared-subscription memberships. Messages the member
// has in flight stay with it until acknowledged.
func (d *dispatcher) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.sessions[cl.ID]
	for _, f := range pk.Filters {
		g := d.groups[f.Filter]
		if g == nil {
			continue
		}
		delete(g.members, cl.ID)
		g.order = nil
		if s != nil {
			delete(s.groups, f.Filter)
		}
		d.forgetGroup(g)
	}
}

// OnWill publishes a client's will message through the dispatcher and hands
// mochi back a will with no topic, which matches no subscription: mochi's
// sendLWT would otherwise deliver it through its own path. A will delay is
// honoured with a timer that a reconnect cancels [MQTT-3.1.3-9].
func (d *dispatcher) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: will.Qos, Retain: will.Retain},
		TopicName:   will.TopicName,
		Payload:     will.Payload,
		Properties:  packets.Properties{User: will.User},
		Origin:      cl.ID,
		Created:     time.Now().Unix(),
	}
	if will.WillDelayInterval == 0 {
		d.publishWill(pk)
	} else {
		d.mu.Lock()
		if !d.closed {
			id := cl.ID
			if old := d.wills[id]; old != nil {
				old.Stop()
			}
			var t *time.Timer
			t = time.AfterFunc(time.Duration(will.WillDelayInterval)*time.Second, func() {
				d.mu.Lock()
				mine := d.wills[id] == t && !d.closed
				if mine {
					delete(d.wills, id)
				}
				d.mu.Unlock()
				if mine {
					d.publishWill(pk)
				}
			})
			d.wills[id] = t
		}
		d.mu.Unlock()
	}
	return mqtt.Will{Flag: will.Flag}, nil
}

func (d *dispatcher) publishWill(pk packets.Packet) {
	if err := d.route(pk); err != nil && !errors.Is(err, errNoSubscribers) {
		d.log.Error("dropping will message", zap.String("client", pk.Origin), zap.String("topic", pk.TopicName), zap.Error(err))
		d.drop("will_refused", 1)
		return
	}
	if pk.FixedHeader.Retain {
		d.retain(pk)
	}
}

// OnStarted completes the restore from the data dir and starts publishing
// delayed messages. It drops sessions that mochi did not restore (a clean
// session caught by a crash): nobody can resume them. And it gives restored
// retained messages back their expiry: mochi's storage.Message.ToPacket
// keeps the expiry interval but not the absolute Packet.Expiry that
// clearExpiredRetainedMessages checks.
func (d *dispatcher) OnStarted() {
	for topic, pk := range d.srv.Topics.Retained.GetAll() {
		if pk.Expiry == 0 && pk.Properties.MessageExpiryInterval > 0 {
			pk.Expiry = pk.Created + int64(pk.Properties.MessageExpiryInterval)
			d.srv.Topics.Retained.Add(topic, pk)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var b batch
	for id, s := range d.sessions {
		if _, ok := d.srv.Clients.Get(id); !ok && s.conn == nil {
			d.discard(&b, s, "session_ended")
		}
	}
	d.commit(&b)
	if !d.closed {
		d.delayers.Add(1)
		go d.runDelayed()
	}
}

// OnStopped stops will timers and the delayed messages' goroutine before the
// store closes.
func (d *dispatcher) OnStopped() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.closed {
		close(d.delayStop)
	}
	d.closed = true
	for id, t := range d.wills {
		t.Stop()
		delete(d.wills, id)
	}
	for _, s := range d.sessions {
		if s.conn != nil {
			s.conn.close()
			s.conn = nil
		}
	}
}

// wait blocks until every connection writer and the delayed messages'
// goroutine have returned.
func (d *dispatcher) wait() {
	d.senders.Wait()
	d.delayers.Wait()
}

// load restores the delivery state from the store.
func (d *dispatcher) load() error {
	subs, err := d.st.StoredSubscriptions()
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, sub := range subs {
		s := d.session(sub.Client)
		s.persistent = true
		if !mqtt.IsSharedFilter(sub.Filter) {
			continue
		}
		g := d.group(sub.Filter)
		g.members[sub.Client] = packets.Subscription{
			Filter:            sub.Filter,
			Qos:               sub.Qos,
			Identifier:        sub.Identifier,
			RetainAsPublished: sub.RetainAsPublished,
		}
		s.groups[sub.Filter] = struct{}{}
	}

	var b batch
	err = d.st.loadOutbound(func(kind byte, owner string, rec outRecord) error {
		m := msgFromRecord(rec)
		d.seq = max(d.seq, m.seq)
		switch kind {
		case ownerGroup:
			m.group, m.sent, m.stored = owner, false, false // stored names the client key
			d.group(owner).queue.push(m)
		case ownerDelayed:
			d.loadDelayed(m, rec.Due)
		case ownerClient:
			s := d.session(owner)
			switch {
			case m.state == stateQueued:
				s.queue.push(m)
			case m.group != "" && m.state == statePublished:
				// Every member is offline after a restart, as after a
				// disconnect: the message goes back to its group. The
				// member may still hold its flow and acknowledge it late, so
				// its packet id is not handed out again soon: ids continue
				// after the highest one in flight at the crash, as they do
				// after a disconnect, when lastID lives on in memory.
				s.lastID = max(s.lastID, m.packetID)
				d.unstoreClientMsg(&b, s, m)
				d.requeue(&b, m)
			default:
				s.inflight[m.packetID] = m
				s.lastID = max(s.lastID, m.packetID)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return d.st.commit(&b)
}

// Stats is a snapshot of the dispatcher's state.
func (d *dispatcher) stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	var st Stats
	st.Sessions = len(d.sessions)
	for _, s := range d.sessions {
		if s.conn != nil {
			st.ClientsConnected++
		}
		st.Queued += s.queue.len()
		for _, m := range s.inflight {
			if m.state == stateReleased {
				st.Releasing++
			} else {
				st.Inflight++
			}
		}
	}
	for _, g := range d.groups {
		st.Queued += g.queue.len()
	}
	st.Delayed = len(d.delayed)
	st.Queues = make(map[string]int, len(d.declared))
	for _, g := range d.declared {
		st.Queues[g.declared.String()] = g.queue.len()
	}
	return st
}

package broker

import (
	"cmp"
	"slices"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
)

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

func (d *dispatcher) session(id string) *session {
	s := d.sessions[id]
	if s == nil {
		s = &session{id: id, window: d.maxInflight, inflight: map[uint16]*outMsg{}, groups: map[string]struct{}{}}
		d.sessions[id] = s
	}
	return s
}

// joining is a connection that resumes a session, from OnSessionEstablish until
// OnSessionEstablished attaches it. In between mochi takes the session over from
// a connection still open, sends the CONNACK and, when the previous connection
// is still ending, waits for it (handover.go): the client is online as far as it
// knows. QoS 0 messages routed meanwhile wait here and go out on attach, instead
// of being dropped as for an offline session or sent to the connection being
// replaced.
type joining struct {
	cl    *mqtt.Client
	early []*outMsg
}

// OnSessionEstablish ends the session a clean start discards
// [MQTT-3.1.2-4] before mochi sends the CONNACK (attachClient sends it
// between OnSessionEstablish and OnSessionEstablished): once the client has
// read "session present 0", nothing of the old session may still be seen —
// its queue, QueueDepth, the dropped count. OnSessionEstablished discards
// again whatever the old connection, or a publish to the subscriptions mochi
// drops only after this hook, added in between. A connection that resumes
// its session is noted as joining it.
func (d *dispatcher) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	for id, j := range d.joining {
		if j.cl.Closed() { // it failed before attaching, and mochi calls no hook then
			delete(d.joining, id)
		}
	}
	if !pk.Connect.Clean {
		d.joining[cl.ID] = &joining{cl: cl}
		return
	}
	delete(d.joining, cl.ID)
	if s := d.sessions[cl.ID]; s != nil {
		var b batch
		d.discard(&b, s, "clean_start")
		d.commit(&b)
	}
}

// holdEarly keeps a QoS 0 message for a connection that is joining the
// session id (see joining); it reports whether there is one. Beyond
// Config.MaxQueued such messages are dropped.
func (d *dispatcher) holdEarly(id string, m *outMsg) bool {
	j := d.joining[id]
	if j == nil {
		return false
	}
	if j.cl.Closed() {
		delete(d.joining, id)
		return false
	}
	if len(j.early) >= d.maxQueued {
		d.drop("qos0_offline", 1)
		return true
	}
	j.early = append(j.early, m)
	return true
}

// OnSessionEstablished attaches a connection to its session, resends what
// was in flight and starts delivering.
func (d *dispatcher) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	d.revokeSubscriptions(cl)
	d.mu.Lock()
	defer d.mu.Unlock()
	if t := d.wills[cl.ID]; t != nil { // [MQTT-3.1.3-9] reconnecting cancels a delayed will
		t.Stop()
		delete(d.wills, cl.ID)
	}
	if d.closed {
		return
	}
	var early []*outMsg
	if j := d.joining[cl.ID]; j != nil && j.cl == cl {
		early = j.early
		delete(d.joining, cl.ID)
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
	c := &conn{cl: cl, wake: make(chan struct{}, 1), stop: make(chan struct{}),
		aliases: outAliases{max: cl.Properties.Props.TopicAliasMaximum}}
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
	for _, m := range early {
		d.send(c, m.publish())
	}

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
	if j := d.joining[cl.ID]; j != nil && j.cl == cl {
		delete(d.joining, cl.ID)
	}
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

// revokeSubscriptions ends the subscriptions of a resumed session that the
// access rules do not grant: made before the broker had them, or before they
// changed, and kept in the data dir. Without this a client that had joined
// a group before an ACL was set would stay in it. Messages it has in flight
// stay with it until acknowledged, as after an UNSUBSCRIBE.
func (d *dispatcher) revokeSubscriptions(cl *mqtt.Client) {
	if d.acc == nil || d.acc.acl == nil {
		return
	}
	var gone []packets.Subscription
	for f, sub := range cl.State.Subscriptions.GetAll() {
		if d.acc.mayRead(cl, f) != granted {
			gone = append(gone, sub)
		}
	}
	if len(gone) == 0 {
		return
	}
	for _, sub := range gone {
		if d.srv.Topics.Unsubscribe(sub.Filter, cl.ID) {
			atomic.AddInt64(&d.srv.Info.Subscriptions, -1)
		}
		cl.State.Subscriptions.Delete(sub.Filter)
		user, _ := d.acc.identity(cl)
		d.log.Warn("ending a kept subscription the ACL does not grant",
			zap.String("client", cl.ID), zap.String("user", user), zap.String("filter", sub.Filter))
	}
	pk := packets.Packet{Filters: gone}
	if d.st != nil {
		d.st.OnUnsubscribed(cl, pk)
	}
	d.OnUnsubscribed(cl, pk)
}

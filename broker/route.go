package broker

import (
	"sort"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/mqttconn"
)

// errNoSubscribers is route's answer for a message that matches no
// subscription and no declared queue: nobody will ever take it.
var errNoSubscribers error = packets.CodeNoMatchingSubscribers

// route hands a published message to every matching subscription and
// declared queue. It returns errNoSubscribers, storing nothing, when there
// are none, and a packets.Code when the message must be refused (a queue it
// would join is full). Otherwise it returns the data dir's flush that
// carries the message (nil without a data dir): the publisher may be told
// "accepted" once that is written.
func (d *dispatcher) route(in packets.Packet) (*flush, error) {
	msg := newMessage(in)
	if msg.created == 0 {
		msg.created = time.Now().Unix()
	}
	subs := d.srv.Topics.Subscribers(msg.topic)

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, packets.ErrServerShuttingDown
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
		if cl, ok := d.srv.Clients.Get(id); ok && d.acc.mayRead(cl, msg.topic) == granted {
			return true
		}
	}
	return false
}

// routeLocked is route with d.mu held. pre, if not nil, holds changes to
// store in the same transaction as the routed copies (the deletion of a
// delayed message's record); it is committed only if the message is routed.
func (d *dispatcher) routeLocked(msg *message, subs *mqtt.Subscribers, pre *batch) (*flush, error) {
	filters := d.groupFilters(msg.topic, subs)
	if !d.matches(msg, subs, filters) {
		return nil, errNoSubscribers
	}
	if msg.qos > 0 {
		if err := d.checkStore(); err != nil {
			return nil, err
		}
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
		if d.acc.mayRead(cl, msg.topic) != granted {
			// A subscription that overlaps a deny rule (acl.go), or one
			// restored from the data dir that the rules no longer grant.
			continue
		}
		s := d.sessions[id]
		if s == nil { // a session mochi restored that nothing was owed to yet
			s = d.session(id)
			s.persistent = persistent(cl)
		}
		out := newOutMsg(msg)
		out.subscribe(sub, false)
		if out.qos == 0 {
			switch {
			case d.holdEarly(id, out): // a new connection is taking the session
			case s.conn != nil:
				qos0 = append(qos0, target{s: s, m: out})
			default:
				d.drop("qos0_offline", 1) // storing QoS 0 for a disconnected session is optional (MQTT 5 section 3.1.2.4)
			}
			continue
		}
		if s.queue.len() >= d.maxQueued {
			return nil, d.refuseFull("client", id, s.queue.len(), d.maxQueued)
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
				d.met.sharedDelivery(g.filter, s.id)
			} else {
				d.drop("qos0_offline", 1)
			}
			continue
		}
		if g.len() >= d.maxGroupQueued {
			return nil, d.refuseFull("group", f, g.len(), d.maxGroupQueued)
		}
		out := newOutMsg(msg)
		out.group = f
		targets = append(targets, target{g: g, m: out})
	}

	// Store first, in the order of routing: the publisher is told
	// "accepted" only once the flush carrying every copy is written
	// (OnPublish waits for it). The copies are queued, and may be sent,
	// meanwhile: should the write fail, the publisher is refused and sends
	// again, a duplicate rather than a loss.
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
	f := d.st.enqueue(&b)

	var fb batch
	for _, t := range targets {
		if t.g != nil {
			d.enqueue(t.g, t.m, f)
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
	return f, nil
}

// refuseFull logs and counts a publish refused because a queue is at
// Config.MaxQueued; the publisher gets "quota exceeded" and keeps the message.
func (d *dispatcher) refuseFull(kind, owner string, n, bound int) error {
	d.log.Error("refusing publish: subscriber queue full",
		zap.String(kind, owner), zap.Int("queued", n), zap.Int("max_queued", bound))
	d.met.refused.WithLabelValues("queue_full").Inc()
	return packets.ErrQuotaExceeded
}

// checkStore refuses a QoS 1/2 message when the data dir is at
// Config.MaxStoreBytes: at once, with 0x97, so that the publisher (http2mqtt
// answers 503) keeps it, instead of the write failing later when the disk
// is full. The file's use is measured after each transaction, so the bound
// may be passed by what one transaction carries.
func (d *dispatcher) checkStore() error {
	if d.st == nil || d.maxStoreBytes < 0 {
		return nil
	}
	if used := d.st.usedBytes(); used >= d.maxStoreBytes {
		if ce := d.log.Check(zap.WarnLevel, "refusing publish: data dir full"); ce != nil {
			ce.Write(zap.Int64("used_bytes", used), zap.Int64("max_store_bytes", d.maxStoreBytes))
		}
		d.met.refused.WithLabelValues("store_full").Inc()
		return packets.ErrQuotaExceeded
	}
	return nil
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
	queue    fifo     // the window: oldest messages, in memory (backlog.go)

	// With a data dir (backlog.go):
	stored     int    // records of the group in the data dir (window and spilled)
	spilled    int    // messages in the data dir only, all newer than the window's
	tail       uint64 // highest sequence number that entered the window
	spillFlush *flush // carries the newest spilled message
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
	if g.declared == nil && len(g.members) == 0 && g.len() == 0 {
		delete(d.groups, g.filter)
	}
}

// dispatchGroup offers a group's queued messages to its members with receive
// quota, in round robin order.
func (d *dispatcher) dispatchGroup(g *group, b *batch) {
	for range len(g.members) {
		if g.len() == 0 {
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
		if m := d.head(g); m != nil && (best == nil || m.seq < best.seq) {
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
			d.met.sharedDelivery(g.filter, s.id)
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

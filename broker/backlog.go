package broker

import "go.uber.org/zap"

// With a data dir, a group queue keeps only a window of its messages in
// memory; the rest of its backlog stays in the data dir, where every queued
// message is anyway, and is read back in order as the window drains. An
// outage of the consumers thus costs disk, not memory: the backlog is
// bounded by Config.MaxStoreBytes, not by the broker's RAM, and a restart
// reads a window and a count per group, not the backlog.
//
// The messages left out of the window (spilled) are always the newest of
// the group: a message is spilled only when the window is full or others
// are spilled already, and a message that comes back to the group (its
// member left) is older than all of them, as it came from the window. So
// the window holds the oldest messages, and the next ones to read are
// those after the highest sequence number that entered it (group.tail).
//
// A spilled message may not be written yet (it waits for the group commit);
// since the dispatcher enqueues its changes in sequence order and flushes
// complete in order, what is written of the spilled ones is a prefix of
// them, so a read never skips one. Reading waits for the flush carrying the
// last spilled message only when the window is empty.
//
// bbolt reads through a mapping of its file, whose touched pages count in
// the process's RSS: the committer drops them every unmapEvery
// (store.unmap), and a graceful close writes the free page list so that
// the next open need not walk the file. After a crash (kill -9) the open
// does walk it, once: for those seconds the RSS grows by up to the file's
// size (clean page-cache pages, dropped right after the load), e.g. 116 MiB
// instead of 25 MiB with 200,000 alarms queued.
//
// Client queues (plain subscriptions of a session) stay in memory: the LPS
// queues its backlog in groups (its declared queues), and a client queue is
// bounded by Config.MaxQueued.

// groupWindow is how many messages of a group queue are in memory at most
// with a data dir (plus those returned by a member that left). A member's
// receive maximum is far smaller in the LPS (mqtt2http asks for tens), so
// the window never holds back delivery; about a kilobyte each (an alarm is a
// few hundred bytes), a group costs a few megabytes at most.
const groupWindow = 4096

// len returns how many messages wait in the group: in the window and in
// the data dir only.
func (g *group) len() int { return g.queue.len() + g.spilled }

// enqueue adds a routed message to the group: to the window, or, with a
// data dir and the window full (or messages spilled already), to the data
// dir only, where f writes it.
func (d *dispatcher) enqueue(g *group, m *outMsg, f *flush) {
	if d.st != nil && (g.spilled > 0 || g.queue.len() >= d.window) {
		g.spilled++
		g.spillFlush = f
		return
	}
	g.queue.push(m)
	g.tail = max(g.tail, m.seq)
}

// head returns the group's oldest message, refilling the window from the
// data dir when it ran low.
func (d *dispatcher) head(g *group) *outMsg {
	if g.spilled > 0 && g.queue.len() <= d.window/2 {
		d.refill(g)
	}
	return g.queue.peek()
}

// refill reads the next spilled messages of g into its window, in order.
func (d *dispatcher) refill(g *group) {
	want := min(g.spilled, d.window-g.queue.len())
	if want <= 0 {
		return
	}
	f := g.spillFlush
	written := f.isDone()
	if !written {
		if g.queue.len() > 0 {
			return // not worth waiting for: the window has work
		}
		// Under d.mu, but the committer's writer never takes it: the wait
		// is one transaction at most.
		_ = f.wait()
		written = true
	}
	recs, err := d.st.groupRecords(g.filter, g.tail, want)
	if err != nil {
		d.log.Error("reading queued messages from data dir", zap.String("group", g.filter), zap.Error(err))
		return
	}
	for _, rec := range recs {
		m := msgFromRecord(rec)
		m.group, m.sent, m.stored = g.filter, false, false // stored names the client key
		g.queue.push(m)
		g.tail = m.seq
		g.spilled--
	}
	if len(recs) < want && written {
		// Every spilled message is written, yet fewer were found: the
		// transaction that carried them failed (its publishers were
		// refused, and send them again). Count them no more.
		d.log.Error("queued messages missing from data dir", zap.String("group", g.filter), zap.Int("missing", g.spilled))
		g.stored -= g.spilled
		g.spilled = 0
	}
}

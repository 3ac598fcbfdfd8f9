package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

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

	// Group queues first (a window each), so that the group messages in
	// flight to a member at the crash go back before their place.
	loads, err := d.st.loadGroups(d.window)
	if err != nil {
		return err
	}
	for _, gl := range loads {
		g := d.group(gl.filter)
		for _, rec := range gl.head {
			m := msgFromRecord(rec)
			m.group, m.sent, m.stored = gl.filter, false, false // stored names the client key
			g.queue.push(m)
			g.tail = m.seq
		}
		g.stored = gl.count
		g.spilled = max(gl.count-len(gl.head), 0)
		d.seq = max(d.seq, gl.lastSeq)
	}

	var b batch
	err = d.st.loadOutbound(func(kind byte, owner string, rec outRecord) error {
		m := msgFromRecord(rec)
		d.seq = max(d.seq, m.seq)
		switch kind {
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
	err = d.st.enqueue(&b).wait()
	d.st.unmap() // what the load read
	return err
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

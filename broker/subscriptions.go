package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

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

package mqttconn

import (
	"sync"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
)

// ackOrder sends the acknowledgements of a connection's received QoS 1/2 messages in the
// order the messages arrived (MQTT 5 section 4.6: a client that acknowledges out of order
// confuses no broker, but the LPS promises order, and paho does the same), each once the
// application acknowledged it.
//
// It takes the place of paho's own manual-acknowledgement tracker, which loses
// acknowledgements at the start of a connection: paho.golang v0.23.0's Client.Connect starts
// the goroutine that reads and hands out messages before it resets that tracker, so a message
// that arrives right after CONNACK — as a broker sends a persistent session's backlog at once
// — can be recorded, acknowledged by the application, and then wiped. Its PUBACK or PUBREC is
// never sent; the broker keeps the message in flight on that connection as long as it lasts,
// and a consumer with a receive maximum of 1 stops. Here the list is cleared when paho reports
// the new connection (ConAckReceived), before its reader starts.
type ackOrder struct {
	mu    sync.Mutex
	order []ackEntry
	send  func(*packets.Publish) error // writes the acknowledgement; called in order, under mu
}

// ackEntry is a received message waiting for its acknowledgement to be sent.
type ackEntry struct {
	client *paho.Client // the connection it arrived on
	pb     *packets.Publish
	acked  bool
}

// received records a QoS 1/2 message before the application sees it.
func (a *ackOrder) received(cl *paho.Client, pb *packets.Publish) {
	a.mu.Lock()
	a.order = append(a.order, ackEntry{client: cl, pb: pb})
	a.mu.Unlock()
}

// ack marks the message id that arrived on cl as acknowledged and sends every acknowledgement
// that no earlier message holds back any more. paho.ErrPacketNotFound means the message's
// connection is gone (the list was cleared since): the broker delivers it again.
func (a *ackOrder) ack(cl *paho.Client, id uint16) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	found := false
	for i := range a.order {
		if e := &a.order[i]; e.client == cl && e.pb.PacketID == id && !e.acked {
			e.acked, found = true, true
			break
		}
	}
	if !found {
		return paho.ErrPacketNotFound
	}
	n := 0
	for n < len(a.order) && a.order[n].acked {
		_ = a.send(a.order[n].pb) // an error is a broken connection: the broker delivers the message again
		n++
	}
	a.order = append(a.order[:0], a.order[n:]...)
	return nil
}

// reset forgets the messages of a connection that ended: the broker delivers them again on
// the next one.
func (a *ackOrder) reset() {
	a.mu.Lock()
	a.order = nil
	a.mu.Unlock()
}

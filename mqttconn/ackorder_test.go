package mqttconn

import (
	"errors"
	"slices"
	"testing"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
)

func TestAckOrder(t *testing.T) {
	var sent []uint16
	a := &ackOrder{send: func(pb *packets.Publish) error { sent = append(sent, pb.PacketID); return nil }}
	c1, c2 := &paho.Client{}, &paho.Client{}
	pub := func(id uint16) *packets.Publish { return &packets.Publish{PacketID: id, QoS: 2} }
	expect := func(want ...uint16) {
		t.Helper()
		if !slices.Equal(sent, want) {
			t.Fatalf("sent %v, want %v", sent, want)
		}
	}

	for _, id := range []uint16{1, 2, 3} {
		a.received(c1, pub(id))
	}
	if err := a.ack(c1, 2); err != nil {
		t.Fatal(err)
	}
	expect() // 1 holds 2 back
	if err := a.ack(c1, 1); err != nil {
		t.Fatal(err)
	}
	expect(1, 2)
	if err := a.ack(c1, 3); err != nil {
		t.Fatal(err)
	}
	expect(1, 2, 3)
	if err := a.ack(c1, 3); !errors.Is(err, paho.ErrPacketNotFound) {
		t.Errorf("acknowledging 3 twice: %v, want ErrPacketNotFound", err)
	}
	if err := a.ack(c1, 9); !errors.Is(err, paho.ErrPacketNotFound) {
		t.Errorf("acknowledging an id never received: %v, want ErrPacketNotFound", err)
	}

	// A message of another connection is not this one's, even under the same id.
	a.received(c1, pub(4))
	if err := a.ack(c2, 4); !errors.Is(err, paho.ErrPacketNotFound) {
		t.Errorf("acknowledging on another connection: %v, want ErrPacketNotFound", err)
	}
	// A new connection forgets the old one's messages: the broker delivers them again, and an
	// acknowledgement of the old one is never written to the new connection.
	a.reset()
	if err := a.ack(c1, 4); !errors.Is(err, paho.ErrPacketNotFound) {
		t.Errorf("acknowledging after reset: %v, want ErrPacketNotFound", err)
	}
	a.received(c2, pub(4))
	if err := a.ack(c2, 4); err != nil {
		t.Fatal(err)
	}
	expect(1, 2, 3, 4)
}

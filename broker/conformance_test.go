package broker

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// These tests pin what the Eclipse Paho MQTT 5 interoperability suite
// (test_server_keep_alive, test_server_topic_alias, test_flow_control2;
// e2e/paho_test.go runs the suite itself) expects of the broker.

// TestServerKeepAlive: an MQTT 5 client asking for a keep alive above
// Config.MaxKeepAlive, or for none, is told the maximum as Server Keep
// Alive in its CONNACK [MQTT-3.2.2-21]; one asking for less is not told
// anything; an MQTT 3.1.1 client, which cannot be told, keeps its own.
func TestServerKeepAlive(t *testing.T) {
	b := startBroker(t, Config{})
	for _, tc := range []struct {
		name      string
		version   byte
		keepAlive int // rawOpts.keepAlive
		want      uint16
		announced bool
	}{
		{"above the maximum", 5, 120, 60, true},
		{"none", 5, -1, 60, true},
		{"the maximum", 5, 60, 0, false},
		{"below the maximum", 5, 30, 0, false},
		{"MQTT 3.1.1 above the maximum", 4, 120, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ack := dialRaw(t, b.Addr().String(), rawOpts{id: "ka", version: tc.version, keepAlive: tc.keepAlive})
			p := ack.Properties
			if p.ServerKeepAliveFlag != tc.announced || p.ServerKeepAlive != tc.want {
				t.Errorf("CONNACK Server Keep Alive = %d (sent %v), want %d (sent %v)",
					p.ServerKeepAlive, p.ServerKeepAliveFlag, tc.want, tc.announced)
			}
		})
	}
}

// TestServerKeepAliveEnforced: a client that asked for no keep alive and
// was given one is disconnected once it stays silent for 1.5 times that
// [MQTT-3.1.2-22] — without the cap it would stay connected forever.
func TestServerKeepAliveEnforced(t *testing.T) {
	b := startBroker(t, Config{MaxKeepAlive: time.Second})
	c, ack := dialRaw(t, b.Addr().String(), rawOpts{id: "silent", keepAlive: -1})
	if !ack.Properties.ServerKeepAliveFlag || ack.Properties.ServerKeepAlive != 1 {
		t.Fatalf("CONNACK Server Keep Alive = %d (sent %v), want 1", ack.Properties.ServerKeepAlive, ack.Properties.ServerKeepAliveFlag)
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(testTimeout))
	// mochi closes the connection without a DISCONNECT; whatever it sends
	// (nothing is expected) is read past until the end of the stream.
	if _, err := io.Copy(io.Discard, c.r); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("connection still open after %s of silence with a keep alive of 1s", testTimeout)
		}
		var ne *net.OpError
		if !errors.As(err, &ne) { // a reset also ends it
			t.Fatalf("reading until the broker closes: %v", err)
		}
	}
}

func TestMaxKeepAliveValidation(t *testing.T) {
	for _, d := range []time.Duration{-time.Second, 1500 * time.Millisecond, MaxKeepAliveLimit + time.Second} {
		if _, err := New(Config{Address: "127.0.0.1:0", MaxKeepAlive: d}); err == nil {
			t.Errorf("New with MaxKeepAlive %s succeeded, want an error", d)
		}
	}
}

// TestServerTopicAlias: a client that allows topic aliases (Topic Alias
// Maximum in CONNECT) gets the first messages of a topic with the topic
// name and an alias, the later ones with the alias alone; no alias above
// its maximum [MQTT-3.1.2-26]; aliases end with the connection
// [MQTT-3.3.2-7]; a client that allows none gets none [MQTT-3.1.2-27].
func TestServerTopicAlias(t *testing.T) {
	b := startBroker(t, Config{})
	addr := b.Addr().String()
	type got struct {
		topic string
		alias uint16 // 0: none
	}
	receive := func(c *rawClient) got {
		t.Helper()
		pk := c.expect(packets.Publish)
		if !pk.Properties.TopicAliasFlag {
			return got{pk.TopicName, 0}
		}
		return got{pk.TopicName, pk.Properties.TopicAlias}
	}
	check := func(c *rawClient, publish []string, want []got) {
		t.Helper()
		for _, topic := range publish {
			c.publish(topic, 0, false, "x") // QoS 0: delivered in order, nothing to acknowledge
		}
		for i, w := range want {
			if g := receive(c); g != w {
				t.Errorf("message %d (%s): topic %q alias %d, want topic %q alias %d", i, publish[i], g.topic, g.alias, w.topic, w.alias)
			}
		}
	}
	subscribeRaw := func(c *rawClient, filter string) {
		t.Helper()
		c.send(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Subscribe},
			PacketID:    1,
			Filters:     packets.Subscriptions{{Filter: filter, Qos: 2}},
		})
		if ack := c.expect(packets.Suback); len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] != 2 {
			t.Fatalf("SUBACK %v, want granted QoS 2", ack.ReasonCodes)
		}
	}

	c, _ := dialRaw(t, addr, rawOpts{id: "alias", topicAliasMax: 1})
	subscribeRaw(c, "alias/#")
	check(c, []string{"alias/a", "alias/a", "alias/b", "alias/a", "alias/b"}, []got{
		{"alias/a", 1}, {"", 1}, {"alias/b", 0}, {"", 1}, {"alias/b", 0},
	})
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})

	c, _ = dialRaw(t, addr, rawOpts{id: "alias", topicAliasMax: 2})
	subscribeRaw(c, "alias/#")
	check(c, []string{"alias/b", "alias/a", "alias/b", "alias/a"}, []got{
		{"alias/b", 1}, {"alias/a", 2}, {"", 1}, {"", 2},
	})
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})

	c, _ = dialRaw(t, addr, rawOpts{id: "alias"})
	subscribeRaw(c, "alias/#")
	check(c, []string{"alias/a", "alias/a"}, []got{{"alias/a", 0}, {"alias/a", 0}})
}

// TestReceiveMaximumExceeded: a client that sends more QoS 2 messages than
// the broker's Receive Maximum without completing them is disconnected
// with reason code 0x93 (MQTT 5 section 4.9), and it gets to read that
// reason behind the PUBRECs it was sent, while it still answers them with
// PUBREL: the broker reads what arrives after its DISCONNECT instead of
// resetting the connection (linger.go).
func TestReceiveMaximumExceeded(t *testing.T) {
	b := startBroker(t, Config{})
	c, ack := dialRaw(t, b.Addr().String(), rawOpts{id: "flood"})
	recvMax := int(ack.Properties.ReceiveMaximum)
	if recvMax == 0 {
		t.Fatal("CONNACK carries no Receive Maximum")
	}
	for i := 1; i <= recvMax+1; i++ {
		c.send(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2},
			TopicName:   "flood",
			PacketID:    uint16(i),
			Payload:     []byte("x"),
		})
	}
	recs := 0
	for {
		pk := c.recv()
		if pk.FixedHeader.Type == packets.Disconnect {
			if pk.ReasonCode != packets.ErrReceiveMaximum.Code {
				t.Fatalf("DISCONNECT reason %#x, want %#x", pk.ReasonCode, packets.ErrReceiveMaximum.Code)
			}
			break
		}
		if pk.FixedHeader.Type != packets.Pubrec {
			t.Fatalf("got %s, want PUBREC or DISCONNECT", packets.PacketNames[pk.FixedHeader.Type])
		}
		recs++
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: pk.PacketID})
	}
	if recs != recvMax {
		t.Errorf("got %d PUBRECs before the DISCONNECT, want %d (the Receive Maximum)", recs, recvMax)
	}
	// Then the end of the stream: the broker sends nothing after its
	// DISCONNECT [MQTT-3.14.4-1] and closes [MQTT-3.14.4-2].
	_ = c.conn.SetReadDeadline(time.Now().Add(testTimeout))
	if n, err := c.r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after the DISCONNECT: read %d bytes, %v; want the end of the stream", n, err)
	}
}

package broker

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// rawClient is an MQTT client over mochi's packet codec, for what paho
// hides or refuses: the reason code of a PUBREC (paho answers a PUBREC
// itself and returns only the PUBCOMP), MQTT 3.1.1, and topics paho would
// not send. Every read has a deadline.
type rawClient struct {
	t       testing.TB
	conn    net.Conn
	r       *bufio.Reader
	version byte
	nextID  uint16
}

// rawOpts describes a raw client's connection.
type rawOpts struct {
	id            string
	version       byte // 5 or 4 (MQTT 3.1.1); 0 means 5
	noProblemInfo bool // send Request Problem Information 0, as paho.golang does by default
	expiry        uint32
	keepAlive     int    // seconds; 0 means 30, -1 sends 0 (no keep alive)
	topicAliasMax uint16 // Topic Alias Maximum; 0 is not sent (none allowed)
}

// dialRaw connects a raw client and returns it with the CONNACK.
func dialRaw(t testing.TB, addr string, o rawOpts) (*rawClient, packets.Packet) {
	t.Helper()
	if o.version == 0 {
		o.version = 5
	}
	conn, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), version: o.version}
	switch o.keepAlive {
	case 0:
		o.keepAlive = 30
	case -1:
		o.keepAlive = 0
	}
	cp := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			Clean:            o.expiry == 0,
			Keepalive:        uint16(o.keepAlive),
			ClientIdentifier: o.id,
		},
	}
	if o.noProblemInfo {
		cp.Properties.RequestProblemInfo, cp.Properties.RequestProblemInfoFlag = 0, true
	}
	if o.topicAliasMax > 0 {
		cp.Properties.TopicAliasMaximum = o.topicAliasMax
	}
	if o.expiry > 0 {
		cp.Properties.SessionExpiryInterval, cp.Properties.SessionExpiryIntervalFlag = o.expiry, true
	}
	c.send(cp)
	ack := c.recv()
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("connecting %s: got %s reason %#x", o.id, packets.PacketNames[ack.FixedHeader.Type], ack.ReasonCode)
	}
	return c, ack
}

// send writes pk.
func (c *rawClient) send(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = c.version
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Pubrel:
		pk.FixedHeader.Qos = 1 // the flags of PUBREL are 0010
		err = pk.PubrelEncode(&buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1 // the flags of SUBSCRIBE are 0010
		err = pk.SubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		err = fmt.Errorf("rawClient cannot send %s", packets.PacketNames[pk.FixedHeader.Type])
	}
	if err == nil {
		_ = c.conn.SetWriteDeadline(time.Now().Add(testTimeout))
		_, err = c.conn.Write(buf.Bytes())
	}
	if err != nil {
		c.t.Fatalf("sending %s: %v", packets.PacketNames[pk.FixedHeader.Type], err)
	}
}

// recv reads the next packet.
func (c *rawClient) recv() packets.Packet {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(testTimeout))
	hb, err := c.r.ReadByte()
	if err != nil {
		c.t.Fatalf("reading a packet: %v", err)
	}
	pk := packets.Packet{ProtocolVersion: c.version}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		c.t.Fatalf("decoding fixed header %#x: %v", hb, err)
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		c.t.Fatalf("reading remaining length: %v", err)
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		c.t.Fatalf("reading packet body: %v", err)
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Pingresp:
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	default:
		err = fmt.Errorf("unexpected %s", packets.PacketNames[pk.FixedHeader.Type])
	}
	if err != nil {
		c.t.Fatalf("decoding %s: %v", packets.PacketNames[pk.FixedHeader.Type], err)
	}
	return pk
}

// expect reads the next packet and fails the test unless it has type typ.
func (c *rawClient) expect(typ byte) packets.Packet {
	c.t.Helper()
	pk := c.recv()
	if pk.FixedHeader.Type != typ {
		c.t.Fatalf("got %s (reason %#x), want %s", packets.PacketNames[pk.FixedHeader.Type], pk.ReasonCode, packets.PacketNames[typ])
	}
	return pk
}

// publish sends a PUBLISH and returns its acknowledgement: the PUBACK at
// QoS 1, the PUBREC at QoS 2 (the caller completes the flow, see release),
// nothing at QoS 0.
func (c *rawClient) publish(topic string, qos byte, retain bool, payload string) packets.Packet {
	c.t.Helper()
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName:   topic,
		Payload:     []byte(payload),
	}
	if qos > 0 {
		c.nextID++
		pk.PacketID = c.nextID
	}
	c.send(pk)
	switch qos {
	case 1:
		return c.expect(packets.Puback)
	case 2:
		return c.expect(packets.Pubrec)
	}
	return packets.Packet{}
}

// release completes a QoS 2 flow after a PUBREC and returns the PUBCOMP.
func (c *rawClient) release(id uint16) packets.Packet {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: id})
	return c.expect(packets.Pubcomp)
}

// publish2 publishes at QoS 2, completes the flow, and returns the reason
// codes of the PUBREC and the PUBCOMP.
func (c *rawClient) publish2(topic, payload string) (pubrec, pubcomp byte) {
	c.t.Helper()
	rec := c.publish(topic, 2, false, payload)
	if rec.ReasonCode >= 0x80 {
		return rec.ReasonCode, 0
	}
	return rec.ReasonCode, c.release(rec.PacketID).ReasonCode
}

// ping sends PINGREQ and expects the PINGRESP as the next packet: whatever
// the broker wrote before it, it would have been read first.
func (c *rawClient) ping() {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	c.expect(packets.Pingresp)
}

package broker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
)

// fuzzDeadline bounds one iteration of FuzzBrokerPackets: broker start, the
// fuzzed connection, the check, the stop. An iteration takes milliseconds;
// one that takes this long is stuck.
const fuzzDeadline = 45 * time.Second

// FuzzBrokerPackets sends a client's arbitrary sequence of PUBLISH, PUBREL,
// PUBACK, PUBREC, PUBCOMP, SUBSCRIBE and reconnects (any packet ids, fixed
// header flags, properties and reason codes, DUP, QoS 0-3) to a real
// broker, in memory or with a data dir, while the broker sends the client
// what it subscribed to. Whatever the client does, the broker must not
// panic or hang (every iteration ends within fuzzDeadline, or the process
// crashes with every goroutine's stack) and must then serve a well-behaved
// client; with a data dir, also after a restart on what the fuzzed client
// left in the store.
//
// The input: byte 0 chooses the mode (bit 0: data dir) and the fuzzed
// client's receive maximum; then one operation per 8 bytes (fuzzOp).
func FuzzBrokerPackets(f *testing.F) {
	// Seeds: the well-formed flows, then the mistakes a client makes.
	op := func(kind, qos, flags byte, id uint16, topic, props, reason byte) []byte {
		b := []byte{kind, qos, flags, 0, 0, topic, props, reason}
		binary.BigEndian.PutUint16(b[3:], id)
		return b
	}
	seq := func(mode byte, ops ...[]byte) []byte { return append([]byte{mode}, bytes.Join(ops, nil)...) }
	const (
		pub, rel, ack, rec, comp, sub, reconnect, raw = 0, 1, 2, 3, 4, 5, 6, 7
	)
	for _, mode := range []byte{0x00, 0x01, 0x21} { // in memory, data dir, data dir with receive maximum 2
		f.Add(seq(mode, op(sub, 2, 0, 1, 0, 0, 0), op(pub, 1, 0, 1, 0, 0, 0), op(pub, 2, 0, 2, 0, 0, 0), op(rel, 0, 0, 2, 0, 0, 0)))
		// QoS 2 with the same id twice, DUP, PUBREL of an unknown id, a PUBREL before the PUBLISH.
		f.Add(seq(mode, op(rel, 0, 0, 7, 0, 0, 0), op(pub, 2, 0, 7, 1, 0, 0), op(pub, 2, 1, 7, 1, 0, 0), op(rel, 0, 0, 7, 0, 0, 0), op(rel, 0, 0, 7, 0, 0, 0), op(rel, 0, 0, 9, 0, 0, 0x92)))
		// Acknowledgements of deliveries with guessed ids, in every order, and an error reason.
		f.Add(seq(mode, op(sub, 2, 0, 1, 0, 0, 0), op(pub, 2, 0, 3, 0, 0, 0), op(rel, 0, 0, 3, 0, 0, 0), op(rec, 0, 0, 1, 0, 0, 0), op(comp, 0, 0, 1, 0, 0, 0), op(ack, 0, 0, 1, 0, 0, 0x80), op(rec, 0, 0, 2, 0, 0, 0x80), op(comp, 0, 0, 2, 0, 0, 0x92)))
		// A reconnect with messages in flight (redelivered with DUP), then duplicates.
		f.Add(seq(mode, op(sub, 1, 0, 1, 0, 0, 0), op(pub, 1, 0, 4, 0, 0, 0), op(pub, 2, 0, 5, 0, 0, 0), op(reconnect, 0, 0, 0, 0, 0, 0), op(pub, 2, 1, 5, 0, 0, 0), op(ack, 0, 0, 1, 0, 0, 0), op(rel, 0, 0, 5, 0, 0, 0)))
		// Packet id 0, QoS 3, a topic alias, properties a client must not send, a shared and a delayed topic, the queue.
		f.Add(seq(mode, op(pub, 1, 0, 0, 0, 0, 0), op(pub, 3, 0, 1, 0, 0, 0), op(pub, 1, 0, 2, 0, 0x02, 0), op(pub, 1, 0, 3, 2, 0x0c, 0), op(pub, 2, 0, 4, 3, 0xff, 0), op(pub, 1, 0, 5, 4, 0x10, 0)))
		// Fixed header flags a client must not set, a PUBREL with flags 0000, a retained publish and a subscription with every option.
		f.Add(seq(mode, op(raw, 0x0f, pub, 1, 0, 0, 0), op(raw, 0x00, rel, 1, 0, 0, 0), op(pub, 1, 2, 9, 5, 0, 0), op(sub, 2, 0x3c, 2, 5, 0, 0)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || len(data) > 1+8*256 {
			return
		}
		watchdog := time.AfterFunc(fuzzDeadline, func() {
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
			panic(fmt.Sprintf("FuzzBrokerPackets: an iteration did not end within %s (stacks above)", fuzzDeadline))
		})
		defer watchdog.Stop()

		mode, ops := data[0], data[1:]
		cfg := Config{Logger: zap.NewNop(), Queues: []Queue{{Group: "g", Filter: "q/#"}}}
		if mode&1 != 0 {
			cfg.DataDir, cfg.NoSync = t.TempDir(), true
		}
		b := startBroker(t, cfg)
		addr := b.Addr().String()
		fc := &fuzzClient{t: t, addr: addr, receiveMax: uint16(mode >> 4)}
		fc.connect(true)
		for len(ops) >= 8 {
			fc.do(ops[:8])
			ops = ops[8:]
		}
		fc.close()

		checkServes(t, addr)
		if cfg.DataDir != "" {
			// Restart on what the fuzzed client left in the store.
			b.stop()
			checkServes(t, startBroker(t, cfg).Addr().String())
		}
	})
}

// checkServes fails the test unless a well-behaved client can subscribe at
// addr and receive what another publishes at QoS 1 and 2.
func checkServes(t *testing.T, addr string) {
	t.Helper()
	got := make(chan string, 2)
	sub := mustDial(t, addr, clientOpts{id: "check-sub", clean: true, onPublish: func(_ *paho.Client, p *paho.Publish) {
		got <- string(p.Payload)
	}})
	subscribe(t, sub, "check/#")
	pub := mustDial(t, addr, clientOpts{id: "check-pub", clean: true})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, qos := range []byte{1, 2} {
		want := fmt.Sprintf("qos %d", qos)
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "check/x", QoS: qos, Payload: []byte(want)}); err != nil {
			t.Fatalf("publishing at QoS %d after the fuzzed client: %v", qos, err)
		}
		select {
		case p := <-got:
			if p != want {
				t.Fatalf("received %q, want %q", p, want)
			}
		case <-ctx.Done():
			t.Fatalf("the QoS %d message never arrived after the fuzzed client", qos)
		}
	}
	disconnect(pub)
	disconnect(sub)
}

// fuzzClient is the misbehaving client: it writes what the operations say
// and drains whatever the broker sends, never acknowledging on its own.
type fuzzClient struct {
	t          *testing.T
	addr       string
	receiveMax uint16
	conn       net.Conn
	drained    chan struct{} // closed when the broker closed the connection (or we did)
	connack    chan struct{} // closed at the CONNACK
	pong       chan struct{} // gets a value at each PINGRESP
	reconnects int
}

// fuzzTopics are the topics an operation picks from: a plain one the client
// subscribed to, one another subscription and the queue take, a shared
// subscription filter as a topic (invalid), a delayed one, one with a
// wildcard (invalid), an empty one (valid only with a topic alias).
var fuzzTopics = []string{"t/a", "q/x", "$share/g/t/a", "$delayed/1/t/b", "t/+", ""}

// connect opens a connection with a persistent session "fuzz" and waits
// for the CONNACK (or the broker closing the connection): operations sent
// before it would race the broker's own writes and be cut short.
func (fc *fuzzClient) connect(clean bool) {
	conn, err := net.DialTimeout("tcp", fc.addr, testTimeout)
	if err != nil {
		fc.t.Fatalf("dialing %s: %v", fc.addr, err)
	}
	fc.conn = conn
	fc.drained, fc.connack, fc.pong = make(chan struct{}), make(chan struct{}), make(chan struct{}, 1)
	go fc.drain(conn, fc.drained, fc.connack, fc.pong)
	cp := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: clean, Keepalive: 30, ClientIdentifier: "fuzz"},
		Properties:  packets.Properties{SessionExpiryInterval: 60, SessionExpiryIntervalFlag: true, ReceiveMaximum: fc.receiveMax},
	}
	fc.write(cp, 0)
	select {
	case <-fc.connack:
	case <-fc.drained:
	}
}

// drain reads the broker's packets until the connection ends, noting the
// CONNACK and each PINGRESP; the rest is discarded unanswered.
func (fc *fuzzClient) drain(c net.Conn, done, connack chan struct{}, pong chan struct{}) {
	defer close(done)
	r := bufio.NewReader(c)
	for first := true; ; first = false {
		hb, err := r.ReadByte()
		if err != nil {
			return
		}
		n, _, err := packets.DecodeLength(r)
		if err != nil {
			return
		}
		if _, err := r.Discard(n); err != nil {
			return
		}
		switch hb >> 4 {
		case packets.Connack:
			if first {
				close(connack)
			}
		case packets.Pingresp:
			select {
			case pong <- struct{}{}:
			default:
			}
		}
	}
}

// close waits until the broker has handled everything sent (a PINGREQ
// answered, or the connection closed by the broker), then ends the
// connection and waits for the drain to stop.
func (fc *fuzzClient) close() {
	if fc.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}}, 0) {
		select {
		case <-fc.pong:
		case <-fc.drained:
		}
	}
	_ = fc.conn.Close()
	<-fc.drained
}

// write encodes pk (MQTT 5) and sends it with the fixed header's flags
// XORed with flip; it reports whether the connection took it.
func (fc *fuzzClient) write(pk packets.Packet, flip byte) bool {
	pk.ProtocolVersion = 5
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(&buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(&buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	}
	if err != nil || buf.Len() == 0 {
		return true // nothing the codec can write; not the broker's doing
	}
	out := buf.Bytes()
	out[0] ^= flip & 0x0f
	_ = fc.conn.SetWriteDeadline(time.Now().Add(testTimeout))
	_, err = fc.conn.Write(out)
	return err == nil
}

// do performs one operation of 8 bytes: kind, qos, flags, packet id (2),
// topic, properties, reason code. A write the broker refused (it closed the
// connection) reconnects, a few times per iteration.
func (fc *fuzzClient) do(op []byte) {
	kind, qos, flags, id, topic, props, reason := op[0]%8, op[1], op[2], binary.BigEndian.Uint16(op[3:]), fuzzTopics[int(op[5])%len(fuzzTopics)], op[6], op[7]
	var pk packets.Packet
	var flip byte
	switch kind {
	case 0, 7: // PUBLISH; 7 sends any packet type with its flags flipped
		typ := byte(packets.Publish)
		if kind == 7 {
			typ, flip = []byte{packets.Publish, packets.Puback, packets.Pubrec, packets.Pubrel, packets.Pubcomp, packets.Subscribe}[int(flags)%6], qos
			qos = 1
		}
		pk = packets.Packet{
			FixedHeader: packets.FixedHeader{Type: typ, Qos: qos & 3, Dup: flags&1 != 0, Retain: flags&2 != 0},
			TopicName:   topic,
			PacketID:    id,
			Payload:     []byte{reason, props},
			ReasonCode:  reason,
		}
		if kind == 0 && qos > 3 {
			flip = qos >> 4 // any fixed header flags
		}
		if props&0x01 != 0 {
			pk.Properties.MessageExpiryInterval = uint32(reason % 3)
		}
		if props&0x02 != 0 {
			pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = uint16(reason%4), true
		}
		if props&0x04 != 0 {
			pk.Properties.PayloadFormat, pk.Properties.PayloadFormatFlag = reason%3, true
			pk.Payload = []byte{0xff, 0xfe} // not UTF-8
		}
		if props&0x08 != 0 {
			pk.Properties.ResponseTopic, pk.Properties.CorrelationData = topic, []byte{reason}
		}
		if props&0x10 != 0 {
			pk.Properties.SubscriptionIdentifier = []int{int(reason)} // a client must not send it
		}
		if props&0x20 != 0 {
			pk.Properties.User = []packets.UserProperty{{Key: "k", Val: string([]byte{reason})}}
		}
		if props&0x40 != 0 {
			pk.Properties.ContentType = topic
		}
	case 1:
		pk = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: id, ReasonCode: reason}
	case 2:
		pk = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id, ReasonCode: reason}
	case 3:
		pk = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: id, ReasonCode: reason}
	case 4:
		pk = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: id, ReasonCode: reason}
	case 5:
		filter := []string{"t/#", "$share/g/t/#", "q/#", "$share/g/q/#", "#", "t/a"}[int(op[5])%6]
		pk = packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
			PacketID:    id,
			Filters: packets.Subscriptions{{
				Filter: filter, Qos: qos % 3, NoLocal: flags&0x04 != 0, RetainAsPublished: flags&0x08 != 0,
				RetainHandling: (flags >> 4) % 3, Identifier: int(props),
			}},
		}
		if pk.Filters[0].Identifier > 0 {
			pk.Properties.SubscriptionIdentifier = []int{int(props)}
		}
	case 6:
		fc.reconnect(flags&1 != 0)
		return
	}
	if !fc.write(pk, flip) {
		fc.reconnect(false)
	}
}

// reconnect closes the connection and opens another on the same session
// (or a new one if clean), a bounded number of times per iteration.
func (fc *fuzzClient) reconnect(clean bool) {
	if fc.reconnects >= 8 {
		return
	}
	fc.reconnects++
	fc.close()
	fc.connect(clean)
}

package broker

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lpsdev/lps/internal/testutil"
)

var legacyQueue = Queue{Group: "legacy_proxy", Filter: "+/message"}

func TestParseQueue(t *testing.T) {
	tests := []struct {
		in      string
		want    Queue
		wantErr string
	}{
		{in: "legacy_proxy:+/message", want: legacyQueue},
		{in: "dead_letters:lps/dead-letter", want: Queue{"dead_letters", "lps/dead-letter"}},
		{in: "g:#", want: Queue{"g", "#"}},
		{in: "g:a:b/+", want: Queue{"g", "a:b/+"}}, // the group ends at the first colon
		{in: "legacy_proxy", wantErr: "not GROUP:FILTER"},
		{in: "", wantErr: "not GROUP:FILTER"},
		{in: ":+/message", wantErr: "share group"},
		{in: "a/b:+/message", wantErr: "share group"},
		{in: "a+:x", wantErr: "share group"},
		{in: "a#:x", wantErr: "share group"},
		{in: "g:", wantErr: "is empty"},
		{in: "g:a/#/b", wantErr: "# must be the whole last level"},
		{in: "g:a+/b", wantErr: "+ must be a whole level"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			q, err := ParseQueue(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseQueue(%q) = %v, %v; want an error containing %q", tt.in, q, err, tt.wantErr)
				}
				return
			}
			if err != nil || q != tt.want {
				t.Fatalf("ParseQueue(%q) = %v, %v; want %v", tt.in, q, err, tt.want)
			}
			if q.String() != tt.in {
				t.Errorf("String() = %q, want %q", q.String(), tt.in)
			}
		})
	}
}

func TestNewValidatesQueues(t *testing.T) {
	for name, qs := range map[string][]Queue{
		"bad group":      {{Group: "a/b", Filter: "x"}},
		"bad filter":     {{Group: "g", Filter: "a/#/b"}},
		"declared twice": {legacyQueue, legacyQueue},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := New(Config{Address: "127.0.0.1:0", Queues: qs}); err == nil || !strings.HasPrefix(err.Error(), "validating config: queue") {
				t.Errorf("New = %v, want a validation error about the queue", err)
			}
		})
	}
}

// TestDeclaredQueueKeepsMessagesBeforeAnySubscriber: QoS 2 messages
// published to a declared queue's topics before anyone ever subscribed are
// accepted (PUBREC 0x00), kept across a graceful restart or a kill of the
// broker, and delivered once each to the members that subscribe afterwards,
// in order per member.
func TestDeclaredQueueKeepsMessagesBeforeAnySubscriber(t *testing.T) {
	const n = 100
	for _, restart := range []string{"none", "graceful", "killed"} {
		t.Run(restart, func(t *testing.T) {
			dir := t.TempDir()
			cfg := Config{DataDir: dir, Queues: []Queue{legacyQueue}}
			var addr string
			var b *runningBroker
			stop := func() {}
			switch restart {
			case "killed":
				a, cmd := startHelperBroker(t, dir, legacyQueue)
				addr = a
				stop = func() {
					if err := cmd.Process.Kill(); err != nil { // SIGKILL: no shutdown code runs
						t.Fatal(err)
					}
					_ = cmd.Wait()
				}
			default:
				b = startBroker(t, cfg)
				addr = b.Addr().String()
				if restart == "graceful" {
					stop = b.stop
				}
			}

			pub, _ := dialRaw(t, addr, rawOpts{id: "proxy1-1"})
			want := payloads("proxy1-1", n)
			for _, p := range want {
				if rec, comp := pub.publish2("proxy1-1/message", p); rec != 0 || comp != 0 {
					t.Fatalf("publishing %s: PUBREC %#x, PUBCOMP %#x; want 0 and 0", p, rec, comp)
				}
			}
			stop()
			if restart != "none" {
				b = startBroker(t, cfg)
			}
			if got, st := b.QueueDepth(), b.Stats(); got != n || st.Queues[legacyQueue.String()] != n {
				t.Fatalf("QueueDepth %d, Stats.Queues %v; want %d in %s", got, st.Queues, n, legacyQueue)
			}

			// The members acknowledge nothing until both have subscribed:
			// else the first could work through the whole queue before the
			// second's subscription is stored, and round robin would not be
			// seen.
			cols := []*collector{newCollector(), newCollector()}
			gate := make(chan struct{})
			for i, col := range cols {
				o := consumer(fmt.Sprintf("legacy-proxy-2-%d", i+1), 10, col, 0)
				// paho acknowledges a message when its handler returns; the
				// handler returns once the gate opens. It holds only paho's
				// handler goroutine: the reader goes on (at most 10 messages
				// wait, the receive maximum, well within paho's buffer).
				done := make(chan struct{})
				t.Cleanup(func() { close(done) })
				o.onPublish = func(c *paho.Client, p *paho.Publish) {
					col.add(string(p.Payload))
					select {
					case <-gate:
					case <-done:
					}
				}
				c := mustDial(t, b.Addr().String(), o)
				subscribe(t, c, sharedFilter)
			}
			close(gate)
			total := func() int { return cols[0].distinct() + cols[1].distinct() }
			testutil.Eventually(t, testTimeout, func() error {
				if !(total() == n && b.QueueDepth() == 0) {
					return fmt.Errorf("waiting for members to get all %d messages (have %d, depth %d)", n, total(), b.QueueDepth())
				}
				return nil
			})

			seen := map[string]bool{}
			for i, col := range cols {
				if d := col.duplicates(); d != 0 {
					t.Errorf("member %d got %d duplicates", i+1, d)
				}
				last := -1
				for _, p := range col.arrivals() {
					if seen[p] {
						t.Errorf("%s delivered to both members", p)
					}
					seen[p] = true
					k, _ := strconv.Atoi(strings.TrimPrefix(p, "proxy1-1-"))
					if k <= last {
						t.Errorf("member %d got %s after #%d: out of order", i+1, p, last)
					}
					last = k
				}
				if col.distinct() == 0 {
					t.Errorf("member %d got nothing; want round robin over both", i+1)
				}
			}
			if st := b.Stats(); st.Queues[legacyQueue.String()] != 0 {
				t.Errorf("Stats.Queues after the drain = %v, want 0 waiting", st.Queues)
			}
		})
	}
}

// TestDeclaredQueueGroupIsKept: a declared queue outlives its last member
// (forgetGroup keeps it) and keeps taking messages; a QoS 0 message is not
// queued for it while no member is connected; a topic starting with $ does
// not match a filter starting with a wildcard [MQTT-4.7.2-1].
func TestDeclaredQueueGroupIsKept(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := startBroker(t, Config{Queues: []Queue{legacyQueue}, Registerer: reg})
	col := newCollector()
	opts := consumer("member", 10, col, 0)
	opts.expiry = 0
	opts.clean = true
	c := mustDial(t, b.Addr().String(), opts)
	subscribe(t, c, sharedFilter)
	disconnect(c) // a clean session: the membership ends with it
	testutil.Eventually(t, testTimeout, func() error {
		if b.Stats().Sessions != 0 {
			return errors.New("waiting for member's session gone")
		}
		return nil
	})

	pub, _ := dialRaw(t, b.Addr().String(), rawOpts{id: "pub"})
	if ack := pub.publish("a/message", 1, false, "kept"); ack.ReasonCode != 0 {
		t.Errorf("QoS 1 to the queue: PUBACK %#x, want 0", ack.ReasonCode)
	}
	pub.publish("a/message", 0, false, "qos0")
	if ack := pub.publish("$x/message", 1, false, "dollar"); ack.ReasonCode != 0x10 {
		t.Errorf("QoS 1 to $x/message: PUBACK %#x, want 0x10 (+/message does not match a $ topic)", ack.ReasonCode)
	}
	pub.ping()
	if st := b.Stats(); st.Queues[legacyQueue.String()] != 1 || b.QueueDepth() != 1 {
		t.Fatalf("stats %+v, depth %d; want 1 message in %s", st, b.QueueDepth(), legacyQueue)
	}
	if got := testutil.Metric(t, reg, "lps_broker_queue_messages", nil); got != 1 {
		t.Errorf("lps_broker_queue_messages = %v, want 1", got)
	}
	if got := promtest.ToFloat64(b.met.dropped.WithLabelValues("qos0_offline")); got != 1 {
		t.Errorf("dropped{qos0_offline} = %v, want 1", got)
	}
}

// TestNoSubscriberRefused: a QoS 1/2 publish that matches no subscription
// and no declared queue is answered 0x10 and not kept; the QoS 2 handshake
// completes; QoS 0 is dropped silently; MQTT 3.1.1 publishers get their
// usual acknowledgement. A retained one is still retained.
func TestNoSubscriberRefused(t *testing.T) {
	tests := []struct {
		name       string
		opts       rawOpts
		qos        byte
		wantAck    byte // reason code of the PUBACK or PUBREC
		wantRefuse bool // counted in lps_broker_publishes_refused_total{reason="no_subscribers"}
	}{
		{name: "v5 qos 1", opts: rawOpts{id: "p"}, qos: 1, wantAck: 0x10, wantRefuse: true},
		{name: "v5 qos 2", opts: rawOpts{id: "p"}, qos: 2, wantAck: 0x10, wantRefuse: true},
		{name: "v5 qos 1, no problem information", opts: rawOpts{id: "p", noProblemInfo: true}, qos: 1, wantAck: 0x10, wantRefuse: true},
		{name: "v5 qos 2, no problem information", opts: rawOpts{id: "p", noProblemInfo: true}, qos: 2, wantAck: 0x10, wantRefuse: true},
		{name: "v5 qos 0", opts: rawOpts{id: "p"}, qos: 0},
		{name: "v3.1.1 qos 1", opts: rawOpts{id: "p", version: 4}, qos: 1},
		{name: "v3.1.1 qos 2", opts: rawOpts{id: "p", version: 4}, qos: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{DataDir: t.TempDir()}
			b := startBroker(t, cfg)
			pub, _ := dialRaw(t, b.Addr().String(), tt.opts)
			for i := range 3 { // several, so packet ids and receive quota are exercised
				ack := pub.publish("nobody/listens", tt.qos, false, fmt.Sprintf("lost-%d", i))
				if ack.ReasonCode != tt.wantAck {
					t.Fatalf("publish %d: %s reason %#x, want %#x", i, packets.PacketNames[ack.FixedHeader.Type], ack.ReasonCode, tt.wantAck)
				}
				if tt.qos == 2 {
					if comp := pub.release(ack.PacketID); comp.ReasonCode != 0 {
						t.Fatalf("publish %d: PUBCOMP reason %#x, want 0", i, comp.ReasonCode)
					}
				}
			}
			pub.ping() // nothing else came back
			refused := promtest.ToFloat64(b.met.refused.WithLabelValues("no_subscribers"))
			if tt.wantRefuse && refused != 3 || !tt.wantRefuse && refused != 0 {
				t.Errorf("refused{no_subscribers} = %v, want %v", refused, map[bool]int{true: 3}[tt.wantRefuse])
			}

			// A subscriber that comes later gets nothing of it, even after a
			// restart: nothing was stored.
			b.stop()
			b = startBroker(t, cfg)
			if d := b.QueueDepth(); d != 0 {
				t.Fatalf("QueueDepth after restart = %d, want 0", d)
			}
			got := newCollector()
			sub := mustDial(t, b.Addr().String(), clientOpts{id: "late", clean: true,
				onPublish: func(_ *paho.Client, p *paho.Publish) { got.add(string(p.Payload)) }})
			subscribe(t, sub, "nobody/#")
			pub2, _ := dialRaw(t, b.Addr().String(), rawOpts{id: "p2"})
			if rec, comp := pub2.publish2("nobody/listens", "marker"); rec != 0 || comp != 0 {
				t.Fatalf("marker: PUBREC %#x PUBCOMP %#x, want 0 0", rec, comp)
			}
			testutil.Eventually(t, testTimeout, func() error {
				if got.distinct() != 1 {
					return errors.New("waiting for the marker")
				}
				return nil
			})
			if a := got.arrivals(); a[0] != "marker" {
				t.Errorf("late subscriber got %v, want only the marker", a)
			}
		})
	}
}

// TestRetainedWithoutSubscriberIsRetained: answered 0x10, yet retained.
func TestRetainedWithoutSubscriberIsRetained(t *testing.T) {
	b := startBroker(t, Config{})
	pub, _ := dialRaw(t, b.Addr().String(), rawOpts{id: "p"})
	if ack := pub.publish("status/x", 1, true, "up"); ack.ReasonCode != 0x10 {
		t.Errorf("PUBACK %#x, want 0x10", ack.ReasonCode)
	}
	got := newCollector()
	sub := mustDial(t, b.Addr().String(), clientOpts{id: "s", clean: true,
		onPublish: func(_ *paho.Client, p *paho.Publish) { got.add(fmt.Sprintf("%s retain=%t", p.Payload, p.Retain)) }})
	subscribe(t, sub, "status/#")
	testutil.Eventually(t, testTimeout, func() error {
		if got.distinct() != 1 {
			return errors.New("waiting for the retained message")
		}
		return nil
	})
	if a := got.arrivals(); a[0] != "up retain=true" {
		t.Errorf("got %v", a)
	}
}

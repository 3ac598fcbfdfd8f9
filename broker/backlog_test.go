package broker

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lpsdev/lps/internal/testutil"
)

// groupState returns the in-memory window length and the spilled count of a
// group queue.
func groupState(b *runningBroker, filter string) (window, spilled int) {
	b.disp.mu.Lock()
	defer b.disp.mu.Unlock()
	g := b.disp.groups[filter]
	if g == nil {
		return 0, 0
	}
	return g.queue.len(), g.spilled
}

// publishQueued publishes n QoS 2 messages to the legacy queue, with no
// consumer, and returns their payloads.
func publishQueued(t *testing.T, addr string, n int) []string {
	t.Helper()
	pub, _ := dialRaw(t, addr, rawOpts{id: "proxy1-1"})
	want := payloads("proxy1-1", n)
	for _, p := range want {
		if rec, comp := pub.publish2("proxy1-1/message", p); rec != 0 || comp != 0 {
			t.Fatalf("publishing %s: PUBREC %#x, PUBCOMP %#x; want 0 and 0", p, rec, comp)
		}
	}
	return want
}

func payloadIndex(p string) int {
	k, _ := strconv.Atoi(p[strings.LastIndexByte(p, '-')+1:])
	return k
}

// TestGroupWindowRefillsFromStore: with a data dir, a group queue keeps a
// window of its backlog in memory and the rest on disk; a restart reads a
// window, not the backlog; a consumer gets every message once, in order, as
// the window refills from the data dir.
func TestGroupWindowRefillsFromStore(t *testing.T) {
	const n, window = 300, 8
	cfg := Config{DataDir: t.TempDir(), Queues: []Queue{legacyQueue}, window: window}
	b := startBroker(t, cfg)
	want := publishQueued(t, b.Addr().String(), n)
	if w, s := groupState(b, sharedFilter); w != window || s != n-window {
		t.Fatalf("before restart: window %d, spilled %d; want %d and %d", w, s, window, n-window)
	}
	b.stop()

	b = startBroker(t, cfg)
	if w, s := groupState(b, sharedFilter); w != window || s != n-window {
		t.Fatalf("after restart: window %d, spilled %d; want %d and %d", w, s, window, n-window)
	}
	if got := b.Stats().Queues[legacyQueue.String()]; got != n {
		t.Fatalf("Stats.Queues after restart = %d, want %d", got, n)
	}

	col := newCollector()
	c := mustDial(t, b.Addr().String(), consumer("legacy-proxy-2-1", 3, col, 0))
	subscribe(t, c, sharedFilter)
	testutil.Eventually(t, testTimeout, func() error {
		if col.distinct() != n || b.QueueDepth() != 0 {
			return fmt.Errorf("waiting for the consumer to get all %d (has %d, depth %d)", n, col.distinct(), b.QueueDepth())
		}
		return nil
	})
	if d := col.duplicates(); d != 0 {
		t.Errorf("%d duplicates", d)
	}
	if got := col.arrivals(); !slices.Equal(got, want) {
		t.Errorf("arrivals out of order or incomplete: first %v", got[:min(20, len(got))])
	}
	if w, s := groupState(b, sharedFilter); w != 0 || s != 0 {
		t.Errorf("after the drain: window %d, spilled %d; want 0 and 0", w, s)
	}
	disconnect(c)
	b.stop()

	// Nothing of the backlog is left in the data dir either.
	b = startBroker(t, cfg)
	if d := b.QueueDepth(); d != 0 {
		t.Errorf("QueueDepth after a second restart = %d, want 0", d)
	}
}

// TestGroupWindowMembersJoinAndLeave: a backlog larger than the window is
// shared by members that come and go; one disconnects with messages it never
// acknowledged, which go back to the group and reach another member. Every
// message arrives; none twice at the members that acknowledge; each member
// gets its messages in order, but for those returned by the one that left.
func TestGroupWindowMembersJoinAndLeave(t *testing.T) {
	const n, window = 400, 16
	cfg := Config{DataDir: t.TempDir(), Queues: []Queue{legacyQueue}, window: window}
	b := startBroker(t, cfg)
	want := publishQueued(t, b.Addr().String(), n)

	// A takes its receive maximum and never acknowledges it.
	held := newCollector()
	a := mustDial(t, b.Addr().String(), clientOpts{
		id: "legacy-proxy-2-a", expiry: 3600, receiveMax: 4, manualAck: true,
		onPublish: func(_ *paho.Client, p *paho.Publish) { held.add(string(p.Payload)) },
	})
	subscribe(t, a, sharedFilter)
	testutil.Eventually(t, testTimeout, func() error {
		if held.distinct() != 4 {
			return fmt.Errorf("waiting for A to hold 4 messages (has %d)", held.distinct())
		}
		return nil
	})

	cols := []*collector{newCollector(), newCollector()}
	var members []*paho.Client
	for i, col := range cols {
		c := mustDial(t, b.Addr().String(), consumer(fmt.Sprintf("legacy-proxy-2-%d", i+1), 3, col, 0))
		subscribe(t, c, sharedFilter)
		members = append(members, c)
	}
	disconnect(a) // its four go back to the group

	total := func() int { return cols[0].distinct() + cols[1].distinct() }
	testutil.Eventually(t, testTimeout, func() error {
		if total() != n || b.QueueDepth() != 0 {
			return fmt.Errorf("waiting for the members to get all %d (have %d, depth %d)", n, total(), b.QueueDepth())
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
			if held.count[p] > 0 {
				continue // returned by A: may come after later ones
			}
			if k := payloadIndex(p); k <= last {
				t.Errorf("member %d got %s after #%d: out of order", i+1, p, last)
			} else {
				last = k
			}
		}
	}
	for _, p := range want {
		if !seen[p] {
			t.Errorf("%s never delivered", p)
		}
	}
	for _, c := range members {
		disconnect(c)
	}
}

// TestMaxStoreBytes: once the data dir's file has Config.MaxStoreBytes in
// use, a QoS 1 or 2 publish is refused at once with 0x97 (counted as
// store_full) and nothing of it is kept; once consumers have drained the
// queue, publishes are accepted again.
func TestMaxStoreBytes(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := startBroker(t, Config{DataDir: t.TempDir(), Queues: []Queue{legacyQueue}, MaxStoreBytes: 256 << 10, Registerer: reg})
	pub, _ := dialRaw(t, b.Addr().String(), rawOpts{id: "proxy1-1"})
	body := strings.Repeat("x", 2000)
	accepted := 0
	for ; ; accepted++ {
		if accepted == 1000 {
			t.Fatalf("1,000 publishes of 2 kB accepted with MaxStoreBytes 256 KiB")
		}
		ack := pub.publish("proxy1-1/message", 1, false, fmt.Sprintf("%04d%s", accepted, body))
		if ack.ReasonCode == packets.ErrQuotaExceeded.Code {
			break
		}
		if ack.ReasonCode != 0 {
			t.Fatalf("publish %d: reason code %#x, want 0 or 0x97", accepted, ack.ReasonCode)
		}
	}
	if accepted == 0 {
		t.Fatal("the first publish was refused: the empty data dir is over the bound")
	}
	if rec := pub.publish("proxy1-1/message", 2, false, "qos2"); rec.ReasonCode != packets.ErrQuotaExceeded.Code {
		t.Errorf("QoS 2 publish with the data dir full: PUBREC %#x, want 0x97", rec.ReasonCode)
	}
	if n := promtest.ToFloat64(b.met.refused.WithLabelValues("store_full")); n != 2 {
		t.Errorf("refused store_full = %v, want 2", n)
	}
	if used := promtest.ToFloat64(b.met.storeUsedBytes); used < 256<<10 {
		t.Errorf("lps_broker_store_used_bytes = %v with the store full, want at least 256 KiB", used)
	}
	if d := b.QueueDepth(); d != accepted {
		t.Fatalf("QueueDepth %d, want the %d accepted", d, accepted)
	}

	col := newCollector()
	c := mustDial(t, b.Addr().String(), consumer("legacy-proxy-2-1", 10, col, 0))
	subscribe(t, c, sharedFilter)
	testutil.Eventually(t, testTimeout, func() error {
		if col.distinct() != accepted || b.QueueDepth() != 0 {
			return fmt.Errorf("waiting for the consumer to drain %d (has %d)", accepted, col.distinct())
		}
		return nil
	})
	// The consumer's acknowledgements free the pages as they are written.
	testutil.Eventually(t, testTimeout, func() error {
		if ack := pub.publish("proxy1-1/message", 1, false, "after"); ack.ReasonCode != 0 {
			return fmt.Errorf("publish after the drain: reason code %#x", ack.ReasonCode)
		}
		return nil
	})
}

// TestLimits: the maximum packet size is announced in the CONNACK and a
// larger packet ends the connection; a connection beyond MaxConnections is
// refused with server busy; a session expiry above MaxSessionExpiry is cut
// to it and the CONNACK says so.
func TestLimits(t *testing.T) {
	b := startBroker(t, Config{MaxPacketSize: 4096, MaxConnections: 2, MaxSessionExpiry: time.Hour})
	addr := b.Addr().String()

	t.Run("packet size", func(t *testing.T) {
		c, ca := dialRaw(t, addr, rawOpts{id: "big"})
		if ca.Properties.MaximumPacketSize != 4096 {
			t.Errorf("CONNACK maximum packet size %d, want 4096", ca.Properties.MaximumPacketSize)
		}
		if ack := c.publish("t/message", 1, false, strings.Repeat("x", 3000)); ack.FixedHeader.Type != packets.Puback {
			t.Fatalf("a 3 kB publish: got %s", packets.PacketNames[ack.FixedHeader.Type])
		}
		c.send(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			TopicName:   "t/message", PacketID: 999, Payload: []byte(strings.Repeat("x", 5000)),
		})
		// mochi closes the connection; a DISCONNECT 0x95 before that is
		// allowed too (MQTT 5 section 4.13).
		_ = c.conn.SetReadDeadline(time.Now().Add(testTimeout))
		rest, err := io.ReadAll(c.conn)
		if err != nil {
			t.Fatalf("a 5 kB publish: the connection stayed open: %v", err)
		}
		if len(rest) > 0 && !bytes.Equal(rest, []byte{packets.Disconnect << 4, 1, packets.ErrPacketTooLarge.Code}) {
			t.Errorf("a 5 kB publish: got % x, want the connection closed (after DISCONNECT 0x95)", rest)
		}
		if n := b.Stats().Queued; n != 0 {
			t.Errorf("%d queued, want none (no subscriber)", n)
		}
	})

	t.Run("session expiry", func(t *testing.T) {
		c, ca := dialRaw(t, addr, rawOpts{id: "forever", expiry: 0xFFFFFFFF})
		if !ca.Properties.SessionExpiryIntervalFlag || ca.Properties.SessionExpiryInterval != 3600 {
			t.Errorf("CONNACK session expiry %d (set %v), want 3600", ca.Properties.SessionExpiryInterval, ca.Properties.SessionExpiryIntervalFlag)
		}
		_ = c.conn.Close()
	})

	t.Run("connections", func(t *testing.T) {
		testutil.Eventually(t, testTimeout, func() error {
			if n := b.Stats().ClientsConnected; n != 0 {
				return fmt.Errorf("waiting for the earlier clients to be gone (%d connected)", n)
			}
			return nil
		})
		dialRaw(t, addr, rawOpts{id: "one"})
		dialRaw(t, addr, rawOpts{id: "two"})
		_, ca, err := dial(t, addr, clientOpts{id: "three", clean: true})
		if err == nil || ca == nil || ca.ReasonCode != packets.ErrServerBusy.Code {
			code := -1
			if ca != nil {
				code = int(ca.ReasonCode)
			}
			t.Errorf("third connection: err %v, CONNACK reason %#x; want refused with 0x89", err, code)
		}
	})
}

// TestNewValidatesLimits: limits that cannot work are refused with a clear error.
func TestNewValidatesLimits(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"packet size", Config{MaxPacketSize: 100}, "max packet size 100 is below 1024 bytes"},
		{"connections", Config{MaxConnections: -1}, "max connections -1 is negative"},
		{"session expiry below a second", Config{MaxSessionExpiry: time.Millisecond}, "max session expiry 1ms is outside"},
		{"session expiry negative", Config{MaxSessionExpiry: -time.Second}, "max session expiry -1s is outside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Address = "127.0.0.1:0"
			b, err := New(tt.cfg)
			if err == nil {
				_ = b.Close()
				t.Fatalf("New accepted %+v", tt.cfg)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

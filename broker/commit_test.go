package broker

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/internal/testutil"
)

// gate holds the committer's writer before its next transaction until
// opened, and says when the writer got there.
type gate struct {
	entered chan []op
	open    chan struct{}
	release func() // opens the gate, once
}

// holdWrites makes c's writer stop before each transaction at the gate, the
// first time only. The gate opens at the end of the test if the test did not
// open it, so that a failing test does not hold the broker's shutdown.
func holdWrites(t *testing.T, c *committer) *gate {
	g := &gate{entered: make(chan []op, 1), open: make(chan struct{})}
	var once sync.Once
	g.release = func() { once.Do(func() { close(g.open) }) }
	t.Cleanup(g.release)
	first := true
	c.mu.Lock()
	c.beforeApply = func(ops []op) {
		if first {
			first = false
			g.entered <- ops
			<-g.open
		}
	}
	c.mu.Unlock()
	return g
}

func openTestStore(t *testing.T) (*store, *metrics) {
	t.Helper()
	met := newMetrics()
	st, err := openStore(t.TempDir(), false, zap.NewNop(), met)
	if err != nil {
		t.Fatalf("openStore: %v", err)
	}
	t.Cleanup(func() { _ = st.close(true) })
	return st, met
}

func putBatch(key string) *batch {
	var b batch
	b.delIn(bucketRetained, []byte("absent")) // a change that finds nothing is fine
	if err := b.putValue(bucketRetained, []byte(key), key); err != nil {
		panic(err)
	}
	return &b
}

func storedKeys(t *testing.T, st *store) []string {
	t.Helper()
	var keys []string
	if err := st.each(bucketRetained, func(k, _ []byte) error { keys = append(keys, string(k)); return nil }); err != nil {
		t.Fatalf("reading store: %v", err)
	}
	return keys
}

// TestGroupCommitGathersWhatArrivesDuringAWrite: while one transaction is
// being written, the changes of three other callers gather and go to disk
// together in the next one, and each caller's wait returns only then.
func TestGroupCommitGathersWhatArrivesDuringAWrite(t *testing.T) {
	st, met := openTestStore(t)
	g := holdWrites(t, &st.commits)

	first := st.enqueue(putBatch("a"))
	select {
	case <-g.entered:
	case <-time.After(testTimeout):
		t.Fatal("the writer never started the first transaction")
	}
	later := []*flush{st.enqueue(putBatch("b")), st.enqueue(putBatch("c")), st.enqueue(putBatch("d"))}
	if later[0] != later[1] || later[1] != later[2] || later[0] == first {
		t.Fatalf("the three changes made during a write are not in one flush of their own")
	}
	select {
	case <-later[0].done:
		t.Fatal("a flush was done before the writer could write it")
	default:
	}
	g.release()
	for i, f := range append([]*flush{first}, later...) {
		if err := f.wait(); err != nil {
			t.Fatalf("flush %d: %v", i, err)
		}
	}
	if got := strings.Join(storedKeys(t, st), ","); got != "a,b,c,d" {
		t.Errorf("stored %q, want a,b,c,d", got)
	}
	if n := promtest.ToFloat64(met.storeCommits); n != 2 {
		t.Errorf("%v transactions, want 2 (one for a, one for b, c and d)", n)
	}
	if st.enqueue(&batch{}) != nil {
		t.Error("an empty batch got a flush to wait for")
	}
}

// TestStoreSyncsByDefault: the data dir is fsynced unless told otherwise;
// bbolt's NoSync is what --sync-writes=false sets.
func TestStoreSyncsByDefault(t *testing.T) {
	for _, noSync := range []bool{false, true} {
		st, err := openStore(t.TempDir(), noSync, zap.NewNop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.db.NoSync != noSync || st.db.NoGrowSync != noSync {
			t.Errorf("openStore(noSync=%v): bbolt NoSync %v, NoGrowSync %v", noSync, st.db.NoSync, st.db.NoGrowSync)
		}
		_ = st.close(true)
	}
	var cfg Config
	if cfg.NoSync {
		t.Error("a zero Config turns fsync off")
	}
}

// TestCommitterClose: a graceful close writes what is pending; a crash-like
// close drops it and tells its waiters; after either, writes fail.
func TestCommitterClose(t *testing.T) {
	for _, graceful := range []bool{true, false} {
		t.Run(fmt.Sprintf("graceful=%v", graceful), func(t *testing.T) {
			dir := t.TempDir()
			st, err := openStore(dir, false, zap.NewNop(), newMetrics())
			if err != nil {
				t.Fatal(err)
			}
			g := holdWrites(t, &st.commits)
			st.enqueue(putBatch("a"))
			<-g.entered
			pending := st.enqueue(putBatch("b"))
			closed := make(chan error, 1)
			go func() { closed <- st.close(graceful) }()
			// close waits for the writer, which is held: let it go once close
			// has marked the committer closing.
			testutil.Eventually(t, testTimeout, func() error {
				st.commits.mu.Lock()
				defer st.commits.mu.Unlock()
				if !st.commits.closing {
					return errors.New("close has not begun")
				}
				return nil
			})
			g.release()
			if err := <-closed; err != nil {
				t.Fatalf("close: %v", err)
			}
			err = pending.wait()
			if graceful && err != nil {
				t.Errorf("graceful close: pending write failed: %v", err)
			}
			if !graceful && !errors.Is(err, errStoreClosed) {
				t.Errorf("crash-like close: pending write returned %v, want errStoreClosed", err)
			}
			if err := st.enqueue(putBatch("c")).wait(); !errors.Is(err, errStoreClosed) {
				t.Errorf("write after close: %v, want errStoreClosed", err)
			}

			st2, err := openStore(dir, false, zap.NewNop(), newMetrics())
			if err != nil {
				t.Fatal(err)
			}
			defer st2.close(true)
			want := "a"
			if graceful {
				want = "a,b"
			}
			if got := strings.Join(storedKeys(t, st2), ","); got != want {
				t.Errorf("after reopening: %q, want %q", got, want)
			}
		})
	}
}

// TestPublishAcknowledgedOnlyOnDisk: with a data dir, the broker's PUBACK
// for a message comes after the transaction carrying it was written, and a
// publish the data dir cannot take is refused (0x80) instead of
// acknowledged.
func TestPublishAcknowledgedOnlyOnDisk(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := startBroker(t, Config{DataDir: t.TempDir(), Registerer: reg, Queues: []Queue{{Group: "g", Filter: "t/#"}}})
	g := holdWrites(t, &b.st.commits)

	c, _ := dialRaw(t, b.Addr().String(), rawOpts{id: "pub"})
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "t/1", PacketID: 1, Payload: []byte("x")})
	var ops []op
	select {
	case ops = <-g.entered:
	case <-time.After(testTimeout):
		t.Fatal("the message never reached the committer")
	}
	if !bytes.Contains(ops[0].val, []byte(`"t/1"`)) {
		t.Fatalf("the held transaction is not the message's: %q", ops[0].key)
	}
	// An absence cannot be awaited: give a wrong early PUBACK ample time to arrive.
	_ = c.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.r.ReadByte(); err == nil {
		t.Fatal("the broker answered before the message was on disk")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("reading: %v", err)
	}
	g.release()
	if ack := c.expect(packets.Puback); ack.ReasonCode != 0 {
		t.Fatalf("PUBACK reason %#x after the write", ack.ReasonCode)
	}

	// A subscriber whose client id is too long for a bbolt key (32 KiB):
	// storing a copy for it fails, so the publisher must be refused.
	long := strings.Repeat("x", bolt.MaxKeySize)
	sub, _ := dialRaw(t, b.Addr().String(), rawOpts{id: long, expiry: 60}) // persistent: its copies are stored
	sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "u/1", Qos: 1}}})
	sub.expect(packets.Suback)
	if ack := c.publish("u/1", 1, false, "y"); ack.ReasonCode != packets.ErrUnspecifiedError.Code {
		t.Errorf("PUBACK reason %#x for a message the data dir refused, want 0x80", ack.ReasonCode)
	}
	if n := testutil.Metric(t, reg, "lps_broker_publishes_refused_total", map[string]string{"reason": "store_error"}); n != 1 {
		t.Errorf("store_error refusals %v, want 1", n)
	}
}

// TestAcknowledgementsKeepPublishOrder: with a data dir, a publish that needs no write (only a
// non-persistent subscriber) and one that nothing takes (0x10) are acknowledged after an
// earlier one that waits for its write, never before it [MQTT-4.6.0-2].
func TestAcknowledgementsKeepPublishOrder(t *testing.T) {
	b := startBroker(t, Config{DataDir: t.TempDir(), Queues: []Queue{{Group: "g", Filter: "stored/#"}}})
	sub, _ := dialRaw(t, b.Addr().String(), rawOpts{id: "volatile"}) // clean session: nothing of it is stored
	sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "volatile/1", Qos: 1}}})
	sub.expect(packets.Suback)
	g := holdWrites(t, &b.st.commits)

	c, _ := dialRaw(t, b.Addr().String(), rawOpts{id: "pub"})
	for i, topic := range []string{"stored/1", "volatile/1", "nobody/1"} {
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: topic,
			PacketID: uint16(i + 1), Payload: []byte("x")})
	}
	select {
	case <-g.entered:
	case <-time.After(testTimeout):
		t.Fatal("the first message never reached the committer")
	}
	c.ping() // the broker read all three publishes: any acknowledgement it wrote at once came first
	g.release()
	for i, want := range []byte{0, 0, packets.CodeNoMatchingSubscribers.Code} {
		ack := c.expect(packets.Puback)
		if ack.PacketID != uint16(i+1) || ack.ReasonCode != want {
			t.Fatalf("acknowledgement %d: packet id %d reason %#x, want id %d reason %#x", i, ack.PacketID, ack.ReasonCode, i+1, want)
		}
	}
}

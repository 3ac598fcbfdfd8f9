package broker

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/mqttconn"
)

// arrivals records when each message arrived.
type arrivals struct {
	mu sync.Mutex
	at map[string][]time.Time
}

func newArrivals() *arrivals { return &arrivals{at: map[string][]time.Time{}} }

func (a *arrivals) add(p string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.at[p] = append(a.at[p], time.Now())
}

func (a *arrivals) get(p string) []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]time.Time(nil), a.at[p]...)
}

// TestDelayedPublish: a message published to $delayed/2/a/b reaches a
// subscriber of a/b two seconds later, not before; QueueDepth counts it
// while it waits.
func TestDelayedPublish(t *testing.T) {
	b := startBroker(t, Config{DataDir: t.TempDir()})
	got := newArrivals()
	opts := consumer("sub", 10, newCollector(), 0)
	inner := opts.onPublish
	opts.onPublish = func(c *paho.Client, p *paho.Publish) {
		got.add(p.Topic + " " + string(p.Payload))
		inner(c, p)
	}
	sub := mustDial(t, b.Addr().String(), opts)
	subscribe(t, sub, "a/b")

	pub := mustDial(t, b.Addr().String(), clientOpts{id: "pub", clean: true})
	start := time.Now()
	publish(t, pub, "$delayed/2/a/b", []string{"later"}, 1)
	if st := b.Stats(); st.Delayed != 1 || b.QueueDepth() != 1 {
		t.Fatalf("after the publish: stats %+v, QueueDepth %d; want 1 delayed, depth 1", st, b.QueueDepth())
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if len(got.get("a/b later")) <= 0 {
			return errors.New("waiting for the delayed message")
		}
		return nil
	})
	if waited := got.get("a/b later")[0].Sub(start); waited < 1900*time.Millisecond {
		t.Errorf("delivered %s after the publish, want about 2s", waited)
	}
	testutil.Eventually(t, testTimeout, func() error {
		if !(b.QueueDepth() == 0 && b.Stats().Delayed == 0) {
			return errors.New("waiting for drained")
		}
		return nil
	})
}

// TestDelayedPublishSurvivesRestart: a delayed message survives a graceful
// restart and a kill of the broker (data dir) and is delivered once, at its
// time, to the persistent session that subscribed before.
func TestDelayedPublishSurvivesRestart(t *testing.T) {
	for _, restart := range []string{"graceful", "killed"} {
		t.Run(restart, func(t *testing.T) {
			dir := t.TempDir()
			cfg := Config{DataDir: dir}
			var addr string
			var stop func()
			if restart == "killed" {
				a, cmd := startHelperBroker(t, dir)
				addr = a
				stop = func() {
					if err := cmd.Process.Kill(); err != nil {
						t.Fatal(err)
					}
					_ = cmd.Wait()
				}
			} else {
				b := startBroker(t, cfg)
				addr, stop = b.Addr().String(), b.stop
			}

			col := newCollector()
			got := newArrivals()
			opts := consumer("sub", 10, col, 0)
			inner := opts.onPublish
			opts.onPublish = func(c *paho.Client, p *paho.Publish) {
				got.add(string(p.Payload))
				inner(c, p)
			}
			sub := mustDial(t, addr, opts)
			subscribe(t, sub, "a/b")
			disconnect(sub)

			pub, _ := dialRaw(t, addr, rawOpts{id: "pub"})
			start := time.Now()
			if rec, comp := pub.publish2("$delayed/3/a/b", "retry"); rec != 0 || comp != 0 {
				t.Fatalf("PUBREC %#x PUBCOMP %#x, want 0 0", rec, comp)
			}
			stop()

			b := startBroker(t, cfg)
			if st := b.Stats(); st.Delayed != 1 || b.QueueDepth() != 1 {
				t.Fatalf("after the restart: stats %+v, depth %d; want 1 delayed", st, b.QueueDepth())
			}
			mustDial(t, b.Addr().String(), opts)
			testutil.Eventually(t, 10*time.Second, func() error {
				if !(col.distinct() == 1 && b.QueueDepth() == 0) {
					return errors.New("waiting for the delayed message after the restart")
				}
				return nil
			})
			if waited := got.get("retry")[0].Sub(start); waited < 2900*time.Millisecond {
				t.Errorf("delivered %s after the publish, want about 3s", waited)
			}
			// Delivered once: a second copy would be queued or in flight by now,
			// or arrive with the next message of the subscription.
			publish(t, mustDial(t, b.Addr().String(), clientOpts{id: "pub2", clean: true}), "a/b", []string{"marker"}, 1)
			testutil.Eventually(t, testTimeout, func() error {
				if col.distinct() != 2 {
					return errors.New("waiting for the marker")
				}
				return nil
			})
			if d := col.duplicates(); d != 0 {
				t.Errorf("%d duplicates, want 0", d)
			}
		})
	}
}

// TestDelayedPublishRefusals: malformed delayed topics get 0x90, a delayed
// publish nothing would take gets 0x10, at QoS 1 and 2; at QoS 0 an invalid
// one is dropped and counted. The connection stays open.
func TestDelayedPublishRefusals(t *testing.T) {
	tests := []struct {
		topic string
		want  byte
	}{
		{topic: "$delayed/x/a/b", want: 0x90},
		{topic: "$delayed/1", want: 0x90},
		{topic: "$delayed/1/", want: 0x90},
		{topic: "$delayed/-1/a/b", want: 0x90},
		{topic: "$delayed/+1/a/b", want: 0x90},
		{topic: "$delayed/99999999/a/b", want: 0x90},
		{topic: "$delayed/4294968/a/b", want: 0x90},
		{topic: "$delayed/1/a/+", want: 0x90},
		{topic: "$delayed/1/a/#", want: 0x90},
		{topic: "$delayed/1/$SYS/x", want: 0x90},
		{topic: "$delayed/1/$delayed/1/a/b", want: 0x90},
		{topic: "$delayed/1/nobody/listens", want: 0x10},
		{topic: "$delayed/4294967/a/b", want: 0x00},
		{topic: "$delayed/0/a/b", want: 0x00},
	}
	b := startBroker(t, Config{})
	sub := mustDial(t, b.Addr().String(), consumer("sub", 10, newCollector(), 0))
	subscribe(t, sub, "a/b")
	pub, _ := dialRaw(t, b.Addr().String(), rawOpts{id: "pub"})
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			pub.t = t
			for _, qos := range []byte{1, 2} {
				ack := pub.publish(tt.topic, qos, false, "x")
				if ack.ReasonCode != tt.want {
					t.Errorf("QoS %d: %s reason %#x, want %#x", qos, packets.PacketNames[ack.FixedHeader.Type], ack.ReasonCode, tt.want)
				}
				if qos == 2 && ack.ReasonCode < 0x80 {
					if comp := pub.release(ack.PacketID); comp.ReasonCode != 0 {
						t.Errorf("PUBCOMP reason %#x, want 0", comp.ReasonCode)
					}
				}
			}
			before := promtest.ToFloat64(b.met.dropped.WithLabelValues("delayed_invalid"))
			pub.publish(tt.topic, 0, false, "x")
			pub.ping()
			dropped := promtest.ToFloat64(b.met.dropped.WithLabelValues("delayed_invalid")) - before
			if want := map[bool]float64{true: 1}[tt.want == 0x90]; dropped != want {
				t.Errorf("QoS 0: dropped{delayed_invalid} grew by %v, want %v", dropped, want)
			}
		})
	}
	// The three publishes to $delayed/4294967/a/b wait for 49 days.
	testutil.Eventually(t, testTimeout, func() error {
		if b.Stats().Delayed != 3 {
			return fmt.Errorf("waiting for 3 delayed (stats %+v)", b.Stats())
		}
		return nil
	})
}

// TestDelayedPublishNobodyAtDueTime: a delayed message whose topic lost its
// only subscription before the due time is dropped, logged and counted.
func TestDelayedPublishNobodyAtDueTime(t *testing.T) {
	b := startBroker(t, Config{})
	opts := consumer("sub", 10, newCollector(), 0)
	opts.clean, opts.expiry = true, 0 // the subscription ends with the connection
	sub := mustDial(t, b.Addr().String(), opts)
	subscribe(t, sub, "a/b")
	pub, _ := dialRaw(t, b.Addr().String(), rawOpts{id: "pub"})
	if ack := pub.publish("$delayed/1/a/b", 1, false, "x"); ack.ReasonCode != 0 {
		t.Fatalf("PUBACK %#x, want 0", ack.ReasonCode)
	}
	disconnect(sub)
	testutil.Eventually(t, 10*time.Second, func() error {
		if !(promtest.ToFloat64(b.met.dropped.WithLabelValues("delayed_no_subscribers")) == 1 && b.QueueDepth() == 0) {
			return fmt.Errorf("waiting for the delayed message dropped at its due time (stats %+v)", b.Stats())
		}
		return nil
	})
}

// TestConnackAnnouncesDelayedPublish: the CONNACK tells clients (mqttconn's
// DelayedPublish) that $delayed topics are honoured.
func TestConnackAnnouncesDelayedPublish(t *testing.T) {
	b := startBroker(t, Config{})
	_, ack := dialRaw(t, b.Addr().String(), rawOpts{id: "c"})
	var val string
	for _, u := range ack.Properties.User {
		if u.Key == mqttconn.DelayedPublishProperty {
			val = u.Val
		}
	}
	if val != "$delayed" {
		t.Errorf("CONNACK user properties %v, want %s=$delayed", ack.Properties.User, mqttconn.DelayedPublishProperty)
	}
}

package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lpsdev/lps/internal/testutil"
)

// TestSessionTakeover: a second connection with the same client id takes
// the session over while the first still holds unacknowledged messages; the
// new connection gets them again, then the rest of the backlog.
func TestSessionTakeover(t *testing.T) {
	const n, window = 20, 5
	b := startBroker(t, Config{})
	first := newCollector()
	holding := consumer("c", window, first, 0)
	holding.manualAck = true
	holding.onPublish = func(_ *paho.Client, p *paho.Publish) { first.add(string(p.Payload)) } // never acks
	a := mustDial(t, b.Addr().String(), holding)
	subscribe(t, a, "t/#")

	pub := mustDial(t, b.Addr().String(), clientOpts{id: "p", clean: true})
	want := payloads("p", n)
	publish(t, pub, "t/x", want, 1)
	testutil.Eventually(t, testTimeout, func() error {
		if !(first.distinct() == window && b.Stats().Queued == n-window) {
			return fmt.Errorf("waiting for first connection holding %d (stats %+v)", window, b.Stats())
		}
		return nil
	})

	second := newCollector()
	mustDial(t, b.Addr().String(), consumer("c", window, second, 0)) // fresh client state, as after a process restart
	waitDone(t, a)
	testutil.Eventually(t, testTimeout, func() error {
		if !(second.distinct() == n && b.QueueDepth() == 0) {
			return fmt.Errorf("waiting for second connection gets all %d (has %d, missing e.g. %v)", n, second.distinct(), second.missing(want))
		}
		return nil
	})
	if got := second.arrivals(); got[0] != want[0] {
		t.Errorf("first message after takeover = %s, want %s (resent in order)", got[0], want[0])
	}
}

// TestCleanStartDiscardsSession: reconnecting with clean start ends the
// session; what was queued for it is dropped and counted.
func TestCleanStartDiscardsSession(t *testing.T) {
	b := startBroker(t, Config{DataDir: t.TempDir()})
	col := newCollector()
	opts := consumer("c", 1, col, 0)
	c := mustDial(t, b.Addr().String(), opts)
	subscribe(t, c, "t/#")
	disconnect(c)
	testutil.Eventually(t, testTimeout, func() error {
		if b.Stats().ClientsConnected != 0 {
			return errors.New("waiting for consumer gone")
		}
		return nil
	})
	pub := mustDial(t, b.Addr().String(), clientOpts{id: "p", clean: true})
	publish(t, pub, "t/x", payloads("p", 5), 1)
	if got := b.QueueDepth(); got != 5 {
		t.Fatalf("QueueDepth = %d, want 5", got)
	}

	opts.clean = true
	opts.session = state.NewInMemory()
	_, ca, err := dial(t, b.Addr().String(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if ca.SessionPresent {
		t.Errorf("session present after clean start")
	}
	if got := b.QueueDepth(); got != 0 {
		t.Errorf("QueueDepth after clean start = %d, want 0", got)
	}
	if got := promtest.ToFloat64(b.met.dropped.WithLabelValues("clean_start")); got != 5 {
		t.Errorf("dropped{clean_start} = %v, want 5", got)
	}
	publish(t, pub, "t/x", []string{"after"}, 1) // no subscription any more
	if got := b.QueueDepth(); got != 0 || col.distinct() != 0 {
		t.Errorf("after clean start: QueueDepth %d, consumer got %d; want 0 and 0", got, col.distinct())
	}
}

// TestSessionExpiry: when a disconnected session expires, its queue is
// dropped (counted) and its subscriptions stop matching.
func TestSessionExpiry(t *testing.T) {
	b := startBroker(t, Config{})
	col := newCollector()
	opts := consumer("c", 1, col, 0)
	opts.expiry = 1
	c := mustDial(t, b.Addr().String(), opts)
	subscribe(t, c, "t/#")
	disconnect(c)
	testutil.Eventually(t, testTimeout, func() error {
		if b.Stats().ClientsConnected != 0 {
			return errors.New("waiting for consumer gone")
		}
		return nil
	})
	pub := mustDial(t, b.Addr().String(), clientOpts{id: "p", clean: true})
	publish(t, pub, "t/x", payloads("p", 3), 1)

	// mochi looks for expired sessions once a second.
	testutil.Eventually(t, 10*time.Second, func() error {
		if !(b.QueueDepth() == 0 && b.Stats().Sessions == 1) {
			return fmt.Errorf("waiting for session expired (stats %+v)", b.Stats())
		}
		return nil
	})
	if got := promtest.ToFloat64(b.met.dropped.WithLabelValues("session_expired")); got != 3 {
		t.Errorf("dropped{session_expired} = %v, want 3", got)
	}
	publish(t, pub, "t/x", []string{"after"}, 1)
	if got := b.QueueDepth(); got != 0 {
		t.Errorf("QueueDepth after expiry = %d, want 0 (stale subscription still matching)", got)
	}
}

// TestMessageExpiry: a queued message whose expiry interval passes is not
// delivered [MQTT-3.3.2-5]; the others are.
func TestMessageExpiry(t *testing.T) {
	b := startBroker(t, Config{})
	col := newCollector()
	opts := consumer("c", 1, col, 0)
	c := mustDial(t, b.Addr().String(), opts)
	subscribe(t, c, "t/#")
	disconnect(c)
	testutil.Eventually(t, testTimeout, func() error {
		if b.Stats().ClientsConnected != 0 {
			return errors.New("waiting for consumer gone")
		}
		return nil
	})

	pub := mustDial(t, b.Addr().String(), clientOpts{id: "p", clean: true})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	expiry := uint32(1)
	if _, err := pub.Publish(ctx, &paho.Publish{QoS: 2, Topic: "t/x", Payload: []byte("short-lived"),
		Properties: &paho.PublishProperties{MessageExpiry: &expiry}}); err != nil {
		t.Fatal(err)
	}
	publish(t, pub, "t/x", []string{"lasting"}, 1)
	// Let the expiry interval pass: a wait for wall-clock time, not for an event.
	<-time.After(2 * time.Second)

	mustDial(t, b.Addr().String(), opts)
	testutil.Eventually(t, testTimeout, func() error {
		if !(col.distinct() == 1 && b.QueueDepth() == 0) {
			return errors.New("waiting for the lasting message")
		}
		return nil
	})
	if got := col.arrivals(); got[0] != "lasting" {
		t.Errorf("delivered %v, want only lasting", got)
	}
	if got := promtest.ToFloat64(b.met.dropped.WithLabelValues("expired")); got != 1 {
		t.Errorf("dropped{expired} = %v, want 1", got)
	}
}

package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lpsdev/lps/internal/testutil"
)

// TestSharedSubscriptionRoundRobin: three consumers of one shared group,
// with receive maximum 1 and 10, 3,000 QoS 2 messages published as fast as
// the publisher can; each consumer gets within 5% of a third.
func TestSharedSubscriptionRoundRobin(t *testing.T) {
	const n, consumers = 3000, 3
	for _, rm := range []uint16{1, 10} {
		t.Run(fmt.Sprintf("receive maximum %d", rm), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			b := startBroker(t, Config{Registerer: reg})
			cols := make([]*collector, consumers)
			for i := range cols {
				cols[i] = newCollector()
				opts := consumer(fmt.Sprintf("legacy-proxy-2-%d", i+1), rm, cols[i], time.Millisecond)
				c := mustDial(t, b.Addr().String(), opts)
				subscribe(t, c, sharedFilter)
			}

			pub := mustDial(t, b.Addr().String(), clientOpts{id: "proxy1-1", expiry: 3600})
			want := payloads("proxy1-1", n)
			publish(t, pub, "proxy1-1/message", want, 16)

			total := func() int {
				sum := 0
				for _, c := range cols {
					sum += c.distinct()
				}
				return sum
			}
			testutil.Eventually(t, testTimeout, func() error {
				if total() != n {
					return fmt.Errorf("waiting for all %d messages consumed (have %d)", n, total())
				}
				return nil
			})
			testutil.Eventually(t, testTimeout, func() error {
				if b.QueueDepth() != 0 {
					return errors.New("waiting for broker drained")
				}
				return nil
			})

			counts := make([]string, consumers)
			for i, c := range cols {
				got := c.distinct()
				counts[i] = strconv.Itoa(got)
				if d := c.duplicates(); d != 0 {
					t.Errorf("consumer %d got %d duplicates", i+1, d)
				}
				if lo, hi := n/consumers*95/100, n/consumers*105/100; got < lo || got > hi {
					t.Errorf("consumer %d got %d messages, want %d..%d", i+1, got, lo, hi)
				}
				delivered := promtest.ToFloat64(b.met.sharedDeliveries.WithLabelValues(sharedFilter, fmt.Sprintf("legacy-proxy-2-%d", i+1)))
				if int(delivered) != got {
					t.Errorf("lps_broker_shared_deliveries_total for consumer %d = %v, want %d", i+1, delivered, got)
				}
			}
			t.Logf("receive maximum %d: messages per consumer %s", rm, strings.Join(counts, " / "))
		})
	}
}

// TestFullWindowQueuesInOrder: a subscriber with receive maximum 1 is sent
// a burst of 500 messages from two publishers while it holds the first one.
// None is dropped: 499 wait in its queue, then all arrive, in order per
// publisher.
func TestFullWindowQueuesInOrder(t *testing.T) {
	const perPublisher = 250
	b := startBroker(t, Config{})
	col := newCollector()
	gate := make(chan struct{})
	opts := consumer("slow", 1, col, 0)
	ack := opts.onPublish
	opts.onPublish = func(c *paho.Client, p *paho.Publish) {
		<-gate // hold the first message until the burst is queued
		ack(c, p)
	}
	c := mustDial(t, b.Addr().String(), opts)
	subscribe(t, c, "burst/#")

	var want []string
	for _, name := range []string{"p1", "p2"} {
		pub := mustDial(t, b.Addr().String(), clientOpts{id: name, clean: true})
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		for _, p := range payloads(name, perPublisher) {
			// AsyncSend returns once the PUBLISH is written: a burst, in order.
			if _, err := pub.PublishWithOptions(ctx, &paho.Publish{QoS: 2, Topic: "burst/" + name, Payload: []byte(p)},
				paho.PublishOptions{Method: paho.PublishMethod_AsyncSend}); err != nil {
				t.Fatalf("publishing %s: %v", p, err)
			}
			want = append(want, p)
		}
	}
	testutil.Eventually(t, testTimeout, func() error {
		st := b.Stats()
		if !(st.Queued == 2*perPublisher-1 && st.Inflight == 1) {
			return fmt.Errorf("waiting for burst queued behind the full window (stats %+v)", b.Stats())
		}
		return nil
	})
	close(gate)

	testutil.Eventually(t, testTimeout, func() error {
		if col.distinct() != 2*perPublisher {
			return fmt.Errorf("waiting for all messages (have %d, missing e.g. %v)", col.distinct(), col.missing(want))
		}
		return nil
	})
	testutil.Eventually(t, testTimeout, func() error {
		if b.QueueDepth() != 0 {
			return errors.New("waiting for queue drained")
		}
		return nil
	})
	last := map[string]int{}
	for _, p := range col.arrivals() {
		name, seq, _ := strings.Cut(p, "-")
		i, _ := strconv.Atoi(seq)
		if prev, ok := last[name]; ok && i != prev+1 {
			t.Fatalf("from %s: %d arrived after %d", name, i, prev)
		}
		last[name] = i
	}
	if d := col.duplicates(); d != 0 {
		t.Errorf("%d duplicates", d)
	}
	if got := promtest.CollectAndCount(b.met.dropped); got != 0 {
		t.Errorf("dropped counters present (%d), want none", got)
	}
}

// TestMaxQueuedRefusesPublish: beyond MaxQueued the broker refuses the
// publish with reason code 0x97 (the publisher keeps the message), logs an
// error and counts it; what it accepted is delivered.
func TestMaxQueuedRefusesPublish(t *testing.T) {
	const maxQueued, n = 10, 15
	for _, filter := range []string{"q/+/message", "$share/g/q/+/message"} {
		t.Run(filter, func(t *testing.T) {
			core, logs := observer.New(zap.ErrorLevel)
			b := startBroker(t, Config{MaxQueued: maxQueued, Logger: zap.New(core)})
			col := newCollector()
			opts := consumer("away", 5, col, 0)
			c := mustDial(t, b.Addr().String(), opts)
			subscribe(t, c, filter)
			disconnect(c)
			testutil.Eventually(t, testTimeout, func() error {
				if b.Stats().ClientsConnected != 0 {
					return errors.New("waiting for consumer gone")
				}
				return nil
			})

			pub := mustDial(t, b.Addr().String(), clientOpts{id: "pub", clean: true})
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			var accepted, refused int
			for _, p := range payloads("pub", n) {
				pr, err := pub.Publish(ctx, &paho.Publish{QoS: 2, Topic: "q/pub/message", Payload: []byte(p)})
				switch {
				case err != nil:
					t.Fatalf("publishing %s: %v", p, err)
				case pr.ReasonCode == 0x97:
					refused++
				case pr.ReasonCode < 0x80:
					accepted++
				default:
					t.Fatalf("publishing %s: reason code %#x", p, pr.ReasonCode)
				}
			}
			if accepted != maxQueued || refused != n-maxQueued {
				t.Fatalf("accepted %d, refused %d; want %d and %d", accepted, refused, maxQueued, n-maxQueued)
			}
			if got := logs.FilterMessage("refusing publish: subscriber queue full").Len(); got != n-maxQueued {
				t.Errorf("%d error log lines about the full queue, want %d", got, n-maxQueued)
			}
			if got := promtest.ToFloat64(b.met.refused.WithLabelValues("queue_full")); got != n-maxQueued {
				t.Errorf("lps_broker_publishes_refused_total{reason=queue_full} = %v, want %d", got, n-maxQueued)
			}

			mustDial(t, b.Addr().String(), opts)
			testutil.Eventually(t, testTimeout, func() error {
				if !(col.distinct() == maxQueued && b.QueueDepth() == 0) {
					return fmt.Errorf("waiting for the %d accepted messages delivered (have %d; broker %+v)", maxQueued, col.distinct(), b.Stats())
				}
				return nil
			})
		})
	}
}

// TestConsumerThatRepublishes mirrors mqtt2http's retry path: a consumer
// with receive maximum 1 republishes every message at QoS 2 on the same
// connection before acknowledging it. Its PUBLISH packet ids collide with
// the ids of the messages in flight to it (both sides count from 1), which
// stalls mochi's own delivery path; every message must still flow.
func TestConsumerThatRepublishes(t *testing.T) {
	const n = 200
	b := startBroker(t, Config{})
	retries := newCollector()
	r := mustDial(t, b.Addr().String(), consumer("retry-reader", 1, retries, 0))
	subscribe(t, r, "$share/legacy_proxy/+/retry/message")

	seen := newCollector()
	errs := make(chan error, n)
	opts := consumer("legacy-proxy-2-1", 1, seen, 0)
	opts.onPublish = func(c *paho.Client, p *paho.Publish) {
		seen.add(string(p.Payload))
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := publishOne(ctx, c, "legacy-proxy-2-1/retry/message", string(p.Payload)); err != nil {
			errs <- err
			return
		}
		_ = c.Ack(p)
	}
	c := mustDial(t, b.Addr().String(), opts)
	subscribe(t, c, sharedFilter)

	pub := mustDial(t, b.Addr().String(), clientOpts{id: "proxy1-1", clean: true})
	want := payloads("proxy1-1", n)
	publish(t, pub, "proxy1-1/message", want, 4)
	testutil.Eventually(t, testTimeout, func() error {
		if !(retries.distinct() == n || len(errs) > 0) {
			return fmt.Errorf("waiting for all messages republished and consumed (have %d, missing e.g. %v)", retries.distinct(), retries.missing(want))
		}
		return nil
	})
	if len(errs) > 0 {
		t.Fatalf("republishing: %v", <-errs)
	}
	testutil.Eventually(t, testTimeout, func() error {
		if !(b.QueueDepth() == 0 && b.Stats().Releasing == 0) {
			return errors.New("waiting for broker drained")
		}
		return nil
	})
}

// TestWillMessage: a client that drops its connection has its will
// delivered (through the dispatcher, at its QoS); one that disconnects
// normally does not.
func TestWillMessage(t *testing.T) {
	b := startBroker(t, Config{})
	got := newCollector()
	sub := mustDial(t, b.Addr().String(), clientOpts{id: "watcher", clean: true, onPublish: func(_ *paho.Client, p *paho.Publish) {
		got.add(fmt.Sprintf("%s=%s qos=%d", p.Topic, p.Payload, p.QoS))
	}})
	subscribe(t, sub, "wills/#")

	for _, abrupt := range []bool{false, true} {
		id := fmt.Sprintf("dies-%t", abrupt)
		c, _, err := dialWithWill(t, b.Addr().String(), id)
		if err != nil {
			t.Fatalf("connecting %s: %v", id, err)
		}
		if abrupt {
			c.TerminateConnectionForTest()
		} else {
			disconnect(c)
		}
	}
	testutil.Eventually(t, testTimeout, func() error {
		if got.distinct() != 1 {
			return errors.New("waiting for one will message")
		}
		return nil
	})
	if a := got.arrivals(); a[0] != "wills/dies-true=gone qos=1" {
		t.Errorf("will = %q", a[0])
	}
}

func dialWithWill(t *testing.T, addr, id string) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		return nil, nil, err
	}
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{
		ClientID: id, CleanStart: true, KeepAlive: 30,
		WillMessage: &paho.WillMessage{Topic: "wills/" + id, Payload: []byte("gone"), QoS: 1},
	})
	if err == nil {
		t.Cleanup(func() { disconnect(c) })
	}
	return c, ca, err
}

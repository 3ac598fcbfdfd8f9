package mqtttest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/lpsdev/lps/internal/testutil"
)

// Message is a message an observer received.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	// User are the MQTT v5 user properties (the last value of each key).
	User       map[string]string
	Properties *paho.PublishProperties
}

// Subscriber is a plain MQTT v5 client that records what it receives.
type Subscriber struct {
	mu      sync.Mutex
	msgs    []Message
	changed chan struct{}
	subs    atomic.Int32
}

var observerSeq atomic.Int64

// Subscribe connects an observer that subscribes to filters at QoS 2 on every connection
// (so it follows a broker restart) and returns once the first subscription was granted.
func Subscribe(t testing.TB, brokerURL string, filters ...string) *Subscriber {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	s := &Subscriber{changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	subs := make([]paho.SubscribeOptions, len(filters))
	for i, f := range filters {
		subs[i] = paho.SubscribeOptions{Topic: f, QoS: 2}
	}
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		SessionExpiryInterval:         600,
		ReconnectBackoff:              autopaho.NewConstantBackoff(20 * time.Millisecond),
		ConnectTimeout:                5 * time.Second,
		// Without this paho sends Request Problem Information = 0, and mochi then strips user
		// properties from the messages it sends.
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			cp.Properties.RequestProblemInfo = true
			return cp, nil
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			go func() {
				sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
				defer scancel()
				if _, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: subs}); err == nil {
					s.subs.Add(1)
					s.notify()
				}
			}()
		},
		ClientConfig: paho.ClientConfig{
			ClientID: fmt.Sprintf("observer-%d-%d", time.Now().UnixNano(), observerSeq.Add(1)),
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				s.record(pr.Packet)
				return true, nil
			}},
		},
	}
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		cm.Disconnect(dctx)
		cancel()
	})
	testutil.Eventually(t, 10*time.Second, func() error {
		if s.subs.Load() == 0 {
			return fmt.Errorf("observer not subscribed to %v at %s", filters, brokerURL)
		}
		return nil
	})
	return s
}

func (s *Subscriber) record(p *paho.Publish) {
	m := Message{Topic: p.Topic, Payload: append([]byte(nil), p.Payload...), QoS: p.QoS, Properties: p.Properties, User: map[string]string{}}
	if p.Properties != nil {
		for _, up := range p.Properties.User {
			m.User[up.Key] = up.Value
		}
	}
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	s.mu.Unlock()
	s.notify()
}

func (s *Subscriber) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// Subscriptions counts the subscriptions granted so far (one per connection).
func (s *Subscriber) Subscriptions() int { return int(s.subs.Load()) }

// Messages returns a copy of what was received so far.
func (s *Subscriber) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Wait waits until at least n messages arrived and returns them, failing the test after
// timeout.
func (s *Subscriber) Wait(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		got, changed := len(s.msgs), s.changed
		s.mu.Unlock()
		if got >= n {
			return s.Messages()
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("observer received %d messages within %s, want %d", got, timeout, n)
		}
	}
}

// Publish sends one message at QoS 2 from a fresh client and waits for PUBCOMP.
func Publish(t testing.TB, brokerURL, topic string, payload []byte, user map[string]string) {
	t.Helper()
	p := &paho.Publish{Topic: topic, QoS: 2, Payload: payload, Properties: &paho.PublishProperties{}}
	for k, v := range user {
		p.Properties.User.Add(k, v)
	}
	PublishPacket(t, brokerURL, p)
}

// PublishPacket sends p from a fresh client and waits for the broker's confirmation.
func PublishPacket(t testing.TB, brokerURL string, p *paho.Publish) {
	t.Helper()
	pub := NewPublisher(t, brokerURL)
	defer pub.Close()
	pub.PublishPacket(t, p)
}

// Publisher is one client connection that publishes many messages, one after the other: far
// quicker than a fresh client per message (Mosquitto takes some 40 ms per connection).
type Publisher struct {
	c    *paho.Client
	once sync.Once
}

// NewPublisher connects a publisher; it disconnects when the test ends or on Close.
func NewPublisher(t testing.TB, brokerURL string) *Publisher {
	t.Helper()
	ctx := ctxFor(t, 10*time.Second)
	addr := strings.TrimPrefix(brokerURL, "mqtt://")
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	id := fmt.Sprintf("publisher-%d-%d", time.Now().UnixNano(), observerSeq.Add(1))
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: conn})
	if _, err := c.Connect(ctx, &paho.Connect{KeepAlive: 30, CleanStart: true, ClientID: id}); err != nil {
		conn.Close()
		t.Fatalf("connecting to %s: %v", addr, err)
	}
	p := &Publisher{c: c}
	t.Cleanup(p.Close)
	return p
}

// Publish sends one message at QoS 2 and waits for PUBCOMP.
func (p *Publisher) Publish(t testing.TB, topic string, payload []byte, user map[string]string) {
	t.Helper()
	pk := &paho.Publish{Topic: topic, QoS: 2, Payload: payload, Properties: &paho.PublishProperties{}}
	for k, v := range user {
		pk.Properties.User.Add(k, v)
	}
	p.PublishPacket(t, pk)
}

// PublishPacket sends pk and waits for the broker's confirmation.
func (p *Publisher) PublishPacket(t testing.TB, pk *paho.Publish) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := p.c.Publish(ctx, pk)
	if err != nil {
		t.Fatalf("publishing to %s: %v", pk.Topic, err)
	}
	if resp.ReasonCode >= 0x80 {
		t.Fatalf("publishing to %s: reason code 0x%02x", pk.Topic, resp.ReasonCode)
	}
}

// Close disconnects the publisher; it may be called more than once.
func (p *Publisher) Close() {
	p.once.Do(func() { _ = p.c.Disconnect(&paho.Disconnect{ReasonCode: 0}) })
}

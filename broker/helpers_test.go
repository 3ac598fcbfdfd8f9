package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/lpsdev/lps/internal/testutil"
)

// testTimeout bounds every wait of a test.
const testTimeout = 60 * time.Second

// runningBroker is a broker started by startBroker.
type runningBroker struct {
	*Broker
	stop func() // cancels Run and waits for it to return; idempotent
}

// startBroker builds a broker from cfg (on 127.0.0.1:0 unless cfg says
// otherwise), runs it until the test ends and returns once it is ready.
func startBroker(t testing.TB, cfg Config) *runningBroker {
	t.Helper()
	if cfg.Listener == nil && cfg.Address == "" {
		cfg.Address = "127.0.0.1:0"
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	var once sync.Once
	rb := &runningBroker{Broker: b}
	rb.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(testTimeout):
				t.Errorf("Run did not return within %s of cancel", testTimeout)
			}
		})
	}
	t.Cleanup(rb.stop)
	testutil.Eventually(t, testTimeout, func() error {
		if !b.Ready() {
			return errors.New("waiting for broker ready")
		}
		return nil
	})
	return rb
}

// clientOpts describes an MQTT v5 test client.
type clientOpts struct {
	id         string
	clean      bool   // clean start
	expiry     uint32 // session expiry interval, seconds
	receiveMax uint16 // 0: not sent (65535)
	user, pass string
	tls        *tls.Config
	session    *state.State // reuse across connections of one persistent session
	manualAck  bool
	onPublish  func(c *paho.Client, p *paho.Publish)
	will       string // a will message's topic; "" for none
}

// dial connects an MQTT v5 client to addr. The CONNACK is returned even
// when the server refuses the connection (with the error).
func dial(t testing.TB, addr string, o clientOpts) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var conn net.Conn
	var err error
	if o.tls != nil {
		d := tls.Dialer{Config: o.tls}
		conn, err = d.DialContext(ctx, "tcp", addr)
		conn = packets.NewThreadSafeConn(conn)
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, nil, err
	}
	cfg := paho.ClientConfig{
		ClientID:                   o.id,
		Conn:                       conn,
		EnableManualAcknowledgment: o.manualAck,
		SendAcksInterval:           time.Millisecond,
		PacketTimeout:              testTimeout,
	}
	if o.session != nil {
		cfg.Session = o.session
	}
	var c *paho.Client
	if o.onPublish != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				o.onPublish(pr.Client, pr.Packet)
				return true, nil
			},
		}
	}
	c = paho.NewClient(cfg)
	cp := &paho.Connect{
		ClientID:   o.id,
		CleanStart: o.clean,
		KeepAlive:  30,
		Properties: &paho.ConnectProperties{},
	}
	if o.expiry > 0 {
		cp.Properties.SessionExpiryInterval = &o.expiry
	}
	if o.receiveMax > 0 {
		cp.Properties.ReceiveMaximum = &o.receiveMax
	}
	if o.will != "" {
		cp.WillMessage = &paho.WillMessage{Topic: o.will, QoS: 1, Payload: []byte("will")}
	}
	if o.user != "" || o.pass != "" {
		cp.Username, cp.UsernameFlag = o.user, true
		cp.Password, cp.PasswordFlag = []byte(o.pass), true
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		return nil, ca, err
	}
	t.Cleanup(func() { disconnect(c) })
	return c, ca, nil
}

// mustDial is dial that fails the test on error.
func mustDial(t testing.TB, addr string, o clientOpts) *paho.Client {
	t.Helper()
	c, _, err := dial(t, addr, o)
	if err != nil {
		t.Fatalf("connecting %s: %v", o.id, err)
	}
	return c
}

// disconnect ends a client's connection normally (its session stays if it
// has an expiry) and waits until its goroutines are done.
func disconnect(c *paho.Client) {
	_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	select {
	case <-c.Done():
	case <-time.After(testTimeout):
	}
}

// waitDone waits until a client noticed its connection is gone.
func waitDone(t testing.TB, c *paho.Client) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(testTimeout):
		t.Fatalf("client %s still connected", c.ClientID())
	}
}

// subscription is a SUBSCRIBE of filters at QoS 2.
func subscription(filters ...string) *paho.Subscribe {
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 2})
	}
	return s
}

func subscribe(t testing.TB, c *paho.Client, filters ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := c.Subscribe(ctx, subscription(filters...)); err != nil {
		t.Fatalf("subscribing %v: %v", filters, err)
	}
}

// publish publishes payloads at QoS 2 to topic from `workers` goroutines
// sharing the client, each waiting for PUBCOMP, and fails the test unless
// the broker accepted every one.
func publish(t testing.TB, c *paho.Client, topic string, payloads []string, workers int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	next := make(chan string)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range next {
				if err := publishOne(ctx, c, topic, p); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	func() {
		defer close(next)
		for _, p := range payloads {
			select {
			case next <- p:
			case err := <-errs:
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatalf("publishing to %s: %v", topic, err)
	}
}

func publishOne(ctx context.Context, c *paho.Client, topic, payload string) error {
	pr, err := c.Publish(ctx, &paho.Publish{QoS: 2, Topic: topic, Payload: []byte(payload)})
	if err != nil {
		return err
	}
	if pr.ReasonCode >= 0x80 {
		return fmt.Errorf("publish %q refused with reason code %#x", payload, pr.ReasonCode)
	}
	return nil
}

func payloads(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return out
}

// collector records the messages a consumer gets.
type collector struct {
	mu    sync.Mutex
	order []string
	count map[string]int
}

func newCollector() *collector { return &collector{count: map[string]int{}} }

func (c *collector) add(p string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.order = append(c.order, p)
	c.count[p]++
}

// distinct returns how many different messages arrived.
func (c *collector) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.count)
}

// duplicates returns how many arrivals repeated an earlier message.
func (c *collector) duplicates() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.order) - len(c.count)
}

// missing returns the expected messages that did not arrive (at most 10).
func (c *collector) missing(want []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, w := range want {
		if c.count[w] == 0 {
			out = append(out, w)
			if len(out) == 10 {
				break
			}
		}
	}
	return out
}

func (c *collector) arrivals() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.order...)
}

// consumer returns clientOpts for a consumer that records into col, does
// `work` of simulated processing, then acknowledges, as mqtt2http does: paho
// acknowledges each message as its handler returns. Not paho's manual
// acknowledgement, which loses the acknowledgements of messages that arrive
// right after CONNACK (mqttconn's ackOrder says how); a resumed session's
// backlog arrives just then, and the test would stall on the client's bug.
func consumer(id string, receiveMax uint16, col *collector, work time.Duration) clientOpts {
	return clientOpts{
		id:         id,
		expiry:     3600,
		receiveMax: receiveMax,
		session:    state.NewInMemory(),
		onPublish: func(c *paho.Client, p *paho.Publish) {
			col.add(string(p.Payload))
			if work > 0 {
				time.Sleep(work) // simulated processing, not synchronisation
			}
		},
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

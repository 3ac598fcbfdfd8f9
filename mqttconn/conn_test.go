package mqttconn_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/mqttconn"
	"github.com/lpsdev/lps/mqttconn/mqtttest"
	"github.com/lpsdev/lps/roles/mqttbroker"
)

// fast are Options that reconnect quickly, for tests that stop and start brokers.
var fast = mqttconn.Options{ReconnectBase: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond, ConnectTimeout: 2 * time.Second}

// runConn runs c until the test ends and returns a function that stops it and reports Run's
// error.
func runConn(t *testing.T, c *mqttconn.Conn) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(15 * time.Second):
				err = errors.New("Run did not return within 15s")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return stop
}

func newConn(t *testing.T, cfg mqttconn.Config) *mqttconn.Conn {
	t.Helper()
	if cfg.ClientID == "" {
		cfg.ClientID = t.Name()
	}
	if cfg.ReconnectBase == 0 {
		cfg.ReconnectBase, cfg.ReconnectMax, cfg.ConnectTimeout = fast.ReconnectBase, fast.ReconnectMax, fast.ConnectTimeout
	}
	c, err := mqttconn.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func awaitReady(t *testing.T, c *mqttconn.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.AwaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestNewValidates(t *testing.T) {
	for name, cfg := range map[string]mqttconn.Config{
		"bad url":      {Broker: "http://x", ClientID: "a"},
		"no client id": {Broker: "mqtt://x"},
		"bad dir":      {Broker: "mqtt://x", ClientID: "a", Options: mqttconn.Options{SessionDir: "/proc/nope"}},
	} {
		if _, err := mqttconn.New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestPublishReachesSubscriber(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		b := start(t)
		obs := mqtttest.Subscribe(t, b.URL, "test/topic")
		reg := prometheus.NewRegistry()
		c := newConn(t, mqttconn.Config{Broker: b.URL, Registerer: reg})
		if err := c.Ready(context.Background()); !errors.Is(err, mqttconn.ErrNotConnected) {
			t.Errorf("Ready before Run = %v, want ErrNotConnected", err)
		}
		if _, err := c.Publish(context.Background(), &paho.Publish{Topic: "test/topic", QoS: 2}); !errors.Is(err, mqttconn.ErrNotConnected) {
			t.Errorf("Publish before Run = %v, want ErrNotConnected", err)
		}
		runConn(t, c)
		awaitReady(t, c)

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := c.Publish(ctx, &paho.Publish{Topic: "test/topic", QoS: 2, Payload: []byte("hello"),
			Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "request_id", Value: "r1"}}}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.ReasonCode != 0 {
			t.Errorf("reason code 0x%02x, want 0", resp.ReasonCode)
		}
		msgs := obs.Wait(t, 1, 10*time.Second)
		if string(msgs[0].Payload) != "hello" || msgs[0].User["request_id"] != "r1" {
			t.Errorf("observer got %q with user properties %v", msgs[0].Payload, msgs[0].User)
		}
		if got := testutil.Metric(t, reg, "lps_mqtt_connects_total", nil); got != 1 {
			t.Errorf("connects = %v, want 1", got)
		}
		if got := testutil.Metric(t, reg, "lps_mqtt_connected", nil); got != 1 {
			t.Errorf("connected = %v, want 1", got)
		}
	})
}

func TestReconnectAfterBrokerRestart(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		b := start(t)
		reg := prometheus.NewRegistry()
		c := newConn(t, mqttconn.Config{Broker: b.URL, Registerer: reg})
		runConn(t, c)
		awaitReady(t, c)

		b.Stop()
		testutil.Eventually(t, 10*time.Second, func() error {
			if c.Connected() {
				return errors.New("still connected")
			}
			return nil
		})
		if _, err := c.Publish(context.Background(), &paho.Publish{Topic: "x", QoS: 2}); !errors.Is(err, mqttconn.ErrNotConnected) {
			t.Errorf("Publish while down = %v, want ErrNotConnected", err)
		}
		if err := c.Ready(context.Background()); err == nil {
			t.Error("Ready while down = nil")
		}
		b.Start()
		awaitReady(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c.Publish(ctx, &paho.Publish{Topic: "x", QoS: 2}); err != nil {
			t.Fatalf("Publish after reconnect: %v", err)
		}
		if got := testutil.Metric(t, reg, "lps_mqtt_disconnects_total", nil); got != 1 {
			t.Errorf("disconnects = %v, want 1", got)
		}
		if got := testutil.Metric(t, reg, "lps_mqtt_connects_total", nil); got != 2 {
			t.Errorf("connects = %v, want 2", got)
		}
	})
}

func TestFailureReasonCodeIsAnError(t *testing.T) {
	b := mqtttest.StartMochi(t, &mqtttest.MochiOptions{NoAllow: true, Hooks: []mqtt.Hook{&mqtttest.DenyPublish{Prefix: "denied/"}}})
	c := newConn(t, mqttconn.Config{Broker: b.URL})
	runConn(t, c)
	awaitReady(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Publish(ctx, &paho.Publish{Topic: "denied/x", QoS: 2, Payload: []byte("x")})
	var rce *mqttconn.ReasonCodeError
	if !errors.As(err, &rce) || rce.Code != 0x87 {
		t.Fatalf("Publish to a denied topic = %v, want a ReasonCodeError 0x87", err)
	}
	// No subscriber is not a failure, but visible.
	resp, err := c.Publish(ctx, &paho.Publish{Topic: "nobody/listens", QoS: 2})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ReasonCode != mqttconn.ReasonNoMatchingSubscribers && resp.ReasonCode != 0 {
		t.Errorf("reason code 0x%02x", resp.ReasonCode)
	}
}

// TestDelayedPublishFollowsTheConnack: the shipped broker announces delayed publish in its
// CONNACK; Mosquitto, like most brokers, does not.
func TestDelayedPublishFollowsTheConnack(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(*testing.T) *mqtttest.Broker
		want  bool
	}{
		{"announced", func(t *testing.T) *mqtttest.Broker { return mqtttest.StartEmbedded(t) }, true},
		{"not announced", func(t *testing.T) *mqtttest.Broker { return mqtttest.StartMosquitto(t) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.start(t)
			c := newConn(t, mqttconn.Config{Broker: b.URL})
			if c.DelayedPublish() {
				t.Error("DelayedPublish before any connection")
			}
			runConn(t, c)
			awaitReady(t, c)
			if got := c.DelayedPublish(); got != tc.want {
				t.Errorf("DelayedPublish = %v, want %v", got, tc.want)
			}
		})
	}
}

// paho answers a PUBREC below 0x80 with PUBREL itself and returns only the PUBCOMP's reason
// code; Publish must still report the PUBREC's 0x10, at QoS 2 as at QoS 1. The shipped broker
// answers 0x10 for a topic that no subscription and no declared queue takes.
func TestNoMatchingSubscribersIsReportedAtEveryQoS(t *testing.T) {
	for _, tc := range []struct {
		name       string
		subscribed bool
		want       byte
	}{
		{"broker answers 0x10", false, mqttconn.ReasonNoMatchingSubscribers},
		{"broker answers success", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := mqtttest.StartEmbedded(t)
			if tc.subscribed {
				mqtttest.Subscribe(t, b.URL, "some/topic")
			}
			c := newConn(t, mqttconn.Config{Broker: b.URL})
			runConn(t, c)
			awaitReady(t, c)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, qos := range []byte{1, 2} {
				for i := range 3 { // packet ids are reused: a note must not outlive its publish
					resp, err := c.Publish(ctx, &paho.Publish{Topic: "some/topic", QoS: qos, Payload: []byte{byte(i)}})
					if err != nil {
						t.Fatalf("QoS %d: %v", qos, err)
					}
					if resp.ReasonCode != tc.want {
						t.Errorf("QoS %d publish %d: reason code 0x%02x, want 0x%02x", qos, i, resp.ReasonCode, tc.want)
					}
				}
			}
		})
	}
}

func TestPublishReturnsOnlyAfterPubcomp(t *testing.T) {
	gate := mqtttest.NewPubrelGate()
	b := mqtttest.StartMochi(t, &mqtttest.MochiOptions{Hooks: []mqtt.Hook{gate}})
	c := newConn(t, mqttconn.Config{Broker: b.URL})
	runConn(t, c)
	awaitReady(t, c)

	held := gate.Hold()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.Publish(ctx, &paho.Publish{Topic: "x", QoS: 2})
		done <- err
	}()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the broker never saw a PUBREL")
	}
	// The broker has sent PUBREC and holds our PUBREL: no PUBCOMP yet.
	select {
	case err := <-done:
		t.Fatalf("Publish returned (%v) before the broker sent PUBCOMP", err)
	default:
	}
	gate.Release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPublishFailsFastWhenConnectionDrops(t *testing.T) {
	gate := mqtttest.NewPubrelGate()
	b := mqtttest.StartMochi(t, &mqtttest.MochiOptions{Hooks: []mqtt.Hook{gate}})
	c := newConn(t, mqttconn.Config{Broker: b.URL, Options: mqttconn.Options{KeepAlive: time.Second, ReconnectBase: time.Hour, ReconnectMax: time.Hour}})
	runConn(t, c)
	awaitReady(t, c)
	held := gate.Hold()
	done := make(chan error, 1)
	go func() {
		_, err := c.Publish(context.Background(), &paho.Publish{Topic: "x", QoS: 2})
		done <- err
	}()
	<-held
	// Stop the broker while it holds the PUBREL: the connection breaks mid-flow. mochi's Close
	// waits for the held reader, so it runs aside until the hook lets go.
	stopped := make(chan struct{})
	go func() { defer close(stopped); b.Stop() }()
	select {
	case err := <-done:
		if !errors.Is(err, mqttconn.ErrConnectionLost) {
			t.Errorf("Publish = %v, want ErrConnectionLost", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Publish did not return after the connection broke")
	}
	gate.Release()
	<-stopped
}

// TestUnackedMessagesAreRedelivered: a consumer with manual acknowledgement that stops without
// acknowledging gets the message again when it comes back under the same client id; one that
// acknowledged (and waited for the acknowledgement to be sent) does not.
func TestUnackedMessagesAreRedelivered(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		b := start(t)
		got := make(chan paho.PublishReceived, 10)
		cfg := mqttconn.Config{
			Broker: b.URL, ClientID: "consumer-" + filepath.Base(t.Name()), ManualAck: true, ReceiveMaximum: 5,
			Subscriptions: []paho.SubscribeOptions{{Topic: "$share/g/work/+", QoS: 2}},
			OnPublish:     func(pr paho.PublishReceived) { got <- pr },
		}
		c1 := newConn(t, cfg)
		stop1 := runConn(t, c1)
		awaitReady(t, c1)

		mqtttest.Publish(t, b.URL, "work/1", []byte("one"), nil)
		mqtttest.Publish(t, b.URL, "work/2", []byte("two"), nil)
		first := receive(t, got)
		second := receive(t, got)
		if string(first.Packet.Payload) != "one" || string(second.Packet.Payload) != "two" {
			t.Fatalf("got %q, %q", first.Packet.Payload, second.Packet.Payload)
		}
		// Acknowledge only the first, then stop cleanly.
		if err := c1.Ack(first); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c1.WaitAcks(ctx); err != nil {
			t.Fatal(err)
		}
		if err := stop1(); err != nil {
			t.Fatal(err)
		}

		c2 := newConn(t, cfg)
		runConn(t, c2)
		again := receive(t, got)
		if string(again.Packet.Payload) != "two" {
			t.Fatalf("redelivered %q, want %q", again.Packet.Payload, "two")
		}
		if err := c2.Ack(again); err != nil {
			t.Fatal(err)
		}
		awaitReady(t, c2)
		// A marker published now arrives next: "one" was not redelivered.
		mqtttest.Publish(t, b.URL, "work/3", []byte("three"), nil)
		if next := receive(t, got); string(next.Packet.Payload) != "three" {
			t.Fatalf("next message %q, want %q (an acknowledged message came back)", next.Packet.Payload, "three")
		}
	})
}

func receive(t *testing.T, ch <-chan paho.PublishReceived) paho.PublishReceived {
	t.Helper()
	select {
	case pr := <-ch:
		return pr
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return paho.PublishReceived{}
	}
}

func TestSessionDir(t *testing.T) {
	b := mqtttest.StartEmbedded(t)
	dir := t.TempDir()
	c := newConn(t, mqttconn.Config{Broker: b.URL, ClientID: "proxy/1", Options: mqttconn.Options{SessionDir: dir}})
	runConn(t, c)
	awaitReady(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Publish(ctx, &paho.Publish{Topic: "x", QoS: 2}); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"client", "server"} {
		if fi, err := os.Stat(filepath.Join(dir, "proxy_1", sub)); err != nil || !fi.IsDir() {
			t.Errorf("session store %s: %v", sub, err)
		}
	}
}

// TestTLS connects over TLS to the shipped broker serving the certificate `lps broker
// --tls-cert --tls-key` would read.
func TestTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600); err != nil {
		t.Fatal(err)
	}
	b := mqtttest.StartEmbeddedWith(t, func(c *mqttbroker.Config) { c.TLSCertFile, c.TLSKeyFile = certFile, keyFile })
	_, port, _ := net.SplitHostPort(b.Addr)

	opts := fast
	opts.TLSConfig = &tls.Config{RootCAs: pool}
	c := newConn(t, mqttconn.Config{Broker: "mqtts://localhost:" + port, Options: opts, Logger: zap.NewNop()})
	runConn(t, c)
	awaitReady(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Publish(ctx, &paho.Publish{Topic: "x", QoS: 2}); err != nil {
		t.Fatal(err)
	}
}

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// A Conn asked to stop while its SUBSCRIBE is unanswered stops at once: its subscribe loop
// ends with the connection instead of retrying on a connection manager that is gone.
func TestRunStopsWhileSubscribing(t *testing.T) {
	gate := mqtttest.NewSubscribeGate()
	b := mqtttest.StartMochi(t, &mqtttest.MochiOptions{Hooks: []mqtt.Hook{gate}})
	t.Cleanup(gate.Release) // before the broker stops (cleanups run last first)
	held := gate.Hold()
	c := newConn(t, mqttconn.Config{Broker: b.URL, Subscriptions: []paho.SubscribeOptions{{Topic: "x/#", QoS: 2}}})
	stop := runConn(t, c)
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the broker never saw a SUBSCRIBE")
	}
	if err := stop(); err != nil { // fails when Run does not return within runConn's deadline
		t.Fatal(err)
	}
}

// TestBacklogAtConnectIsAcknowledged: a persistent session's backlog arrives right after
// CONNACK, and a consumer with manual acknowledgement and a receive maximum of 1 gets the next
// message only once the previous one's acknowledgement reached the broker. paho's own manual
// acknowledgement could record such a first message and then wipe it before sending its
// acknowledgement, and the consumer stopped (mqttconn's ackOrder); every round must deliver its
// whole backlog.
func TestBacklogAtConnectIsAcknowledged(t *testing.T) {
	const rounds, backlog = 10, 20
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		b := start(t)
		got := make(chan string, backlog)
		var c *mqttconn.Conn
		cfg := mqttconn.Config{
			Broker: b.URL, ClientID: "consumer-" + filepath.Base(t.Name()), ManualAck: true, ReceiveMaximum: 1,
			Subscriptions: []paho.SubscribeOptions{{Topic: "$share/g/backlog/+", QoS: 2}},
			OnPublish: func(pr paho.PublishReceived) {
				if err := c.Ack(pr); err != nil {
					t.Errorf("Ack: %v", err)
				}
				got <- string(pr.Packet.Payload)
			},
		}
		c = newConn(t, cfg)
		stop := runConn(t, c)
		awaitReady(t, c)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		pub := mqtttest.NewPublisher(t, b.URL)
		defer pub.Close()
		for r := range rounds {
			for i := range backlog {
				pub.Publish(t, "backlog/x", []byte(fmt.Sprintf("%d-%d", r, i)), nil)
			}
			c = newConn(t, cfg)
			stop := runConn(t, c)
			for i := range backlog {
				select {
				case p := <-got:
					if want := fmt.Sprintf("%d-%d", r, i); p != want {
						t.Fatalf("round %d: got %s, want %s", r, p, want)
					}
				case <-time.After(20 * time.Second):
					t.Fatalf("round %d: %d of %d messages of the backlog arrived", r, i, backlog)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := c.WaitAcks(ctx); err != nil {
				t.Fatalf("round %d: %v", r, err)
			}
			cancel()
			if err := stop(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

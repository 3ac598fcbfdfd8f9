package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mpackets "github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lpsdev/lps/internal/testutil"
)

func TestAuthentication(t *testing.T) {
	secured := startBroker(t, Config{Username: "lps", Password: "s3cret"})
	open := startBroker(t, Config{})
	tests := []struct {
		name       string
		b          *runningBroker
		user, pass string
		wantCode   byte
	}{
		{name: "no credentials", b: secured, wantCode: 0x86},
		{name: "wrong password", b: secured, user: "lps", pass: "s3cre", wantCode: 0x86},
		{name: "wrong user", b: secured, user: "lpx", pass: "s3cret", wantCode: 0x86},
		{name: "password with a wildcard", b: secured, user: "lps", pass: "*", wantCode: 0x86},
		{name: "right credentials", b: secured, user: "lps", pass: "s3cret", wantCode: 0},
		{name: "anonymous broker, no credentials", b: open, wantCode: 0},
		{name: "anonymous broker, any credentials", b: open, user: "who", pass: "ever", wantCode: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ca, err := dial(t, tt.b.Addr().String(), clientOpts{id: "c", clean: true, user: tt.user, pass: tt.pass})
			if ca == nil {
				t.Fatalf("no CONNACK: %v", err)
			}
			if ca.ReasonCode != tt.wantCode {
				t.Errorf("CONNACK reason code %#x, want %#x (err %v)", ca.ReasonCode, tt.wantCode, err)
			}
			if (err == nil) != (tt.wantCode == 0) {
				t.Errorf("connect error %v, want error: %t", err, tt.wantCode != 0)
			}
		})
	}
}

// selfSigned returns a certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "lps broker test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
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

func TestTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	b := startBroker(t, Config{
		TLS:      &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Username: "lps", Password: "s3cret",
	})
	clientTLS := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}

	got := newCollector()
	sub := mustDial(t, b.Addr().String(), clientOpts{id: "sub", clean: true, tls: clientTLS, user: "lps", pass: "s3cret",
		onPublish: func(_ *paho.Client, p *paho.Publish) { got.add(string(p.Payload)) }})
	subscribe(t, sub, "secure/#")
	pub := mustDial(t, b.Addr().String(), clientOpts{id: "pub", clean: true, tls: clientTLS, user: "lps", pass: "s3cret"})
	publish(t, pub, "secure/x", []string{"over tls"}, 1)
	testutil.Eventually(t, testTimeout, func() error {
		if got.distinct() != 1 {
			return errors.New("waiting for message over TLS")
		}
		return nil
	})

	if _, _, err := dial(t, b.Addr().String(), clientOpts{id: "plain", clean: true, user: "lps", pass: "s3cret"}); err == nil {
		t.Errorf("plain TCP client connected to the TLS listener")
	}
	if _, _, err := dial(t, b.Addr().String(), clientOpts{id: "untrusting", clean: true, tls: &tls.Config{MinVersion: tls.VersionTLS12}}); err == nil {
		t.Errorf("client not trusting the certificate connected")
	}
}

// TestLifecycle: New on a caller's listener, Addr, Ready, Stats and
// QueueDepth, Run returning on cancel with the listener closed, clients
// disconnected and no goroutine left behind.
func TestLifecycle(t *testing.T) {
	before := runtime.NumGoroutine()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Listener: ln, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if b.Addr().String() != ln.Addr().String() {
		t.Errorf("Addr = %v, want %v", b.Addr(), ln.Addr())
	}
	if b.Ready() {
		t.Errorf("Ready before Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	testutil.Eventually(t, testTimeout, func() error {
		if !b.Ready() {
			return errors.New("waiting for ready")
		}
		return nil
	})

	col := newCollector()
	c := mustDial(t, b.Addr().String(), consumer("c", 1, col, 0))
	subscribe(t, c, "t/#")
	pub := mustDial(t, b.Addr().String(), clientOpts{id: "p", clean: true})
	publish(t, pub, "t/1", payloads("p", 3), 1)
	testutil.Eventually(t, testTimeout, func() error {
		if !(col.distinct() == 3 && b.QueueDepth() == 0) {
			return errors.New("waiting for delivery")
		}
		return nil
	})
	if st := b.Stats(); st.ClientsConnected != 2 || st.Sessions != 2 {
		t.Errorf("Stats = %+v, want 2 clients connected, 2 sessions", st)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil after cancel", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Run did not return after cancel")
	}
	if b.Ready() {
		t.Errorf("Ready after Run returned")
	}
	waitDone(t, c)
	waitDone(t, pub)
	if conn, err := net.DialTimeout("tcp", b.Addr().String(), time.Second); err == nil {
		conn.Close()
		t.Errorf("listener still accepts after Run returned")
	}
	if err := b.Run(context.Background()); !errors.Is(err, ErrRunTwice) {
		t.Errorf("second Run = %v, want ErrRunTwice", err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if runtime.NumGoroutine() > before {
			return fmt.Errorf("waiting for goroutines back to %d (now %d)", before, runtime.NumGoroutine())
		}
		return nil
	})
}

// TestCloseWithoutRun releases the listener and the data dir of a broker
// that never ran, so that another can take them.
func TestCloseWithoutRun(t *testing.T) {
	dir := t.TempDir()
	b, err := New(Config{Address: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Address: "127.0.0.1:0", DataDir: dir}); err == nil || !strings.HasPrefix(err.Error(), "opening data dir") {
		t.Errorf("second broker on a data dir in use: err = %v, want opening data dir error", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if conn, err := net.DialTimeout("tcp", b.Addr().String(), time.Second); err == nil {
		conn.Close()
		t.Errorf("listener open after Close")
	}
	b2, err := New(Config{Address: b.Addr().String(), DataDir: dir})
	if err != nil {
		t.Fatalf("New on the released address and data dir: %v", err)
	}
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b2.Run(context.Background()); !errors.Is(err, ErrRunTwice) {
		t.Errorf("Run after Close = %v, want ErrRunTwice", err)
	}
}

func TestNewValidates(t *testing.T) {
	cert, _ := selfSigned(t)
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "user without password", cfg: Config{Username: "u"}, wantErr: "validating config: username and password"},
		{name: "password without user", cfg: Config{Password: "p"}, wantErr: "validating config: username and password"},
		{name: "negative max queued", cfg: Config{MaxQueued: -1}, wantErr: "validating config: max queued"},
		{name: "max inflight too large", cfg: Config{MaxInflight: 65536}, wantErr: "validating config: max inflight"},
		{name: "tls without certificate", cfg: Config{TLS: &tls.Config{}}, wantErr: "validating config: tls config"},
		{name: "bad address", cfg: Config{Address: "127.0.0.1:http-alt-nonexistent"}, wantErr: "listening on"},
		{name: "data dir is a file", cfg: Config{DataDir: "/dev/null"}, wantErr: "opening data dir"},
		{name: "tls", cfg: Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			if tt.cfg.Address == "" {
				tt.cfg.Listener = ln
			} else {
				ln.Close()
				ln = nil
			}
			b, err := New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				_ = b.Close()
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want prefix %q", err, tt.wantErr)
			}
			if ln != nil {
				if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
					t.Errorf("the caller's listener was not closed by the failing New: %v", err)
				}
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := startBroker(t, Config{Registerer: reg})
	if _, err := New(Config{Address: "127.0.0.1:0", Registerer: reg}); err == nil || !strings.HasPrefix(err.Error(), "registering metrics") {
		t.Errorf("second broker on one registry: err = %v, want registering metrics error", err)
	}
	col := newCollector()
	c := mustDial(t, b.Addr().String(), consumer("c", 1, col, 0))
	subscribe(t, c, sharedFilter)
	pub := mustDial(t, b.Addr().String(), clientOpts{id: "p", clean: true})
	publish(t, pub, "p/message", payloads("p", 5), 1)
	// QoS 2: a message the consumer answered with PUBREC has left the queue
	// depth but is acknowledged only with its PUBCOMP.
	testutil.Eventually(t, testTimeout, func() error {
		if st := b.Stats(); !(col.distinct() == 5 && b.QueueDepth() == 0 && st.Releasing == 0) {
			return fmt.Errorf("waiting for delivery: %d received, %+v", col.distinct(), st)
		}
		return nil
	})

	for name, want := range map[string]float64{
		"lps_broker_clients_connected":           2,
		"lps_broker_sessions":                    2,
		"lps_broker_messages_queued":             0,
		"lps_broker_messages_inflight":           0,
		"lps_broker_messages_received_total":     5,
		"lps_broker_messages_sent_total":         5,
		"lps_broker_messages_acknowledged_total": 5,
	} {
		if got := testutil.Metric(t, reg, name, nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := testutil.Metric(t, reg, "lps_broker_shared_deliveries_total", nil); got != 5 {
		t.Errorf("lps_broker_shared_deliveries_total = %v, want 5", got)
	}

	b.stop()
	b2 := startBroker(t, Config{Registerer: reg})
	if got := testutil.Metric(t, reg, "lps_broker_clients_connected", nil); got != 0 {
		t.Errorf("restarted broker: clients connected %v, want 0", got)
	}
	_ = b2
}

// TestAcksCarryNoPublishProperties: the PUBACK and PUBREC of a publish with
// user properties do not echo them (mochi's buildAck would).
func TestAcksCarryNoPublishProperties(t *testing.T) {
	b := startBroker(t, Config{})
	sub := mustDial(t, b.Addr().String(), consumer("sub", 10, newCollector(), 0))
	subscribe(t, sub, "t/#")
	pub, _ := dialRaw(t, b.Addr().String(), rawOpts{id: "pub"})
	for _, qos := range []byte{1, 2} {
		pk := mpackets.Packet{
			FixedHeader: mpackets.FixedHeader{Type: mpackets.Publish, Qos: qos},
			TopicName:   "t/x",
			PacketID:    uint16(qos),
			Properties:  mpackets.Properties{User: []mpackets.UserProperty{{Key: "request_id", Val: "r-1"}}},
		}
		pub.send(pk)
		ack := pub.recv()
		if ack.FixedHeader.Remaining != 2 || len(ack.Properties.User) != 0 {
			t.Errorf("QoS %d: %s of %d bytes with user properties %v; want 2 bytes, none",
				qos, mpackets.PacketNames[ack.FixedHeader.Type], ack.FixedHeader.Remaining, ack.Properties.User)
		}
		if qos == 2 {
			pub.release(ack.PacketID)
		}
	}
}

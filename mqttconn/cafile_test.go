package mqttconn_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lpsdev/lps/config"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/mqttconn"
	"github.com/lpsdev/lps/mqttconn/mqtttest"
	"github.com/lpsdev/lps/roles/mqttbroker"
)

// testCA is a certificate authority of a test's own and a server certificate it signed for
// 127.0.0.1, as PEM files.
type testCA struct {
	caFile, certFile, keyFile string
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lps test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{
		caFile:   write("ca.pem", "CERTIFICATE", caDER),
		certFile: write("cert.pem", "CERTIFICATE", der),
		keyFile:  write("key.pem", "PRIVATE KEY", keyDER),
	}
}

// TestCAFileTrustsAPrivateCA: a real TLS MQTT listener (the shipped broker, `lps broker
// --tls-cert --tls-key`) on 127.0.0.1 whose certificate a CA of the test's own signed.
// With Options.CAFile (--ca-file) naming that CA the bridge connects and publishes; without
// it every attempt fails with the certificate error, and the Conn says so.
func TestCAFileTrustsAPrivateCA(t *testing.T) {
	ca := newTestCA(t)
	b := mqtttest.StartEmbeddedWith(t, func(c *mqttbroker.Config) { c.TLSCertFile, c.TLSKeyFile = ca.certFile, ca.keyFile })
	url := "mqtts://" + b.Addr

	t.Run("with the CA file", func(t *testing.T) {
		opts := fast
		opts.CAFile = ca.caFile
		c := newConn(t, mqttconn.Config{Broker: url, Options: opts, Logger: zap.NewNop()})
		runConn(t, c)
		awaitReady(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c.Publish(ctx, &paho.Publish{Topic: "x", QoS: 2}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("without it", func(t *testing.T) {
		core, logs := observer.New(zap.WarnLevel)
		c := newConn(t, mqttconn.Config{Broker: url, Options: fast, Logger: zap.New(core)})
		runConn(t, c)
		testutil.Eventually(t, 30*time.Second, func() error {
			for _, e := range logs.FilterMessage("connecting to the broker failed; retrying").All() {
				if err, ok := e.ContextMap()["error"].(string); ok && strings.Contains(err, "certificate signed by unknown authority") {
					return nil
				}
			}
			return fmt.Errorf("no connect error about the certificate among %d log lines", logs.Len())
		})
		if c.Ready(context.Background()) == nil {
			t.Error("connected to a broker whose certificate no trusted CA signed")
		}
	})
}

// TestCAFileErrors: a CA file that cannot be used stops New with an error naming the field
// (the command line turns it into "invalid --ca-file <path>: ...") and saying why.
func TestCAFileErrors(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	key, err := os.ReadFile(ca.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	file := func(name string, data []byte, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	cert, err := os.ReadFile(ca.caFile)
	if err != nil {
		t.Fatal(err)
	}
	notDER := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})
	mangled := []byte(strings.Replace(string(cert), "M", "*", 3)) // no longer base64: not a PEM block
	for _, tc := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "absent.pem"), "reading the CA bundle: no such file or directory"},
		{"a directory", dir, "reading the CA bundle: is a directory"},
		{"not PEM", file("text.pem", []byte("just some text\n"), 0o600), "holds no PEM certificate"},
		{"empty", file("empty.pem", nil, 0o600), "holds no PEM certificate"},
		{"a key", file("key.pem", key, 0o600), `PEM block 1 is a "PRIVATE KEY", not a CERTIFICATE`},
		{"a certificate and a key", file("mixed.pem", append(cert, key...), 0o600), `PEM block 2 is a "PRIVATE KEY"`},
		{"mangled", file("mangled.pem", mangled, 0o600), "holds no PEM certificate"},
		{"not a certificate inside", file("notder.pem", append(cert, notDER...), 0o600), "certificate 2: x509:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mqttconn.New(mqttconn.Config{Broker: "mqtts://127.0.0.1:8883", ClientID: "a", Options: mqttconn.Options{CAFile: tc.path}})
			var fe *config.FieldError
			if !errors.As(err, &fe) || fe.Field != "CAFile" || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v; want a CAFile error saying %q", err, tc.want)
			}
		})
	}
	if os.Getuid() != 0 { // root reads any file
		t.Run("unreadable", func(t *testing.T) {
			path := file("secret.pem", cert, 0o000)
			_, err := mqttconn.New(mqttconn.Config{Broker: "mqtts://127.0.0.1:8883", ClientID: "a", Options: mqttconn.Options{CAFile: path}})
			if err == nil || !strings.Contains(err.Error(), "permission denied") {
				t.Errorf("New: %v; want permission denied", err)
			}
		})
	}
}

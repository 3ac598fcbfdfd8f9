// Package mqtttest gives the bridges' tests their brokers and observers: the broker the LPS
// ships (StartEmbedded), a Mosquitto process (StartMosquitto) and a raw mochi server whose hooks
// make a broker misbehave (StartMochi), each on a free loopback port and restartable on the same
// address, and a plain autopaho subscriber and publisher that see the broker the way any other
// client does. Nothing here is used outside tests.
package mqtttest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Broker is a broker started by a test. It stops when the test ends.
type Broker struct {
	// Name is "embedded", "mosquitto" or "mochi".
	Name string
	// URL is the broker URL to give a bridge: mqtt://127.0.0.1:<port>.
	URL string
	// Addr is host:port.
	Addr string

	t       testing.TB
	mu      sync.Mutex
	running bool
	start   func() error
	stop    func(kill bool) error
	depth   func() int // the embedded broker's QueueDepth; nil for the others
}

// QueueDepth is what the embedded broker still has to deliver: queued, in flight and delayed
// messages. Only the embedded broker tells; for the others the test is failed.
func (b *Broker) QueueDepth(t testing.TB) int {
	t.Helper()
	if b.depth == nil {
		t.Fatalf("%s does not tell its queue depth", b.Name)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.depth()
}

// Stop stops the broker gracefully (a Mosquitto with persistence saves its state).
func (b *Broker) Stop() { b.t.Helper(); b.halt(false) }

// Kill stops the broker abruptly (SIGKILL for Mosquitto; mochi has no abrupt stop and closes).
func (b *Broker) Kill() { b.t.Helper(); b.halt(true) }

func (b *Broker) halt(kill bool) {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.running {
		return
	}
	b.running = false
	if err := b.stop(kill); err != nil {
		b.t.Fatalf("stopping %s: %v", b.Name, err)
	}
}

// Start starts a stopped broker again on the same address.
func (b *Broker) Start() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running {
		return
	}
	if err := b.start(); err != nil {
		b.t.Fatalf("starting %s on %s: %v", b.Name, b.Addr, err)
	}
	b.running = true
}

// MochiOptions configure StartMochi.
type MochiOptions struct {
	// Hooks are added to the server (again at every Start).
	Hooks []mqtt.Hook
	// NoAllow leaves out AllowHook; then Hooks must authenticate clients.
	NoAllow bool
}

// StartMochi starts an in-process mochi server on 127.0.0.1 with a free port, for the tests
// whose hooks make the broker misbehave (PacketGate, DenyPublish): it is not the broker the LPS
// ships, which Each and StartEmbedded give. It ignores the clients' receive maximum, whose
// handling in mochi v2.7.9 loses and deadlocks deliveries (see ignoreReceiveMaximum).
func StartMochi(t testing.TB, opts *MochiOptions) *Broker {
	t.Helper()
	if opts == nil {
		opts = &MochiOptions{}
	}
	b := &Broker{Name: "mochi", t: t, Addr: "127.0.0.1:0"}
	var srv *mqtt.Server
	b.start = func() error {
		logger := slog.New(slog.NewTextHandler(io.Discard, nil))
		if os.Getenv("MQTTTEST_DEBUG") != "" { // mochi's debug log, to see a test's packets
			logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		s := mqtt.New(&mqtt.Options{Logger: logger})
		if os.Getenv("MQTTTEST_DEBUG") != "" {
			if err := s.AddHook(new(traceHook), nil); err != nil {
				return err
			}
		}
		if err := s.AddHook(new(ignoreReceiveMaximum), nil); err != nil {
			return err
		}
		if !opts.NoAllow {
			if err := s.AddHook(new(AllowHook), nil); err != nil {
				return err
			}
		}
		for _, h := range opts.Hooks {
			if err := s.AddHook(h, nil); err != nil {
				return err
			}
		}
		ln := listeners.NewTCP(listeners.Config{ID: "tcp", Address: b.Addr})
		if err := s.AddListener(ln); err != nil {
			return err
		}
		if err := s.Serve(); err != nil {
			return err
		}
		b.Addr = ln.Address()
		b.URL = "mqtt://" + b.Addr
		srv = s
		return nil
	}
	b.stop = func(bool) error { return srv.Close() }
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

// AllowHook lets every client connect and use every topic, as mochi's auth.AllowHook does
// (whose package needs a YAML module this module does not require).
type AllowHook struct{ mqtt.HookBase }

// ID names the hook.
func (h *AllowHook) ID() string { return "allow-all" }

// Provides says which events the hook handles.
func (h *AllowHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

// OnConnectAuthenticate allows every client.
func (h *AllowHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

// OnACLCheck allows every topic.
func (h *AllowHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// MosquittoBinary is where the tests look for Mosquitto first; then PATH.
const MosquittoBinary = "/usr/sbin/mosquitto"

// StartMosquitto starts a Mosquitto process on 127.0.0.1 with a free port and persistence in a
// temporary directory. Without Mosquitto installed the test is skipped, unless
// LPS_REQUIRE_MOSQUITTO=1 (CI sets it), which fails it: there a skip would hide a whole test.
func StartMosquitto(t testing.TB) *Broker {
	t.Helper()
	bin := MosquittoBinary
	if _, err := os.Stat(bin); err != nil {
		p, lerr := exec.LookPath("mosquitto")
		if lerr != nil {
			if os.Getenv("LPS_REQUIRE_MOSQUITTO") == "1" {
				t.Fatalf("no mosquitto binary at %s or in PATH, and LPS_REQUIRE_MOSQUITTO=1", MosquittoBinary)
			}
			t.Skipf("skipping the Mosquitto variant: no mosquitto binary at %s or in PATH", MosquittoBinary)
		}
		bin = p
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	conf := []string{
		"listener " + port + " 127.0.0.1",
		"allow_anonymous true",
		"persistence true",
		"persistence_location " + dir + "/",
		"max_queued_messages 0", // no limit: a test's backlog must not be dropped
		"log_dest file " + filepath.Join(dir, "mosquitto.log"),
		"log_type error",
		"log_type warning",
		"log_type notice",
	}
	if os.Geteuid() == 0 {
		conf = append(conf, "user root") // else it drops to user mosquitto, who cannot write dir
	}
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &Broker{Name: "mosquitto", t: t, Addr: addr, URL: "mqtt://" + addr}
	var cmd *exec.Cmd
	var exited chan struct{}
	b.start = func() error {
		cmd = exec.Command(bin, "-c", confPath)
		out, err := os.OpenFile(filepath.Join(dir, "stderr.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			out.Close()
			return err
		}
		exited = make(chan struct{})
		go func(cmd *exec.Cmd, exited chan struct{}) {
			cmd.Wait()
			out.Close()
			close(exited)
		}(cmd, exited)
		// Poll the port until Mosquitto listens.
		deadline := time.After(10 * time.Second)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				return nil
			}
			select {
			case <-exited:
				return fmt.Errorf("mosquitto exited at start: %s", logTail(dir))
			case <-deadline:
				return fmt.Errorf("mosquitto did not listen within 10s: %v; %s", err, logTail(dir))
			case <-tick.C:
			}
		}
	}
	b.stop = func(kill bool) error {
		sig := syscall.SIGTERM
		if kill {
			sig = syscall.SIGKILL
		}
		cmd.Process.Signal(sig)
		select {
		case <-exited:
			return nil
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			return errors.New("mosquitto did not stop within 10s of SIGTERM; killed")
		}
	}
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

func logTail(dir string) string {
	var parts []string
	for _, f := range []string{"stderr.log", "mosquitto.log"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil && len(b) > 0 {
			if len(b) > 2000 {
				b = b[len(b)-2000:]
			}
			parts = append(parts, f+": "+string(b))
		}
	}
	return strings.Join(parts, "; ")
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Each runs f in a subtest per broker a bridge test runs against: the broker the LPS ships
// (StartEmbedded, as `lps broker` runs it) and Mosquitto (StartMosquitto: skipped when it is not
// installed, failed then under LPS_REQUIRE_MOSQUITTO=1). start starts the subtest's broker.
func Each(t *testing.T, f func(t *testing.T, start func(t *testing.T) *Broker)) {
	t.Run("embedded", func(t *testing.T) { f(t, func(t *testing.T) *Broker { return StartEmbedded(t) }) })
	t.Run("mosquitto", func(t *testing.T) { f(t, func(t *testing.T) *Broker { return StartMosquitto(t) }) })
}

// ctxFor returns a context that ends with the test or after d.
func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

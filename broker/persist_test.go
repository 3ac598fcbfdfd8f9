package broker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/lpsdev/lps/internal/testutil"
)

const (
	sharedFilter    = "$share/legacy_proxy/+/message"
	helperEnv       = "LPS_BROKER_HELPER_DATA_DIR"
	helperQueuesEnv = "LPS_BROKER_HELPER_QUEUES" // comma-separated GROUP:FILTER
)

// TestMain doubles as a broker process for TestKilledBrokerKeepsMessages:
// started with helperEnv set, the test binary runs a broker on that data
// dir, prints its address and serves until it is killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		cfg := Config{Address: "127.0.0.1:0", DataDir: dir}
		if qs := os.Getenv(helperQueuesEnv); qs != "" {
			for _, s := range strings.Split(qs, ",") {
				q, err := ParseQueue(s)
				if err != nil {
					fmt.Fprintln(os.Stderr, "helper broker:", err)
					os.Exit(2)
				}
				cfg.Queues = append(cfg.Queues, q)
			}
		}
		b, err := New(cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper broker:", err)
			os.Exit(2)
		}
		// The socket is bound already: a client connecting before Run
		// accepts waits in the listen backlog.
		fmt.Printf("addr=%s\n", b.Addr())
		_ = b.Run(context.Background()) // until SIGKILL
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestBacklogSurvivesDisconnectAndRestart: a consumer with a persistent
// session disconnects; 1,000 QoS 2 messages are published to its shared
// subscription; it reconnects (after a graceful broker restart on the same
// data dir, in some cases) and gets every one of them, exactly once.
func TestBacklogSurvivesDisconnectAndRestart(t *testing.T) {
	const n = 1000
	tests := []struct {
		name       string
		dataDir    bool
		restart    string // "", "same-address", "new-address"
		receiveMax uint16
		filter     string
	}{
		{name: "in memory, reconnect", receiveMax: 1, filter: sharedFilter},
		{name: "data dir, reconnect", dataDir: true, receiveMax: 10, filter: sharedFilter},
		{name: "data dir, restart on same address", dataDir: true, restart: "same-address", receiveMax: 1, filter: sharedFilter},
		{name: "data dir, restart on new address", dataDir: true, restart: "new-address", receiveMax: 10, filter: sharedFilter},
		{name: "plain subscription, data dir, restart", dataDir: true, restart: "new-address", receiveMax: 1, filter: "+/message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{}
			if tt.dataDir {
				cfg.DataDir = t.TempDir()
			}
			b := startBroker(t, cfg)

			col := newCollector()
			opts := consumer("legacy-proxy-2-1", tt.receiveMax, col, 0)
			c := mustDial(t, b.Addr().String(), opts)
			subscribe(t, c, tt.filter)
			disconnect(c)
			testutil.Eventually(t, testTimeout, func() error {
				if b.Stats().ClientsConnected != 0 {
					return errors.New("waiting for consumer disconnected")
				}
				return nil
			})

			pub := mustDial(t, b.Addr().String(), clientOpts{id: "proxy1-1", expiry: 3600})
			want := payloads("proxy1-1", n)
			publish(t, pub, "proxy1-1/message", want, 8)
			disconnect(pub)
			if got := b.QueueDepth(); got != n {
				t.Fatalf("QueueDepth with the consumer away = %d, want %d", got, n)
			}

			if tt.restart != "" {
				b.stop()
				cfg.Address = "127.0.0.1:0"
				if tt.restart == "same-address" {
					cfg.Address = b.Addr().String()
				}
				b = startBroker(t, cfg)
				if got := b.QueueDepth(); got != n {
					t.Fatalf("QueueDepth after restart = %d, want %d", got, n)
				}
			}

			opts.clean = false
			c, ca, err := dial(t, b.Addr().String(), opts)
			if err != nil {
				t.Fatalf("reconnecting consumer: %v", err)
			}
			if !ca.SessionPresent {
				t.Errorf("CONNACK session present = false, want true")
			}
			_ = c
			testutil.Eventually(t, testTimeout, func() error {
				if col.distinct() != n {
					return fmt.Errorf("waiting for consumer to get %d messages (has %d, missing e.g. %v)", n, col.distinct(), col.missing(want))
				}
				return nil
			})
			testutil.Eventually(t, testTimeout, func() error {
				st := b.Stats()
				if !(b.QueueDepth() == 0 && st.Releasing == 0) {
					return fmt.Errorf("waiting for broker drained (stats %+v)", b.Stats())
				}
				return nil
			})
			if d := col.duplicates(); d != 0 {
				t.Errorf("consumer got %d duplicates, want 0", d)
			}
		})
	}
}

// startHelperBroker runs a broker in a child process (the test binary, see
// TestMain) on dataDir, declaring queues, and returns its address and the
// child, which the test kills to simulate a crash.
func startHelperBroker(t *testing.T, dataDir string, queues ...Queue) (string, *exec.Cmd) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dataDir)
	if len(queues) > 0 {
		qs := make([]string, len(queues))
		for i, q := range queues {
			qs[i] = q.String()
		}
		cmd.Env = append(cmd.Env, helperQueuesEnv+"="+strings.Join(qs, ","))
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting helper broker: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "addr="); ok {
				addr <- a
			}
		}
	}()
	select {
	case a := <-addr:
		return a, cmd
	case <-ctx.Done():
		t.Fatalf("helper broker did not announce its address")
		return "", nil
	}
}

// TestKilledBrokerKeepsMessages kills the broker process with SIGKILL while
// a consumer holds unacknowledged messages and the rest of a backlog is
// queued, then starts a broker on the same data dir: every message the
// publisher had completed (PUBCOMP) is delivered, the retained message and
// the session are still there. The only duplicates are the messages the
// consumer had received but not acknowledged when the broker died; they go
// back to the shared group and are delivered again.
func TestKilledBrokerKeepsMessages(t *testing.T) {
	const n, held = 1000, 10
	dir := t.TempDir()
	addr, cmd := startHelperBroker(t, dir)

	// A consumer that receives but never acknowledges: `held` messages stay
	// in flight to it, the rest queue in the group.
	col := newCollector()
	opts := consumer("legacy-proxy-2-1", held, col, 0)
	holding := opts
	holding.manualAck = true // and never calls Ack
	var idsMu sync.Mutex
	heldIDs := map[uint16]bool{} // packet ids of the flows the consumer still holds at the kill
	holding.onPublish = func(_ *paho.Client, p *paho.Publish) {
		col.add(string(p.Payload))
		idsMu.Lock()
		heldIDs[p.PacketID] = true
		idsMu.Unlock()
	}
	c := mustDial(t, addr, holding)
	subscribe(t, c, sharedFilter)

	pub := mustDial(t, addr, clientOpts{id: "proxy1-1", expiry: 3600})
	want := payloads("proxy1-1", n)
	publish(t, pub, "proxy1-1/message", want, 8)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := pub.Publish(ctx, &paho.Publish{QoS: 1, Retain: true, Topic: "status/broker", Payload: []byte("up")}); err != nil {
		t.Fatalf("publishing retained message: %v", err)
	}
	testutil.Eventually(t, testTimeout, func() error {
		if col.distinct() != held {
			return fmt.Errorf("waiting for consumer holding %d messages", held)
		}
		return nil
	})

	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no shutdown code runs
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitDone(t, c)
	waitDone(t, pub)

	b := startBroker(t, Config{DataDir: dir})
	st := b.Stats()
	if b.QueueDepth() != n || st.Retained != 1 {
		t.Fatalf("after restart: QueueDepth %d (stats %+v), want %d queued and 1 retained", b.QueueDepth(), st, n)
	}

	// The consumer may still hold those flows (an acknowledgement it sends late would complete
	// another message that reused the id), so the restarted broker must not reuse their ids.
	reused := 0
	after := opts
	after.onPublish = func(c *paho.Client, p *paho.Publish) {
		idsMu.Lock()
		if heldIDs[p.PacketID] {
			reused++
		}
		idsMu.Unlock()
		opts.onPublish(c, p)
	}
	c2, ca, err := dial(t, b.Addr().String(), after)
	if err != nil {
		t.Fatalf("reconnecting consumer: %v", err)
	}
	if !ca.SessionPresent {
		t.Errorf("CONNACK session present = false, want true")
	}
	_ = c2
	testutil.Eventually(t, testTimeout, func() error {
		if col.distinct() != n {
			return fmt.Errorf("waiting for consumer to get %d messages (has %d, missing e.g. %v)", n, col.distinct(), col.missing(want))
		}
		return nil
	})
	testutil.Eventually(t, testTimeout, func() error {
		if b.QueueDepth() != 0 {
			return errors.New("waiting for broker drained")
		}
		return nil
	})
	idsMu.Lock()
	if reused != 0 {
		t.Errorf("the restarted broker reused %d packet ids the consumer held at the kill", reused)
	}
	idsMu.Unlock()
	if d := col.duplicates(); d != held {
		t.Errorf("duplicates = %d, want %d (the messages held unacknowledged at the kill)", d, held)
	}

	retained := newCollector()
	sub := mustDial(t, b.Addr().String(), clientOpts{id: "status-reader", clean: true, onPublish: func(_ *paho.Client, p *paho.Publish) {
		if p.Retain {
			retained.add(string(p.Payload))
		}
	}})
	subscribe(t, sub, "status/#")
	testutil.Eventually(t, testTimeout, func() error {
		if retained.distinct() != 1 {
			return errors.New("waiting for retained message after the kill")
		}
		return nil
	})
}

// TestRetainedMessageSurvivesRestart checks retained messages: stored,
// delivered with the retain flag on subscription, cleared by an empty
// payload, and restored after a graceful restart.
func TestRetainedMessageSurvivesRestart(t *testing.T) {
	cfg := Config{DataDir: t.TempDir()}
	b := startBroker(t, cfg)
	pub := mustDial(t, b.Addr().String(), clientOpts{id: "pub", clean: true})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, p := range []*paho.Publish{
		{QoS: 2, Retain: true, Topic: "cfg/a", Payload: []byte("a1")},
		{QoS: 1, Retain: true, Topic: "cfg/b", Payload: []byte("b1")},
		{QoS: 1, Retain: true, Topic: "cfg/b", Payload: nil}, // clears cfg/b
		{QoS: 0, Retain: true, Topic: "cfg/c", Payload: []byte("c1")},
	} {
		if _, err := pub.Publish(ctx, p); err != nil {
			t.Fatalf("publishing %s: %v", p.Topic, err)
		}
	}
	disconnect(pub)
	testutil.Eventually(t, testTimeout, func() error {
		if b.Stats().Retained != 2 {
			return fmt.Errorf("waiting for 2 retained messages (stats %+v)", b.Stats())
		}
		return nil
	})
	b.stop()

	b = startBroker(t, cfg)
	if got := b.Stats().Retained; got != 2 {
		t.Fatalf("retained after restart = %d, want 2", got)
	}
	got := newCollector()
	sub := mustDial(t, b.Addr().String(), clientOpts{id: "sub", clean: true, onPublish: func(_ *paho.Client, p *paho.Publish) {
		got.add(fmt.Sprintf("%s=%s retain=%t", p.Topic, p.Payload, p.Retain))
	}})
	subscribe(t, sub, "cfg/#")
	testutil.Eventually(t, testTimeout, func() error {
		if got.distinct() != 2 {
			return fmt.Errorf("waiting for 2 retained messages, got %v", got.arrivals())
		}
		return nil
	})
	want := []string{"cfg/a=a1 retain=true", "cfg/c=c1 retain=true"}
	if m := got.missing(want); len(m) > 0 {
		t.Errorf("missing %v, got %v", m, got.arrivals())
	}
}

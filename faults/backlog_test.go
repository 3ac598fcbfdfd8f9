package faults_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/lpsdev/lps/faults"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/roles/mqttbroker"
)

// maxBacklogRSS is the bound on the broker's resident memory while it holds, and after a
// restart drains, a backlog of millions of alarms (issue 14): the backlog is on disk.
const maxBacklogRSS = 200 << 20

// TestBrokerBacklogOnDisk is issue 14's test: with no consumer, alarms of about 200 bytes are
// published at QoS 2 (as http2mqtt sends them) to <service>/message, which the declared queue
// $share/legacy_proxy/+/message takes; the broker (`lps broker --data-dir`, a real process)
// is restarted, and consumers drain the queue. Every alarm arrives exactly once, and the
// broker's RSS stays under maxBacklogRSS throughout. 2,000,000 alarms with LPS_FAULTS_FULL=1,
// 200,000 otherwise.
func TestBrokerBacklogOnDisk(t *testing.T) {
	n, deadline := 200_000, 10*time.Minute
	if full {
		n, deadline = 2_000_000, 60*time.Minute
	}
	ctx := testCtx(t, deadline)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "broker-data")
	broker := faults.NewProcess(faults.ProcessConfig{
		Name: "broker",
		Path: lpsBin,
		Args: []string{"broker", "--log-format", "json", "--listen", faults.LoopbackAddr(),
			"--admin-listen", faults.LoopbackAddr(), "--data-dir", dataDir},
		LogPath: filepath.Join(dir, "broker.log"),
		Pins:    []faults.Pin{{Flag: "--listen", Msg: "started"}, {Flag: "--admin-listen", Msg: "listening"}},
		Ready:   faults.HTTPReady("--admin-listen", "/readyz"),
	})
	t.Cleanup(func() { broker.Kill() })
	if err := broker.StartReady(ctx); err != nil {
		t.Fatal(err)
	}
	addr := broker.Arg("--listen")
	admin := mqttbroker.NewClient("http://"+broker.Arg("--admin-listen"), nil)

	rss := newRSSSampler(broker)
	defer rss.stop()

	// Queue: many connections, each with many publishes in flight, so that every fsync of
	// the broker's group commit carries hundreds of alarms.
	start := time.Now()
	if err := publishAlarms(ctx, addr, n, 16, 64); err != nil {
		t.Fatal(err)
	}
	queueTime := time.Since(start)
	st, err := admin.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Queues["legacy_proxy:+/message"]; got != n {
		t.Fatalf("queue legacy_proxy:+/message holds %d, want %d", got, n)
	}
	rssQueued := rss.max()

	if err := broker.Term(ctx); err != nil {
		t.Fatal(err)
	}
	rss.reset()
	start = time.Now()
	if err := broker.StartReady(ctx); err != nil {
		t.Fatal(err)
	}
	restartTime := time.Since(start)
	if st, err = admin.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	if st.QueueDepth != n {
		t.Fatalf("after the restart the queue depth is %d, want %d", st.QueueDepth, n)
	}
	rssRestarted := rss.max()

	start = time.Now()
	counts := make([]atomic.Uint32, n)
	var received atomic.Int64
	for i := range 2 {
		c, err := connect(ctx, addr, fmt.Sprintf("legacy-proxy-2-%d", i+1), func(p *paho.Publish) {
			id, err := strconv.Atoi(string(p.Payload[:min(alarmIDLen, len(p.Payload))]))
			if err != nil || id < 0 || id >= n {
				t.Errorf("alarm with a bad id: %.40q", p.Payload)
				return
			}
			counts[id].Add(1)
			received.Add(1)
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
		if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
			{Topic: "$share/legacy_proxy/+/message", QoS: 2}}}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, deadline, func() error {
		st, err := admin.Stats(ctx)
		if err != nil {
			return err
		}
		if received.Load() < int64(n) || st.QueueDepth != 0 {
			return fmt.Errorf("draining: %d received of %d, depth %d", received.Load(), n, st.QueueDepth)
		}
		return nil
	})
	drainTime := time.Since(start)
	rssDrained := rss.max()

	lost, dup := 0, 0
	for i := range counts {
		switch c := counts[i].Load(); {
		case c == 0:
			lost++
		case c > 1:
			dup += int(c) - 1
		}
	}
	var dbSize int64
	if fi, err := os.Stat(filepath.Join(dataDir, "broker.db")); err == nil {
		dbSize = fi.Size()
	}
	t.Logf("%d alarms: queued in %s (%.0f/s), restart %s, drained in %s (%.0f/s); lost %d, duplicated %d",
		n, queueTime.Round(time.Millisecond), float64(n)/queueTime.Seconds(), restartTime.Round(time.Millisecond),
		drainTime.Round(time.Millisecond), float64(n)/drainTime.Seconds(), lost, dup)
	t.Logf("broker max RSS: %d MiB while queueing, %d MiB over the restart, %d MiB while draining; data dir file %d MiB (%d bytes per alarm)",
		rssQueued>>20, rssRestarted>>20, rssDrained>>20, dbSize>>20, dbSize/int64(n))
	if lost != 0 || dup != 0 {
		t.Errorf("lost %d, duplicated %d; want 0 and 0", lost, dup)
	}
	for _, m := range []int64{rssQueued, rssRestarted, rssDrained} {
		if m >= maxBacklogRSS {
			t.Errorf("broker RSS reached %d MiB, want under %d MiB", m>>20, maxBacklogRSS>>20)
		}
	}
}

// alarmIDLen is the length of the decimal id that starts each test alarm.
const alarmIDLen = 10

// publishAlarms publishes alarms 0..n-1 at QoS 2, about 200 bytes each, from conns
// connections with perConn publishes in flight on each, to <service>/message with one service
// per connection. Every one must be accepted.
func publishAlarms(ctx context.Context, addr string, n, conns, perConn int) error {
	pad := bytes.Repeat([]byte("x"), 200-alarmIDLen-len(`{"alarm":""}`))
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conns*perConn)
	for i := range conns {
		c, err := connect(ctx, addr, fmt.Sprintf("proxy1-%d", i+1), nil)
		if err != nil {
			return err
		}
		defer c.Disconnect(&paho.Disconnect{})
		topic := fmt.Sprintf("proxy1-%d/message", i+1)
		for range perConn {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					id := next.Add(1) - 1
					if id >= int64(n) {
						return
					}
					payload := fmt.Appendf(nil, "%0*d{\"alarm\":\"%s\"}", alarmIDLen, id, pad)
					pr, err := c.Publish(ctx, &paho.Publish{QoS: 2, Topic: topic, Payload: payload})
					if err == nil && pr.ReasonCode >= 0x80 {
						err = fmt.Errorf("alarm %d refused with reason code %#x", id, pr.ReasonCode)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	return errors.Join(<-errs)
}

// connect connects an MQTT v5 client with a clean session; onPublish, if set, gets every
// message (acknowledged after it returns).
func connect(ctx context.Context, addr, id string, onPublish func(*paho.Publish)) (*paho.Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	cfg := paho.ClientConfig{ClientID: id, Conn: conn, PacketTimeout: time.Minute}
	if onPublish != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				onPublish(pr.Packet)
				return true, nil
			},
		}
	}
	c := paho.NewClient(cfg)
	receiveMax := uint16(1024)
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &receiveMax}}); err != nil {
		return nil, fmt.Errorf("connecting %s: %w", id, err)
	}
	return c, nil
}

// rssSampler samples a process's resident memory (VmRSS) every 100 ms and keeps the largest.
type rssSampler struct {
	p    *faults.Process
	peak atomic.Int64
	done chan struct{}
	wg   sync.WaitGroup
}

func newRSSSampler(p *faults.Process) *rssSampler {
	s := &rssSampler{p: p, done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			v := vmRSS(p.Pid())
			for old := s.peak.Load(); v > old && !s.peak.CompareAndSwap(old, v); old = s.peak.Load() {
			}
			select {
			case <-s.done:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) max() int64 { return s.peak.Load() }

// reset starts a new maximum (the sampler's goroutine is the only other writer, and only
// raises it).
func (s *rssSampler) reset() { s.peak.Store(0) }

func (s *rssSampler) stop() {
	close(s.done)
	s.wg.Wait()
}

// vmRSS returns the VmRSS of pid in bytes, 0 if it cannot be read (the process is
// restarting).
func vmRSS(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmRSS:")); ok {
			kb, _ := strconv.ParseInt(string(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(v), []byte("kB")))), 10, 64)
			return kb << 10
		}
	}
	return 0
}

package faults_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lpsdev/lps/faults"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/ledger"
)

// lpsBin is the binary built once for the package's tests.
var lpsBin string

// full runs the 30-second fault durations of the SPEC's failover experiment.
var full = os.Getenv("LPS_FAULTS_FULL") == "1"

// LPS_FAULTS_BIN runs the suite against a binary built elsewhere (a candidate fix, a release)
// instead of this tree's.
func TestMain(m *testing.M) { testutil.MainWithLPS(m, &lpsBin, os.Getenv("LPS_FAULTS_BIN")) }

// testCtx is a context that ends with the test or after d.
func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestProcessRestartsOnItsPort(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	logPath := filepath.Join(t.TempDir(), "sim.log")
	var audit atomic.Int32
	p := faults.NewProcess(faults.ProcessConfig{
		Name:    "sim",
		Path:    lpsBin,
		Args:    []string{"rast-sim", "--log-format", "json", "--model", "none", "--listen", "127.0.0.1:0"},
		LogPath: logPath,
		Pins:    []faults.Pin{{Flag: "--listen", Msg: "listening"}},
		Ready:   faults.HTTPReady("--listen", "/readyz"),
		OnLine: func(run int, line []byte) {
			if bytes.Contains(line, []byte("CMD-START")) {
				audit.Add(1)
			}
		},
	})
	t.Cleanup(func() { p.Kill() })
	if err := p.StartReady(ctx); err != nil {
		t.Fatal(err)
	}
	addr := p.Arg("--listen")
	if strings.HasSuffix(addr, ":0") || addr == "" {
		t.Fatalf("listen address not pinned: %q", addr)
	}
	post := func() error {
		resp, err := http.Post("http://"+addr+"/ID_REQ_KC_STORE7D3BPACKET", "application/json", strings.NewReader(`{}`))
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	if err := post(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); !errors.Is(err, faults.ErrRunning) {
		t.Errorf("Start of a running process: %v, want ErrRunning", err)
	}
	pid := p.Pid()
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if p.Running() || p.Pid() != 0 {
		t.Fatal("still running after Kill")
	}
	if m, ok := p.Memory(); ok {
		t.Errorf("Memory of a killed process: %+v, want none", m)
	}
	ended := p.CPU()
	if ended <= 0 {
		t.Errorf("CPU of the killed run %s, want its accounted time", ended)
	}
	if err := post(); err == nil {
		t.Fatal("a killed rast-sim answered")
	}
	if err := p.StartReady(ctx); err != nil {
		t.Fatal(err)
	}
	if p.Arg("--listen") != addr || p.Pid() == pid || p.Run() != 2 {
		t.Errorf("second run at %s pid %d run %d; want %s, a new pid, run 2", p.Arg("--listen"), p.Pid(), p.Run(), addr)
	}
	// Enough work for the second run to show in /proc/PID/stat's 10 ms ticks.
	for range 2000 {
		if err := post(); err != nil {
			t.Fatal(err)
		}
	}
	if running := p.CPU(); running <= ended {
		t.Errorf("CPU after 2,000 requests in the second run %s, want more than the first run's %s", running, ended)
	}
	// A Go process serving HTTP is resident with some MB, and never more than its peak.
	if m, ok := p.Memory(); !ok || m.RSS < 1<<20 || m.Peak < m.RSS {
		t.Errorf("Memory of the running rast-sim: %+v (ok %v), want RSS of at least 1 MiB and a peak no smaller", m, ok)
	}
	if err := p.Term(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.ExitErr(); err != nil {
		t.Errorf("exit after SIGTERM: %v, want a clean exit", err)
	}
	if n := audit.Load(); n != 2001 {
		t.Errorf("OnLine saw %d CMD-START lines, want 2001", n)
	}
	log, _ := os.ReadFile(logPath)
	if bytes.Count(log, []byte("=== sim run ")) != 2 {
		t.Errorf("log does not hold both runs:\n%s", log)
	}

	// A process that exits at once is reported, with its log, instead of being waited for.
	bad := faults.NewProcess(faults.ProcessConfig{Name: "bad", Path: lpsBin, Args: []string{"comp2", "--upstream", "x"},
		LogPath: filepath.Join(t.TempDir(), "bad.log"), Ready: faults.HTTPReady("--listen", "/readyz")})
	if err := bad.StartReady(ctx); !errors.Is(err, faults.ErrExited) || !strings.Contains(err.Error(), "--upstream") {
		t.Errorf("a process that fails at start: %v", err)
	}
}

// echoServer answers every connection by echoing what it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn, msg string, timeout time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

func TestProxyCutBlackholeRestore(t *testing.T) {
	p, err := faults.ListenProxy(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c := dial()
	if got, err := roundTrip(c, "hello", 5*time.Second); err != nil || got != "hello" {
		t.Fatalf("through the proxy: %q %v", got, err)
	}

	p.Cut()
	if _, err := roundTrip(c, "after cut", 5*time.Second); err == nil {
		t.Error("a cut connection still carries bytes")
	}
	// A cut proxy resets new connections at once; the reset may even beat connect(2)'s return,
	// so a failing dial is as much a proof of the cut as a failing round trip.
	if nc, err := net.Dial("tcp", p.Addr()); err == nil {
		t.Cleanup(func() { nc.Close() })
		if _, err := roundTrip(nc, "new", 5*time.Second); err == nil {
			t.Error("a new connection works while the network is cut")
		}
	}
	p.Restore()
	if got, err := roundTrip(dial(), "again", 5*time.Second); err != nil || got != "again" {
		t.Fatalf("after Restore: %q %v", got, err)
	}

	c = dial()
	if _, err := roundTrip(c, "before", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	if _, err := roundTrip(c, "held", 300*time.Millisecond); err == nil {
		t.Error("bytes went through a blackholed proxy")
	}
	p.Restore()
	// What was sent during the blackhole arrives now, as after a partition TCP survived.
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, len("held"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "held" {
		t.Errorf("after the blackhole: %q %v", buf, err)
	}
}

func TestFaultyUpstream(t *testing.T) {
	var hits atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "Success "+r.Header.Get("Request-Id"))
	}))
	t.Cleanup(backend.Close)
	f, err := faults.ListenFaultyUpstream(backend.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	get := func(timeout time.Duration) (int, string, error) {
		req, _ := http.NewRequest(http.MethodPost, f.URL()+"/ID_REQ_KC_STORE7D3BPACKET", strings.NewReader("{}"))
		req.Header.Set("Request-Id", "r1")
		resp, err := (&http.Client{Timeout: timeout}).Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	if code, body, err := get(5 * time.Second); err != nil || code != 200 || body != "Success r1" {
		t.Fatalf("passing: %d %q %v", code, body, err)
	}
	f.Fail(500)
	if code, _, err := get(5 * time.Second); err != nil || code != 500 {
		t.Fatalf("failing: %d %v", code, err)
	}
	if hits.Load() != 1 {
		t.Errorf("a failed request reached the backend")
	}
	f.Delay(time.Second)
	if _, _, err := get(200 * time.Millisecond); err == nil {
		t.Error("a delayed answer came before the client's timeout")
	}
	if hits.Load() != 2 {
		t.Errorf("a delayed request must reach the backend at once")
	}
	f.Pass()
	if code, _, err := get(5 * time.Second); err != nil || code != 200 {
		t.Fatalf("passing again: %d %v", code, err)
	}
	backend.Close()
	if _, _, err := get(5 * time.Second); err == nil {
		t.Error("an unreachable backend must look unreachable, not answer")
	}
	if c := f.Counts(); c.Failed != 1 || c.Delayed != 1 {
		t.Errorf("counts %+v", c)
	}
}

// suiteConfig is the timing of the scenario suite: short by default, the SPEC's 30-second
// downtimes (a 10-second network cut, 5-minute long outages, every flag at its default) with
// LPS_FAULTS_FULL=1. The short suite shortens the outages and, through mqtt2http's flags, its
// retry delays; the code paths are the defaults'.
// dedupOff runs the suite with comp2's dedup window off (LPS_FAULTS_DEDUP=off), to measure the
// duplicates it suppresses; they are then reported, not failed.
var dedupOff = os.Getenv("LPS_FAULTS_DEDUP") == "off"

func suiteConfig() (faults.RunConfig, func(*faults.ClusterConfig)) {
	if full {
		return faults.RunConfig{
				Warmup: 5 * time.Second, Fault: 30 * time.Second, Cut: 10 * time.Second, LongFault: 5 * time.Minute, Settle: 5 * time.Second,
				Quiet: 3 * time.Second, DrainTimeout: 5 * time.Minute, RetryDeadline: 5 * time.Minute, AwaitAcked: 5 * time.Minute,
			}, func(*faults.ClusterConfig) {
				// The product's retry timings: 0.5 s doubling to 10 s, no attempt limit.
			}
	}
	return faults.RunConfig{
			Warmup: time.Second, Fault: 3 * time.Second, Settle: time.Second, Quiet: 1500 * time.Millisecond,
			DrainTimeout: 90 * time.Second, AwaitAcked: 90 * time.Second,
		}, func(c *faults.ClusterConfig) {
			// Faster retries than the product's, so that the short suite drains quickly.
			c.RetryBase, c.RetryMax = 200*time.Millisecond, 2*time.Second
		}
}

// logDir is where a scenario's cluster keeps its logs: under LPS_FAULTS_LOGS when set (kept
// for a look after the run), else in the test's temporary directory.
func logDir(t *testing.T) string {
	if d := os.Getenv("LPS_FAULTS_LOGS"); d != "" {
		dir := filepath.Join(d, strings.ReplaceAll(t.Name(), "/", "_"))
		os.RemoveAll(dir)
		return dir
	}
	return t.TempDir()
}

func TestScenarios(t *testing.T) {
	runCfg, tune := suiteConfig()
	var mu sync.Mutex
	var results []faults.Result
	for _, broker := range []faults.BrokerKind{faults.Embedded, faults.Mosquitto} {
		t.Run(string(broker), func(t *testing.T) {
			for _, s := range faults.Scenarios() {
				t.Run(s.Name, func(t *testing.T) {
					r := runScenario(t, broker, s, runCfg, tune)
					mu.Lock()
					results = append(results, r)
					mu.Unlock()
				})
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(results) == 0 {
		return
	}
	t.Logf("all scenarios (full=%v):\n%s", full, faults.FormatTable(results))
	if out := os.Getenv("LPS_FAULTS_OUT"); out != "" {
		var reports []ledger.Report
		for _, r := range results {
			reports = append(reports, r.Report)
		}
		var jb, cb bytes.Buffer
		ledger.WriteJSON(&jb, reports...)
		ledger.WriteCSV(&cb, reports...)
		os.WriteFile(out+".json", jb.Bytes(), 0o644)
		os.WriteFile(out+".csv", cb.Bytes(), 0o644)
		os.WriteFile(out+".txt", []byte(faults.FormatTable(results)), 0o644)
	}
}

func runScenario(t *testing.T, broker faults.BrokerKind, s faults.Scenario, runCfg faults.RunConfig, tune func(*faults.ClusterConfig)) faults.Result {
	limit := 4 * time.Minute
	if full {
		limit = 12 * time.Minute
	}
	ctx := testCtx(t, limit)
	cfg := faults.ClusterConfig{Binary: lpsBin, Dir: logDir(t), Broker: broker, MosquittoDebug: os.Getenv("LPS_FAULTS_MOSQUITTO_DEBUG") == "1"}
	tune(&cfg)
	if dedupOff {
		cfg.ExtraArgs = map[string][]string{"comp2": {"--dedup-window", "0"}}
	}
	if s.Setup != nil {
		s.Setup(&cfg)
	}
	c, err := faults.StartCluster(ctx, cfg)
	if errors.Is(err, faults.ErrNoMosquitto) {
		if os.Getenv("LPS_REQUIRE_MOSQUITTO") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	if errors.Is(err, faults.ErrNoRedis) {
		if os.Getenv("LPS_REQUIRE_REDIS") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("starting the cluster: %v", err)
	}
	t.Cleanup(c.Close)

	r, err := faults.Run(ctx, c, s, runCfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("counters:\n%slogs in %s", c.Counters(context.Background()), c.Dir())
		}
	})
	if err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
	rep := r.Report
	t.Logf("%-20s %-9s sent=%d acked=%d received=%d lost=%d duplicated=%d (+%d) unacked=%d retried=%d p99=%s drain=%s",
		s.Name, broker, rep.Sent, rep.Acked, rep.Received, rep.Lost, rep.Duplicated, rep.DuplicateCopies, rep.Unacked,
		rep.Retried, rep.Latency.P99.Round(time.Millisecond), r.Drain.Took.Round(10*time.Millisecond))
	var tl []string
	for _, e := range r.Timeline {
		tl = append(tl, e.String())
	}
	t.Logf("comp2 suppressed %d duplicates; peak queue %d; timeline:\n%s", r.Suppressed, r.PeakQueue, strings.Join(tl, "\n"))

	if rep.Acked == 0 {
		t.Errorf("no alarm was acknowledged")
	}
	if rep.Lost != 0 {
		t.Errorf("%d acknowledged alarms never reached rast-sim, e.g. %v", rep.Lost, rep.LostIDs)
	}
	if rep.Unacked != 0 {
		t.Errorf("%d alarms were never acknowledged within the load's retry deadline, e.g. %v", rep.Unacked, rep.UnackedIDs)
	}
	if rep.Unknown != 0 {
		t.Errorf("rast-sim received %d ids the load never sent, e.g. %v", rep.Unknown, rep.UnknownIDs)
	}
	if dedupOff {
		t.Logf("%d duplicates with comp2's dedup window off (LPS_FAULTS_DEDUP=off)", rep.Duplicated)
	} else if s.Duplicates == "" && rep.Duplicated != 0 {
		t.Errorf("%d alarms reached rast-sim more than once despite comp2's dedup window, e.g. %v", rep.Duplicated, rep.DuplicatedIDs)
	} else if rep.Duplicated != 0 {
		t.Logf("%d duplicates, expected here: %s", rep.Duplicated, s.Duplicates)
	}
	// rast-sim's /stats/requests and its audit log must agree.
	logged := c.LoggedReceived()
	received, err := c.Received(ctx)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		logged = c.LoggedReceived()
		if len(logged) != len(received) {
			return fmt.Errorf("rast-sim's log has %d ids, its /stats/requests %d", len(logged), len(received))
		}
		return nil
	})
	return r
}

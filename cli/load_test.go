package cli

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/ledger"
	"github.com/lpsdev/lps/loadgen"
	"github.com/lpsdev/lps/roles/rastsim"
	"github.com/lpsdev/lps/roles/rastsim/rastsimtest"
	"github.com/lpsdev/lps/topology"
	"github.com/lpsdev/lps/topology/topologytest"
	"github.com/lpsdev/lps/transport"
)

// loadTestSignal stands in for Ctrl-C in the tests: sent to the test process itself, it
// reaches the load command's signal handler and nothing else.
const loadTestSignal = syscall.SIGUSR1

// loadRun is the outcome of one `lps load`.
type loadRun struct {
	code           int
	stdout, stderr string // stderr ends with the one-line error Execute prints
	timedOut       bool
}

// execLoad runs `lps load args...` in-process with the environment envVars until it ends or
// limit passes.
func execLoad(limit time.Duration, envVars map[string]string, args ...string) loadRun {
	var out, errOut bytes.Buffer
	root := NewRoot(Options{LookupEnv: env(envVars), Stdout: &out, Stderr: &errOut, Signals: []os.Signal{loadTestSignal}})
	root.SetArgs(append([]string{"load", "--log-level", "error"}, args...))
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	err := root.ExecuteContext(ctx)
	if err != nil {
		errOut.WriteString("lps: " + err.Error() + "\n")
	}
	return loadRun{code: ExitCode(err), stdout: out.String(), stderr: errOut.String(), timedOut: ctx.Err() != nil}
}

// runLoad is execLoad that fails the test when the command did not end within limit.
func runLoad(t *testing.T, limit time.Duration, envVars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	r := execLoad(limit, envVars, args...)
	if r.timedOut {
		t.Fatalf("lps load did not end within %s\nstdout:\n%s\nstderr:\n%s", limit, r.stdout, r.stderr)
	}
	return r.code, r.stdout, r.stderr
}

// startBaseline starts a baseline topology (two comp1 and comp2, rast-sim answering at once) on
// ephemeral loopback ports until the test ends.
func startBaseline(t *testing.T) *topology.Topology {
	t.Helper()
	return topologytest.Start(t, topology.Config{Kind: topology.Baseline, Instances: 2, Model: "none"})
}

// simURL is the base URL of the topology's rast-sim.
func simURL(top *topology.Topology) string {
	return "http://" + top.ByRole(topology.RoleRastSim)[0].Addr.String()
}

// summaryValue is the first number of the summary row called name ("lost  3" → 3).
func summaryValue(t *testing.T, stdout, name string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s+(\d+)`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("summary has no row %q:\n%s", name, stdout)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// readReport reads what --out wrote to base.json and base.csv.
func readReport(t *testing.T, base string) ledger.Report {
	t.Helper()
	b, err := os.ReadFile(base + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var reports []ledger.Report
	if err := json.Unmarshal(b, &reports); err != nil || len(reports) != 1 {
		t.Fatalf("%s.json: %v, %d reports:\n%s", base, err, len(reports), b)
	}
	f, err := os.Open(base + ".csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s.csv: %v", base, err)
	}
	if len(rows) != 2 || !slices.Equal(rows[0], ledger.CSVHeader) || !slices.Equal(rows[1], reports[0].CSVRecord()) {
		t.Errorf("%s.csv is not the header and the JSON's report: %q", base, rows)
	}
	return reports[0]
}

func TestLoadAgainstTheBaseline(t *testing.T) {
	top := startBaseline(t)
	urls := top.Comp1URLs()

	t.Run("open model verified", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "run.json") // the .json ending is dropped
		// The duration comes from the environment, the URLs from a repeated flag.
		code, stdout, stderr := runLoad(t, 60*time.Second, map[string]string{"LPS_DURATION": "2s"},
			"--url", urls[0], "--url", urls[1], "--rate", "50", "--verify", simURL(top), "--progress", "500ms", "--out", out)
		if code != 0 {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		sent := summaryValue(t, stdout, "sent")
		if sent < 80 || sent > 110 {
			t.Errorf("sent %d alarms in 2 s at 50/s", sent)
		}
		for row, want := range map[string]int{"acked": sent, "given up": 0, "received": sent, "lost": 0, "duplicated": 0, "unknown": 0} {
			if got := summaryValue(t, stdout, row); got != want {
				t.Errorf("%s = %d, want %d\n%s", row, got, want, stdout)
			}
		}
		for _, row := range []string{"latency p50", "latency p99", "latency max", "throughput"} {
			if !regexp.MustCompile(`(?m)^` + row + `\s+\d`).MatchString(stdout) {
				t.Errorf("summary row %q has no value:\n%s", row, stdout)
			}
		}
		if !regexp.MustCompile(`(?m)^lps load +\S+: started \d+ \(.*acked \d+.*outstanding \d+.*given up 0, latency p50 \S+ p99 \S+$`).MatchString(stderr) {
			t.Errorf("no progress line on stderr:\n%s", stderr)
		}
		base := strings.TrimSuffix(out, ".json")
		if !strings.Contains(stderr, "wrote "+base+".json and "+base+".csv") {
			t.Errorf("stderr does not say where the report went:\n%s", stderr)
		}
		r := readReport(t, strings.TrimSuffix(out, ".json"))
		if r.Sent != sent || r.Acked != sent || r.Received != sent || r.Lost != 0 || r.Duplicated != 0 || r.Latency.Count != sent {
			t.Errorf("report %v", r)
		}
	})

	t.Run("closed model stopped by a signal", func(t *testing.T) {
		others := len(top.Sim().Received())
		// --duration 0 runs until the signal; the signal lets the alarms in progress finish.
		done := make(chan loadRun, 1)
		go func() {
			done <- execLoad(60*time.Second, nil, "--url", strings.Join(urls, ","),
				"--devices", "3", "--think", "50ms", "--duration", "0", "--prefix", "sig", "--verify", simURL(top))
		}()
		// Once rast-sim has alarms of the run, the command's signal handler is in place (an
		// unhandled SIGUSR1 would end the test binary).
		testutil.Eventually(t, 30*time.Second, func() error {
			if n := len(ofRun(top.Sim().Received(), "sig")); n < 10 {
				return fmt.Errorf("rast-sim has %d alarms of the run, want at least 10", n)
			}
			return nil
		})
		if err := syscall.Kill(os.Getpid(), loadTestSignal); err != nil {
			t.Fatal(err)
		}
		r := <-done
		stdout, stderr := r.stdout, r.stderr
		if r.timedOut || r.code != 0 || !strings.Contains(stderr, "stopping: no new alarms") {
			t.Fatalf("exit %d (timed out: %v)\nstdout:\n%s\nstderr:\n%s", r.code, r.timedOut, stdout, stderr)
		}
		sent := summaryValue(t, stdout, "sent")
		if sent < 3 || summaryValue(t, stdout, "acked") != sent || summaryValue(t, stdout, "lost") != 0 || summaryValue(t, stdout, "received") != sent {
			t.Errorf("summary:\n%s", stdout)
		}
		// Earlier runs' ids at rast-sim are not this run's.
		if summaryValue(t, stdout, "unknown") != 0 || (others > 0 && summaryValue(t, stdout, "other ids") != others) {
			t.Errorf("other runs' %d ids are not told apart:\n%s", others, stdout)
		}
	})

	t.Run("acked but lost", func(t *testing.T) {
		// A comp1 that answers 200 and forwards nothing: rast-sim never gets the alarms.
		liar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
		defer liar.Close()
		code, stdout, stderr := runLoad(t, 30*time.Second, nil, "--url", liar.URL, "--rate", "20", "--duration", "500ms",
			"--verify", simURL(top), "--verify-quiet", "300ms")
		lost := summaryValue(t, stdout, "lost")
		if code != 1 || lost == 0 || lost != summaryValue(t, stdout, "acked") || !strings.Contains(stderr, "acked alarms lost") {
			t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if lines := strings.Split(strings.TrimSpace(stderr), "\n"); !strings.HasPrefix(lines[len(lines)-1], "lps: ") {
			t.Errorf("stderr does not end with the one-line reason:\n%s", stderr)
		}
	})
}

func TestLoadGivesUpOnARefusedURL(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()
	out := filepath.Join(t.TempDir(), "refused")
	start := time.Now()
	code, stdout, stderr := runLoad(t, 30*time.Second, nil, "--url", refused, "--rate", "20", "--duration", "300ms",
		"--retry-interval", "50ms", "--retry-deadline", "200ms", "--timeout", "1s", "--out", out)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %s, want about half a second", took)
	}
	sent := summaryValue(t, stdout, "sent")
	if code != 1 || sent == 0 || summaryValue(t, stdout, "given up") != sent || summaryValue(t, stdout, "acked") != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if want := strconv.Itoa(sent) + " alarms given up"; !strings.Contains(stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, stderr)
	}
	r := readReport(t, out)
	if r.Sent != sent || r.Unacked != sent || r.Lost != 0 || !strings.HasSuffix(r.Name, "(not verified)") || len(r.UnackedIDs) == 0 {
		t.Errorf("report %+v", r)
	}
}

func TestLoadInvalidConfiguration(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no", "such", "dir", "x")
	names := writeFile(t, dir, "names.txt", "ID_GET_PLZ_LISTE\n")
	emptyNames := writeFile(t, dir, "empty.txt", "\n \n")
	alarmOnly := writeFile(t, dir, "alarm.txt", alarm.Command+"\n")
	bg := []string{"--background", "50", "--background-url", "http://127.0.0.1:1"}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"rate and devices", []string{"--rate", "10", "--devices", "5"}, nil, "--rate with --devices"},
		{"rate flag and devices env", []string{"--rate", "10"}, map[string]string{"LPS_DEVICES": "5"}, "--rate with --devices"},
		{"neither", nil, nil, "--rate or --devices"},
		{"negative rate", []string{"--rate", "-5"}, nil, "--rate -5"},
		{"zero rate", []string{"--rate", "0"}, nil, "--rate 0"},
		{"NaN rate", []string{"--rate", "NaN"}, nil, "--rate NaN"},
		{"rate not a number", []string{"--rate", "fast"}, nil, `"--rate"`},
		{"negative rate from env", nil, map[string]string{"LPS_RATE": "-3"}, "--rate -3"},
		{"devices not a number from env", nil, map[string]string{"LPS_DEVICES": "many"}, "--devices from $LPS_DEVICES"},
		{"negative devices", []string{"--devices", "-1"}, nil, "--devices -1"},
		{"think with rate", []string{"--rate", "1", "--think", "2s"}, nil, "--think"},
		{"negative duration", []string{"--rate", "1", "--duration", "-1s"}, nil, "--duration"},
		{"zero retry deadline", []string{"--rate", "1", "--retry-deadline", "0"}, nil, "--retry-deadline"},
		{"zero timeout from env", []string{"--devices", "1"}, map[string]string{"LPS_TIMEOUT": "0s"}, "--timeout"},
		{"negative progress", []string{"--rate", "1", "--progress", "-1s"}, nil, "--progress"},
		{"bad url", []string{"--rate", "1", "--url", "localhost:7081"}, nil, "--url"},
		{"bad url in list", []string{"--rate", "1", "--url", "http://a:1,ftp://b"}, nil, "--url"},
		{"bad verify", []string{"--rate", "1", "--verify", "rast-sim:1337"}, nil, "--verify"},
		{"zero verify timeout", []string{"--rate", "1", "--verify-timeout", "0"}, nil, "--verify-timeout"},
		{"out in a missing directory", []string{"--rate", "1", "--out", missing}, nil, "--out"},
		{"alarm prefix of the background", []string{"--rate", "1", "--prefix", "bg"}, nil, "invalid --prefix"},
		{"negative background", []string{"--background", "-1"}, nil, "--background -1"},
		{"NaN background", []string{"--rate", "1", "--background", "NaN"}, nil, "--background NaN"},
		{"background not a number", []string{"--background", "lots"}, nil, `"--background"`},
		{"background without its URL", []string{"--background", "50", "--request-names", names}, nil, "missing --background-url"},
		{"background URL from env is bad", []string{"--background", "50", "--request-names", names},
			map[string]string{"LPS_BACKGROUND_URL": "rast-sim:1337"}, "invalid --background-url"},
		{"background without a names file", bg, nil, "missing --request-names"},
		{"background names file missing", append([]string{"--request-names", missing}, bg...), nil, "invalid --request-names"},
		{"background names file empty", append([]string{"--request-names", emptyNames}, bg...), nil, "has no names"},
		{"background names only the alarm", append([]string{"--request-names", alarmOnly}, bg...), nil, "invalid --request-names"},
		{"verify with only the background", append([]string{"--request-names", names, "--verify", "http://127.0.0.1:1"}, bg...), nil,
			"--verify with only --background"},
		{"out with only the background", append([]string{"--request-names", names, "--out", filepath.Join(dir, "r")}, bg...), nil,
			"--out with only --background"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			root := NewRoot(Options{LookupEnv: env(tc.env), Stdout: &out, Stderr: &errOut})
			code := Execute(root, append([]string{"load"}, tc.args...))
			msg := errOut.String()
			if code != 2 || !strings.Contains(msg, tc.want) || strings.Count(strings.TrimSpace(msg), "\n") != 0 || out.Len() != 0 {
				t.Errorf("exit %d, stdout %q, stderr %q: want exit 2 and one line containing %q", code, out.String(), msg, tc.want)
			}
		})
	}
}

// writeFile writes content to dir/name and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// forwardingComp1 is a comp1 that passes every alarm straight on to rast-sim with its
// Request-Id and answers what rast-sim answered.
func forwardingComp1(t *testing.T, sim string) string {
	t.Helper()
	client := &transport.Client{Timeout: 10 * time.Second}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := transport.WithRequestID(r.Context(), r.Header.Get(transport.RequestIDHeader))
		if _, err := client.Post(ctx, sim+alarm.CommandPath, "application/json", []byte(`{"id":"1","body":"b"}`)); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestLoadBackground(t *testing.T) {
	names := testutil.SharedData(t, "all_request_names.txt")

	t.Run("alone", func(t *testing.T) {
		sim, simURL := rastsimtest.StartProd(t)
		code, stdout, stderr := runLoad(t, 30*time.Second, nil, "--background", "50", "--duration", "1s",
			"--background-url", simURL, "--request-names", names, "--progress", "300ms")
		if code != 0 {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		t.Logf("stdout:\n%s", stdout)
		// 50/s for 1 s is 50 requests due; none skipped against a simulator that answers at once.
		for row, want := range map[string]int{"background sent": 50, "background ok": 50, "background failed": 0, "background skipped": 0} {
			if got := summaryValue(t, stdout, row); got != want {
				t.Errorf("%s = %d, want %d\n%s", row, got, want, stdout)
			}
		}
		if !regexp.MustCompile(`(?m)^run\s+bg-\S+, only the background`).MatchString(stdout) || strings.Contains(stdout, "\nsent ") {
			t.Errorf("summary is not of the background alone:\n%s", stdout)
		}
		m := regexp.MustCompile(`(?m)^background rate\s+([0-9.]+)/s`).FindStringSubmatch(stdout)
		if m == nil {
			t.Fatalf("no background rate:\n%s", stdout)
		}
		if rate, _ := strconv.ParseFloat(m[1], 64); rate < 25 || rate > 75 {
			t.Errorf("background rate %g/s, want about 50", rate)
		}
		if !regexp.MustCompile(`(?m)^lps load +\S+: only the background; background sent \d+ \(.*in flight \d+, failed \+0, skipped \+0$`).MatchString(stderr) {
			t.Errorf("no background progress line on stderr:\n%s", stderr)
		}
		counts := sim.Counts()
		if _, ok := counts.ByCommand[alarm.Command]; ok || counts.Received != 50 || counts.Duplicates != 0 {
			t.Errorf("rast-sim counts %+v: want 50 requests, none the alarm", counts)
		}
		for id := range sim.Received() {
			if !loadgen.IsBackgroundID(id) {
				t.Errorf("rast-sim got id %q, not a background id", id)
			}
		}
	})

	t.Run("alone stopped by a signal", func(t *testing.T) {
		sim, simURL := rastsimtest.StartProd(t)
		done := make(chan loadRun, 1)
		go func() {
			done <- execLoad(30*time.Second, nil, "--background", "100", "--duration", "0", "--prefix", "sig",
				"--background-url", simURL, "--request-names", names)
		}()
		// Once rast-sim has requests of the run, the command's signal handler is in place (an
		// unhandled SIGUSR1 would end the test binary).
		testutil.Eventually(t, 20*time.Second, func() error {
			if n := sim.Counts().Received; n < 10 {
				return fmt.Errorf("rast-sim has %d background requests, want 10", n)
			}
			return nil
		})
		if err := syscall.Kill(os.Getpid(), loadTestSignal); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.timedOut || r.code != 0 || !strings.Contains(r.stderr, "no new background requests") {
			t.Fatalf("exit %d (timed out: %v)\nstdout:\n%s\nstderr:\n%s", r.code, r.timedOut, r.stdout, r.stderr)
		}
		sent := summaryValue(t, r.stdout, "background sent")
		if sent < 10 || summaryValue(t, r.stdout, "background ok") != sent || sim.Counts().Received != sent {
			t.Errorf("rast-sim got %d\n%s", sim.Counts().Received, r.stdout)
		}
		for id := range sim.Received() {
			if !strings.HasPrefix(id, "bg-sig-") {
				t.Errorf("id %q, want prefix bg-sig-", id)
			}
		}
	})

	t.Run("beside verified alarms", func(t *testing.T) {
		sim, simURL := rastsimtest.StartProd(t)
		comp1 := forwardingComp1(t, simURL)
		// --background-url defaults to --verify's URL.
		code, stdout, stderr := runLoad(t, 60*time.Second, nil, "--url", comp1, "--rate", "20", "--background", "50", "--duration", "1s",
			"--prefix", "mix", "--request-names", names, "--verify", simURL)
		if code != 0 {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		t.Logf("stdout:\n%s", stdout)
		sent := summaryValue(t, stdout, "sent")
		if sent < 15 || sent > 25 {
			t.Errorf("sent %d alarms in 1 s at 20/s", sent)
		}
		// The background's ids are neither this run's alarms (unknown, duplicated) nor other runs'.
		for row, want := range map[string]int{"acked": sent, "received": sent, "lost": 0, "duplicated": 0, "unknown": 0,
			"background sent": 50, "background ok": 50, "background received": 50} {
			if got := summaryValue(t, stdout, row); got != want {
				t.Errorf("%s = %d, want %d\n%s", row, got, want, stdout)
			}
		}
		if strings.Contains(stdout, "other ids") {
			t.Errorf("background ids counted as other runs':\n%s", stdout)
		}
		if !strings.Contains(stderr, "Request-Id prefix bg-mix") {
			t.Errorf("stderr does not name the background's prefix:\n%s", stderr)
		}
		counts := sim.Counts()
		if got := counts.ByCommand[alarm.Command].Received; got != sent {
			t.Errorf("rast-sim got the alarm command %d times, want the %d alarms", got, sent)
		}
		if counts.Received != sent+50 {
			t.Errorf("rast-sim got %d requests, want %d alarms and 50 background", counts.Received, sent)
		}
	})

	t.Run("rast-sim without the mapping", func(t *testing.T) {
		// The default mapping knows only the alarm: every background command is a 404, and the
		// run says what to do about it.
		cfg := rastsim.Config{Model: rastsim.ModelNone}
		cfg.Listener = testutil.Listen(t)
		sim, err := rastsim.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		testutil.Run(t, sim)
		code, stdout, stderr := runLoad(t, 30*time.Second, nil, "--background", "20", "--duration", "200ms",
			"--background-url", "http://"+sim.Addr().String(), "--request-names", names)
		if code != 1 || summaryValue(t, stdout, "background failed") != 4 || !strings.Contains(stderr, "4 background requests failed") ||
			!strings.Contains(stderr, "--mapping") {
			t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
	})
}

func TestLoadVerifyUnreachableFailsBeforeTheLoad(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()
	var hits atomic.Int32
	comp1 := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer comp1.Close()
	code, stdout, stderr := runLoad(t, 30*time.Second, nil, "--url", comp1.URL, "--rate", "10", "--verify", refused)
	if code != 1 || !strings.Contains(stderr, "--verify "+refused) || hits.Load() != 0 || stdout != "" {
		t.Errorf("exit %d, %d alarms sent\nstdout:\n%s\nstderr:\n%s", code, hits.Load(), stdout, stderr)
	}
}

func TestLoadHelpNamesTheEnvironment(t *testing.T) {
	var out bytes.Buffer
	Execute(NewRoot(Options{Stdout: &out, Stderr: &out, LookupEnv: env(nil)}), []string{"load", "--help"})
	for _, want := range []string{"LPS_RATE", "LPS_DEVICES", "LPS_URL", "LPS_VERIFY", "http://127.0.0.1:7081/api/v1/simple", "Examples:",
		"LPS_BACKGROUND", "--background-url", "--request-names", "without --rate and --devices it runs alone"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("load help lacks %q", want)
		}
	}
}

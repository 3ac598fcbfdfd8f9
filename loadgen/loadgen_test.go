package loadgen_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/loadgen"
	"github.com/lpsdev/lps/transport"
)

// recorder is a fake comp1 that records the Request-Ids it was sent and answers with status().
type recorder struct {
	name   string
	srv    *httptest.Server
	mu     sync.Mutex
	ids    []string
	bodies [][]byte
	status func() int
}

func newRecorder(t *testing.T, name string, status func() int) *recorder {
	t.Helper()
	r := &recorder{name: name, status: status}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.ids = append(r.ids, req.Header.Get(transport.RequestIDHeader))
		r.bodies = append(r.bodies, body)
		r.mu.Unlock()
		if req.URL.Path != alarm.DevicePath || req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad request line", http.StatusBadRequest)
			return
		}
		w.WriteHeader(r.status())
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ids)
}

func always(code int) func() int { return func() int { return code } }

// run runs a load with cfg and fails the test if it does not end within limit.
func run(t *testing.T, cfg loadgen.Config, limit time.Duration) *loadgen.Load {
	t.Helper()
	l, err := loadgen.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	start := time.Now()
	if err := l.Run(ctx); err != nil {
		t.Fatalf("load did not end by itself within %s (ran %s): %v", limit, time.Since(start), err)
	}
	return l
}

func TestRetryRotatesAndKeepsRequestID(t *testing.T) {
	// Two instances fail (one with 500, one refusing connections); the third answers 200.
	bad := newRecorder(t, "bad", always(http.StatusInternalServerError))
	good := newRecorder(t, "good", always(http.StatusOK))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()

	l := run(t, loadgen.Config{
		URLs:          []string{bad.srv.URL, refused, good.srv.URL},
		Devices:       1,
		Think:         time.Millisecond,
		Duration:      150 * time.Millisecond,
		RetryInterval: 5 * time.Millisecond,
		Prefix:        "rot",
	}, 10*time.Second)

	st := l.Stats()
	if st.Started == 0 || st.Acked != st.Started || st.GivenUp != 0 {
		t.Fatalf("stats %+v: every alarm should have been acknowledged", st)
	}
	// Every alarm that started on a failing instance moved on, with the same id, until the
	// good one took it; the good one saw each id exactly once.
	goodIDs := good.seen()
	if len(goodIDs) != int(st.Started) {
		t.Errorf("good instance saw %d requests, want one per alarm (%d)", len(goodIDs), st.Started)
	}
	for i, id := range goodIDs {
		if want := fmt.Sprintf("rot-%07d", i+1); id != want {
			t.Fatalf("good instance's request %d has id %q, want %q", i, id, want)
		}
	}
	// The rotation: an alarm starts where the previous one stopped + 1, so alarm 1 starts at
	// bad (0), fails over to refused (1) and good (2); alarm 2 starts at refused.
	badIDs := bad.seen()
	if len(badIDs) == 0 || badIDs[0] != "rot-0000001" {
		t.Errorf("bad instance saw %v, want the first alarm first", badIDs)
	}
	for _, id := range badIDs {
		if !slices.Contains(goodIDs, id) {
			t.Errorf("alarm %s failed at bad but never reached good", id)
		}
	}
	rep := l.Ledger().Compare(nil)
	if rep.Attempts != int(st.Attempts) || rep.Retried == 0 {
		t.Errorf("ledger attempts %d retried %d, stats %+v", rep.Attempts, rep.Retried, st)
	}
}

func TestOpenModelHoldsTheRate(t *testing.T) {
	srv := newRecorder(t, "ok", always(http.StatusOK))
	const rate, dur = 200.0, time.Second
	l := run(t, loadgen.Config{URLs: []string{srv.srv.URL}, Rate: rate, Duration: dur}, 10*time.Second)
	st := l.Stats()
	want := rate * dur.Seconds()
	if float64(st.Started) < want*0.85 || float64(st.Started) > want*1.05 {
		t.Errorf("started %d alarms in %s at %g/s, want about %g", st.Started, dur, rate, want)
	}
	if st.Acked != st.Started {
		t.Errorf("stats %+v", st)
	}
}

func TestOpenModelCorrectsCoordinatedOmission(t *testing.T) {
	// One request at a time, each taking 50 ms, at 100 alarms/s: the system serves 20/s, so the
	// alarms queue up, and their latency from the intended start must show it.
	srv := newRecorder(t, "slow", func() int { time.Sleep(50 * time.Millisecond); return http.StatusOK })
	l := run(t, loadgen.Config{URLs: []string{srv.srv.URL}, Rate: 100, MaxOutstanding: 1, Duration: 500 * time.Millisecond},
		20*time.Second)
	lat := l.Ledger().Latency()
	if lat.Count == 0 {
		t.Fatal("nothing acknowledged")
	}
	if lat.Max < 200*time.Millisecond {
		t.Errorf("max latency %s: the queueing behind the slow system is not counted", lat.Max)
	}
	if lat.Min < 45*time.Millisecond {
		t.Errorf("min latency %s, below the service time", lat.Min)
	}
}

func TestStopsAtTheRetryDeadline(t *testing.T) {
	srv := newRecorder(t, "down", always(http.StatusBadGateway))
	start := time.Now()
	l := run(t, loadgen.Config{
		URLs:          []string{srv.srv.URL, srv.srv.URL},
		Rate:          50,
		Duration:      200 * time.Millisecond,
		RetryInterval: 20 * time.Millisecond,
		RetryDeadline: 300 * time.Millisecond,
	}, 5*time.Second)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("run took %s, want about 0.5 s", took)
	}
	st := l.Stats()
	if st.Started == 0 || st.Acked != 0 || st.GivenUp != st.Started || st.Outstanding != 0 {
		t.Errorf("stats %+v: every alarm should have been given up", st)
	}
	if st.Attempts < 3*st.Started {
		t.Errorf("%d attempts for %d alarms: failing alarms were not retried", st.Attempts, st.Started)
	}
	rep := l.Ledger().Compare(nil)
	if rep.Unacked != int(st.Started) || rep.Acked != 0 {
		t.Errorf("report %v", rep)
	}
}

func TestStopAndContext(t *testing.T) {
	srv := newRecorder(t, "ok", always(http.StatusOK))
	l, err := loadgen.New(loadgen.Config{URLs: []string{srv.srv.URL}, Rate: 100})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(context.Background()) }()
	testutil.Eventually(t, 10*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("run ended early: %v", err)
		default:
		}
		if n := l.Stats().Acked; n < 5 {
			return fmt.Errorf("%d alarms acked, want 5", n)
		}
		return nil
	})
	l.Stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Stop")
	}

	// A context that ends abandons the alarms that keep failing at once.
	down := newRecorder(t, "down", always(http.StatusServiceUnavailable))
	l2, err := loadgen.New(loadgen.Config{URLs: []string{down.srv.URL}, Rate: 100, RetryInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := l2.Run(ctx); err == nil {
		t.Error("Run ended by its context returned nil")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Run took %s after its context ended", took)
	}
	if st := l2.Stats(); st.GivenUp != st.Started || st.Outstanding != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestClosedModelDevices(t *testing.T) {
	srv := newRecorder(t, "ok", always(http.StatusOK))
	const devices = 3
	l := run(t, loadgen.Config{URLs: []string{srv.srv.URL + "/"}, Devices: devices, Think: 20 * time.Millisecond,
		Duration: 300 * time.Millisecond}, 10*time.Second)
	st := l.Stats()
	// Each device sends about Duration/Think alarms, one at a time.
	if st.Started < devices*5 || st.Started > devices*16 {
		t.Errorf("%d alarms from %d devices in 300 ms with 20 ms think time", st.Started, devices)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	phones := map[string]bool{}
	for _, b := range srv.bodies {
		var a struct {
			Phone, Branch, Headnumber, Triggertime string
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&a); err != nil {
			t.Fatalf("body %s: %v", b, err)
		}
		phones[a.Phone] = true
		if !slices.Contains(loadgen.Branches, a.Branch) || a.Branch == "2011" {
			t.Errorf("branch %q not in 2001–2010, 2012–2016", a.Branch)
		}
		if a.Headnumber != "8023" {
			t.Errorf("headnumber %q", a.Headnumber)
		}
		if _, err := time.Parse(time.RFC3339, a.Triggertime); err != nil {
			t.Errorf("trigger time: %v", err)
		}
	}
	if len(phones) != devices {
		t.Errorf("phones %v, want one per device", phones)
	}
}

func TestInvalidConfig(t *testing.T) {
	for _, cfg := range []loadgen.Config{
		{Rate: 1},
		{URLs: []string{"http://x"}},
		{URLs: []string{"http://x"}, Rate: 1, Devices: 1},
		{URLs: []string{"x:1"}, Rate: 1},
		{URLs: []string{"http://x"}, Rate: -1},
	} {
		if _, err := loadgen.New(cfg); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}

package loadgen_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/config"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/loadgen"
	"github.com/lpsdev/lps/roles/rastsim/rastsimtest"
	"github.com/lpsdev/lps/transport"
)

// runBackground runs b until it ends by itself and fails the test if that takes beyond limit.
func runBackground(t *testing.T, b *loadgen.Background, limit time.Duration) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	start := time.Now()
	if err := b.Run(ctx); err != nil {
		t.Fatalf("background did not end by itself within %s: %v", limit, err)
	}
	return time.Since(start)
}

func TestBackgroundAgainstRastSim(t *testing.T) {
	sim, base := rastsimtest.StartProd(t)
	names, err := loadgen.LoadNames(testutil.SharedData(t, "all_request_names.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, alarm.Command) {
		t.Fatalf("the names file lacks the alarm command %s, so this test would not show it is left out", alarm.Command)
	}
	const rate, duration = 100.0, 2 * time.Second
	b, err := loadgen.NewBackground(loadgen.BackgroundConfig{URL: base + "/", Rate: rate, Names: names, Duration: duration})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(b.Names(), alarm.Command) || len(b.Names()) != len(names)-1 {
		t.Errorf("%d names of %d left, alarm command among them: %v", len(b.Names()), len(names), slices.Contains(b.Names(), alarm.Command))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type outcome struct {
		err     error
		elapsed time.Duration
	}
	done := make(chan outcome, 1)
	go func() {
		start := time.Now()
		err := b.Run(ctx)
		done <- outcome{err, time.Since(start)}
	}()
	// The requests are paced, not sent in a burst: the first 100 take about a second. Sent
	// counts a request as it starts, so this cannot be faster than the schedule.
	start := time.Now()
	testutil.Eventually(t, 20*time.Second, func() error {
		if n := b.Stats().Sent; n < 100 {
			return fmt.Errorf("%d requests sent, want 100", n)
		}
		return nil
	})
	first100 := time.Since(start)
	res := <-done
	if res.err != nil {
		t.Fatalf("background did not end by itself: %v", res.err)
	}
	elapsed := res.elapsed
	if first100 < 500*time.Millisecond {
		t.Errorf("the first 100 requests went out within %s: a burst, not 100/s", first100)
	}

	st := b.Stats()
	measured := float64(st.Sent) / elapsed.Seconds()
	t.Logf("sent %d in %s: %.1f requests/s, Rate() %.2f/s (want %g); the first 100 took %s; stats %+v",
		st.Sent, elapsed.Round(time.Millisecond), measured, b.Rate(), rate, first100.Round(time.Millisecond), st)
	want := rate * duration.Seconds()
	// The due times within the duration are exactly rate*duration; the loose bounds are on
	// the wall clock, which a loaded machine stretches.
	if float64(st.Sent+st.Skipped) != want {
		t.Errorf("%d sent + %d skipped, want the %g due in %s at %g/s", st.Sent, st.Skipped, want, duration, rate)
	}
	if got := float64(st.Sent); got < 0.5*want || got > 1.5*want {
		t.Errorf("sent %d, want about %g", st.Sent, want)
	}
	if measured < 0.5*rate || measured > 1.5*rate {
		t.Errorf("measured %.1f requests/s, want about %g", measured, rate)
	}
	if r := b.Rate(); r < 0.5*rate || r > 1.5*rate {
		t.Errorf("Rate() = %.1f requests/s, want about %g", r, rate)
	}
	if st.OK != st.Sent || st.Failed != 0 || st.InFlight != 0 || st.Skipped != 0 {
		t.Errorf("stats %+v (first error %v): want every request answered OK", st, b.FirstError())
	}
	var perSecond int64
	for _, s := range b.Seconds() {
		perSecond += s.Sent
	}
	if len(b.Seconds()) != 2 || perSecond != st.Sent {
		t.Errorf("per second %+v does not add up to %d sent in 2 s", b.Seconds(), st.Sent)
	}

	// rast-sim got every request once, with a background id of this run, and never the alarm.
	counts := sim.Counts()
	if _, ok := counts.ByCommand[alarm.Command]; ok {
		t.Errorf("rast-sim received the alarm command: %+v", counts.ByCommand[alarm.Command])
	}
	if len(counts.ByCommand) < 50 {
		t.Errorf("only %d distinct commands in %d requests drawn from %d", len(counts.ByCommand), st.Sent, len(b.Names()))
	}
	received := sim.Received()
	if int64(len(received)) != st.Sent || counts.Duplicates != 0 {
		t.Errorf("rast-sim has %d distinct ids, %d duplicates; %d sent", len(received), counts.Duplicates, st.Sent)
	}
	for id, n := range received {
		if n != 1 || !strings.HasPrefix(id, b.Prefix()+"-") || !loadgen.IsBackgroundID(id) {
			t.Errorf("id %q arrived %d times; want once, with prefix %s-", id, n, b.Prefix())
		}
	}
}

// blockingServer answers only once release is closed, and records how many requests it held
// at most at once.
type blockingServer struct {
	srv     *httptest.Server
	release chan struct{}
	mu      sync.Mutex
	now     int
	max     int
	total   int
}

func newBlockingServer(t *testing.T) *blockingServer {
	t.Helper()
	s := &blockingServer{release: make(chan struct{})}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.now++
		s.total++
		s.max = max(s.max, s.now)
		s.mu.Unlock()
		defer func() { s.mu.Lock(); s.now--; s.mu.Unlock() }()
		select {
		case <-s.release:
		case <-r.Context().Done():
		}
	}))
	// Cleanups run last-in first-out: the handlers are released before Close waits for them.
	t.Cleanup(s.srv.Close)
	t.Cleanup(s.unblock)
	return s
}

func (s *blockingServer) unblock() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.release:
	default:
		close(s.release)
	}
}

func (s *blockingServer) counts() (held, most, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now, s.max, s.total
}

func TestBackgroundBoundsTheRequestsInFlight(t *testing.T) {
	srv := newBlockingServer(t)
	const bound = 4
	b, err := loadgen.NewBackground(loadgen.BackgroundConfig{URL: srv.srv.URL, Rate: 200, Names: []string{"ID_A", "ID_B"}, MaxInFlight: bound})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()

	// The server holds the first requests; those due meanwhile are skipped, not queued.
	testutil.Eventually(t, 10*time.Second, func() error {
		if st := b.Stats(); st.Skipped < 20 {
			return fmt.Errorf("%d skipped, want 20 (stats %+v)", st.Skipped, st)
		}
		return nil
	})
	st := b.Stats()
	if st.Sent != bound || st.InFlight != bound {
		t.Errorf("stats %+v while the server holds every request: want %d sent and in flight", st, bound)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if held, _, _ := srv.counts(); held != bound {
			return fmt.Errorf("server holds %d requests, want %d", held, bound)
		}
		return nil
	})

	// Once the server answers, the background goes on sending.
	srv.unblock()
	testutil.Eventually(t, 10*time.Second, func() error {
		if st := b.Stats(); st.OK < 2*bound {
			return fmt.Errorf("%d answered OK, want %d", st.OK, 2*bound)
		}
		return nil
	})
	b.Stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after Stop: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Stop")
	}
	st = b.Stats()
	_, most, total := srv.counts()
	if most > bound {
		t.Errorf("the server held %d requests at once, want at most %d", most, bound)
	}
	if st.InFlight != 0 || st.OK != st.Sent || int64(total) != st.Sent || st.Failed != 0 {
		t.Errorf("stats %+v, server saw %d: want every request sent answered OK", st, total)
	}
	var skipped int64
	for _, s := range b.Seconds() {
		skipped += s.Skipped
	}
	if skipped != st.Skipped {
		t.Errorf("per second %+v: %d skipped, want %d", b.Seconds(), skipped, st.Skipped)
	}
}

func TestBackgroundStopsWhenTheContextEnds(t *testing.T) {
	srv := newBlockingServer(t)
	b, err := loadgen.NewBackground(loadgen.BackgroundConfig{URL: srv.srv.URL, Rate: 100, Names: []string{"ID_A"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	testutil.Eventually(t, 10*time.Second, func() error {
		if held, _, _ := srv.counts(); held < 3 {
			return fmt.Errorf("server holds %d requests, want 3", held)
		}
		return nil
	})
	cancel()
	// The server still holds its requests: Run abandons them rather than waiting.
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	st := b.Stats()
	if st.Sent < 3 || st.Failed != st.Sent || st.InFlight != 0 || st.OK != 0 {
		t.Errorf("stats %+v: want the abandoned requests failed, none in flight", st)
	}
	if err := b.FirstError(); err == nil || !errors.Is(err, context.Canceled) {
		t.Errorf("first error %v, want a cancellation", err)
	}
	if err := b.Run(context.Background()); err == nil {
		t.Error("a second Run did not fail")
	}
}

func TestBackgroundDurationAndStopBeforeRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	b, err := loadgen.NewBackground(loadgen.BackgroundConfig{URL: srv.URL, Rate: 50, Names: []string{"ID_A"}, Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runBackground(t, b, 10*time.Second)
	if st := b.Stats(); st.Sent != 5 || st.OK != 5 {
		t.Errorf("stats %+v: want the 5 requests due in 100 ms at 50/s", st)
	}

	stopped, err := loadgen.NewBackground(loadgen.BackgroundConfig{URL: srv.URL, Rate: 50, Names: []string{"ID_A"}})
	if err != nil {
		t.Fatal(err)
	}
	stopped.Stop()
	runBackground(t, stopped, 10*time.Second)
	if st := stopped.Stats(); st != (loadgen.BackgroundStats{}) {
		t.Errorf("stopped before Run, it sent: %+v", st)
	}
}

// recordingServer records the path of every Request-Id.
type recordingServer struct {
	srv   *httptest.Server
	mu    sync.Mutex
	paths map[string]string
}

func newRecordingServer(t *testing.T) *recordingServer {
	s := &recordingServer{paths: map[string]string{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.paths[r.Header.Get(transport.RequestIDHeader)] = r.URL.Path
		s.mu.Unlock()
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// sequence is the commands in the order of the requests' numbers.
func (s *recordingServer) sequence(t *testing.T, prefix string, n int64) []string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for i := int64(1); i <= n; i++ {
		p, ok := s.paths[fmt.Sprintf("%s-%07d", prefix, i)]
		if !ok {
			t.Fatalf("no request %s-%07d; got %d", prefix, i, len(s.paths))
		}
		out = append(out, p)
	}
	return out
}

func TestBackgroundSeedMakesTheSequence(t *testing.T) {
	srv := newRecordingServer(t)
	names := []string{"ID_A", "ID_B", "ID_C", "ID_D", "ID_E", "ID_F", "ID_G", "ID_H"}
	seq := func(run string, seed uint64) []string {
		b, err := loadgen.NewBackground(loadgen.BackgroundConfig{URL: srv.srv.URL, Rate: 400, Names: names, Seed: seed, Run: run,
			Duration: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		runBackground(t, b, 10*time.Second)
		if b.Prefix() != "bg-"+run {
			t.Errorf("prefix %q, want bg-%s", b.Prefix(), run)
		}
		return srv.sequence(t, b.Prefix(), b.Stats().Sent)
	}
	a, again, other := seq("a", 7), seq("b", 7), seq("c", 8)
	if !slices.Equal(a, again) {
		t.Errorf("the same seed drew\n%v\n%v", a, again)
	}
	if slices.Equal(a, other) {
		t.Errorf("seeds 7 and 8 drew the same %v", a)
	}
}

func TestNewBackgroundInvalid(t *testing.T) {
	names := []string{"ID_A"}
	for _, tc := range []struct {
		name  string
		cfg   loadgen.BackgroundConfig
		field string
		want  string
	}{
		{"no URL", loadgen.BackgroundConfig{Rate: 1, Names: names}, "URL", "required"},
		{"URL without scheme", loadgen.BackgroundConfig{URL: "rast-sim:1337", Rate: 1, Names: names}, "URL", "http(s)://host:port"},
		{"URL with query", loadgen.BackgroundConfig{URL: "http://x:1?a=b", Rate: 1, Names: names}, "URL", "base URL"},
		{"zero rate", loadgen.BackgroundConfig{URL: "http://x:1", Names: names}, "Rate", "positive"},
		{"negative rate", loadgen.BackgroundConfig{URL: "http://x:1", Rate: -1, Names: names}, "Rate", "positive"},
		{"infinite rate", loadgen.BackgroundConfig{URL: "http://x:1", Rate: math.Inf(1), Names: names}, "Rate", "positive"},
		{"negative duration", loadgen.BackgroundConfig{URL: "http://x:1", Rate: 1, Names: names, Duration: -time.Second}, "Duration", "negative"},
		{"negative bound", loadgen.BackgroundConfig{URL: "http://x:1", Rate: 1, Names: names, MaxInFlight: -1}, "MaxInFlight", "negative"},
		{"no names", loadgen.BackgroundConfig{URL: "http://x:1", Rate: 1}, "Names", "no command left"},
		{"only the alarm", loadgen.BackgroundConfig{URL: "http://x:1", Rate: 1,
			Names: []string{alarm.Command, strings.ToLower(alarm.Command), "store7d3b"}}, "Names", "no command left"},
		{"name with a slash", loadgen.BackgroundConfig{URL: "http://x:1", Rate: 1, Names: []string{"ID/A"}}, "Names", "command name"},
		{"name with a space", loadgen.BackgroundConfig{URL: "http://x:1", Rate: 1, Names: []string{"ID A"}}, "Names", "command name"},
		{"run with a space", loadgen.BackgroundConfig{URL: "http://x:1", Rate: 1, Names: names, Run: "a b"}, "Run", "printable"},
		{"run too long", loadgen.BackgroundConfig{URL: "http://x:1", Rate: 1, Names: names, Run: strings.Repeat("r", 101)}, "Run", "longer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadgen.NewBackground(tc.cfg)
			var fe *config.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want a %s error containing %q", err, tc.field, tc.want)
			}
		})
	}
}

func TestBackgroundLeavesOutEveryNameOfTheAlarm(t *testing.T) {
	b, err := loadgen.NewBackground(loadgen.BackgroundConfig{URL: "http://x:1", Rate: 1,
		Names: []string{alarm.Command, "ID_GET_PLZ_LISTE", strings.ToLower(alarm.Command), "STORE7D3B", "KC_STORE"}})
	if err != nil {
		t.Fatal(err)
	}
	// rast-sim would take a part of the alarm's name for the alarm (it matches substrings).
	if got := b.Names(); !slices.Equal(got, []string{"ID_GET_PLZ_LISTE"}) {
		t.Errorf("names %v, want only ID_GET_PLZ_LISTE", got)
	}
}

func TestIsBackgroundID(t *testing.T) {
	for id, want := range map[string]bool{
		"bg-1a2b3c4d-0000001":    true,
		transport.NewRequestID(): false,
		"run1a2b3c4d-0000001":    false,
		"bgx-0000001":            false,
	} {
		if got := loadgen.IsBackgroundID(id); got != want {
			t.Errorf("IsBackgroundID(%q) = %v", id, got)
		}
	}
	// An alarm prefix that would make background-looking ids is refused.
	for _, p := range []string{"bg", "bg-x"} {
		if _, err := loadgen.New(loadgen.Config{URLs: []string{"http://x:1"}, Rate: 1, Prefix: p}); err == nil || !strings.Contains(err.Error(), "bg-") {
			t.Errorf("alarm prefix %q: error %v", p, err)
		}
	}
	if _, err := loadgen.New(loadgen.Config{URLs: []string{"http://x:1"}, Rate: 1, Prefix: "bgx"}); err != nil {
		t.Errorf("alarm prefix bgx: %v", err)
	}
}

func TestLoadNames(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := loadgen.LoadNames(write("names.txt", "ID_A\n\n  ID_B \t\r\nID_C"))
	if err != nil || !slices.Equal(got, []string{"ID_A", "ID_B", "ID_C"}) {
		t.Errorf("LoadNames = %q, %v", got, err)
	}
	missing := filepath.Join(dir, "missing.txt")
	if _, err := loadgen.LoadNames(missing); err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v", err)
	}
	empty := write("empty.txt", " \n\t\n")
	if _, err := loadgen.LoadNames(empty); err == nil || !strings.Contains(err.Error(), empty+" has no names") {
		t.Errorf("empty file: %v", err)
	}
}

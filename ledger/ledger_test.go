package ledger_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lpsdev/lps/ledger"
)

func TestCompare(t *testing.T) {
	l := ledger.New()
	// a: acked, received once. b: acked, lost. c: acked, received twice. d: sent, never acked,
	// never received. e: never acked but received. x: received, never sent.
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		l.Sent(id)
		l.Attempt(id)
	}
	l.Attempt("d")
	l.Attempt("e")
	l.Acked("a", 10*time.Millisecond)
	l.Acked("b", 20*time.Millisecond)
	l.Acked("c", 30*time.Millisecond)
	l.Acked("c", time.Hour) // a second ack of the same id does not count

	r := l.Compare(map[string]int{"a": 1, "c": 3, "e": 1, "x": 2})
	want := ledger.Report{
		Sent: 5, Acked: 3, Received: 4, Lost: 1, Duplicated: 2, DuplicateCopies: 3,
		Unacked: 2, UnackedReceived: 1, Unknown: 1, Attempts: 7, Retried: 2,
	}
	got := r
	got.Latency, got.LostIDs, got.DuplicatedIDs, got.UnackedIDs, got.UnknownIDs = ledger.Latency{}, nil, nil, nil, nil
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("report\n got %+v\nwant %+v", got, want)
	}
	for _, tc := range []struct {
		name      string
		got, want []string
	}{
		{"lost", r.LostIDs, []string{"b"}},
		{"duplicated", r.DuplicatedIDs, []string{"c", "x"}},
		{"unacked", r.UnackedIDs, []string{"d"}},
		{"unknown", r.UnknownIDs, []string{"x"}},
	} {
		if !slices.Equal(tc.got, tc.want) {
			t.Errorf("%s ids %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if r.Latency.Count != 3 {
		t.Errorf("latency count %d, want 3", r.Latency.Count)
	}
	if r.Latency.Max < 29*time.Millisecond || r.Latency.Max > 31*time.Millisecond {
		t.Errorf("latency max %s, want about 30ms (the repeated ack must not count)", r.Latency.Max)
	}
}

func TestLatencyPercentiles(t *testing.T) {
	l := ledger.New()
	for i := 1; i <= 1000; i++ {
		id := fmt.Sprint(i)
		l.Sent(id)
		l.Acked(id, time.Duration(i)*time.Millisecond)
	}
	lat := l.Latency()
	near := func(name string, got, want time.Duration) {
		t.Helper()
		if d := got - want; d < -want/100 || d > want/100 {
			t.Errorf("%s = %s, want %s ±1%%", name, got, want)
		}
	}
	near("p50", lat.P50, 500*time.Millisecond)
	near("p90", lat.P90, 900*time.Millisecond)
	near("p99", lat.P99, 990*time.Millisecond)
	near("max", lat.Max, 1000*time.Millisecond)
	near("min", lat.Min, time.Millisecond)
	near("mean", lat.Mean, 500500*time.Microsecond)
	if lat.Count != 1000 {
		t.Errorf("count %d", lat.Count)
	}

	l.Sent("slow")
	l.Acked("slow", 2*time.Hour)
	if got := l.Latency(); got.Clamped != 1 || got.Max < 59*time.Minute {
		t.Errorf("a latency over the range: clamped %d max %s", got.Clamped, got.Max)
	}
}

func TestConcurrentUse(t *testing.T) {
	l := ledger.New()
	const workers, per = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				id := fmt.Sprintf("w%d-%d", w, i)
				l.Sent(id)
				l.Attempt(id)
				l.Acked(id, time.Millisecond)
				if i%50 == 0 {
					l.Compare(nil)
				}
			}
		}()
	}
	wg.Wait()
	sent, acked := l.Counts()
	if sent != workers*per || acked != workers*per {
		t.Errorf("sent %d acked %d, want %d each", sent, acked, workers*per)
	}
	if n := len(l.Entries()); n != workers*per {
		t.Errorf("%d entries", n)
	}
}

func TestExport(t *testing.T) {
	l := ledger.New()
	l.Sent("a")
	l.Attempt("a")
	l.Acked("a", 1500*time.Microsecond)
	l.Sent("b")
	r := l.Compare(map[string]int{"a": 2})
	r.Name = "scenario-1"

	var buf bytes.Buffer
	if err := ledger.WriteJSON(&buf, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"p50_ms": 1.5`) {
		t.Errorf("JSON does not give latencies in ms:\n%s", buf.String())
	}
	var back []ledger.Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back) != 1 || back[0].Name != "scenario-1" || back[0].Duplicated != 1 || back[0].Unacked != 1 ||
		back[0].Latency.P50 != r.Latency.P50 {
		t.Errorf("JSON round trip: %+v, want %+v", back, r)
	}

	buf.Reset()
	if err := ledger.WriteCSV(&buf, r, r); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || !slices.Equal(rows[0], ledger.CSVHeader) || rows[1][0] != "scenario-1" || rows[1][5] != "1" {
		t.Errorf("CSV rows %v", rows)
	}

	buf.Reset()
	if err := l.WriteEntriesCSV(&buf); err != nil {
		t.Fatal(err)
	}
	rows, err = csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[1][0] != "a" || rows[1][3] != "true" || rows[1][5] != "1.500" || rows[2][3] != "false" {
		t.Errorf("entry rows %v", rows)
	}
}

func TestWriteTable(t *testing.T) {
	l := ledger.New()
	for i, id := range []string{"a", "b", "c"} {
		l.Sent(id)
		l.Attempt(id)
		if i < 2 {
			l.Acked(id, time.Duration(i+1)*time.Millisecond)
		}
	}
	r := l.Compare(map[string]int{"a": 1, "b": 2})
	var b strings.Builder
	run := ledger.Run{Title: "t, open model, 2s", GivenUp: 1, Verified: true, Waited: time.Second, Why: "every acked alarm arrived", Entries: l.Entries()}
	if err := ledger.WriteTable(&b, r, run); err != nil {
		t.Fatal(err)
	}
	// Columns are padded to the widest label, so match on words and spacing, not on widths.
	for _, want := range []string{`(?m)^run\s+t, open model, 2s$`, `(?m)^acked\s+2\s+66\.7%$`, `(?m)^given up\s+1$`, `(?m)^duplicated\s+1\s+\+1 copies$`, `(?m)^lost\s+0$`, `(?m)^latency max\s+2ms$`, `(?m)^received\s+2\s+distinct ids at rast-sim, after 1s \(every acked alarm arrived\)$`, `(?m)^duplicated ids\s+b$`, `(?m)^given-up ids\s+c$`} {
		if !regexp.MustCompile(want).MatchString(b.String()) {
			t.Errorf("table lacks %s:\n%s", want, b.String())
		}
	}
	if got := ledger.RoundDuration(1234567 * time.Microsecond); got != "1.235s" {
		t.Errorf("RoundDuration = %s", got)
	}
}

// Summary and Missing agree with what Entries and Compare say of the same ledger, and cost no
// allocation (they run while a load records into the ledger).
func TestSummaryAndMissingMatchEntries(t *testing.T) {
	l := ledger.New()
	start := time.Now()
	var acked []string
	for i := range 3000 {
		prefix := []string{"run-s01-", "run-s02-", "other-"}[i%3]
		id := fmt.Sprintf("%s%07d", prefix, i)
		l.SentAt(id, start.Add(time.Duration(i)*time.Millisecond))
		l.Attempt(id)
		if i%7 != 0 {
			l.Acked(id, time.Duration(i%250+1)*time.Millisecond)
			acked = append(acked, id)
		}
	}
	at := start.Add(5 * time.Second)
	for _, prefix := range []string{"run-s01-", "run-s02-", "run-", "none-", ""} {
		var want ledger.Summary
		for _, e := range l.Entries() {
			if !strings.HasPrefix(e.ID, prefix) {
				continue
			}
			lat := e.Latency
			if e.Acked {
				want.Acked++
			} else {
				lat = at.Sub(e.SentAt)
			}
			want.Sum += lat
			want.Max = max(want.Max, lat)
		}
		if got := l.Summary(prefix, at); got != want {
			t.Errorf("Summary(%q) = %+v, want %+v", prefix, got, want)
		}
	}
	received := map[string]int{"stranger": 1}
	for i, id := range acked {
		if i%5 != 0 {
			received[id] = 1 + i%2
		}
	}
	if got, want := l.Missing(received), l.Compare(received).Lost; got != want || got == 0 {
		t.Errorf("Missing = %d, Compare's Lost = %d (want equal and above 0)", got, want)
	}
	if a := testing.AllocsPerRun(10, func() { l.Summary("run-s01-", at); l.Missing(received) }); a != 0 {
		t.Errorf("Summary and Missing allocate %v times", a)
	}
}

// BenchmarkSummary is the performance experiment's look at a step's alarms at the end of a
// 10-minute step at 1,000 alarms/s (600,000 entries), by copying the entries as it did and by
// Summary; the ledger's lock is held for the whole of either.
//
//	go test -run '^$' -bench Summary -benchmem ./ledger/
func BenchmarkSummary(b *testing.B) {
	l := ledger.New()
	start := time.Now()
	for i := range 600_000 {
		id := fmt.Sprintf("run-s01-%07d", i)
		l.SentAt(id, start)
		l.Acked(id, time.Millisecond)
	}
	b.Run("entries", func(b *testing.B) {
		for b.Loop() {
			var sum time.Duration
			for _, e := range l.Entries() {
				if strings.HasPrefix(e.ID, "run-s01-") {
					sum += e.Latency
				}
			}
		}
	})
	b.Run("summary", func(b *testing.B) {
		for b.Loop() {
			l.Summary("run-s01-", start)
		}
	})
}

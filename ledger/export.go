package ledger

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"
)

// latencyJSON is Latency on the wire: milliseconds, the unit analysis scripts plot.
type latencyJSON struct {
	Count   int     `json:"count"`
	MinMs   float64 `json:"min_ms"`
	MeanMs  float64 `json:"mean_ms"`
	P50Ms   float64 `json:"p50_ms"`
	P90Ms   float64 `json:"p90_ms"`
	P95Ms   float64 `json:"p95_ms"`
	P99Ms   float64 `json:"p99_ms"`
	P999Ms  float64 `json:"p999_ms"`
	MaxMs   float64 `json:"max_ms"`
	Clamped int     `json:"clamped,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fromMs(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

// MarshalJSON writes the latencies in milliseconds.
func (l Latency) MarshalJSON() ([]byte, error) {
	return json.Marshal(latencyJSON{
		Count: l.Count, MinMs: ms(l.Min), MeanMs: ms(l.Mean), P50Ms: ms(l.P50), P90Ms: ms(l.P90),
		P95Ms: ms(l.P95), P99Ms: ms(l.P99), P999Ms: ms(l.P999), MaxMs: ms(l.Max), Clamped: l.Clamped,
	})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (l *Latency) UnmarshalJSON(b []byte) error {
	var j latencyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*l = Latency{
		Count: j.Count, Min: fromMs(j.MinMs), Mean: fromMs(j.MeanMs), P50: fromMs(j.P50Ms), P90: fromMs(j.P90Ms),
		P95: fromMs(j.P95Ms), P99: fromMs(j.P99Ms), P999: fromMs(j.P999Ms), Max: fromMs(j.MaxMs), Clamped: j.Clamped,
	}
	return nil
}

// WriteJSON writes the reports as an indented JSON array.
func WriteJSON(w io.Writer, reports ...Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if reports == nil {
		reports = []Report{}
	}
	if err := enc.Encode(reports); err != nil {
		return fmt.Errorf("writing reports as JSON: %w", err)
	}
	return nil
}

// CSVHeader is the header row WriteCSV writes.
var CSVHeader = []string{
	"name", "sent", "acked", "received", "lost", "duplicated", "duplicate_copies", "unacked",
	"unacked_received", "unknown", "attempts", "retried", "latency_count", "latency_min_ms",
	"latency_mean_ms", "latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms",
	"latency_p999_ms", "latency_max_ms",
}

// CSVRecord is the report as a row under CSVHeader.
func (r Report) CSVRecord() []string {
	i := strconv.Itoa
	f := func(d time.Duration) string { return strconv.FormatFloat(ms(d), 'f', 3, 64) }
	l := r.Latency
	return []string{
		r.Name, i(r.Sent), i(r.Acked), i(r.Received), i(r.Lost), i(r.Duplicated), i(r.DuplicateCopies),
		i(r.Unacked), i(r.UnackedReceived), i(r.Unknown), i(r.Attempts), i(r.Retried), i(l.Count),
		f(l.Min), f(l.Mean), f(l.P50), f(l.P90), f(l.P95), f(l.P99), f(l.P999), f(l.Max),
	}
}

// WriteCSV writes a header and one row per report; the id samples are left out (they are in
// the JSON).
func WriteCSV(w io.Writer, reports ...Report) error {
	cw := csv.NewWriter(w)
	cw.Write(CSVHeader)
	for _, r := range reports {
		cw.Write(r.CSVRecord())
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("writing reports as CSV: %w", err)
	}
	return nil
}

// WriteEntriesCSV writes every entry of the ledger, one row per Request-Id in the order they
// were sent: id, sent_at, attempts, acked, acked_at, latency_ms (times RFC 3339 with
// nanoseconds) — the raw material for latency-over-time plots.
func (l *Ledger) WriteEntriesCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"id", "sent_at", "attempts", "acked", "acked_at", "latency_ms"})
	for _, e := range l.Entries() {
		ackedAt, lat := "", ""
		if e.Acked {
			ackedAt = e.AckedAt.UTC().Format(time.RFC3339Nano)
			lat = strconv.FormatFloat(ms(e.Latency), 'f', 3, 64)
		}
		cw.Write([]string{e.ID, e.SentAt.UTC().Format(time.RFC3339Nano), strconv.Itoa(e.Attempts),
			strconv.FormatBool(e.Acked), ackedAt, lat})
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("writing ledger entries as CSV: %w", err)
	}
	return nil
}

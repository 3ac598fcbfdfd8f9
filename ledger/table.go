package ledger

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Run is what a load run's summary table tells besides its Report.
type Run struct {
	// Title is the run's first line: its name, model and length.
	Title string
	// GivenUp counts the alarms the load gave up on (never answered 2xx).
	GivenUp int
	// Verified says the Report compares with what rast-sim received; Waited and Why tell how
	// long the load waited for it and why the wait ended, Others how many ids rast-sim had from
	// other runs (left out).
	Verified bool
	Waited   time.Duration
	Why      string
	Others   int
	// Entries are the ledger's entries, for the throughput.
	Entries []Entry
}

// WriteTable writes the report of a run as the two-column summary table `lps load` prints,
// beside the report's JSON (WriteJSON) and CSV (WriteCSV).
func WriteTable(w io.Writer, r Report, run Run) error {
	lat := r.Latency
	dur := func(d time.Duration) string {
		if lat.Count == 0 {
			return "-"
		}
		return RoundDuration(d)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "run\t%s\n", run.Title)
	fmt.Fprintf(tw, "sent\t%d\n", r.Sent)
	fmt.Fprintf(tw, "acked\t%d\t%s\n", r.Acked, pct(r.Acked, r.Sent))
	givenUp := fmt.Sprintf("given up\t%d", run.GivenUp)
	if run.Verified && r.UnackedReceived > 0 {
		givenUp += fmt.Sprintf("\t%d of them received by rast-sim all the same", r.UnackedReceived)
	}
	fmt.Fprintln(tw, givenUp)
	fmt.Fprintf(tw, "attempts\t%d\t%d alarms retried\n", r.Attempts, r.Retried)
	fmt.Fprintf(tw, "latency p50\t%s\n", dur(lat.P50))
	fmt.Fprintf(tw, "latency p90\t%s\n", dur(lat.P90))
	fmt.Fprintf(tw, "latency p99\t%s\n", dur(lat.P99))
	fmt.Fprintf(tw, "latency max\t%s\n", dur(lat.Max))
	fmt.Fprintf(tw, "throughput\t%s\n", throughput(run.Entries))
	if run.Verified {
		fmt.Fprintf(tw, "received\t%d\tdistinct ids at rast-sim, after %s (%s)\n", r.Received, run.Waited.Round(time.Millisecond), run.Why)
		fmt.Fprintf(tw, "lost\t%d\n", r.Lost)
		fmt.Fprintf(tw, "duplicated\t%d\t+%d copies\n", r.Duplicated, r.DuplicateCopies)
		fmt.Fprintf(tw, "unknown\t%d\tids with this prefix the load did not send\n", r.Unknown)
		if run.Others > 0 {
			fmt.Fprintf(tw, "other ids\t%d\tat rast-sim from other runs or sources, not counted\n", run.Others)
		}
		if len(r.LostIDs) > 0 {
			fmt.Fprintf(tw, "lost ids\t%s\n", samples(r.LostIDs, r.Lost))
		}
		if len(r.DuplicatedIDs) > 0 {
			fmt.Fprintf(tw, "duplicated ids\t%s\n", samples(r.DuplicatedIDs, r.Duplicated))
		}
	}
	if len(r.UnackedIDs) > 0 {
		fmt.Fprintf(tw, "given-up ids\t%s\n", samples(r.UnackedIDs, r.Unacked-r.UnackedReceived))
	}
	return tw.Flush()
}

// throughput is the acked alarms per second from the first send to the last acknowledgement.
func throughput(entries []Entry) string {
	var first, last time.Time
	acked := 0
	for _, e := range entries {
		if first.IsZero() || e.SentAt.Before(first) {
			first = e.SentAt
		}
		if e.Acked {
			acked++
			if e.AckedAt.After(last) {
				last = e.AckedAt
			}
		}
	}
	span := last.Sub(first)
	if acked == 0 || span <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f alarms/s acked\tover %s, first send to last ack", float64(acked)/span.Seconds(), span.Round(time.Millisecond))
}

func pct(n, of int) string {
	if of == 0 {
		return ""
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
}

func samples(ids []string, total int) string {
	s := strings.Join(ids, " ")
	if total > len(ids) {
		s += fmt.Sprintf(" … (%d more)", total-len(ids))
	}
	return s
}

// RoundDuration formats d with about three significant digits.
func RoundDuration(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

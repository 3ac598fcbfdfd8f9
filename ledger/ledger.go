// Package ledger keeps the per-Request-Id account of an experiment: which alarms the load sent,
// how often it tried each, which were answered 2xx (and how long that took), and — compared with
// what the backend received — which were lost, doubled, never acknowledged or never sent.
//
// The original research system only compared counts, so a duplicate could hide a loss; a
// Ledger compares identities. It is safe for concurrent use by every worker of a load.
package ledger

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Latency range the histogram tracks, with three significant digits: from a microsecond to an
// hour. A longer latency is recorded as an hour (and counted in Latency.Clamped).
const (
	minTrackable = int64(time.Microsecond)
	maxTrackable = int64(time.Hour)
	sigFigures   = 3
)

// MaxSampleIDs bounds the example ids a Report lists per category, so that a report of a
// million alarms stays readable.
const MaxSampleIDs = 20

// Entry is what the ledger knows of one Request-Id.
type Entry struct {
	// ID is the Request-Id.
	ID string `json:"id"`
	// SentAt is when the load sent it the first time (or intended to, in an open model).
	SentAt time.Time `json:"sent_at"`
	// Attempts counts the requests made for it, the first included.
	Attempts int `json:"attempts"`
	// Acked says whether a request for it was answered 2xx.
	Acked bool `json:"acked"`
	// AckedAt is when; Latency is the time from the first try (or the intended send time) to
	// that answer.
	AckedAt time.Time     `json:"acked_at,omitzero"`
	Latency time.Duration `json:"latency_ns,omitempty"`
}

// Ledger is the per-Request-Id account. The zero value is not usable; make one with New.
type Ledger struct {
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*Entry
	order   []*Entry // the entries in the order their ids were first sent
	hist    *hdrhistogram.Histogram
	clamped int
}

// New returns an empty ledger.
func New() *Ledger {
	return &Ledger{
		now:     time.Now,
		entries: make(map[string]*Entry),
		hist:    hdrhistogram.New(minTrackable, maxTrackable, sigFigures),
	}
}

// entry returns id's entry, making it if needed. Called with l.mu held.
func (l *Ledger) entry(id string, at time.Time) *Entry {
	e := l.entries[id]
	if e == nil {
		e = &Entry{ID: id, SentAt: at}
		l.entries[id] = e
		l.order = append(l.order, e)
	}
	return e
}

// Sent records that the load sent id for the first time, now. A repeated Sent changes nothing.
func (l *Ledger) Sent(id string) { l.SentAt(id, l.now()) }

// SentAt records that the load sent id for the first time at t; in an open model t is the
// intended send time. A repeated call changes nothing.
func (l *Ledger) SentAt(id string, t time.Time) {
	l.mu.Lock()
	l.entry(id, t)
	l.mu.Unlock()
}

// Attempt records one request for id (the first one too). An id not sent before counts as sent
// now.
func (l *Ledger) Attempt(id string) {
	l.mu.Lock()
	l.entry(id, l.now()).Attempts++
	l.mu.Unlock()
}

// Acked records that a request for id was answered 2xx, latency after it was first sent. Only
// the first acknowledgement of an id counts; an id not sent before counts as sent now.
func (l *Ledger) Acked(id string, latency time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entry(id, now)
	if e.Acked {
		return
	}
	e.Acked, e.AckedAt, e.Latency = true, now, latency
	v := max(int64(latency), minTrackable)
	if v > maxTrackable {
		v = maxTrackable
		l.clamped++
	}
	l.hist.RecordValue(v) // in range by construction
}

// Len is the number of ids sent.
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// Counts returns how many ids were sent and how many of them were acknowledged.
func (l *Ledger) Counts() (sent, acked int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.entries {
		if e.Acked {
			acked++
		}
	}
	return len(l.entries), acked
}

// Entries returns a copy of every entry, in the order the ids were first sent.
func (l *Ledger) Entries() []Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Entry, 0, len(l.order))
	for _, e := range l.order {
		out = append(out, *e)
	}
	return out
}

// Missing counts the acknowledged ids that received (rast-sim's counts by id) has no copy of:
// what a drain still waits for. Compare says the same and much more, at a cost a poll every
// 0.2 s should not pay.
func (l *Ledger) Missing(received map[string]int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.order {
		if e.Acked && received[e.ID] == 0 {
			n++
		}
	}
	return n
}

// Summary is what Ledger.Summary returns.
type Summary struct {
	// Acked counts the acknowledged ids.
	Acked int
	// Sum and Max are of the latencies of every id, where one not yet acknowledged counts as
	// waiting since it was sent.
	Sum, Max time.Duration
}

// Summary sums up the ids that start with prefix as of at. It is for a load that is still
// running: one pass under the lock and no allocation, where Entries copies every entry while
// the load waits to record its sends and acknowledgements (0.5 s at 600,000 entries, which
// showed as the response time of the alarms of that moment).
func (l *Ledger) Summary(prefix string, at time.Time) Summary {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s Summary
	for _, e := range l.order {
		if !strings.HasPrefix(e.ID, prefix) {
			continue
		}
		lat := e.Latency
		if e.Acked {
			s.Acked++
		} else {
			lat = at.Sub(e.SentAt)
		}
		s.Sum += lat
		s.Max = max(s.Max, lat)
	}
	return s
}

// Latency returns the percentiles of the acknowledged alarms' latencies so far.
func (l *Ledger) Latency() Latency {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.latency()
}

// latency summarises the histogram. Called with l.mu held.
func (l *Ledger) latency() Latency {
	h := l.hist
	if h.TotalCount() == 0 {
		return Latency{}
	}
	q := func(p float64) time.Duration { return time.Duration(h.ValueAtPercentile(p)) }
	return Latency{
		Count:   int(h.TotalCount()),
		Min:     time.Duration(h.Min()),
		Mean:    time.Duration(h.Mean()),
		P50:     q(50),
		P90:     q(90),
		P95:     q(95),
		P99:     q(99),
		P999:    q(99.9),
		Max:     time.Duration(h.Max()),
		Clamped: l.clamped,
	}
}

// Compare matches the ledger against what the backend received, as Request-Id → times
// received (rast-sim's GET /stats/requests), and returns the report. Every count is of
// distinct ids, except DuplicateCopies and Attempts.
func (l *Ledger) Compare(received map[string]int) Report {
	l.mu.Lock()
	defer l.mu.Unlock()
	var r Report
	r.Sent = len(l.entries)
	for _, e := range l.order {
		id := e.ID
		r.Attempts += e.Attempts
		if e.Attempts > 1 {
			r.Retried++
		}
		n := received[id]
		switch {
		case e.Acked:
			r.Acked++
			if n == 0 {
				r.Lost++
				r.LostIDs = appendSample(r.LostIDs, id)
			}
		default:
			r.Unacked++
			if n > 0 {
				r.UnackedReceived++
			} else {
				r.UnackedIDs = appendSample(r.UnackedIDs, id)
			}
		}
	}
	// Walk the received ids in a fixed order, so that the samples are reproducible.
	for _, id := range slices.Sorted(maps.Keys(received)) {
		n := received[id]
		if n <= 0 {
			continue
		}
		r.Received++
		if n > 1 {
			r.Duplicated++
			r.DuplicateCopies += n - 1
			r.DuplicatedIDs = appendSample(r.DuplicatedIDs, id)
		}
		if _, ok := l.entries[id]; !ok {
			r.Unknown++
			r.UnknownIDs = appendSample(r.UnknownIDs, id)
		}
	}
	r.Latency = l.latency()
	return r
}

func appendSample(ids []string, id string) []string {
	if len(ids) < MaxSampleIDs {
		ids = append(ids, id)
	}
	return ids
}

// Report is the outcome of Compare.
type Report struct {
	// Name labels the report (a scenario, a run); Compare leaves it empty.
	Name string `json:"name,omitempty"`
	// Sent counts the ids the load sent.
	Sent int `json:"sent"`
	// Acked counts the sent ids answered 2xx.
	Acked int `json:"acked"`
	// Received counts the distinct ids the backend received (sent by this load or not).
	Received int `json:"received"`
	// Lost counts the acknowledged ids the backend never received: the LPS's promise broken.
	Lost int `json:"lost"`
	// Duplicated counts the ids the backend received more than once; DuplicateCopies the extra
	// copies (an id received three times adds 1 to Duplicated and 2 to DuplicateCopies).
	Duplicated      int `json:"duplicated"`
	DuplicateCopies int `json:"duplicate_copies"`
	// Unacked counts the sent ids never answered 2xx (the load gave up); UnackedReceived those
	// of them the backend received all the same (a failure answer is no proof of loss).
	Unacked         int `json:"unacked"`
	UnackedReceived int `json:"unacked_received"`
	// Unknown counts the ids the backend received that this load never sent.
	Unknown int `json:"unknown"`
	// Attempts counts the requests made; Retried the ids that needed more than one.
	Attempts int `json:"attempts"`
	Retried  int `json:"retried"`
	// Latency summarises the acknowledged alarms' latencies.
	Latency Latency `json:"latency"`
	// Samples of the ids in each problem category, at most MaxSampleIDs each.
	LostIDs       []string `json:"lost_ids,omitempty"`
	DuplicatedIDs []string `json:"duplicated_ids,omitempty"`
	UnackedIDs    []string `json:"unacked_ids,omitempty"`
	UnknownIDs    []string `json:"unknown_ids,omitempty"`
}

// String is a one-line summary.
func (r Report) String() string {
	s := fmt.Sprintf("sent=%d acked=%d received=%d lost=%d duplicated=%d (+%d copies) unacked=%d (received %d) unknown=%d retried=%d p50=%s p99=%s max=%s",
		r.Sent, r.Acked, r.Received, r.Lost, r.Duplicated, r.DuplicateCopies, r.Unacked, r.UnackedReceived, r.Unknown, r.Retried,
		r.Latency.P50, r.Latency.P99, r.Latency.Max)
	if r.Name != "" {
		s = r.Name + ": " + s
	}
	return s
}

// Latency are percentiles of acknowledged alarms' latencies, from the HDR histogram (three
// significant digits). The zero value means no alarm was acknowledged.
type Latency struct {
	Count                               int
	Min, Mean, P50, P90, P95, P99, P999 time.Duration
	Max                                 time.Duration
	// Clamped counts latencies over an hour, recorded as an hour.
	Clamped int
}

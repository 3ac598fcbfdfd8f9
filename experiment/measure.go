package experiment

import (
	"context"
	"slices"
	"time"

	"github.com/lpsdev/lps/report"
)

// maxCDFLatencies bounds the latencies a run keeps for the report's CDF: an even sample.
const maxCDFLatencies = 100_000

// measure accounts for every alarm (sent, acknowledged, received, per Request-Id) and builds
// the run's series and queueing figures. start and end bound the load; the series goes on to
// the end of the drain.
func (w *workload) measure(ctx context.Context, smp *sampler, start, end time.Time, drain time.Duration) (report.Run, error) {
	received, err := w.received(ctx)
	if err != nil {
		return report.Run{}, err
	}
	rep := w.ledger.Compare(received)
	samples, consumers := smp.series()
	r := report.Run{
		Topology: w.kind, Start: start.UTC(), End: end.UTC(),
		Sent: rep.Sent, Acked: rep.Acked, Received: rep.Received, Lost: rep.Lost,
		Duplicated: rep.Duplicated, GivenUp: rep.Unacked,
		P50: report.Ms(rep.Latency.P50), P90: report.Ms(rep.Latency.P90),
		P99: report.Ms(rep.Latency.P99), Max: report.Ms(rep.Latency.Max),
		Drain: report.Ms(drain),
	}
	if w.isLPS() {
		r.Consumers = consumers
	}

	// Per second, from the ledger: the response times of the alarms acknowledged in it.
	n := max(len(samples), int(end.Sub(start)/time.Second)+1)
	lat := make([][]time.Duration, n)
	acked := make([]int, n)
	var all []time.Duration
	for _, e := range w.ledger.Entries() {
		if !e.Acked {
			continue
		}
		all = append(all, e.Latency)
		s := int(e.AckedAt.Sub(start) / time.Second)
		if s < 0 || s >= n {
			continue
		}
		lat[s] = append(lat[s], e.Latency)
		acked[s]++
	}
	var prevFail int64
	prevRecv := 0
	for s := range n {
		sec := report.Second{T: s, Acked: acked[s], Backlog: -1}
		if l := lat[s]; len(l) > 0 {
			slices.Sort(l)
			sec.P50 = report.Ms(l[len(l)/2])
			sec.P99 = report.Ms(l[min(len(l)-1, len(l)*99/100)])
			sec.Max = report.Ms(l[len(l)-1])
		}
		if s < len(samples) {
			sm := samples[s]
			sec.Failed = int(sm.failures - prevFail)
			sec.Received = sm.received - prevRecv
			sec.Backlog = sm.backlog
			prevFail, prevRecv = sm.failures, sm.received
		}
		r.Seconds = append(r.Seconds, sec)
	}
	r.Latencies = evenSample(all, maxCDFLatencies)
	r.Lambda, r.Mu, r.Rho = queueing(r, start, end)
	return r, nil
}

// queueing measures the arrival rate λ (alarms acknowledged per second over the load window:
// what the system took in), the service rate μ (alarms rast-sim received per second in the
// seconds that began with work waiting in the broker and in which the backend served: the
// rate of a busy server, outages left out) and the utilisation ρ = λ/μ, as the original
// reports them (λ = 302.51, μ = 22.36, ρ ≈ 13.5). Without a second of backlog — the baseline,
// or an LPS that kept up — μ is rast-sim's rate over the load window, a lower bound of its
// capacity, and ρ then at least about 1.
func queueing(r report.Run, start, end time.Time) (lambda, mu, rho float64) {
	window := end.Sub(start).Seconds()
	if window <= 0 {
		return 0, 0, 0
	}
	var ackedIn, servedIn int
	for _, s := range r.Seconds {
		if float64(s.T) < window {
			ackedIn += s.Acked
			servedIn += s.Received
		}
	}
	lambda = float64(ackedIn) / window
	busy, served := 0, 0
	for i := 1; i < len(r.Seconds); i++ {
		if r.Seconds[i-1].Backlog > 0 && r.Seconds[i].Received > 0 {
			busy++
			served += r.Seconds[i].Received
		}
	}
	if busy > 0 {
		mu = float64(served) / float64(busy)
	} else {
		mu = float64(servedIn) / window
	}
	if mu > 0 {
		rho = lambda / mu
	}
	return lambda, mu, rho
}

// evenSample returns at most n of ds, evenly spread, sorted.
func evenSample(ds []time.Duration, n int) []time.Duration {
	slices.Sort(ds)
	if len(ds) <= n {
		return ds
	}
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = ds[i*len(ds)/n]
	}
	return out
}

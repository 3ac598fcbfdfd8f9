package report

import (
	"math"
	"slices"
	"sort"
	"time"
)

// maxPoints is how many points a line over time keeps on the page: about one per horizontal
// pixel of the plot's data area. More would not be seen, only weigh the page down: a two-hour
// run has 7,200 seconds per line, six lines per run.
const maxPoints = 800

// cdfPoints is how many points a CDF keeps: a few per pixel of the log-scaled x axis.
const cdfPoints = 500

// buckets splits n per-second entries into consecutive groups of k, with k as small as keeps
// the number of groups at most maxPoints (k = 1 for runs up to 800 seconds).
func buckets(n int) (k int) {
	return max(1, (n+maxPoints-1)/maxPoints)
}

// xy is one line's points; a NaN y is a gap (no data there), drawn as a break in the line.
type xy struct{ x, y []float64 }

func (p *xy) add(x, y float64) {
	p.x = append(p.x, x)
	p.y = append(p.y, y)
}

// latencyLines are a run's per-second p50, p99 and maximum, downsampled. A bucket of k seconds
// shows the median of its seconds' p50 and the largest p99 and maximum: the typical time stays
// typical and a spike of one second stays as high as it was, only wider.
func latencyLines(secs []Second) (p50, p99, top xy) {
	k := buckets(len(secs))
	for i := 0; i < len(secs); i += k {
		b := secs[i:min(i+k, len(secs))]
		x := midT(b)
		var meds []float64
		hi99, hiMax := math.NaN(), math.NaN()
		for _, s := range b {
			// No alarm acknowledged in this second: no response time, not a 0 ms one.
			if s.Acked == 0 && s.Max <= 0 {
				continue
			}
			meds = append(meds, float64(s.P50))
			hi99 = nanMax(hi99, float64(s.P99))
			hiMax = nanMax(hiMax, float64(s.Max))
		}
		p50.add(x, median(meds))
		p99.add(x, hi99)
		top.add(x, hiMax)
	}
	return p50, p99, top
}

// rateLines are a run's acknowledged, received and failed per second, downsampled. A bucket
// shows its mean, so the unit stays "per second" and the area under the line stays the count.
func rateLines(secs []Second) (acked, received, failed xy) {
	k := buckets(len(secs))
	for i := 0; i < len(secs); i += k {
		b := secs[i:min(i+k, len(secs))]
		x := midT(b)
		var a, r, f float64
		for _, s := range b {
			a += float64(s.Acked)
			r += float64(s.Received)
			f += float64(s.Failed)
		}
		n := float64(len(b))
		acked.add(x, a/n)
		received.add(x, r/n)
		failed.add(x, f/n)
	}
	return acked, received, failed
}

// backlogLine is the broker's queue depth, downsampled to each bucket's largest known value
// (a queue's peak is what a reader looks for); seconds where it was unknown (-1) are gaps.
func backlogLine(secs []Second) (line xy, known bool) {
	k := buckets(len(secs))
	for i := 0; i < len(secs); i += k {
		b := secs[i:min(i+k, len(secs))]
		hi := math.NaN()
		for _, s := range b {
			if s.Backlog >= 0 {
				hi = nanMax(hi, float64(s.Backlog))
				known = true
			}
		}
		line.add(midT(b), hi)
	}
	return line, known
}

// cdf is the empirical distribution of lat in milliseconds, at cdfPoints response times spread
// evenly on a log scale between the smallest and the largest: the plot's x axis is log-scaled,
// so each point stands for the same width on the page however the latencies cluster. The last
// point is the maximum at fraction 1.
func cdf(lat []time.Duration) xy {
	if len(lat) == 0 {
		return xy{}
	}
	ms := make([]float64, len(lat))
	for i, d := range lat {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	slices.Sort(ms)
	n := float64(len(ms))
	lo, hi := ms[0], ms[len(ms)-1]
	// A log axis cannot show 0 ms: such alarms count in every fraction but start no point.
	if lo <= 0 {
		i := sort.SearchFloat64s(ms, math.SmallestNonzeroFloat64)
		if i == len(ms) {
			return xy{}
		}
		lo = ms[i]
	}
	var line xy
	if hi <= lo {
		line.add(lo, 1)
		return line
	}
	step := math.Log(hi/lo) / (cdfPoints - 1)
	for i := range cdfPoints {
		t := lo * math.Exp(step*float64(i))
		if i == cdfPoints-1 {
			t = hi
		}
		// The fraction of alarms answered within t.
		le := sort.Search(len(ms), func(j int) bool { return ms[j] > t })
		line.add(t, float64(le)/n)
	}
	return line
}

func midT(b []Second) float64 {
	return float64(b[0].T+b[len(b)-1].T) / 2
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// nanMax is max where NaN means "nothing yet".
func nanMax(a, b float64) float64 {
	if math.IsNaN(a) || b > a {
		return b
	}
	return a
}

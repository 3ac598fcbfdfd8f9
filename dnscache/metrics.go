package dnscache

import "github.com/prometheus/client_golang/prometheus"

// A Resolver is registered as a whole (registry.MustRegister(resolver)): its counters are plain
// atomics read at scrape time, so the hot path never touches a Prometheus metric.
var _ prometheus.Collector = (*Resolver)(nil)

// The descriptions are immutable; each Resolver reports its own values under them, so a role
// registers one Resolver per registry.
var (
	hitsDesc = prometheus.NewDesc("lps_dnscache_hits_total",
		"Host lookups answered from the cache.", nil, nil)
	missesDesc = prometheus.NewDesc("lps_dnscache_misses_total",
		"Host lookups not answered from the cache (absent or expired), including those that shared a query in flight.", nil, nil)
	dropsDesc = prometheus.NewDesc("lps_dnscache_drops_total",
		"Cache entries dropped because a dial to a cached address failed, or explicitly.", nil, nil)
	lookupsDesc = prometheus.NewDesc("lps_dnscache_lookups_total",
		"Queries made to the underlying resolver.", nil, nil)
	lookupErrorsDesc = prometheus.NewDesc("lps_dnscache_lookup_errors_total",
		"Queries to the underlying resolver that failed.", nil, nil)
	staleDesc = prometheus.NewDesc("lps_dnscache_stale_total",
		"Failed queries answered with an expired cache entry instead.", nil, nil)
)

// Describe sends the descriptions of r's counters; it implements prometheus.Collector.
func (r *Resolver) Describe(ch chan<- *prometheus.Desc) {
	ch <- hitsDesc
	ch <- missesDesc
	ch <- dropsDesc
	ch <- lookupsDesc
	ch <- lookupErrorsDesc
	ch <- staleDesc
}

// Collect sends the current values of r's counters; it implements prometheus.Collector.
func (r *Resolver) Collect(ch chan<- prometheus.Metric) {
	s := r.Stats()
	for _, m := range []struct {
		desc  *prometheus.Desc
		value uint64
	}{
		{hitsDesc, s.Hits},
		{missesDesc, s.Misses},
		{dropsDesc, s.Drops},
		{lookupsDesc, s.Lookups},
		{lookupErrorsDesc, s.LookupErrors},
		{staleDesc, s.Stale},
	} {
		ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.value))
	}
}

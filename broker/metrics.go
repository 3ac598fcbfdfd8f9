package broker

import (
	"strings"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// maxSharedSeries bounds the label pairs (group filter, client id) of
// lps_broker_shared_deliveries_total: both are chosen by clients, and a
// series lives as long as the process, so a client making up group names or
// client ids would otherwise grow the registry without bound. Deliveries
// beyond the bound are counted under group="other", client="other". 256
// covers the LPS (two groups, a few members each) many times over.
const maxSharedSeries = 256

// otherLabel is the label value of what is beyond maxSharedSeries.
const otherLabel = "other"

// metrics are the broker's Prometheus metrics. The counters exist even
// without a registry, so the code that counts never checks for one.
type metrics struct {
	sent             prometheus.Counter
	acknowledged     prometheus.Counter
	dropped          *prometheus.CounterVec
	refused          *prometheus.CounterVec
	sharedDeliveries *prometheus.CounterVec

	sharedMu     sync.Mutex
	sharedSeries map[[2]string]prometheus.Counter // the label pairs in use, at most maxSharedSeries

	// The data dir's group commit (commit.go); zero without one.
	storeCommits       prometheus.Counter
	storeChanges       prometheus.Histogram
	storeCommitSeconds prometheus.Histogram
	storeUsedBytes     prometheus.Gauge

	reg        prometheus.Registerer
	registered []prometheus.Collector
}

func newMetrics() *metrics {
	return &metrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lps_broker_messages_sent_total",
			Help: "PUBLISH packets written to subscribers, resends included.",
		}),
		acknowledged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lps_broker_messages_acknowledged_total",
			Help: "QoS 1/2 deliveries the subscriber completed (PUBACK or PUBCOMP).",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lps_broker_messages_dropped_total",
			Help: "Message copies the broker gave up delivering, by reason.",
		}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lps_broker_publishes_refused_total",
			Help: "Publishes refused to the publisher (it keeps the message), by reason.",
		}, []string{"reason"}),
		sharedDeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lps_broker_shared_deliveries_total",
			Help: "Messages of a shared subscription handed to a member, by group filter and client (at most 256 pairs; the rest under other, other).",
		}, []string{"group", "client"}),
		sharedSeries: map[[2]string]prometheus.Counter{},
		storeCommits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lps_broker_store_commits_total",
			Help: "Transactions written to the data dir (each fsynced unless --sync-writes=false).",
		}),
		storeChanges: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lps_broker_store_commit_changes",
			Help:    "Changes gathered into one transaction of the data dir (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		storeUsedBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lps_broker_store_used_bytes",
			Help: "Bytes of the data dir's file in use (not free pages), which --max-store-bytes bounds.",
		}),
		storeCommitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lps_broker_store_commit_seconds",
			Help:    "Time to write and fsync one transaction of the data dir.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}),
	}
}

// sharedDelivery counts a message of the shared subscription group handed to
// client, within maxSharedSeries label pairs.
func (m *metrics) sharedDelivery(group, client string) {
	key := [2]string{group, client}
	m.sharedMu.Lock()
	c, ok := m.sharedSeries[key]
	if !ok {
		if len(m.sharedSeries) >= maxSharedSeries {
			key = [2]string{otherLabel, otherLabel}
			c, ok = m.sharedSeries[key]
		}
		if !ok {
			c = m.sharedDeliveries.WithLabelValues(key[0], key[1])
			m.sharedSeries[key] = c // "other" is the one pair beyond the bound
		}
	}
	m.sharedMu.Unlock()
	c.Inc()
}

// register registers the metrics with reg, the gauges reading the broker's
// state at scrape time. A nil reg registers nothing.
func (m *metrics) register(reg prometheus.Registerer, srv *mqtt.Server, stats func() Stats, queues []string) error {
	if reg == nil {
		return nil
	}
	m.reg = reg
	gauge := func(name, help string, f func(Stats) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(f(stats())) })
	}
	cs := []prometheus.Collector{
		m.sent, m.acknowledged, m.dropped, m.refused, m.sharedDeliveries,
		m.storeCommits, m.storeChanges, m.storeCommitSeconds, m.storeUsedBytes,
		gauge("lps_broker_clients_connected", "Clients connected.",
			func(s Stats) int { return s.ClientsConnected }),
		gauge("lps_broker_sessions", "Sessions held, connected or not.",
			func(s Stats) int { return s.Sessions }),
		gauge("lps_broker_messages_queued", "QoS 1/2 messages waiting for a subscriber's receive quota or reconnection.",
			func(s Stats) int { return s.Queued }),
		gauge("lps_broker_messages_inflight", "QoS 1/2 messages sent and not yet acknowledged by the subscriber.",
			func(s Stats) int { return s.Inflight }),
		gauge("lps_broker_messages_releasing", "QoS 2 messages acknowledged with PUBREC, awaiting PUBCOMP.",
			func(s Stats) int { return s.Releasing }),
		gauge("lps_broker_retained_messages", "Retained messages.",
			func(s Stats) int { return s.Retained }),
		gauge("lps_broker_messages_delayed", "Messages published to $delayed/<seconds>/<topic> waiting for their time.",
			func(s Stats) int { return s.Delayed }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "lps_broker_messages_received_total",
			Help: "PUBLISH packets received from clients.",
		}, func() float64 { return float64(atomic.LoadInt64(&srv.Info.MessagesReceived)) }),
	}
	for _, q := range queues {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "lps_broker_queue_messages",
			Help:        "Messages waiting in a declared queue (GROUP:FILTER), not counting those in flight to a member.",
			ConstLabels: prometheus.Labels{"queue": q},
		}, func() float64 { return float64(stats().Queues[q]) }))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			m.unregister()
			return err
		}
		m.registered = append(m.registered, c)
	}
	return nil
}

// unregister removes the metrics from the registry, so that a broker
// restarted in the same process can register again.
func (m *metrics) unregister() {
	for _, c := range m.registered {
		m.reg.Unregister(c)
	}
	m.registered = nil
}

// retainedCount counts retained messages, leaving out mochi's $SYS topics.
func retainedCount(srv *mqtt.Server) int {
	n := 0
	for topic := range srv.Topics.Retained.GetAll() {
		if !strings.HasPrefix(topic, mqtt.SysPrefix) {
			n++
		}
	}
	return n
}

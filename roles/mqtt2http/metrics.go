package mqtt2http

import "github.com/prometheus/client_golang/prometheus"

// metrics are the bridge's delivery metrics; the connections' own are mqttconn's, labelled
// connection="alarms" and connection="retries".
type metrics struct {
	deliveries      *prometheus.CounterVec
	forwards        *prometheus.CounterVec
	latency         *prometheus.HistogramVec
	retries         prometheus.Counter
	deadLetters     *prometheus.CounterVec
	abandoned       *prometheus.CounterVec
	publishFailures prometheus.Counter
	handedBack      prometheus.Counter
	probes          prometheus.Counter
	outage          prometheus.Gauge
	inflight        prometheus.Gauge
	queued          prometheus.Gauge
	held            prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lps_mqtt_deliveries_total",
			Help: "Messages received from the broker, by source (message, retry).",
		}, []string{"source"}),
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lps_mqtt_forwards_total",
			Help: "Forwards to the upstream, by result (ok, http_4xx, http_5xx, timeout, unreachable, canceled, error).",
		}, []string{"result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lps_mqtt_forward_duration_seconds",
			Help:    "Time of one forward to the upstream.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"outcome"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lps_mqtt_retries_total",
			Help: "Messages republished for a later attempt after a failed forward.",
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lps_mqtt_dead_letters_total",
			Help: "Messages put on the dead-letter topic, by reason (undecodable, max_attempts, expired).",
		}, []string{"reason"}),
		abandoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lps_mqtt_abandoned_total",
			Help: "Messages left unacknowledged for the broker to redeliver, by reason (shutdown, connection_lost).",
		}, []string{"reason"}),
		publishFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lps_mqtt_republish_failures_total",
			Help: "Failed attempts to publish a retry or a dead letter (each is tried again).",
		}),
		handedBack: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lps_mqtt_handed_back_total",
			Help: "Messages received but not yet handled at shutdown, republished to the retry topic and acknowledged.",
		}),
		probes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lps_mqtt_outage_probes_total",
			Help: "Messages sent to an upstream that was considered unavailable, one at a time, to learn when it is back.",
		}),
		outage: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lps_mqtt_upstream_outage",
			Help: "1 while the upstream is considered unavailable: messages wait in the broker and one at a time probes it.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lps_mqtt_inflight_forwards",
			Help: "Messages being handled by a worker (forwarding, republishing).",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lps_mqtt_queued_messages",
			Help: "Messages received and waiting for a worker (at most twice the receive maximum).",
		}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lps_mqtt_held_retries",
			Help: "Retries that arrived before their time from a broker without delayed publish, held unacknowledged until due.",
		}),
	}
	reg.MustRegister(m.deliveries, m.forwards, m.latency, m.retries, m.deadLetters, m.abandoned, m.publishFailures,
		m.handedBack, m.probes, m.outage, m.inflight, m.queued, m.held)
	return m
}

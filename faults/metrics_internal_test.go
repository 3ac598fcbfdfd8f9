package faults

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

func TestParseMetrics(t *testing.T) {
	body := []byte(`# HELP lps_mqtt_inflight_forwards Messages being handled.
# TYPE lps_mqtt_inflight_forwards gauge
lps_mqtt_inflight_forwards 3
lps_mqtt_deliveries_total{source="message"} 10
lps_mqtt_deliveries_total{source="retry",x="a}b \"c\""} 2.5
lps_http_requests_total{code="200"} 7 1700000000000
# TYPE lps_http_request_duration_seconds histogram
lps_http_request_duration_seconds_bucket{code="200",le="0.1"} 3
lps_http_request_duration_seconds_bucket{code="200",le="+Inf"} 4
lps_http_request_duration_seconds_sum{code="200"} 0.5
lps_http_request_duration_seconds_count{code="200"} 4
lps_http_request_duration_seconds_bucket{code="503",le="0.1"} 0
lps_http_request_duration_seconds_bucket{code="503",le="+Inf"} 1
lps_http_request_duration_seconds_sum{code="503"} 2
lps_http_request_duration_seconds_count{code="503"} 1
`)
	m, err := parseMetrics(body)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"lps_mqtt_inflight_forwards":              3,
		"lps_mqtt_deliveries_total":               12.5,
		"lps_http_requests_total":                 7,
		"lps_http_request_duration_seconds_count": 5,
		"lps_http_request_duration_seconds_sum":   2.5,
	}
	for name, v := range want {
		if m[name] != v {
			t.Errorf("%s = %g, want %g", name, m[name], v)
		}
	}
	for name := range m {
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected metric %s = %g", name, m[name])
		}
	}
}

// TestParseMetricsStopsAtBadInput checks that input that is not the text format ends the
// parsing without losing the metrics before it.
func TestParseMetricsStopsAtBadInput(t *testing.T) {
	m, err := parseMetrics([]byte("lps_mqtt_inflight_forwards 3\ngarbage\nlps_mqtt_held_retries 1\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("err = %v, want one naming the bad line", err)
	}
	if m["lps_mqtt_inflight_forwards"] != 3 || m["lps_mqtt_held_retries"] != 0 {
		t.Errorf("parsed %v, want lps_mqtt_inflight_forwards 3 (before the bad line) and nothing after it", m)
	}
	m, err = parseMetrics([]byte("not metrics at all"))
	if err == nil {
		t.Error("garbage parsed without an error")
	}
	for name, v := range m {
		if v != 0 {
			t.Errorf("%s = %g parsed out of garbage", name, v)
		}
	}
}

// TestParseMetricsOfARegistry parses what a registry exposes, as the roles' /metrics does.
func TestParseMetricsOfARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lps_http_requests_total", Help: "h"}, []string{"code"})
	inflight := prometheus.NewGauge(prometheus.GaugeOpts{Name: "lps_http_requests_in_flight", Help: "h"})
	duration := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "lps_http_request_duration_seconds", Help: "h"})
	reg.MustRegister(requests, inflight, duration)
	requests.WithLabelValues("200").Add(5)
	requests.WithLabelValues("503").Add(2)
	inflight.Set(4)
	duration.Observe(0.25)
	duration.Observe(0.5)

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	enc := expfmt.NewEncoder(&body, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	m, err := parseMetrics(body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		"lps_http_requests_total":                 7,
		"lps_http_requests_in_flight":             4,
		"lps_http_request_duration_seconds_count": 2,
		"lps_http_request_duration_seconds_sum":   0.75,
	} {
		if m[name] != want {
			t.Errorf("%s = %g, want %g\n%s", name, m[name], want, body.String())
		}
	}
}

// TestParseStatusMemory reads VmRSS and VmHWM from a /proc/PID/status, and refuses one that
// lacks either or gives them in another unit.
func TestParseStatusMemory(t *testing.T) {
	status := "Name:\tlps\nVmPeak:\t 1263604 kB\nVmHWM:\t   30212 kB\nVmRSS:\t   18044 kB\nThreads:\t7\n"
	m, ok := parseStatusMemory(status)
	if !ok || m.RSS != 18044*1024 || m.Peak != 30212*1024 {
		t.Errorf("parse: %+v %v, want RSS 18044 kB and peak 30212 kB", m, ok)
	}
	for _, bad := range []string{
		"Name:\tlps\nVmRSS:\t 18044 kB\n",        // no VmHWM (a kernel thread has neither)
		"VmHWM:\t 30212 kB\nVmRSS:\t 18044 MB\n", // another unit
		"VmHWM:\t 30212 kB\nVmRSS:\t many kB\n",  // not a number
	} {
		if m, ok := parseStatusMemory(bad); ok {
			t.Errorf("parse of %q: %+v, want not ok", bad, m)
		}
	}
}

package faults

import "testing"

func TestParseMetrics(t *testing.T) {
	body := []byte(`# HELP lps_mqtt_inflight_forwards Messages being handled.
# TYPE lps_mqtt_inflight_forwards gauge
lps_mqtt_inflight_forwards 3
lps_mqtt_deliveries_total{source="message"} 10
lps_mqtt_deliveries_total{source="retry",x="a}b"} 2.5
lps_http_requests_total{code="200"} 7 1700000000000
garbage
`)
	m := parseMetrics(body)
	for name, want := range map[string]float64{
		"lps_mqtt_inflight_forwards": 3,
		"lps_mqtt_deliveries_total":  12.5,
		"lps_http_requests_total":    7,
	} {
		if m[name] != want {
			t.Errorf("%s = %g, want %g", name, m[name], want)
		}
	}
}

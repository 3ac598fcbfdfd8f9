package faults

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// parseMetrics sums the samples of each metric of a Prometheus text exposition over their
// labels: counters, gauges and untyped metrics under their names, histograms and summaries as
// name_count and name_sum (their buckets and quantiles do not add up). Input that is not the
// text format is an error, returned with the metrics before it.
func parseMetrics(body []byte) (map[string]float64, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		err = fmt.Errorf("reading metrics: %w", err)
	}
	out := make(map[string]float64, len(families))
	for name, mf := range families {
		for _, m := range mf.GetMetric() {
			switch {
			case m.Histogram != nil:
				out[name+"_count"] += float64(m.GetHistogram().GetSampleCount())
				out[name+"_sum"] += m.GetHistogram().GetSampleSum()
			case m.Summary != nil:
				out[name+"_count"] += float64(m.GetSummary().GetSampleCount())
				out[name+"_sum"] += m.GetSummary().GetSampleSum()
			default:
				out[name] += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
			}
		}
	}
	return out, err
}

// metrics scrapes a Prometheus text endpoint and sums every metric's samples over their
// labels (see parseMetrics).
func (c *Cluster) metrics(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	return parseMetrics(body)
}

// Metric scrapes p's /metrics (on the address of its listen flag) and returns name's sum
// over its labels.
func (c *Cluster) Metric(ctx context.Context, p *Process, name string) (float64, error) {
	flag := "--listen"
	if p.Arg("--admin-listen") != "" {
		flag = "--admin-listen"
	}
	m, err := c.metrics(ctx, "http://"+p.Arg(flag)+"/metrics")
	if err != nil {
		return 0, err
	}
	return m[name], nil
}

package experiment

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/roles/mqttbroker"
	"github.com/lpsdev/lps/roles/rastsim"
)

// sample is what the sampler saw in one second of a run.
type sample struct {
	failures int64 // the load's failed tries so far
	received int   // alarms rast-sim received so far, over its runs
	backlog  int   // the broker's queue depth, -1 without a broker or when it did not answer
}

// counter accumulates a counter that restarts from zero when its process does (a fault):
// a value below the last one is a new run's.
type counter struct{ last, total float64 }

func (c *counter) see(v float64) {
	if v < c.last {
		c.total += v
	} else {
		c.total += v - c.last
	}
	c.last = v
}

// sampler reads the topology's state once a second: the series of the report.
type sampler struct {
	t        target
	http     *http.Client
	failures func() int64

	mu        sync.Mutex
	samples   []sample
	received  counter
	consumers map[string]*counter // alarms forwarded per mqtt2http, over its runs
}

func newSampler(t target, failures func() int64) *sampler {
	s := &sampler{t: t, http: &http.Client{Timeout: 900 * time.Millisecond}, failures: failures, consumers: map[string]*counter{}}
	for name := range t.Consumers() {
		s.consumers[name] = &counter{}
	}
	return s
}

// run samples every second until ctx ends.
func (s *sampler) run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.once(ctx)
		}
	}
}

func (s *sampler) once(ctx context.Context) {
	sm := sample{failures: s.failures(), backlog: -1}
	if c, err := rastsim.NewClient(s.t.SimURL(), s.http).Counts(ctx); err == nil {
		s.mu.Lock()
		s.received.see(float64(c.ByCommand[alarm.Command].Received))
		s.mu.Unlock()
	}
	if admin := s.t.BrokerAdmin(); admin != "" {
		if st, err := mqttbroker.NewClient(admin, s.http).Stats(ctx); err == nil {
			sm.backlog = st.QueueDepth
		}
	}
	for name, url := range s.t.Consumers() {
		if v, err := scrape(ctx, s.http, url, "lps_mqtt_forwards_total", "result", "ok"); err == nil {
			s.mu.Lock()
			s.consumers[name].see(v)
			s.mu.Unlock()
		}
	}
	s.mu.Lock()
	sm.received = int(s.received.total)
	s.samples = append(s.samples, sm)
	s.mu.Unlock()
}

// series returns the samples so far and the alarms forwarded per consumer.
func (s *sampler) series() ([]sample, map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	per := map[string]int{}
	for name, c := range s.consumers {
		per[name] = int(c.total)
	}
	return append([]sample(nil), s.samples...), per
}

// scrape reads one metric of a /metrics page, summed over the samples whose label has value
// ("" label: all).
func scrape(ctx context.Context, hc *http.Client, base, name, label, value string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", req.URL, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return 0, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", req.URL, err)
	}
	mf, ok := families[name]
	if !ok {
		return 0, nil // a vector with no value yet
	}
	var v float64
	for _, m := range mf.GetMetric() {
		match := label == ""
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label && lp.GetValue() == value {
				match = true
			}
		}
		if match {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
		}
	}
	return v, nil
}

package topology_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/topology"
	"github.com/lpsdev/lps/topology/topologytest"
	"github.com/lpsdev/lps/transport"
)

// startTopology starts cfg on ephemeral loopback ports until the test ends.
func startTopology(t testing.TB, cfg topology.Config) *topology.Topology {
	t.Helper()
	return topologytest.Start(t, cfg)
}

// postAlarm sends alarm i to comp1 at base, as query parameters for odd i and as JSON for
// even i, with Request-Id id.
func postAlarm(ctx context.Context, c *transport.Client, hc *http.Client, base string, i int, id string) error {
	trigger := time.Now().UTC().Format(time.RFC3339)
	phone := []string{"0151", "0160", "0170"}[i%3]
	branch := fmt.Sprint(2001 + i%10)
	if i%2 == 1 {
		q := url.Values{"Phone": {phone}, "Branch": {branch}, "Headnumber": {"8023"}, "TriggerTime": {trigger}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"?"+q.Encode(), nil)
		req.Header.Set(transport.RequestIDHeader, id)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("alarm %s: status %d", id, resp.StatusCode)
		}
		return nil
	}
	body := fmt.Sprintf(`{"phone":%q,"branch":%s,"headnumber":"8023","triggertime":%q}`, phone, branch, trigger)
	_, err := c.Post(transport.WithRequestID(ctx, id), base, "application/json", []byte(body))
	return err
}

func TestBaselineDeliversEachAlarmExactlyOnce(t *testing.T) {
	top := startTopology(t, topology.Config{Kind: topology.Baseline, Model: "none"})
	urls := top.Comp1URLs()
	if len(urls) != 3 {
		t.Fatalf("comp1 urls %v", urls)
	}
	const alarms, workers = 1000, 50
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := &transport.Client{}
	hc := &http.Client{Timeout: 30 * time.Second}
	jobs := make(chan int)
	errs := make(chan error, alarms)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := postAlarm(ctx, client, hc, urls[i%len(urls)], i, fmt.Sprintf("alarm-%04d", i)); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range alarms {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := top.Sim().Received()
	if len(got) != alarms {
		t.Errorf("rast-sim received %d distinct ids, want %d", len(got), alarms)
	}
	for i := range alarms {
		if n := got[fmt.Sprintf("alarm-%04d", i)]; n != 1 {
			t.Errorf("alarm-%04d received %d times", i, n)
		}
	}
}

func TestEveryHopSpeaksHTTP2WhenAsked(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("http2=%v", h2), func(t *testing.T) {
			top := startTopology(t, topology.Config{Kind: topology.Baseline, Model: "none", HTTP2: h2, Instances: 1})
			client := &transport.Client{HTTP2: h2}
			const n = 20
			for i := range n {
				body := `{"phone":"1","branch":"2001","headnumber":"8023","triggertime":"2026-11-26T04:00:00Z"}`
				if _, err := client.Post(context.Background(), top.Comp1URLs()[0], "application/json", []byte(body)); err != nil {
					t.Fatalf("alarm %d: %v", i, err)
				}
			}
			want := "HTTP/1.1"
			if h2 {
				want = "HTTP/2.0"
			}
			for _, s := range top.Services {
				all := testutil.Metric(t, s.Registry(), "lps_http_requests_total", nil)
				over := testutil.Metric(t, s.Registry(), "lps_http_requests_total", map[string]string{"proto": want})
				if all != n || over != n {
					t.Errorf("%s saw %v requests, %v of them over %s; want %d, all %s", s.Name, all, over, want, n, want)
				}
			}
		})
	}
}

func TestUnknownKind(t *testing.T) {
	if _, err := topology.New(topology.Config{Kind: "mesh"}); err == nil || !strings.Contains(err.Error(), "mesh") {
		t.Errorf("error %v, want one naming the kind", err)
	}
}

// benchAlarm is the alarm the benchmarks send.
var benchAlarm = []byte(`{"phone":"1","branch":"2001","headnumber":"8023","triggertime":"2026-11-26T04:00:00Z"}`)

// BenchmarkChain measures alarms delivered end to end, comp1 to rast-sim (model off), by each
// topology in one process with its defaults: b.N alarms from 60 senders, and the clock stops
// when rast-sim received the last of them, so the LPS's backlog counts. It reports acked/s
// (while sending) beside delivered/s.
func BenchmarkChain(b *testing.B) {
	for _, kind := range []string{topology.Baseline, topology.LPS} {
		b.Run(kind, func(b *testing.B) {
			top := startTopology(b, topology.Config{Kind: kind, Model: "none"})
			urls := top.Comp1URLs()
			client := &transport.Client{}
			before := top.Sim().Counts().Received
			b.SetParallelism(30) // 60 senders on 2 cores
			b.ResetTimer()
			start := time.Now()
			var i atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					u := urls[i.Add(1)%int64(len(urls))]
					if _, err := client.Post(context.Background(), u, "application/json", benchAlarm); err != nil {
						b.Error(err)
						return
					}
				}
			})
			acked := time.Since(start)
			deadline := time.Now().Add(5 * time.Minute)
			for top.Sim().Counts().Received-before < b.N {
				if time.Now().After(deadline) {
					b.Fatalf("rast-sim received %d of %d alarms in 5 minutes", top.Sim().Counts().Received-before, b.N)
				}
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/acked.Seconds(), "acked/s")
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "delivered/s")
		})
	}
}

// BenchmarkDrain measures the LPS's service rate μ with rast-sim's model on and every other
// default, as issue 15 defines it: b.N alarms are accepted while every mqtt2http is stopped (a
// backlog in the broker, with a data dir), then the consumers start and the clock runs until
// rast-sim received the last of them. -benchtime 90000x is the case.
func BenchmarkDrain(b *testing.B) {
	top := startTopology(b, topology.Config{Kind: topology.LPS, DataDir: b.TempDir()})
	consumers := top.ByRole(topology.RoleMQTT2HTTP)
	for _, s := range consumers {
		if err := top.Stop(s.Name); err != nil {
			b.Fatal(err)
		}
	}
	urls := top.Comp1URLs()
	client := &transport.Client{}
	var i atomic.Int64
	var wg sync.WaitGroup
	for range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := i.Add(1); n <= int64(b.N); n = i.Add(1) {
				if _, err := client.Post(context.Background(), urls[n%int64(len(urls))], "application/json", benchAlarm); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if st := top.Status(); st.Backlog != b.N || st.Delivered != 0 {
		b.Fatalf("before the drain: backlog %d, delivered %d; want %d and 0", st.Backlog, st.Delivered, b.N)
	}
	b.ResetTimer()
	start := time.Now()
	for _, s := range consumers {
		if err := top.Start(s.Name); err != nil {
			b.Fatal(err)
		}
	}
	deadline := start.Add(30 * time.Minute)
	for top.Sim().Counts().Received < b.N {
		if time.Now().After(deadline) {
			b.Fatalf("rast-sim received %d of %d alarms in 30 minutes", top.Sim().Counts().Received, b.N)
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(start)
	b.StopTimer()
	b.ReportMetric(took.Seconds(), "drain-s")
	b.ReportMetric(float64(b.N)/took.Seconds(), "μ/s")
}

// BenchmarkBaselineChain measures alarms through comp1 -> comp2 -> rast-sim (model off) in one
// process, over HTTP/1.1 and h2c.
func BenchmarkBaselineChain(b *testing.B) {
	for _, h2 := range []bool{false, true} {
		b.Run(fmt.Sprintf("http2=%v", h2), func(b *testing.B) {
			top := startTopology(b, topology.Config{Kind: topology.Baseline, Model: "none", HTTP2: h2})
			urls := top.Comp1URLs()
			client := &transport.Client{HTTP2: h2}
			b.SetParallelism(16)
			b.ResetTimer()
			var i int64
			var mu sync.Mutex
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					mu.Lock()
					i++
					u := urls[i%int64(len(urls))]
					mu.Unlock()
					if _, err := client.Post(context.Background(), u, "application/json", benchAlarm); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

package topology_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/mqttconn/mqtttest"
	"github.com/lpsdev/lps/topology"
	"github.com/lpsdev/lps/transport"
)

// brokerKinds runs f once with the embedded broker and once with a real Mosquitto.
func brokerKinds(t *testing.T, f func(t *testing.T, cfg topology.Config, mosq *mqtttest.Broker)) {
	t.Run("embedded", func(t *testing.T) {
		f(t, topology.Config{Kind: topology.LPS, Model: "none", DataDir: t.TempDir(), RetryBase: 100 * time.Millisecond, RetryMax: time.Second}, nil)
	})
	t.Run("mosquitto", func(t *testing.T) {
		m := mqtttest.StartMosquitto(t)
		f(t, topology.Config{Kind: topology.LPS, Model: "none", BrokerURL: m.URL, RetryBase: 100 * time.Millisecond, RetryMax: time.Second}, m)
	})
}

// sendAlarms posts alarms first..first+n-1 over the comp1 instances with workers concurrent
// requests, each with its own Request-Id, and returns the ids that were not answered 200.
func sendAlarms(t *testing.T, urls []string, prefix string, n, workers int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := &transport.Client{Timeout: 20 * time.Second}
	hc := &http.Client{Timeout: 20 * time.Second}
	jobs := make(chan int)
	var mu sync.Mutex
	var failed []string
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				id := fmt.Sprintf("%s-%05d", prefix, i)
				if err := postAlarm(ctx, client, hc, urls[i%len(urls)], i, id); err != nil {
					mu.Lock()
					failed = append(failed, id+": "+err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return failed
}

// awaitExactlyOnce waits until rast-sim has received every id prefix-00000.. once, then checks
// that nothing arrived twice and nothing else arrived.
func awaitExactlyOnce(t *testing.T, top *topology.Topology, prefix string, n int, timeout time.Duration) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			dumpBridgeMetrics(t, top)
		}
	})
	testutil.Eventually(t, timeout, func() error {
		if got := len(top.Sim().Received()); got < n {
			return fmt.Errorf("rast-sim has %d of %d alarms", got, n)
		}
		return nil
	})
	got := top.Sim().Received()
	for i := range n {
		id := fmt.Sprintf("%s-%05d", prefix, i)
		if got[id] != 1 {
			t.Errorf("%s received %d times", id, got[id])
		}
	}
	if len(got) != n {
		t.Errorf("rast-sim received %d distinct ids, want %d", len(got), n)
	}
}

func TestLPSDeliversEachAlarmExactlyOnce(t *testing.T) {
	brokerKinds(t, func(t *testing.T, cfg topology.Config, _ *mqtttest.Broker) {
		top := startTopology(t, cfg)
		const n = 2000
		if failed := sendAlarms(t, top.Comp1URLs(), "a", n, 50); len(failed) > 0 {
			t.Fatalf("%d alarms not accepted, e.g. %s", len(failed), failed[0])
		}
		awaitExactlyOnce(t, top, "a", n, 90*time.Second)
	})
}

func TestLPSTurnsComp2OutageIntoBacklog(t *testing.T) {
	brokerKinds(t, func(t *testing.T, cfg topology.Config, _ *mqtttest.Broker) {
		top := startTopology(t, cfg)
		broker := brokerURL(t, top, cfg)
		watch := mqtttest.Subscribe(t, broker, "+/retry/message", "lps/dead-letter")

		comp2s := top.ByRole(topology.RoleComp2)
		for _, s := range comp2s {
			if err := top.Stop(s.Name); err != nil {
				t.Fatal(err)
			}
		}
		const n = 500
		if failed := sendAlarms(t, top.Comp1URLs(), "o", n, 25); len(failed) > 0 {
			t.Fatalf("%d alarms not accepted while comp2 was down, e.g. %s", len(failed), failed[0])
		}
		<-time.After(5 * time.Second) // the outage: comp2 stays down 5 s after the alarms were taken
		if got := len(top.Sim().Received()); got != 0 {
			t.Fatalf("%d alarms reached rast-sim while every comp2 was down", got)
		}
		for _, s := range comp2s {
			if err := top.Start(s.Name); err != nil {
				t.Fatal(err)
			}
		}
		awaitExactlyOnce(t, top, "o", n, 90*time.Second)
		var retries, dead int
		for _, m := range watch.Messages() {
			if m.Topic == "lps/dead-letter" {
				dead++
			} else {
				retries++
			}
		}
		if retries == 0 {
			t.Error("the retry topic was never used")
		}
		if dead != 0 {
			t.Errorf("%d messages reached the dead-letter topic", dead)
		}
		t.Logf("retry publications: %d", retries)
	})
}

// brokerURL is the broker the topology's bridges use.
func brokerURL(t *testing.T, top *topology.Topology, cfg topology.Config) string {
	t.Helper()
	if cfg.BrokerURL != "" {
		return cfg.BrokerURL
	}
	return "mqtt://" + top.ByRole(topology.RoleBroker)[0].Addr.String()
}

func TestLPSDeadLettersPoison(t *testing.T) {
	brokerKinds(t, func(t *testing.T, cfg topology.Config, _ *mqtttest.Broker) {
		top := startTopology(t, cfg)
		broker := brokerURL(t, top, cfg)
		dead := mqtttest.Subscribe(t, broker, "lps/dead-letter")
		mqtttest.Publish(t, broker, "proxy1-1/message", []byte(`{"id": "1", "body": `), nil)
		mqtttest.Publish(t, broker, "proxy1-1/message", []byte{0xff, 0xfe, 'x'}, nil)
		msgs := dead.Wait(t, 2, 30*time.Second)
		for _, m := range msgs {
			var env map[string]any
			if err := json.Unmarshal(m.Payload, &env); err != nil {
				t.Fatalf("dead letter is not JSON: %q", m.Payload)
			}
			if r, _ := env["reason"].(string); r == "" {
				t.Errorf("dead letter without a reason: %s", m.Payload)
			}
		}
		if got := len(top.Sim().Received()); got != 0 {
			t.Errorf("poison reached rast-sim %d times", got)
		}
	})
}

// forwardedBy returns how many alarms each mqtt2http forwarded successfully. (comp2's counts
// say nothing about the bridges' fairness: every mqtt2http sends each alarm to the comp2 its
// Request-Id picks.)
func forwardedBy(t *testing.T, top *topology.Topology) []float64 {
	t.Helper()
	var out []float64
	for _, s := range top.ByRole(topology.RoleMQTT2HTTP) {
		out = append(out, testutil.Metric(t, s.Registry(), "lps_mqtt_forwards_total", map[string]string{"result": "ok"}))
	}
	return out
}

func TestLPSFairnessEmbedded(t *testing.T) {
	top := startTopology(t, topology.Config{Kind: topology.LPS, Model: "none"})
	const n = 3000
	if failed := sendAlarms(t, top.Comp1URLs(), "f", n, 50); len(failed) > 0 {
		t.Fatalf("%d alarms not accepted, e.g. %s", len(failed), failed[0])
	}
	awaitExactlyOnce(t, top, "f", n, 90*time.Second)
	counts := forwardedBy(t, top)
	t.Logf("forwarded per mqtt2http instance: %v", counts)
	for i, c := range counts {
		if c < n/3*0.95 || c > n/3*1.05 {
			t.Errorf("proxy2-%d forwarded %.0f, want within 5%% of %d", i+1, c, n/3)
		}
	}
}

func TestHTTP2MQTTAnswers503WhileBrokerIsDown(t *testing.T) {
	brokerKinds(t, func(t *testing.T, cfg topology.Config, mosq *mqtttest.Broker) {
		top := startTopology(t, cfg)
		url := "http://" + top.Service("proxy1-1").Addr.String() + alarm.CommandPath
		post := func() (int, string) {
			resp, err := http.Post(url, "application/json", strings.NewReader(`{"id":"1","body":"b"}`))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		testutil.Eventually(t, 20*time.Second, func() error {
			if code, body := post(); code != 200 {
				return fmt.Errorf("before the outage: %d %s", code, body)
			}
			return nil
		})
		if mosq != nil {
			mosq.Stop()
		} else if err := top.Stop("broker"); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 20*time.Second, func() error {
			code, body := post()
			if code == 200 {
				return fmt.Errorf("still 200 with the broker down")
			}
			if code != 503 || !strings.Contains(body, `"reason"`) {
				t.Fatalf("broker down: got %d %s, want 503 with a JSON reason", code, body)
			}
			return nil
		})
		if mosq != nil {
			mosq.Start()
		} else if err := top.Start("broker"); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 30*time.Second, func() error {
			if code, body := post(); code != 200 {
				return fmt.Errorf("after the broker came back: %d %s", code, body)
			}
			return nil
		})
	})
}

func TestLPSBacklogSurvivesBrokerRestart(t *testing.T) {
	top := startTopology(t, topology.Config{Kind: topology.LPS, Model: "none", DataDir: t.TempDir()})
	consumers := top.ByRole(topology.RoleMQTT2HTTP)
	for _, s := range consumers {
		if err := top.Stop(s.Name); err != nil {
			t.Fatal(err)
		}
	}
	const n = 1000
	if failed := sendAlarms(t, top.Comp1URLs(), "r", n, 25); len(failed) > 0 {
		t.Fatalf("%d alarms not accepted, e.g. %s", len(failed), failed[0])
	}
	if d := top.Broker().Stats().QueueDepth; d != n {
		t.Errorf("broker queue depth %d with every consumer offline, want %d", d, n)
	}
	if err := top.Stop("broker"); err != nil {
		t.Fatal(err)
	}
	if err := top.Start("broker"); err != nil {
		t.Fatal(err)
	}
	for _, s := range consumers {
		if err := top.Start(s.Name); err != nil {
			t.Fatal(err)
		}
	}
	awaitExactlyOnce(t, top, "r", n, 90*time.Second)
	testutil.Eventually(t, 20*time.Second, func() error {
		if d := top.Broker().Stats().QueueDepth; d != 0 {
			return fmt.Errorf("queue depth %d after the drain", d)
		}
		return nil
	})
}

// dumpBridgeMetrics logs the bridges' MQTT counters, to tell where a missing alarm stopped.
func dumpBridgeMetrics(t *testing.T, top *topology.Topology) {
	for _, s := range top.Services {
		if s.Role != topology.RoleMQTT2HTTP && s.Role != topology.RoleHTTP2MQTT {
			continue
		}
		reg := s.Registry()
		if reg == nil {
			continue
		}
		mfs, _ := reg.Gather()
		var text strings.Builder
		for _, mf := range mfs {
			if strings.HasPrefix(mf.GetName(), "lps_mqtt_") && mf.GetType() != dto.MetricType_HISTOGRAM {
				_, _ = expfmt.MetricFamilyToText(&text, mf)
			}
		}
		t.Logf("%s:\n%s", s.Name, text.String())
	}
}

package mqtt2http_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/mqttconn/mqtttest"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/http2mqtt"
)

// TestEndToEnd: http2mqtt -> broker -> two mqtt2http in one share group -> upstream. Every
// alarm answered 200 arrives exactly once.
func TestEndToEnd(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		broker := start(t)
		up := startUpstream(t)
		consumers := []bridge{
			startBridge(t, broker.URL, up.URL, "proxy2-1", nil),
			startBridge(t, broker.URL, up.URL, "proxy2-2", nil),
		}
		producer, err := http2mqtt.New(http2mqtt.Config{
			Server: roles.Server{Listener: testutil.Listen(t), ServiceName: "proxy1", Logger: zap.NewNop(), Registry: prometheus.NewRegistry()},
			Broker: broker.URL,
			MQTT:   fastMQTT,
		})
		if err != nil {
			t.Fatal(err)
		}
		testutil.Run(t, producer)
		url := "http://" + producer.Addr().String()
		testutil.Eventually(t, 10*time.Second, func() error {
			if status, body := get(t, url+"/readyz"); status != http.StatusOK {
				return fmt.Errorf("http2mqtt readyz %d %s", status, body)
			}
			return nil
		})

		const n, senders = 500, 16
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("e2e-%03d", i)
		}
		began := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for s := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := s; i < n; i += senders {
					if err := send(url, ids[i], i); err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		up.waitFor(t, 60*time.Second, "every alarm", func(u *upstream) bool { return len(u.ok) == n })
		elapsed := time.Since(began)
		quiescent(t, n, consumers...)
		exactlyOnce(t, up.okCounts(), ids)
		d1 := testutil.Metric(t, consumers[0].reg, "lps_mqtt_deliveries_total", nil)
		d2 := testutil.Metric(t, consumers[1].reg, "lps_mqtt_deliveries_total", nil)
		t.Logf("%d alarms in %s; deliveries per consumer: %v, %v", n, elapsed.Round(time.Millisecond), d1, d2)
	})
}

func send(url, id string, i int) error {
	body := fmt.Sprintf(`{"id":"%07d","body":"Phone: %07d, Branch: 2001"}`, i, i)
	req, err := http.NewRequest(http.MethodPost, url+alarm.CommandPath, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Request-Id", id)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", id, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", id, resp.StatusCode, b)
	}
	return nil
}

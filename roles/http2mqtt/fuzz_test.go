package http2mqtt_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/mqttconn/mqtttest"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/http2mqtt"
)

// FuzzAlarmRequest posts arbitrary bodies to a running http2mqtt and checks its decoding of
// external input end to end: an alarm is published, exactly as alarm.Parse reads it and
// with the Request-Id it answered, if and only if the body is a valid UTF-8 alarm within the
// limit; everything else is a 4xx JSON error and publishes nothing.
func FuzzAlarmRequest(f *testing.F) {
	const limit = 1024
	for _, seed := range []string{
		`{"id":"0151","body":"Phone: 0151, Branch: 2001"}`, `{"id":"1","body":"b","request_id":"r"}`,
		`{"id":1,"body":"b"}`, `{"id":"","body":"b"}`, `{"id":"1"}`, `{"id":"1","body":`, `{"id":"1" "body":"b"}`,
		`{"id":"1","body":"b"}{}`, `null`, `[]`, ` `, "{\"id\":\"\xff\",\"body\":\"b\"}", `{"id":"\ud800","body":"\u003c"}`,
	} {
		f.Add([]byte(seed))
	}
	broker := mqtttest.StartEmbedded(f)
	obs := mqtttest.Subscribe(f, broker.URL, "proxy1/message")
	reg := prometheus.NewRegistry()
	b, err := http2mqtt.New(http2mqtt.Config{
		Server: roles.Server{Listener: testutil.Listen(f), ServiceName: "proxy1", Logger: zap.NewNop(), Registry: reg, MaxBodyBytes: limit},
		Broker: broker.URL,
		MQTT:   fastMQTT,
	})
	if err != nil {
		f.Fatal(err)
	}
	testutil.Run(f, b)
	url := "http://" + b.Addr().String()
	client := &http.Client{Timeout: 20 * time.Second}
	testutil.Eventually(f, 10*time.Second, func() error {
		resp, err := client.Get(url + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	published := 0

	f.Fuzz(func(t *testing.T, body []byte) {
		before := testutil.Metric(t, reg, "lps_mqtt_publishes_total", nil)
		resp, err := client.Post(url+alarm.CommandPath, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		after := testutil.Metric(t, reg, "lps_mqtt_publishes_total", nil)

		parsed, perr := alarm.Parse(body)
		valid := len(body) <= limit && utf8.Valid(body) && perr == nil
		switch {
		case resp.StatusCode == http.StatusOK && valid:
			published++
			parsed.RequestID = resp.Header.Get("Request-Id")
			msg := obs.Wait(t, published, 10*time.Second)[published-1]
			if string(msg.Payload) != string(parsed.Marshal()) || msg.User["request_id"] != parsed.RequestID {
				t.Fatalf("%q: published %s (request_id %s), want %s", body, msg.Payload, msg.User["request_id"], parsed.Marshal())
			}
		case resp.StatusCode == http.StatusOK || valid:
			t.Fatalf("%q: %d %s, but its validity is %v (%v)", body, resp.StatusCode, answer, valid, perr)
		default:
			var e struct{ Status, Reason string }
			if resp.StatusCode/100 != 4 || json.Unmarshal(answer, &e) != nil || e.Status != "error" || e.Reason == "" {
				t.Fatalf("%q: %d %s, want a 4xx JSON error", body, resp.StatusCode, answer)
			}
			if after != before {
				t.Fatalf("%q: answered %d, but published it", body, resp.StatusCode)
			}
		}
	})
}

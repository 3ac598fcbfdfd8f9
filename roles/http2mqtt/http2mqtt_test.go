package http2mqtt_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/mqttconn"
	"github.com/lpsdev/lps/mqttconn/mqtttest"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/http2mqtt"
	"github.com/lpsdev/lps/roles/mqttbroker"
)

// fastMQTT reconnects quickly, for tests that stop and start the broker.
var fastMQTT = mqttconn.Options{ReconnectBase: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond, ConnectTimeout: 2 * time.Second}

type bridge struct {
	*http2mqtt.Bridge
	url string
	reg *prometheus.Registry
}

// startBridge runs an http2mqtt bridge named proxy1 against brokerURL until the test ends.
func startBridge(t *testing.T, brokerURL string, tweak func(*http2mqtt.Config)) bridge {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := http2mqtt.Config{
		Server: roles.Server{Listener: testutil.Listen(t), ServiceName: "proxy1", Logger: zap.NewNop(), Registry: reg},
		Broker: brokerURL,
		MQTT:   fastMQTT,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	b, err := http2mqtt.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, b)
	return bridge{Bridge: b, url: "http://" + b.Addr().String(), reg: reg}
}

func (b bridge) awaitReady(t *testing.T) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		if status, body := get(t, b.url+"/readyz"); status != http.StatusOK {
			return fmt.Errorf("readyz %d %s", status, body)
		}
		return nil
	})
}

var client = &http.Client{Timeout: 30 * time.Second}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

type answer struct {
	status    int
	body      string
	requestID string
}

func post(t *testing.T, url, contentType, body, requestID string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if requestID != "" {
		req.Header.Set("Request-Id", requestID)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b), resp.Header.Get("Request-Id")}
}

func postAlarm(t *testing.T, b bridge, id, body, requestID string) answer {
	t.Helper()
	payload, _ := json.Marshal(map[string]string{"id": id, "body": body})
	return post(t, b.url+alarm.CommandPath, "application/json", string(payload), requestID)
}

func wantJSONError(t *testing.T, a answer, status int, reasonContains string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d (%s), want %d", a.status, a.body, status)
	}
	var e struct{ Status, Reason string }
	if err := json.Unmarshal([]byte(a.body), &e); err != nil || e.Status != "error" || !strings.Contains(e.Reason, reasonContains) {
		t.Fatalf("body %s, want a JSON error whose reason contains %q", a.body, reasonContains)
	}
}

func TestPublishesAlarm(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		broker := start(t)
		obs := mqtttest.Subscribe(t, broker.URL, "proxy1/message")
		b := startBridge(t, broker.URL, nil)
		b.awaitReady(t)

		a := postAlarm(t, b, "0123456", "Phone: 0123456, Branch: 2001", "req-1")
		if a.status != http.StatusOK {
			t.Fatalf("status %d %s", a.status, a.body)
		}
		var got map[string]string
		if err := json.Unmarshal([]byte(a.body), &got); err != nil || got["status"] != "success" || got["message"] != roles.SuccessBody["message"] {
			t.Fatalf("body %s, want the success body", a.body)
		}
		// The 200 came after PUBCOMP, so the broker has the message: the observer receives it.
		msg := obs.Wait(t, 1, 10*time.Second)[0]
		if want := `{"id":"0123456","body":"Phone: 0123456, Branch: 2001","request_id":"req-1"}`; string(msg.Payload) != want {
			t.Errorf("payload %s, want %s", msg.Payload, want)
		}
		if msg.User["request_id"] != "req-1" || msg.QoS != 2 {
			t.Errorf("user properties %v QoS %d, want request_id=req-1 at QoS 2", msg.User, msg.QoS)
		}

		// Without a Request-Id the bridge makes one, answers it and publishes it.
		a = postAlarm(t, b, "7", "x", "")
		if a.status != http.StatusOK || a.requestID == "" {
			t.Fatalf("status %d, Request-Id %q", a.status, a.requestID)
		}
		msg = obs.Wait(t, 2, 10*time.Second)[1]
		var alarm alarm.Alarm
		if err := json.Unmarshal(msg.Payload, &alarm); err != nil || alarm.RequestID != a.requestID || msg.User["request_id"] != a.requestID {
			t.Errorf("published %s (user %v), want request_id %s", msg.Payload, msg.User, a.requestID)
		}
		if n := testutil.Metric(t, b.reg, "lps_mqtt_publishes_total", map[string]string{"result": "ok"}); n != 2 {
			t.Errorf("publishes ok = %v, want 2", n)
		}
		if n := testutil.Metric(t, b.reg, "lps_mqtt_publish_duration_seconds", nil); n != 2 {
			t.Errorf("publish latency samples = %v, want 2", n)
		}
	})
}

func TestAnswersOnlyAfterPubcomp(t *testing.T) {
	gate := mqtttest.NewPubrelGate()
	broker := mqtttest.StartMochi(t, &mqtttest.MochiOptions{Hooks: []mqtt.Hook{gate}})
	b := startBridge(t, broker.URL, nil)
	b.awaitReady(t)

	held := gate.Hold()
	answered := make(chan answer, 1)
	go func() { answered <- postAlarm(t, b, "1", "x", "req-held") }()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the broker never saw the PUBREL")
	}
	// The broker sent PUBREC and holds the PUBREL, so there is no PUBCOMP: no answer yet.
	select {
	case a := <-answered:
		t.Fatalf("answered %d before PUBCOMP", a.status)
	default:
	}
	gate.Release()
	if a := <-answered; a.status != http.StatusOK {
		t.Fatalf("status %d %s after PUBCOMP", a.status, a.body)
	}
}

func TestPublishTimeoutIs504(t *testing.T) {
	gate := mqtttest.NewPubrelGate()
	broker := mqtttest.StartMochi(t, &mqtttest.MochiOptions{Hooks: []mqtt.Hook{gate}})
	b := startBridge(t, broker.URL, func(c *http2mqtt.Config) { c.PublishTimeout = 200 * time.Millisecond })
	b.awaitReady(t)
	gate.Hold()
	defer gate.Release()
	wantJSONError(t, postAlarm(t, b, "1", "x", ""), http.StatusGatewayTimeout, "did not confirm")
	if n := testutil.Metric(t, b.reg, "lps_mqtt_publishes_total", map[string]string{"result": "timeout"}); n != 1 {
		t.Errorf("publishes timeout = %v, want 1", n)
	}
}

func TestRefusedByBrokerIsNot2xx(t *testing.T) {
	broker := mqtttest.StartMochi(t, &mqtttest.MochiOptions{NoAllow: true, Hooks: []mqtt.Hook{&mqtttest.DenyPublish{Prefix: "proxy1/"}}})
	b := startBridge(t, broker.URL, nil)
	b.awaitReady(t)
	wantJSONError(t, postAlarm(t, b, "1", "x", ""), http.StatusBadGateway, "not authorized")
}

func TestBrokerDown(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		broker := start(t)
		obs := mqtttest.Subscribe(t, broker.URL, "proxy1/message")
		b := startBridge(t, broker.URL, nil)
		b.awaitReady(t)

		broker.Stop()
		testutil.Eventually(t, 10*time.Second, func() error {
			if status, _ := get(t, b.url+"/readyz"); status != http.StatusServiceUnavailable {
				return fmt.Errorf("readyz %d with the broker down", status)
			}
			return nil
		})
		began := time.Now()
		wantJSONError(t, postAlarm(t, b, "1", "lost?", "req-down"), http.StatusServiceUnavailable, "not connected")
		if d := time.Since(began); d > 5*time.Second {
			t.Errorf("503 took %s; it should come at once", d)
		}

		broker.Start()
		b.awaitReady(t)
		testutil.Eventually(t, 10*time.Second, func() error {
			if obs.Subscriptions() < 2 {
				return errors.New("observer has not resubscribed")
			}
			return nil
		})
		if a := postAlarm(t, b, "2", "after", "req-up"); a.status != http.StatusOK {
			t.Fatalf("after the broker came back: %d %s", a.status, a.body)
		}
		msgs := obs.Wait(t, 1, 10*time.Second)
		for _, m := range msgs {
			if m.User["request_id"] == "req-down" {
				t.Errorf("the alarm answered 503 was published")
			}
		}
		if msgs[len(msgs)-1].User["request_id"] != "req-up" {
			t.Errorf("last message %s, want req-up", msgs[len(msgs)-1].Payload)
		}
		if n := testutil.Metric(t, b.reg, "lps_mqtt_publishes_total", map[string]string{"result": "not_connected"}); n != 1 {
			t.Errorf("publishes not_connected = %v, want 1", n)
		}
	})
}

func TestHoldWhenDown(t *testing.T) {
	broker := mqtttest.StartEmbedded(t)
	b := startBridge(t, broker.URL, func(c *http2mqtt.Config) { c.HoldWhenDown = 20 * time.Second })
	b.awaitReady(t)
	broker.Stop()
	testutil.Eventually(t, 10*time.Second, func() error {
		if status, _ := get(t, b.url+"/readyz"); status != http.StatusServiceUnavailable {
			return fmt.Errorf("readyz %d with the broker down", status)
		}
		return nil
	})
	answered := make(chan answer, 1)
	go func() { answered <- postAlarm(t, b, "1", "held", "req-held") }()
	// The request is held: it is in flight and unanswered while the broker is down.
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := testutil.Metric(t, b.reg, "lps_http_requests_in_flight", nil); n != 1 {
			return fmt.Errorf("%v requests in flight", n)
		}
		return nil
	})
	select {
	case a := <-answered:
		t.Fatalf("answered %d while the broker was down", a.status)
	default:
	}
	broker.Start()
	select {
	case a := <-answered:
		if a.status != http.StatusOK {
			t.Fatalf("status %d %s", a.status, a.body)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no answer after the broker came back")
	}
}

func TestHoldWhenDownRunsOut(t *testing.T) {
	broker := mqtttest.StartEmbedded(t)
	b := startBridge(t, broker.URL, func(c *http2mqtt.Config) { c.HoldWhenDown = 100 * time.Millisecond })
	b.awaitReady(t)
	broker.Stop()
	testutil.Eventually(t, 10*time.Second, func() error {
		if status, _ := get(t, b.url+"/readyz"); status != http.StatusServiceUnavailable {
			return fmt.Errorf("readyz %d with the broker down", status)
		}
		return nil
	})
	wantJSONError(t, postAlarm(t, b, "1", "x", ""), http.StatusServiceUnavailable, "waited 100ms")
}

func TestBadInput(t *testing.T) {
	broker := mqtttest.StartEmbedded(t)
	obs := mqtttest.Subscribe(t, broker.URL, "proxy1/message")
	b := startBridge(t, broker.URL, func(c *http2mqtt.Config) { c.MaxBodyBytes = 256 })
	b.awaitReady(t)

	tests := []struct {
		name, method, path, contentType, body string
		status                                int
		reason                                string
	}{
		{"unknown path", http.MethodPost, "/other", "application/json", `{"id":"1","body":"x"}`, 404, "no such endpoint"},
		{"wrong method", http.MethodGet, alarm.CommandPath, "", "", 405, "not allowed"},
		{"not json", http.MethodPost, alarm.CommandPath, "text/plain", `{"id":"1","body":"x"}`, 415, "not application/json"},
		{"too large", http.MethodPost, alarm.CommandPath, "application/json", `{"id":"1","body":"` + strings.Repeat("x", 300) + `"}`, 413, "exceeds"},
		{"empty", http.MethodPost, alarm.CommandPath, "application/json", ``, 400, "empty"},
		{"malformed", http.MethodPost, alarm.CommandPath, "application/json", `{"id":"1",`, 400, "JSON"},
		{"missing body", http.MethodPost, alarm.CommandPath, "application/json", `{"id":"1"}`, 400, "body"},
		{"wrong type", http.MethodPost, alarm.CommandPath, "application/json", `{"id":1,"body":"x"}`, 400, "id"},
		{"not utf-8", http.MethodPost, alarm.CommandPath, "application/json", "{\"id\":\"1\",\"body\":\"\xff\"}", 400, "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, b.url+tt.path, bytes.NewReader([]byte(tt.body)))
			if err != nil {
				t.Fatal(err)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantJSONError(t, answer{status: resp.StatusCode, body: string(body)}, tt.status, tt.reason)
		})
	}
	// Nothing of the above was published: a good alarm sent last is the only message.
	if a := postAlarm(t, b, "good", "x", "req-good"); a.status != http.StatusOK {
		t.Fatalf("good alarm: %d %s", a.status, a.body)
	}
	msgs := obs.Wait(t, 1, 10*time.Second)
	if len(msgs) != 1 || msgs[0].User["request_id"] != "req-good" {
		t.Fatalf("observer got %d messages, first %s; want only the good alarm", len(msgs), msgs[0].Payload)
	}
}

func TestNewValidates(t *testing.T) {
	base := func() http2mqtt.Config {
		return http2mqtt.Config{Server: roles.Server{Listen: "127.0.0.1:0", ServiceName: "proxy1"}, Broker: "mqtt://127.0.0.1:1883"}
	}
	tests := map[string]func(*http2mqtt.Config){
		"no service name": func(c *http2mqtt.Config) { c.ServiceName = "" },
		"bad broker":      func(c *http2mqtt.Config) { c.Broker = "http://x" },
		"no broker":       func(c *http2mqtt.Config) { c.Broker = "" },
		"qos 3":           func(c *http2mqtt.Config) { c.QoS = 3 },
		"qos -1":          func(c *http2mqtt.Config) { c.QoS = -1 },
		"wildcard topic":  func(c *http2mqtt.Config) { c.Topic = "a/+" },
	}
	for name, tweak := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := base()
			tweak(&cfg)
			if b, err := http2mqtt.New(cfg); err == nil {
				b.Run(canceled())
				t.Fatal("New succeeded")
			}
		})
	}
	b, err := http2mqtt.New(base())
	if err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if err := b.Run(canceled()); err != nil {
		t.Fatalf("Run with a canceled context: %v", err)
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestNoSubscriberIs503: a broker that says nobody subscribed the topic (reason code 0x10)
// would discard the alarm, so it is not answered 200. Mosquitto says so in the PUBACK of QoS 1
// (at QoS 2 it routes on PUBREL, after its PUBREC); the shipped broker keeps proxy1/message in
// a declared queue and says it only for other topics (TestAlarmsBeforeAnyConsumer).
func TestNoSubscriberIs503(t *testing.T) {
	broker := mqtttest.StartMosquitto(t)
	b := startBridge(t, broker.URL, func(c *http2mqtt.Config) { c.QoS = 1 })
	b.awaitReady(t)
	wantJSONError(t, postAlarm(t, b, "1", "x", "req-nobody"), http.StatusServiceUnavailable, "no subscriber")
	obs := mqtttest.Subscribe(t, broker.URL, "proxy1/message")
	if a := postAlarm(t, b, "2", "x", "req-someone"); a.status != http.StatusOK {
		t.Fatalf("with a subscriber: %d %s", a.status, a.body)
	}
	if m := obs.Wait(t, 1, 10*time.Second); m[0].User["request_id"] != "req-someone" {
		t.Errorf("observer got %s", m[0].Payload)
	}
	if n := testutil.Metric(t, b.reg, "lps_mqtt_publishes_total", map[string]string{"result": "no_subscribers"}); n != 1 {
		t.Errorf("publishes no_subscribers = %v, want 1", n)
	}
}

// TestAlarmsBeforeAnyConsumer: the broker the LPS ships keeps the consumers' queues from its
// first second, so alarms answered 200 before any mqtt2http ever subscribed wait for it, across
// a broker restart; an alarm for a topic that no queue and no subscription takes is answered
// 503 at QoS 2 as at QoS 1, never 200 and discarded.
func TestAlarmsBeforeAnyConsumer(t *testing.T) {
	broker := mqtttest.StartEmbedded(t)
	b := startBridge(t, broker.URL, nil)
	b.awaitReady(t)
	const n = 20
	for i := range n {
		if a := postAlarm(t, b, fmt.Sprint(i), "x", fmt.Sprintf("req-%02d", i)); a.status != http.StatusOK {
			t.Fatalf("alarm %d before any consumer: %d %s", i, a.status, a.body)
		}
	}
	for _, qos := range []int{1, 2} {
		other := startBridge(t, broker.URL, func(c *http2mqtt.Config) {
			c.ServiceName, c.Topic, c.QoS = fmt.Sprintf("elsewhere-%d", qos), "elsewhere/alarms", qos
		})
		other.awaitReady(t)
		wantJSONError(t, postAlarm(t, other, "x", "x", fmt.Sprintf("req-nobody-qos%d", qos)), http.StatusServiceUnavailable, "no subscriber")
		if c := testutil.Metric(t, other.reg, "lps_mqtt_publishes_total", map[string]string{"result": "no_subscribers"}); c != 1 {
			t.Errorf("QoS %d: publishes no_subscribers = %v, want 1", qos, c)
		}
	}
	broker.Stop()
	broker.Start()
	consumer := mqtttest.Subscribe(t, broker.URL, "$share/legacy_proxy/+/message")
	got := consumer.Wait(t, n, 20*time.Second)
	seen := map[string]int{}
	for _, m := range got {
		seen[m.User["request_id"]]++
	}
	for i := range n {
		if id := fmt.Sprintf("req-%02d", i); seen[id] != 1 {
			t.Errorf("%s delivered %d times, want once", id, seen[id])
		}
	}
	if len(got) != n {
		t.Errorf("%d messages delivered, want %d", len(got), n)
	}
}

// TestStoreFullIs503: the shipped broker with its data dir at --max-store-bytes refuses a
// publish with 0x97 "quota exceeded" at once; the bridge answers 503 (try later), counted as
// refused, never 200. Once a consumer has drained the queue, alarms are accepted again.
func TestStoreFullIs503(t *testing.T) {
	broker := mqtttest.StartEmbeddedWith(t, func(c *mqttbroker.Config) { c.MaxStoreBytes = 256 << 10 })
	b := startBridge(t, broker.URL, nil)
	b.awaitReady(t)
	body := strings.Repeat("x", 2000)
	accepted := 0
	var full answer
	for ; ; accepted++ {
		if accepted == 1000 {
			t.Fatal("1,000 alarms of 2 kB accepted with --max-store-bytes 256 KiB")
		}
		a := postAlarm(t, b, fmt.Sprint(accepted), body, fmt.Sprintf("req-%04d", accepted))
		if a.status != http.StatusOK {
			full = a
			break
		}
	}
	if accepted == 0 {
		t.Fatal("the first alarm was refused")
	}
	wantJSONError(t, full, http.StatusServiceUnavailable, "quota exceeded")
	if n := testutil.Metric(t, b.reg, "lps_mqtt_publishes_total", map[string]string{"result": "refused"}); n != 1 {
		t.Errorf("publishes refused = %v, want 1", n)
	}

	consumer := mqtttest.Subscribe(t, broker.URL, "$share/legacy_proxy/+/message")
	if got := consumer.Wait(t, accepted, 30*time.Second); len(got) != accepted {
		t.Fatalf("consumer got %d, want the %d accepted", len(got), accepted)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if a := postAlarm(t, b, "after", "x", "req-after"); a.status != http.StatusOK {
			return fmt.Errorf("alarm after the drain: %d %s", a.status, a.body)
		}
		return nil
	})
}

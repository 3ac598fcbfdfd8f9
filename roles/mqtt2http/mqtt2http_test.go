package mqtt2http_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/mqttconn/mqtttest"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/mqtt2http"
)

func TestForwardsWithRequestID(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		broker := start(t)
		up := startUpstream(t)
		b := startBridge(t, broker.URL, up.URL, "consumer-1", nil)

		mqtttest.Publish(t, broker.URL, "proxy1/message", alarmJSON("0123", "Phone: 0123", "r-payload"), map[string]string{"request_id": "r-ignored"})
		mqtttest.Publish(t, broker.URL, "proxy2/message", alarmJSON("0456", "Phone: 0456", ""), map[string]string{"request_id": "r-property"})
		mqtttest.Publish(t, broker.URL, "proxy3/message", alarmJSON("0789", "Phone: 0789", ""), nil)
		up.waitFor(t, 10*time.Second, "three alarms", func(u *upstream) bool { return len(u.requests) == 3 })

		reqs := up.all()
		for _, r := range reqs {
			if r.Path != alarm.CommandPath || r.ContentType != "application/json" {
				t.Errorf("request to %s with %s, want %s with application/json", r.Path, r.ContentType, alarm.CommandPath)
			}
			if r.RequestID == "" || r.Alarm.RequestID != r.RequestID {
				t.Errorf("Request-Id header %q, payload request_id %q: want both set and equal", r.RequestID, r.Alarm.RequestID)
			}
		}
		byID := map[string]received{}
		for _, r := range reqs {
			byID[r.Alarm.ID] = r
		}
		if got := byID["0123"].RequestID; got != "r-payload" {
			t.Errorf("payload request_id: forwarded with %q", got)
		}
		if got := byID["0456"].RequestID; got != "r-property" {
			t.Errorf("user property request_id: forwarded with %q", got)
		}
		if got := byID["0789"]; got.RequestID == "" || got.Alarm.Body != "Phone: 0789" {
			t.Errorf("no request id: forwarded %+v", got)
		}
		quiescent(t, 3, b)
		if n := testutil.Metric(t, b.reg, "lps_mqtt_forwards_total", map[string]string{"result": "ok"}); n != 3 {
			t.Errorf("forwards ok = %v, want 3", n)
		}
		if n := testutil.Metric(t, b.reg, "lps_mqtt_forward_duration_seconds", nil); n != 3 {
			t.Errorf("forward latency samples = %v, want 3", n)
		}
	})
}

// TestRetryThenDeliveredOnce: the upstream fails twice, then accepts. The alarm goes through
// the retry topic twice (attempts 1 and 2, request id kept) and is accepted exactly once.
func TestRetryThenDeliveredOnce(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		broker := start(t)
		retries := mqtttest.Subscribe(t, broker.URL, "+/retry/message")
		up := startUpstream(t)
		up.setStatus(func(_ string, n int) int {
			if n <= 2 {
				return http.StatusInternalServerError
			}
			return http.StatusOK
		})
		b := startBridge(t, broker.URL, up.URL, "consumer-1", nil)

		expiry := uint32(600)
		mqtttest.PublishPacket(t, broker.URL, &paho.Publish{Topic: "proxy1/message", QoS: 2, Payload: alarmJSON("1", "x", "r-1"),
			Properties: &paho.PublishProperties{MessageExpiry: &expiry}})
		up.waitFor(t, 10*time.Second, "the alarm accepted", func(u *upstream) bool { return u.ok["r-1"] == 1 })
		quiescent(t, 1, b)

		msgs := retries.Wait(t, 2, 10*time.Second)
		if len(msgs) != 2 {
			t.Fatalf("%d retry messages, want 2", len(msgs))
		}
		for i, m := range msgs {
			if m.Topic != "consumer-1/retry/message" || m.User["attempts"] != strconv.Itoa(i+1) || m.User["request_id"] != "r-1" {
				t.Errorf("retry %d: topic %s user %v", i+1, m.Topic, m.User)
			}
			if e := m.Properties.MessageExpiry; e == nil || *e == 0 || *e > 600 {
				t.Errorf("retry %d: message expiry %v, want the rest of the original's 600 s", i+1, e)
			}
			var a alarm.Alarm
			if err := json.Unmarshal(m.Payload, &a); err != nil || a.RequestID != "r-1" || a.ID != "1" {
				t.Errorf("retry %d payload %s", i+1, m.Payload)
			}
		}
		exactlyOnce(t, up.okCounts(), []string{"r-1"})
		if n := len(up.all()); n != 3 {
			t.Errorf("upstream saw %d requests, want 3 (two failures, one success)", n)
		}
		if n := testutil.Metric(t, b.reg, "lps_mqtt_retries_total", nil); n != 2 {
			t.Errorf("retries = %v, want 2", n)
		}
		if n := testutil.Metric(t, b.reg, "lps_mqtt_forwards_total", map[string]string{"result": "http_5xx"}); n != 2 {
			t.Errorf("forwards http_5xx = %v, want 2", n)
		}
		if n := testutil.Metric(t, b.reg, "lps_mqtt_deliveries_total", map[string]string{"source": "retry"}); n != 2 {
			t.Errorf("deliveries from retry = %v, want 2", n)
		}
	})
}

// TestUpstreamDownThenBack: the upstream's port refuses connections while alarms arrive; when
// it comes back every alarm arrives, none twice.
func TestUpstreamDownThenBack(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		broker := start(t)
		up := downUpstream(t)
		b := startBridge(t, broker.URL, up.URL, "consumer-1", nil)

		const n = 20
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("r-%02d", i)
			mqtttest.Publish(t, broker.URL, "proxy1/message", alarmJSON(strconv.Itoa(i), "x", ids[i]), nil)
		}
		// The bridge saw the outage (and waits it out: TestOutageIsWaitedOut).
		testutil.Eventually(t, 30*time.Second, func() error {
			if g := testutil.Metric(t, b.reg, "lps_mqtt_upstream_outage", nil); g != 1 {
				return fmt.Errorf("outage gauge %v", g)
			}
			return nil
		})
		if ok := testutil.Metric(t, b.reg, "lps_mqtt_forwards_total", map[string]string{"result": "ok"}); ok != 0 {
			t.Fatalf("%v forwards succeeded while the upstream was down", ok)
		}
		up.Start(t)
		up.waitFor(t, 30*time.Second, "every alarm accepted", func(u *upstream) bool { return len(u.ok) == n })
		quiescent(t, n, b)
		exactlyOnce(t, up.okCounts(), ids)
		if n := testutil.Metric(t, b.reg, "lps_mqtt_dead_letters_total", nil); n != 0 {
			t.Errorf("%v dead letters", n)
		}
	})
}

func TestPoisonGoesToDeadLetter(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		broker := start(t)
		dead := mqtttest.Subscribe(t, broker.URL, mqtt2http.DefaultDeadLetterTopic)
		up := startUpstream(t)
		b := startBridge(t, broker.URL, up.URL, "consumer-1", nil)

		poison := []struct {
			payload  []byte
			reason   string
			encoding string
		}{
			{[]byte(`{"id":"1","body":`), "truncated JSON", "utf-8"},
			{[]byte(`not json`), "malformed JSON", "utf-8"},
			{[]byte(`{"id":"1"}`), "missing or empty field(s): body", "utf-8"},
			{[]byte(`{"id":"","body":"x"}`), "missing or empty field(s): id", "utf-8"},
			{[]byte(`{"id":1,"body":"x"}`), `field "id"`, "utf-8"},
			{[]byte{0xff, 0xfe, '{', 0x00}, "not valid UTF-8", "base64"},
			{nil, "truncated JSON", "utf-8"},
		}
		for i, p := range poison {
			mqtttest.Publish(t, broker.URL, "proxy1/message", p.payload, map[string]string{"request_id": fmt.Sprintf("poison-%d", i)})
		}
		mqtttest.Publish(t, broker.URL, "proxy1/message", alarmJSON("good", "x", "r-good"), nil)

		msgs := dead.Wait(t, len(poison), 10*time.Second)
		up.waitFor(t, 10*time.Second, "the good alarm", func(u *upstream) bool { return u.ok["r-good"] == 1 })
		quiescent(t, len(poison)+1, b)
		if len(msgs) != len(poison) {
			t.Fatalf("%d dead letters, want %d", len(msgs), len(poison))
		}
		for i, m := range msgs {
			var dl mqtt2http.DeadLetter
			if err := json.Unmarshal(m.Payload, &dl); err != nil {
				t.Fatalf("dead letter %d is not JSON: %s", i, m.Payload)
			}
			want := poison[i]
			if !strings.Contains(dl.Reason, want.reason) || dl.PayloadEncoding != want.encoding ||
				dl.Topic != "proxy1/message" || dl.Service != "consumer-1" || dl.Attempts != 0 ||
				dl.RequestID != fmt.Sprintf("poison-%d", i) || dl.Time.IsZero() {
				t.Errorf("dead letter %d: %+v; want reason containing %q, encoding %s", i, dl, want.reason, want.encoding)
			}
			orig := []byte(dl.Payload)
			if dl.PayloadEncoding == "base64" {
				var err error
				if orig, err = base64.StdEncoding.DecodeString(dl.Payload); err != nil {
					t.Errorf("dead letter %d payload is not base64: %v", i, err)
				}
			}
			if string(orig) != string(want.payload) {
				t.Errorf("dead letter %d carries %q, want the original %q", i, orig, want.payload)
			}
			if m.User["reason"] != "undecodable" {
				t.Errorf("dead letter %d user properties %v", i, m.User)
			}
		}
		if got := up.all(); len(got) != 1 {
			t.Errorf("upstream got %d requests, want only the good alarm", len(got))
		}
		if n := testutil.Metric(t, b.reg, "lps_mqtt_dead_letters_total", map[string]string{"reason": "undecodable"}); n != float64(len(poison)) {
			t.Errorf("dead letters = %v, want %d", n, len(poison))
		}
	})
}

func TestMaxAttemptsGoesToDeadLetter(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		broker := start(t)
		dead := mqtttest.Subscribe(t, broker.URL, mqtt2http.DefaultDeadLetterTopic)
		up := startUpstream(t)
		up.setStatus(func(string, int) int { return http.StatusBadGateway })
		b := startBridge(t, broker.URL, up.URL, "consumer-1", func(c *mqtt2http.Config) { c.MaxAttempts = 3 })

		mqtttest.Publish(t, broker.URL, "proxy1/message", alarmJSON("1", "x", "r-1"), nil)
		m := dead.Wait(t, 1, 10*time.Second)[0]
		quiescent(t, 1, b)
		var dl mqtt2http.DeadLetter
		if err := json.Unmarshal(m.Payload, &dl); err != nil {
			t.Fatal(err)
		}
		if dl.Attempts != 3 || dl.RequestID != "r-1" || dl.Topic != "consumer-1/retry/message" ||
			!strings.Contains(dl.Reason, "failed 3 times") || !strings.Contains(dl.Reason, "502") {
			t.Errorf("dead letter %+v", dl)
		}
		var a alarm.Alarm
		if err := json.Unmarshal([]byte(dl.Payload), &a); err != nil || a.ID != "1" || a.RequestID != "r-1" {
			t.Errorf("dead letter payload %s", dl.Payload)
		}
		if n := len(up.all()); n != 3 {
			t.Errorf("upstream saw %d attempts, want 3", n)
		}
		if n := testutil.Metric(t, b.reg, "lps_mqtt_retries_total", nil); n != 2 {
			t.Errorf("retries = %v, want 2", n)
		}
		if n := testutil.Metric(t, b.reg, "lps_mqtt_dead_letters_total", map[string]string{"reason": "max_attempts"}); n != 1 {
			t.Errorf("dead letters = %v, want 1", n)
		}
	})
}

func TestExpiredMessageGoesToDeadLetter(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		broker := start(t)
		dead := mqtttest.Subscribe(t, broker.URL, mqtt2http.DefaultDeadLetterTopic)
		up := startUpstream(t)
		up.setStatus(func(string, int) int { return http.StatusServiceUnavailable })
		// The first retry would wait at least 15 s; the message has at most 10 s left.
		b := startBridge(t, broker.URL, up.URL, "consumer-1", func(c *mqtt2http.Config) {
			c.RetryBase, c.RetryMax = 30*time.Second, 30*time.Second
		})
		expiry := uint32(10)
		mqtttest.PublishPacket(t, broker.URL, &paho.Publish{Topic: "proxy1/message", QoS: 2, Payload: alarmJSON("1", "x", "r-1"),
			Properties: &paho.PublishProperties{MessageExpiry: &expiry}})
		m := dead.Wait(t, 1, 10*time.Second)[0]
		quiescent(t, 1, b)
		var dl mqtt2http.DeadLetter
		if err := json.Unmarshal(m.Payload, &dl); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(dl.Reason, "expires") || dl.Attempts != 1 || m.User["reason"] != "expired" {
			t.Errorf("dead letter %+v, user %v", dl, m.User)
		}
	})
}

// TestMaxInflightRunsConcurrentForwards: MaxInflight workers forward at once, never more, and
// the receive maximum (MaxInflight) keeps the broker from sending more than they take: nothing
// waits in the bridge for a worker.
func TestMaxInflightRunsConcurrentForwards(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		for _, inflight := range []int{1, 3} {
			t.Run(strconv.Itoa(inflight), func(t *testing.T) {
				broker := start(t)
				up := startUpstream(t)
				release := up.hold(t)
				b := startBridge(t, broker.URL, up.URL, "consumer-1", func(c *mqtt2http.Config) { c.MaxInflight = inflight })

				const n = 6
				ids := make([]string, n)
				for i := range ids {
					ids[i] = fmt.Sprintf("r-%d", i)
					mqtttest.Publish(t, broker.URL, "proxy1/message", alarmJSON(strconv.Itoa(i), "x", ids[i]), nil)
				}
				up.waitFor(t, 10*time.Second, fmt.Sprintf("%d concurrent forwards", inflight), func(u *upstream) bool { return u.inflight == inflight })
				testutil.Eventually(t, 10*time.Second, func() error {
					if g := testutil.Metric(t, b.reg, "lps_mqtt_inflight_forwards", nil); g != float64(inflight) {
						return fmt.Errorf("inflight gauge %v", g)
					}
					return nil
				})
				// Both brokers honour the receive maximum [MQTT-3.3.4-9]: the rest waits in the
				// broker, none in the bridge.
				testutil.Eventually(t, 10*time.Second, func() error {
					if q := testutil.Metric(t, b.reg, "lps_mqtt_queued_messages", nil); q != 0 {
						return fmt.Errorf("%v messages queued in the bridge, want 0", q)
					}
					return nil
				})
				release()
				up.waitFor(t, 10*time.Second, "every alarm", func(u *upstream) bool { return len(u.ok) == n })
				quiescent(t, n, b)
				exactlyOnce(t, up.okCounts(), ids)
				up.mu.Lock()
				maxSeen := up.maxInflight
				up.mu.Unlock()
				if maxSeen != inflight {
					t.Errorf("at most %d concurrent forwards seen, want %d", maxSeen, inflight)
				}
			})
		}
	})
}

// TestShutdown: a forward in flight when the bridge stops either finishes within the drain
// time and is acknowledged (not redelivered), or is abandoned unacknowledged and redelivered
// to the next instance under the same service name.
func TestShutdown(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		broker := start(t)

		t.Run("drained", func(t *testing.T) {
			up := startUpstream(t)
			release := up.hold(t)
			b := startBridge(t, broker.URL, up.URL, "drained", inGroup("drained"))
			mqtttest.Publish(t, broker.URL, "drained-src/message", alarmJSON("1", "x", "r-drain"), nil)
			up.waitFor(t, 10*time.Second, "the forward in flight", func(u *upstream) bool { return u.inflight == 1 })
			stopped := make(chan error, 1)
			go func() { stopped <- b.stop() }()
			// Once the bridge is stopping (its admin listener is closed), let the upstream answer:
			// the forward still counts.
			testutil.Eventually(t, 10*time.Second, func() error {
				if _, _, err := probe(b.admin + "/healthz"); err == nil {
					return fmt.Errorf("admin still serving")
				}
				return nil
			})
			release()
			if err := <-stopped; err != nil {
				t.Fatal(err)
			}
			b2 := startBridge(t, broker.URL, up.URL, "drained", inGroup("drained"))
			mqtttest.Publish(t, broker.URL, "drained-src/message", alarmJSON("2", "x", "r-marker"), nil)
			up.waitFor(t, 10*time.Second, "the marker", func(u *upstream) bool { return u.ok["r-marker"] == 1 })
			quiescent(t, 1, b2)
			exactlyOnce(t, up.okCounts(), []string{"r-drain", "r-marker"})
		})

		t.Run("abandoned", func(t *testing.T) {
			up := startUpstream(t)
			release := up.hold(t)
			b := startBridge(t, broker.URL, up.URL, "abandoned", func(c *mqtt2http.Config) {
				c.ShareGroup, c.DrainTimeout = "abandoned", 50*time.Millisecond
			})
			mqtttest.Publish(t, broker.URL, "abandoned-src/message", alarmJSON("1", "x", "r-abandon"), nil)
			up.waitFor(t, 10*time.Second, "the forward in flight", func(u *upstream) bool { return u.inflight == 1 })
			if err := b.stop(); err != nil {
				t.Fatal(err)
			}
			if n := testutil.Metric(t, b.reg, "lps_mqtt_abandoned_total", nil); n != 1 {
				t.Errorf("abandoned = %v, want 1", n)
			}
			release() // the abandoned request's answer comes too late to count
			b2 := startBridge(t, broker.URL, up.URL, "abandoned", inGroup("abandoned"))
			up.waitFor(t, 10*time.Second, "the redelivered alarm", func(u *upstream) bool {
				n := 0
				for _, r := range u.requests {
					if r.RequestID == "r-abandon" {
						n++
					}
				}
				return n == 2
			})
			quiescent(t, 1, b2)
		})
	})
}

// TestFailedRepublishIsNotAcknowledged: when the broker refuses the retry, the original stays
// unacknowledged (tried again meanwhile) and is redelivered to the next instance.
func TestFailedRepublishIsNotAcknowledged(t *testing.T) {
	// Raw mochi with a hook: neither the shipped broker nor Mosquitto can be made to refuse one
	// topic's publishes. mochi checks the ACL before it touches its inflight map, so a refused
	// publish is safe from its bug with a client that publishes while messages are in flight to
	// it (see mqtttest's ignoreReceiveMaximum).
	broker := mqtttest.StartMochi(t, &mqtttest.MochiOptions{NoAllow: true, Hooks: []mqtt.Hook{&mqtttest.DenyPublish{Prefix: "consumer-1/retry/"}}})
	up := startUpstream(t)
	up.setStatus(func(string, int) int { return http.StatusInternalServerError })
	b := startBridge(t, broker.URL, up.URL, "consumer-1", nil)
	mqtttest.Publish(t, broker.URL, "proxy1/message", alarmJSON("1", "x", "r-1"), nil)
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := testutil.Metric(t, b.reg, "lps_mqtt_republish_failures_total", nil); n < 3 {
			return fmt.Errorf("%v refused republishes", n)
		}
		return nil
	})
	if n := testutil.Metric(t, b.reg, "lps_mqtt_retries_total", nil); n != 0 {
		t.Errorf("retries = %v, want 0", n)
	}
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	up.setStatus(nil)
	b2 := startBridge(t, broker.URL, up.URL, "consumer-1", nil)
	up.waitFor(t, 10*time.Second, "the redelivered alarm accepted", func(u *upstream) bool { return u.ok["r-1"] == 1 })
	quiescent(t, 1, b2)
}

// TestBrokerRestart: the broker restarts (gracefully, with its data dir or persistence file)
// while a full window of alarms is being forwarded (the default --max-inflight) and more are
// queued for the bridge. The persistent session brings every alarm through; only those whose
// acknowledgement the restart cut off come twice, never one that was still queued.
func TestBrokerRestart(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		broker := start(t)
		up := startUpstream(t)
		release := up.hold(t)
		b := startBridge(t, broker.URL, up.URL, "consumer-1", nil)
		const window = mqtt2http.DefaultMaxInflight
		const n = window + 8
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("r-%d", i)
			mqtttest.Publish(t, broker.URL, "proxy1/message", alarmJSON(strconv.Itoa(i), "x", ids[i]), nil)
		}
		up.waitFor(t, 10*time.Second, "a full window of forwards", func(u *upstream) bool { return u.inflight == window })
		var cut []string
		up.mu.Lock()
		for id := range up.seen {
			cut = append(cut, id)
		}
		up.mu.Unlock()
		broker.Stop()
		testutil.Eventually(t, 10*time.Second, func() error {
			if status, _ := get(t, b.admin+"/readyz"); status != http.StatusServiceUnavailable {
				return fmt.Errorf("readyz %d with the broker down", status)
			}
			return nil
		})
		release()
		broker.Start()
		up.waitFor(t, 30*time.Second, "every alarm", func(u *upstream) bool { return len(u.ok) == n })
		quiescent(t, n+window, b) // each cut-off one is delivered twice
		counts := up.okCounts()
		for _, id := range ids {
			if counts[id] == 0 {
				t.Errorf("%s lost", id)
			}
			if counts[id] > 1 && !slices.Contains(cut, id) {
				t.Errorf("%s delivered %d times; only those in flight at the restart may repeat", id, counts[id])
			}
		}
	})
}

func TestAdminEndpoints(t *testing.T) {
	broker := mqtttest.StartEmbedded(t)
	up := startUpstream(t)
	b := startBridge(t, broker.URL, up.URL, "consumer-1", nil)
	if status, _ := get(t, b.admin+"/healthz"); status != http.StatusOK {
		t.Errorf("healthz %d", status)
	}
	status, body := get(t, b.admin+"/metrics")
	for _, name := range []string{"lps_mqtt_retries_total", "lps_mqtt_connected", "lps_mqtt_inflight_forwards"} {
		if status != http.StatusOK || !strings.Contains(body, name) {
			t.Errorf("metrics %d lacks %s", status, name)
		}
	}
	if status, body := get(t, b.admin+alarm.CommandPath); status != http.StatusNotFound || !strings.Contains(body, `"reason"`) {
		t.Errorf("API path on the admin listener: %d %s", status, body)
	}
	broker.Stop()
	testutil.Eventually(t, 10*time.Second, func() error {
		if status, _ := get(t, b.admin+"/readyz"); status != http.StatusServiceUnavailable {
			return fmt.Errorf("readyz %d with the broker down", status)
		}
		return nil
	})
	broker.Start()
	b.awaitReady(t)
}

func TestNewValidates(t *testing.T) {
	base := func() mqtt2http.Config {
		return mqtt2http.Config{
			ServiceName: "proxy2", Admin: roles.Server{Listen: "127.0.0.1:0"},
			Broker: "mqtt://127.0.0.1:1883", Upstream: roles.Upstream{URL: "http://127.0.0.1:1/"},
		}
	}
	bad := map[string]func(*mqtt2http.Config){
		"no service name":        func(c *mqtt2http.Config) { c.ServiceName = "" },
		"slash in service name":  func(c *mqtt2http.Config) { c.ServiceName = "a/b" },
		"no upstream":            func(c *mqtt2http.Config) { c.Upstream.URL = "" },
		"bad broker":             func(c *mqtt2http.Config) { c.Broker = "tcp//x" },
		"bad filter":             func(c *mqtt2http.Config) { c.Topic = "a/#/b" },
		"conflicting group":      func(c *mqtt2http.Config) { c.Topic, c.ShareGroup = "$share/g1/+/message", "g2" },
		"bad group":              func(c *mqtt2http.Config) { c.ShareGroup = "a/b" },
		"filter matches retries": func(c *mqtt2http.Config) { c.Topic = "#" },
		"filter matches dead":    func(c *mqtt2http.Config) { c.Topic = "lps/+" },
		"dead letter is retry":   func(c *mqtt2http.Config) { c.DeadLetterTopic = "x/retry/message" },
		"dead letter wildcard":   func(c *mqtt2http.Config) { c.DeadLetterTopic = "dead/#" },
		"qos 0":                  func(c *mqtt2http.Config) { c.QoS = -1 },
		"qos 3":                  func(c *mqtt2http.Config) { c.QoS = 3 },
		"inflight":               func(c *mqtt2http.Config) { c.MaxInflight = 70000 },
		"attempts":               func(c *mqtt2http.Config) { c.MaxAttempts = -1 },
		"retry max below base":   func(c *mqtt2http.Config) { c.RetryBase, c.RetryMax = time.Second, time.Millisecond },
	}
	for name, tweak := range bad {
		t.Run(name, func(t *testing.T) {
			cfg := base()
			tweak(&cfg)
			if b, err := mqtt2http.New(cfg); err == nil {
				b.Run(canceled())
				t.Fatal("New succeeded")
			}
		})
	}
	good := map[string]func(*mqtt2http.Config){
		"defaults":     func(*mqtt2http.Config) {},
		"shared topic": func(c *mqtt2http.Config) { c.Topic = "$share/mygroup/alarms/+" },
		"same group":   func(c *mqtt2http.Config) { c.Topic, c.ShareGroup = "$share/g/+/message", "g" },
		"qos 1":        func(c *mqtt2http.Config) { c.QoS = 1 },
	}
	for name, tweak := range good {
		t.Run(name, func(t *testing.T) {
			cfg := base()
			tweak(&cfg)
			b, err := mqtt2http.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Run(canceled()); err != nil {
				t.Fatalf("Run with a canceled context: %v", err)
			}
		})
	}
}

func TestCustomShareGroupAndTopic(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		broker := start(t)
		up := startUpstream(t)
		b := startBridge(t, broker.URL, up.URL, "consumer-1", func(c *mqtt2http.Config) { c.Topic = "$share/mygroup/alarms/+" })
		mqtttest.Publish(t, broker.URL, "alarms/a", alarmJSON("1", "x", "r-1"), nil)
		up.waitFor(t, 10*time.Second, "the alarm", func(u *upstream) bool { return u.ok["r-1"] == 1 })
		quiescent(t, 1, b)
	})
}

// inGroup puts a bridge in a share group of its own: a stopped bridge's persistent session
// keeps its place in its group and would take a share of the group's messages.
func inGroup(g string) func(*mqtt2http.Config) {
	return func(c *mqtt2http.Config) { c.ShareGroup = g }
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

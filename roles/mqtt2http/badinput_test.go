package mqtt2http_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/internal/testutil/badinput"
	"github.com/lpsdev/lps/mqttconn/mqtttest"
	"github.com/lpsdev/lps/roles/mqtt2http"
)

// TestBadPayloadsAreDeadLettered sends mqtt2http the bad payloads of issue 4 that
// TestPoisonGoesToDeadLetter does not (that one covers a truncated payload, plain text, a
// missing body field, an empty id, a wrong id type, binary non-UTF-8 and an empty payload):
// each goes to the dead-letter topic with its reason and its original bytes, none reaches the
// upstream, and the bridge still forwards a valid alarm afterwards.
func TestBadPayloadsAreDeadLettered(t *testing.T) {
	const limit = 1024
	big := string(alarmJSON("big", strings.Repeat("x", limit), ""))
	cases := []struct {
		name, payload string
		reason        string // a * matches any text
		encoding      string
	}{
		{"non-UTF-8 inside a valid alarm", "{\"id\":\"0151\",\"body\":\"Stra\xdfe\"}", "payload is not valid UTF-8", "base64"},
		{"overlong UTF-8 encoding", "{\"id\":\"\xc0\xaf\",\"body\":\"b\"}", "payload is not valid UTF-8", "base64"},
		{"UTF-8 byte order mark", "\xef\xbb\xbf{\"id\":\"1\",\"body\":\"b\"}", "payload is not a valid alarm: malformed JSON at byte 1: *", "utf-8"},
		{"second alarm after the first", `{"id":"1","body":"b"}{"id":"2","body":"c"}`, "payload is not a valid alarm: malformed JSON: data after the JSON value", "utf-8"},
		{"truncated inside a string", `{"id":"1","body":"b`, "payload is not a valid alarm: truncated JSON", "utf-8"},
		{"wrong type: body number", `{"id":"1","body":5}`, `payload is not a valid alarm: field "body" must be a string, not number`, "utf-8"},
		{"wrong type: request_id object", `{"id":"1","body":"b","request_id":{}}`, `payload is not a valid alarm: field "request_id" must be a string, not object`, "utf-8"},
		{"wrong type: array document", `[{"id":"1","body":"b"}]`, "payload is not a valid alarm: request body must be a JSON object, not array", "utf-8"},
		{"missing: id", `{"body":"b"}`, "payload is not a valid alarm: missing or empty field(s): id", "utf-8"},
		{"missing: null document", `null`, "payload is not a valid alarm: missing or empty field(s): id, body", "utf-8"},
		{"empty: blank and null fields", `{"id":" ","body":null}`, "payload is not a valid alarm: missing or empty field(s): id, body", "utf-8"},
		{"empty: whitespace only", " \n", "payload is not a valid alarm: truncated JSON", "utf-8"},
		{"oversized valid alarm", big, fmt.Sprintf("payload of %d bytes exceeds the limit of %d bytes", len(big), limit), "utf-8"},
	}
	mqtttest.Each(t, func(t *testing.T, start func(*testing.T) *mqtttest.Broker) {
		brokerURL := start(t).URL
		dead := mqtttest.Subscribe(t, brokerURL, mqtt2http.DefaultDeadLetterTopic)
		up := startUpstream(t)
		b := startBridge(t, brokerURL, up.URL, "consumer-1", func(c *mqtt2http.Config) { c.MaxPayloadBytes = limit })

		for i, c := range cases {
			mqtttest.Publish(t, brokerURL, "proxy1/message", []byte(c.payload), map[string]string{"request_id": fmt.Sprintf("bad-%d", i)})
		}
		mqtttest.Publish(t, brokerURL, "proxy1/message", alarmJSON("good", "x", "r-good"), nil)

		msgs := dead.Wait(t, len(cases), 10*time.Second)
		up.waitFor(t, 10*time.Second, "the good alarm", func(u *upstream) bool { return u.ok["r-good"] == 1 })
		quiescent(t, len(cases)+1, b)

		byID := map[string]mqtt2http.DeadLetter{}
		for _, m := range msgs {
			var dl mqtt2http.DeadLetter
			if err := json.Unmarshal(m.Payload, &dl); err != nil {
				t.Fatalf("dead letter is not JSON: %s", m.Payload)
			}
			if m.User["reason"] != "undecodable" || m.User["request_id"] != dl.RequestID {
				t.Errorf("dead letter %s has user properties %v", dl.RequestID, m.User)
			}
			byID[dl.RequestID] = dl
		}
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				dl, ok := byID[fmt.Sprintf("bad-%d", i)]
				if !ok {
					t.Fatalf("no dead letter")
				}
				if !badinput.Glob(c.reason, dl.Reason) {
					t.Errorf("reason %q, want %q", dl.Reason, c.reason)
				}
				orig := []byte(dl.Payload)
				if dl.PayloadEncoding == "base64" {
					var err error
					if orig, err = base64.StdEncoding.DecodeString(dl.Payload); err != nil {
						t.Errorf("payload is not base64: %v", err)
					}
				}
				if dl.PayloadEncoding != c.encoding || string(orig) != c.payload {
					t.Errorf("carries %q as %s, want the original %q as %s", orig, dl.PayloadEncoding, c.payload, c.encoding)
				}
				if dl.Topic != "proxy1/message" || dl.Service != "consumer-1" || dl.Attempts != 0 || dl.Time.IsZero() {
					t.Errorf("dead letter %+v", dl)
				}
			})
		}
		if got := up.all(); len(got) != 1 || got[0].RequestID != "r-good" {
			t.Errorf("upstream got %+v, want only the good alarm", got)
		}
		if n := testutil.Metric(t, b.reg, "lps_mqtt_dead_letters_total", map[string]string{"reason": "undecodable"}); n != float64(len(cases)) {
			t.Errorf("dead letters = %v, want %d", n, len(cases))
		}
		if status, body := get(t, b.admin+"/healthz"); status != http.StatusOK {
			t.Errorf("healthz %d %s after bad input", status, body)
		}
	})
}

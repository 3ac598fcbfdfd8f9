package http2mqtt_test

import (
	"strings"
	"testing"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/internal/testutil/badinput"
	"github.com/lpsdev/lps/mqttconn/mqtttest"
	"github.com/lpsdev/lps/roles/http2mqtt"
)

// badBodyLimit is the role's body limit in the bad-input tests.
const badBodyLimit = 1024

// TestBadInputIsRejectedAndNotPublished sends http2mqtt the bad input of issue 4 that
// TestBadInput does not (that one covers another path, GET, text/plain, a declared oversized
// body, an empty body, a truncated body, a missing body field, a wrong id type and non-UTF-8):
// each gets its status and JSON reason, none is published, and the bridge still publishes a
// valid alarm afterwards, also while a slow client holds a connection. The broker is the
// shipped one only: nothing of this reaches a broker, so which one does not matter.
func TestBadInputIsRejectedAndNotPublished(t *testing.T) {
	broker := mqtttest.StartEmbedded(t)
	obs := mqtttest.Subscribe(t, broker.URL, "proxy1/message")
	b := startBridge(t, broker.URL, func(c *http2mqtt.Config) {
		c.MaxBodyBytes = badBodyLimit
		c.ReadTimeout, c.ReadHeaderTimeout = badinput.ReadTimeout, badinput.ReadTimeout
	})
	b.awaitReady(t)
	addr := b.Addr().String()

	const js = "application/json"
	path := alarm.CommandPath
	badinput.Run(t, b.url, []badinput.Case{
		{Name: "malformed: missing comma", Method: "POST", Path: path, ContentType: js, Body: `{"id":"1" "body":"b"}`, Status: 400, Reason: "malformed JSON at byte 11: invalid character '\"' after object key:value pair"},
		{Name: "malformed: form body", Method: "POST", Path: path, ContentType: js, Body: `id=1&body=b`, Status: 400, Reason: "malformed JSON at byte 1: *"},
		{Name: "malformed: second alarm after the first", Method: "POST", Path: path, ContentType: js, Body: `{"id":"1","body":"b"}{"id":"2","body":"c"}`, Status: 400, Reason: "malformed JSON: data after the JSON value"},
		{Name: "truncated inside a string", Method: "POST", Path: path, ContentType: js, Body: `{"id":"1","body":"b`, Status: 400, Reason: "truncated JSON"},
		{Name: "wrong type: body number", Method: "POST", Path: path, ContentType: js, Body: `{"id":"1","body":5}`, Status: 400, Reason: `field "body" must be a string, not number`},
		{Name: "wrong type: id bool", Method: "POST", Path: path, ContentType: js, Body: `{"id":true,"body":"b"}`, Status: 400, Reason: `field "id" must be a string, not bool`},
		{Name: "wrong type: request_id number", Method: "POST", Path: path, ContentType: js, Body: `{"id":"1","body":"b","request_id":7}`, Status: 400, Reason: `field "request_id" must be a string, not number`},
		{Name: "wrong type: string document", Method: "POST", Path: path, ContentType: js, Body: `"{\"id\":\"1\",\"body\":\"b\"}"`, Status: 400, Reason: "request body must be a JSON object, not string"},
		{Name: "missing: both fields", Method: "POST", Path: path, ContentType: js, Body: `{}`, Status: 400, Reason: "missing or empty field(s): id, body"},
		{Name: "missing: id", Method: "POST", Path: path, ContentType: js, Body: `{"body":"b"}`, Status: 400, Reason: "missing or empty field(s): id"},
		{Name: "missing: null document", Method: "POST", Path: path, ContentType: js, Body: `null`, Status: 400, Reason: "missing or empty field(s): id, body"},
		{Name: "empty: null fields", Method: "POST", Path: path, ContentType: js, Body: `{"id":null,"body":null}`, Status: 400, Reason: "missing or empty field(s): id, body"},
		{Name: "empty: blank fields", Method: "POST", Path: path, ContentType: js, Body: `{"id":"","body":"  "}`, Status: 400, Reason: "missing or empty field(s): id, body"},
		{Name: "empty: whitespace body", Method: "POST", Path: path, ContentType: js, Body: "\n\n", Status: 400, Reason: "request body is empty"},
		{Name: "oversized, chunked", Method: "POST", Path: path, ContentType: js, Chunked: true, Body: `{"id":"1","body":"` + strings.Repeat("x", 2*badBodyLimit) + `"}`, Status: 413, Reason: "request body exceeds the limit of 1024 bytes"},
		{Name: "content type: form", Method: "POST", Path: path, ContentType: "application/x-www-form-urlencoded", Body: `{"id":"1","body":"b"}`, Status: 415, Reason: `content type "application/x-www-form-urlencoded" is not application/json`},
		{Name: "method: PUT", Method: "PUT", Path: path, ContentType: js, Body: `{"id":"1","body":"b"}`, Status: 405, Reason: "method PUT is not allowed on /ID_REQ_KC_STORE7D3BPACKET; use POST"},
		{Name: "10,000-byte header", Method: "POST", Path: path, ContentType: js, Body: `{"id":"1","body":"b"}`, BigHeader: true, Status: 431, Reason: "request headers of 10* bytes exceed the limit of 8192 bytes"},
	})

	badinput.Slowloris(t, addr, alarm.CommandPath, slowAlarm)

	// Still serving: a valid alarm is published while a slow client holds a connection. It is
	// the only message: had bad input been published before it, that would have arrived first.
	slow := badinput.SlowBody(t, addr, alarm.CommandPath, slowAlarm)
	status, _, body := badinput.Case{Method: "POST", Path: path, ContentType: js, Body: `{"id":"0151","body":"after"}`, RequestID: "after-bad-input"}.Do(t, b.url)
	if status != 200 {
		t.Fatalf("valid alarm after bad input: %d %s", status, body)
	}
	slow.CheckTimedOut(t)
	msgs := obs.Wait(t, 1, badinput.Deadline)
	if want := `{"id":"0151","body":"after","request_id":"after-bad-input"}`; len(msgs) != 1 || string(msgs[0].Payload) != want {
		t.Errorf("observer got %d messages, first %s; want only %s", len(msgs), msgs[0].Payload, want)
	}
	if n := testutil.Metric(t, b.reg, "lps_mqtt_publishes_total", nil); n != 1 {
		t.Errorf("%v publishes, want 1", n)
	}
}

// slowAlarm is a valid alarm, so that only its pace can be why it is not published.
var slowAlarm = `{"id":"slow","body":"` + strings.Repeat("x", 500) + `"}`

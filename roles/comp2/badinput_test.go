package comp2_test

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/internal/testutil/badinput"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/comp2"
)

// badBodyLimit is the role's body limit in the bad-input tests.
const badBodyLimit = 1024

// TestBadInputIsRejectedAndNotForwarded sends comp2 the bad input of issue 4 that
// TestErrorStatuses does not (that one covers a truncated body, a JSON string, a wrong id
// type, a missing body field, an empty id, an empty body, non-UTF-8, a declared oversized body,
// text/plain, another path and GET): each gets its status and JSON reason, none reaches the
// backend, and comp2 still forwards a valid alarm afterwards, also while a slow client holds a
// connection.
func TestBadInputIsRejectedAndNotForwarded(t *testing.T) {
	b := &backend{}
	up := httptest.NewServer(b)
	t.Cleanup(up.Close)
	cfg := comp2.Config{Upstream: roles.Upstream{URL: up.URL, Timeout: badinput.Deadline}}
	cfg.Listener = testutil.Listen(t)
	cfg.MaxBodyBytes = badBodyLimit
	cfg.ReadTimeout, cfg.ReadHeaderTimeout = badinput.ReadTimeout, badinput.ReadTimeout
	c, err := comp2.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, c)
	addr := c.Addr().String()
	base := "http://" + addr

	const js = "application/json"
	path := alarm.CommandPath
	badinput.Run(t, base, []badinput.Case{
		{Name: "malformed: missing comma", Method: "POST", Path: path, ContentType: js, Body: `{"id":"1" "body":"b"}`, Status: 400, Reason: "malformed JSON at byte 11: invalid character '\"' after object key:value pair"},
		{Name: "malformed: form body", Method: "POST", Path: path, ContentType: js, Body: `id=1&body=b`, Status: 400, Reason: "malformed JSON at byte 1: *"},
		{Name: "malformed: second alarm after the first", Method: "POST", Path: path, ContentType: js, Body: `{"id":"1","body":"b"}{"id":"2","body":"c"}`, Status: 400, Reason: "malformed JSON: data after the JSON value"},
		{Name: "truncated inside a string", Method: "POST", Path: path, ContentType: js, Body: `{"id":"1","body":"b`, Status: 400, Reason: "truncated JSON"},
		{Name: "truncated after the key", Method: "POST", Path: path, ContentType: js, Body: `{"id":"1","body"`, Status: 400, Reason: "truncated JSON"},
		{Name: "wrong type: body number", Method: "POST", Path: path, ContentType: js, Body: `{"id":"1","body":5}`, Status: 400, Reason: `field "body" must be a string, not number`},
		{Name: "wrong type: id object", Method: "POST", Path: path, ContentType: js, Body: `{"id":{"x":1},"body":"b"}`, Status: 400, Reason: `field "id" must be a string, not object`},
		{Name: "wrong type: body array", Method: "POST", Path: path, ContentType: js, Body: `{"id":"1","body":["b"]}`, Status: 400, Reason: `field "body" must be a string, not array`},
		{Name: "wrong type: id bool", Method: "POST", Path: path, ContentType: js, Body: `{"id":true,"body":"b"}`, Status: 400, Reason: `field "id" must be a string, not bool`},
		{Name: "wrong type: array document", Method: "POST", Path: path, ContentType: js, Body: `[{"id":"1","body":"b"}]`, Status: 400, Reason: "request body must be a JSON object, not array"},
		{Name: "missing: both fields", Method: "POST", Path: path, ContentType: js, Body: `{}`, Status: 400, Reason: "missing or empty field(s): id, body"},
		{Name: "missing: id", Method: "POST", Path: path, ContentType: js, Body: `{"body":"b","request_id":"r"}`, Status: 400, Reason: "missing or empty field(s): id"},
		{Name: "missing: null document", Method: "POST", Path: path, ContentType: js, Body: `null`, Status: 400, Reason: "missing or empty field(s): id, body"},
		{Name: "empty: null fields", Method: "POST", Path: path, ContentType: js, Body: `{"id":null,"body":null}`, Status: 400, Reason: "missing or empty field(s): id, body"},
		{Name: "empty: blank fields", Method: "POST", Path: path, ContentType: js, Body: `{"id":" \t","body":"\n"}`, Status: 400, Reason: "missing or empty field(s): id, body"},
		{Name: "empty: whitespace body", Method: "POST", Path: path, ContentType: js, Body: " \r\n\t", Status: 400, Reason: "request body is empty"},
		{Name: "oversized, chunked", Method: "POST", Path: path, ContentType: js, Chunked: true, Body: `{"id":"1","body":"` + strings.Repeat("x", 2*badBodyLimit) + `"}`, Status: 413, Reason: "request body exceeds the limit of 1024 bytes"},
		{Name: "oversized, declared", Method: "POST", Path: path, ContentType: js, Body: `{"id":"1","body":"` + strings.Repeat("x", badBodyLimit) + `"}`, Status: 413, Reason: fmt.Sprintf("request body of %d bytes exceeds the limit of 1024 bytes", badBodyLimit+20)},
		{Name: "content type: form", Method: "POST", Path: path, ContentType: "application/x-www-form-urlencoded", Body: `{"id":"1","body":"b"}`, Status: 415, Reason: `content type "application/x-www-form-urlencoded" is not application/json`},
		{Name: "content type: unparsable", Method: "POST", Path: path, ContentType: "json;;", Body: `{"id":"1","body":"b"}`, Status: 415, Reason: `content type "json;;" is not application/json`},
		{Name: "method: PUT", Method: "PUT", Path: path, ContentType: js, Body: `{"id":"1","body":"b"}`, Status: 405, Reason: "method PUT is not allowed on /ID_REQ_KC_STORE7D3BPACKET; use POST"},
		{Name: "method: DELETE", Method: "DELETE", Path: path, Status: 405, Reason: "method DELETE is not allowed on /ID_REQ_KC_STORE7D3BPACKET; use POST"},
		{Name: "10,000-byte header", Method: "POST", Path: path, ContentType: js, Body: `{"id":"1","body":"b"}`, BigHeader: true, Status: 431, Reason: "request headers of 10* bytes exceed the limit of 8192 bytes"},
	})

	badinput.Slowloris(t, addr, alarm.CommandPath, slowAlarm)
	if n := b.count(); n != 0 {
		t.Fatalf("bad input reached the backend %d times: %+v", n, b.received)
	}

	// Still serving: a valid alarm is forwarded while a slow client holds a connection.
	slow := badinput.SlowBody(t, addr, alarm.CommandPath, slowAlarm)
	status, _, body := badinput.Case{Method: "POST", Path: path, ContentType: js, Body: `{"id":"0151","body":"after"}`, RequestID: "after-bad-input"}.Do(t, base)
	if status != 200 {
		t.Fatalf("valid alarm after bad input: %d %s", status, body)
	}
	slow.CheckTimedOut(t)
	b.mu.Lock()
	defer b.mu.Unlock()
	if want := (alarm.Alarm{ID: "0151", Body: "after", RequestID: "after-bad-input"}); len(b.received) != 1 || b.received[0] != want {
		t.Errorf("backend received %+v, want only %+v", b.received, want)
	}
}

// slowAlarm is a valid alarm, so that only its pace can be why it is not forwarded.
var slowAlarm = `{"id":"slow","body":"` + strings.Repeat("x", 500) + `"}`

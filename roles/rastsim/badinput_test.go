package rastsim

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lpsdev/lps/internal/testutil/badinput"
	"github.com/lpsdev/lps/roles"
)

// badBodyLimit is the role's body limit in the bad-input tests.
const badBodyLimit = 1024

// slowAlarm is a valid alarm, so that only its pace can be why it is not counted.
var slowAlarm = `{"id":"slow","body":"` + strings.Repeat("x", 500) + `"}`

// TestBadInput sends the simulator the bad input of issue 4. Its contract is the original
// Kotlin simulator's: a command is its path and Request-Id, and the body is read but ignored,
// so malformed, truncated, mistyped, incomplete, non-UTF-8 or non-JSON bodies are not bad
// input to it. They are answered Success and counted, like any other POST of a known command
// (a legacy backend that rejected them would be a different experiment). What it does reject
// is what the HTTP layer rejects: an oversized body (413), another method (405), a 10,000-byte
// header (431) and a slow client (cut off by the read timeout); those answer JSON and are not
// counted. An unknown command is the original's text 404 (TestRouting covers more paths).
// Afterwards the simulator still counts a valid command, also while a slow client holds a
// connection.
func TestBadInput(t *testing.T) {
	ts := startSim(t, Config{Model: ModelNone, Server: roles.Server{
		MaxBodyBytes: badBodyLimit, ReadTimeout: badinput.ReadTimeout, ReadHeaderTimeout: badinput.ReadTimeout,
	}})
	addr := strings.TrimPrefix(ts.url, "http://")

	const js = "application/json"
	path := "/" + AlarmCommand
	ignored := []badinput.Case{
		{Name: "malformed JSON", Body: `{"id":"1" "body":"b"}`, ContentType: js},
		{Name: "truncated JSON", Body: `{"id":"1","body":"b`, ContentType: js},
		{Name: "wrong types", Body: `{"id":1,"body":["b"]}`, ContentType: js},
		{Name: "missing fields", Body: `{}`, ContentType: js},
		{Name: "empty fields", Body: `{"id":"","body":" "}`, ContentType: js},
		{Name: "empty body", Body: ``, ContentType: js},
		{Name: "non-UTF-8 body", Body: "{\"id\":\"\xff\",\"body\":\"b\"}", ContentType: js},
		{Name: "text/plain", Body: `{"id":"1","body":"b"}`, ContentType: "text/plain"},
		{Name: "chunked within the limit", Body: strings.Repeat("x", badBodyLimit), Chunked: true},
	}
	for i := range ignored {
		c := &ignored[i]
		c.Method, c.Path, c.Status, c.Text = "POST", path, 200, "Success"
		c.RequestID = fmt.Sprintf("ignored-%d", i)
	}
	t.Run("ignored body", func(t *testing.T) { badinput.Run(t, ts.url, ignored) })
	rejected := []badinput.Case{
		{Name: "oversized, chunked", Method: "POST", Path: path, ContentType: js, Chunked: true, Body: strings.Repeat("x", badBodyLimit+1), Status: 413, Reason: "request body exceeds the limit of 1024 bytes"},
		{Name: "oversized, declared", Method: "POST", Path: path, ContentType: js, Body: strings.Repeat("x", badBodyLimit+1), Status: 413, Reason: "request body of 1025 bytes exceeds the limit of 1024 bytes"},
		{Name: "method: GET", Method: "GET", Path: path, Status: 405, Reason: "method GET is not allowed on ID_REQ_KC_STORE7D3BPACKET; use POST"},
		{Name: "method: DELETE", Method: "DELETE", Path: path, ContentType: js, Body: `{"id":"1","body":"b"}`, Status: 405, Reason: "method DELETE is not allowed on ID_REQ_KC_STORE7D3BPACKET; use POST"},
		{Name: "unknown command", Method: "POST", Path: "/ID_NOPE", ContentType: js, Body: `{"id":"1","body":"b"}`, Status: 404, Text: "Command not found"},
		{Name: "10,000-byte header", Method: "POST", Path: path, ContentType: js, Body: `{"id":"1","body":"b"}`, BigHeader: true, Status: 431, Reason: "request headers of 10* bytes exceed the limit of 8192 bytes"},
	}
	for i := range rejected {
		rejected[i].RequestID = fmt.Sprintf("rejected-%d", i)
	}
	t.Run("rejected", func(t *testing.T) { badinput.Run(t, ts.url, rejected) })
	badinput.Slowloris(t, addr, path, slowAlarm)
	// A Request-Id it cannot use (too long, spaces, non-ASCII) is replaced, so the command is
	// counted under a fresh id, not under the caller's bytes.
	t.Run("unusable Request-Id", func(t *testing.T) {
		for _, id := range []string{strings.Repeat("r", 129), "a b", "\xffid"} {
			badinput.Case{Method: "POST", Path: path, RequestID: id, Status: 200, Text: "Success"}.Check(t, ts.url)
			if n := ts.Received()[id]; n != 0 {
				t.Errorf("counted %d times under the unusable id %q", n, id)
			}
		}
	})

	slow := badinput.SlowBody(t, addr, path, slowAlarm)
	badinput.Case{Method: "POST", Path: path, ContentType: js, Body: `{"id":"0151","body":"after"}`, RequestID: "after-bad-input", Status: 200, Text: "Success"}.Check(t, ts.url)
	slow.CheckTimedOut(t)

	got := ts.Received()
	for i := range ignored {
		if id := fmt.Sprintf("ignored-%d", i); got[id] != 1 {
			t.Errorf("%s (%s) counted %d times, want 1", id, ignored[i].Name, got[id])
		}
	}
	for i := range rejected {
		if id := fmt.Sprintf("rejected-%d", i); got[id] != 0 {
			t.Errorf("%s (%s) counted %d times, want 0", id, rejected[i].Name, got[id])
		}
	}
	if got["after-bad-input"] != 1 {
		t.Errorf("the valid command after bad input counted %d times, want 1", got["after-bad-input"])
	}
	// ignored, three unusable ids under fresh ones, the valid one; no slow client.
	if c := ts.Counts(); c.Received != len(ignored)+3+1 || c.Duplicates != 0 {
		t.Errorf("Counts = %+v, want %d received and no duplicates", c, len(ignored)+4)
	}
}

package rastsim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lpsdev/lps/roles"
)

// The bad-input tests give the role a short read timeout, so a slow client is cut off within
// the test's time, and bound every exchange by badDeadline.
const (
	badReadTimeout = time.Second
	badDeadline    = 10 * time.Second
	badBodyLimit   = 1024
)

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
		MaxBodyBytes: badBodyLimit, ReadTimeout: badReadTimeout, ReadHeaderTimeout: badReadTimeout,
	}})
	addr := strings.TrimPrefix(ts.url, "http://")

	const js = "application/json"
	path := "/" + AlarmCommand
	ignored := []badCase{
		{name: "malformed JSON", body: `{"id":"1" "body":"b"}`, ctype: js},
		{name: "truncated JSON", body: `{"id":"1","body":"b`, ctype: js},
		{name: "wrong types", body: `{"id":1,"body":["b"]}`, ctype: js},
		{name: "missing fields", body: `{}`, ctype: js},
		{name: "empty fields", body: `{"id":"","body":" "}`, ctype: js},
		{name: "empty body", body: ``, ctype: js},
		{name: "non-UTF-8 body", body: "{\"id\":\"\xff\",\"body\":\"b\"}", ctype: js},
		{name: "text/plain", body: `{"id":"1","body":"b"}`, ctype: "text/plain"},
		{name: "chunked within the limit", body: strings.Repeat("x", badBodyLimit), chunked: true},
	}
	t.Run("ignored body", func(t *testing.T) {
		for i, tc := range ignored {
			tc.method, tc.path, tc.status, tc.text = "POST", path, 200, "Success"
			tc.requestID = fmt.Sprintf("ignored-%d", i)
			t.Run(tc.name, func(t *testing.T) { tc.check(t, ts.url) })
		}
	})
	rejected := []badCase{
		{name: "oversized, chunked", method: "POST", path: path, ctype: js, chunked: true, body: strings.Repeat("x", badBodyLimit+1), status: 413, reason: "request body exceeds the limit of 1024 bytes"},
		{name: "oversized, declared", method: "POST", path: path, ctype: js, body: strings.Repeat("x", badBodyLimit+1), status: 413, reason: "request body of 1025 bytes exceeds the limit of 1024 bytes"},
		{name: "method: GET", method: "GET", path: path, status: 405, reason: "method GET is not allowed on ID_REQ_KC_STORE7D3BPACKET; use POST"},
		{name: "method: DELETE", method: "DELETE", path: path, ctype: js, body: `{"id":"1","body":"b"}`, status: 405, reason: "method DELETE is not allowed on ID_REQ_KC_STORE7D3BPACKET; use POST"},
		{name: "unknown command", method: "POST", path: "/ID_NOPE", ctype: js, body: `{"id":"1","body":"b"}`, status: 404, text: "Command not found"},
		{name: "10,000-byte header", method: "POST", path: path, ctype: js, body: `{"id":"1","body":"b"}`, bigHeader: true, status: 431, reason: "request headers of 10* bytes exceed the limit of 8192 bytes"},
	}
	t.Run("rejected", func(t *testing.T) {
		for i, tc := range rejected {
			tc.requestID = fmt.Sprintf("rejected-%d", i)
			t.Run(tc.name, func(t *testing.T) { tc.check(t, ts.url) })
		}
	})
	t.Run("slowloris body", func(t *testing.T) {
		status, reason, took := slowBody(t, addr, path, slowAlarm)()
		if status != 400 || !strings.HasPrefix(reason, "reading request body: ") || !strings.Contains(reason, "i/o timeout") {
			t.Errorf("got %d %q, want 400 with the body read's timeout", status, reason)
		}
		if took < badReadTimeout {
			t.Errorf("answered after %s, before the read timeout of %s", took, badReadTimeout)
		}
	})
	t.Run("slowloris headers", func(t *testing.T) {
		if took := slowHeaders(t, addr, path); took < badReadTimeout {
			t.Errorf("closed after %s, before the read header timeout of %s", took, badReadTimeout)
		}
	})
	// A Request-Id it cannot use (too long, spaces, non-ASCII) is replaced, so the command is
	// counted under a fresh id, not under the caller's bytes.
	t.Run("unusable Request-Id", func(t *testing.T) {
		for _, id := range []string{strings.Repeat("r", 129), "a b", "\xffid"} {
			badCase{method: "POST", path: path, requestID: id, status: 200, text: "Success"}.check(t, ts.url)
			if n := ts.Received()[id]; n != 0 {
				t.Errorf("counted %d times under the unusable id %q", n, id)
			}
		}
	})

	slow := slowBody(t, addr, path, slowAlarm)
	badCase{method: "POST", path: path, ctype: js, body: `{"id":"0151","body":"after"}`, requestID: "after-bad-input", status: 200, text: "Success"}.check(t, ts.url)
	if status, reason, _ := slow(); status != 400 {
		t.Errorf("concurrent slow client got %d %q, want 400", status, reason)
	}

	got := ts.Received()
	for i := range ignored {
		if id := fmt.Sprintf("ignored-%d", i); got[id] != 1 {
			t.Errorf("%s (%s) counted %d times, want 1", id, ignored[i].name, got[id])
		}
	}
	for i := range rejected {
		if id := fmt.Sprintf("rejected-%d", i); got[id] != 0 {
			t.Errorf("%s (%s) counted %d times, want 0", id, rejected[i].name, got[id])
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

// badCase is one request of bad input and the answer it must get.
type badCase struct {
	name         string
	method, path string
	ctype        string // "" sends no Content-Type
	body         string
	chunked      bool   // hide the length: the body goes chunked
	bigHeader    bool   // add a 10,000-byte header
	requestID    string // "" sends none
	status       int
	// reason is the JSON error's reason; a * matches any text. text, when set, is the exact
	// plain-text answer instead (the original simulator's "Success" and "Command not found").
	reason, text string
}

func (c badCase) do(t *testing.T, base string) (int, http.Header, string) {
	t.Helper()
	var body io.Reader = strings.NewReader(c.body)
	if c.chunked {
		body = io.MultiReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), badDeadline)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, c.method, base+c.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if c.ctype != "" {
		req.Header.Set("Content-Type", c.ctype)
	}
	if c.bigHeader {
		req.Header.Set("X-Big", strings.Repeat("x", 10000))
	}
	if c.requestID != "" {
		req.Header.Set("Request-Id", c.requestID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func (c badCase) check(t *testing.T, base string) {
	t.Helper()
	status, header, body := c.do(t, base)
	if status != c.status {
		t.Fatalf("status %d (%s), want %d", status, body, c.status)
	}
	if status == http.StatusMethodNotAllowed && header.Get("Allow") != http.MethodPost {
		t.Errorf("405 with Allow %q, want POST", header.Get("Allow"))
	}
	if c.text != "" {
		if ct := header.Get("Content-Type"); body != c.text || ct != "text/plain; charset=utf-8" {
			t.Errorf("answer %q (%s), want %q as text/plain", body, ct, c.text)
		}
		return
	}
	if ct := header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	matchReason(t, body, c.reason)
}

// matchReason checks that body is exactly {"status":"error","reason":...} with the reason want,
// in which a * matches any text.
func matchReason(t *testing.T, body, want string) {
	t.Helper()
	var e struct{ Status, Reason string }
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Status != "error" {
		t.Fatalf("body %q is not a JSON error (%v)", body, err)
	}
	if !glob(want, e.Reason) {
		t.Errorf("reason %q, want %q", e.Reason, want)
	}
}

// glob reports whether s matches pattern, in which each * stands for any text.
func glob(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for i, p := range parts[1:] {
		if i == len(parts)-2 {
			return strings.HasSuffix(s, p)
		}
		j := strings.Index(s, p)
		if j < 0 {
			return false
		}
		s = s[j+len(p):]
	}
	return s == ""
}

// slowBody sends a POST's headers at once and then body one byte every 20 ms over a raw
// connection, as a slowloris client does (slowAlarm would take 10 s). The returned answer waits
// for the server's answer and returns its status, its JSON reason and how long after
// connecting it came.
func slowBody(t *testing.T, addr, path, body string) (answer func() (status int, reason string, took time.Duration)) {
	t.Helper()
	conn, began := dialRaw(t, addr)
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, addr, len(body))
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	drip(t, conn, body)
	return func() (int, string, time.Duration) {
		t.Helper()
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer to the slow body: %v", err)
		}
		took := time.Since(began)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var e struct{ Reason string }
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("answer %d %q is not JSON", resp.StatusCode, b)
		}
		if !resp.Close {
			t.Errorf("the server keeps the slow client's connection open")
		}
		return resp.StatusCode, e.Reason, took
	}
}

// slowHeaders sends a request line and the start of its headers at once and then a header
// value one byte every 20 ms, so the headers never end; it returns how long after connecting
// the server closed the connection, failing if it answered anything. (Dripped from the first
// byte, the request line or a header name could be cut short when the timeout strikes, and
// net/http answers that with a plain-text 400 rather than closing.)
func slowHeaders(t *testing.T, addr, path string) time.Duration {
	t.Helper()
	conn, began := dialRaw(t, addr)
	if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nX-Slow: ", path, addr); err != nil {
		t.Fatal(err)
	}
	drip(t, conn, strings.Repeat("s", 500)+"\r\n\r\n")
	got, err := io.ReadAll(conn)
	took := time.Since(began)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server did not close the connection within %s", badDeadline)
	}
	if len(got) > 0 {
		t.Errorf("the server answered %q; it should close without a word", got)
	}
	return took
}

// dialRaw connects to addr with every read bounded by badDeadline; the connection closes when
// the test ends.
func dialRaw(t *testing.T, addr string) (net.Conn, time.Time) {
	t.Helper()
	began := time.Now()
	conn, err := net.DialTimeout("tcp", addr, badDeadline)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetReadDeadline(began.Add(badDeadline))
	return conn, began
}

// drip writes s to conn one byte every 20 ms in the background until it is written, a write
// fails (the server closed) or the test ends.
func drip(t *testing.T, conn net.Conn, s string) {
	done, stopped := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(done); <-stopped })
	go func() {
		defer close(stopped)
		tick := time.NewTicker(20 * time.Millisecond) // the client's pace, not a synchronisation
		defer tick.Stop()
		for _, c := range []byte(s) {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if _, err := conn.Write([]byte{c}); err != nil {
				return
			}
		}
	}()
}

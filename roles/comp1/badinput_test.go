package comp1_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/comp1"
)

// The bad-input tests give the role a short read timeout, so a slow client is cut off within
// the test's time, and bound every exchange by badDeadline.
const (
	badReadTimeout = time.Second
	badDeadline    = 10 * time.Second
	badBodyLimit   = 1024
)

// slowAlarm is a valid device alarm, so that only its pace can be why it is not forwarded
// (unknown fields are accepted).
var slowAlarm = `{"phone":"0151","branch":"2001","headnumber":"8023","triggertime":"2026-11-26T04:00:00Z","pad":"` + strings.Repeat("x", 400) + `"}`

// TestBadInputIsRejectedAndNotForwarded sends comp1 the bad input of issue 4 that
// TestRejectsBadAlarms does not (that one covers missing query parameters and JSON fields, a
// bad trigger time in both forms, null and bool fields, a number for the trigger time and a
// truncated body): each gets its status and JSON reason, none reaches component 2, and comp1
// still forwards a valid alarm afterwards, also while a slow client holds a connection.
func TestBadInputIsRejectedAndNotForwarded(t *testing.T) {
	rec := &recorder{}
	up := httptest.NewServer(rec)
	t.Cleanup(up.Close)
	cfg := comp1.Config{Upstream: roles.Upstream{URL: up.URL, Timeout: badDeadline}}
	cfg.Listener = testutil.Listen(t)
	cfg.MaxBodyBytes = badBodyLimit
	cfg.ReadTimeout, cfg.ReadHeaderTimeout = badReadTimeout, badReadTimeout
	c, err := comp1.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, c)
	addr := c.Addr().String()
	base := "http://" + addr
	forwarded := func() int {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.alarms)
	}

	const js = "application/json"
	path := comp1.Path
	const tt = `"triggertime":"2026-11-26T04:00:00Z"`
	good := `{"phone":"0151","branch":"2001","headnumber":"8023",` + tt + `}`
	const query = "?Phone=0151&Branch=2001&Headnumber=8023&TriggerTime=2026-11-26T04:00:00Z"
	for _, tc := range []badCase{
		{name: "malformed: missing comma", method: "POST", path: path, ctype: js, body: `{"phone":"0151" "branch":"2001"}`, status: 400, reason: "malformed JSON at byte 17: invalid character '\"' after object key:value pair"},
		{name: "malformed: form body", method: "POST", path: path, ctype: js, body: `phone=0151&branch=2001`, status: 400, reason: "malformed JSON at byte 1: *"},
		{name: "malformed: second alarm after the first", method: "POST", path: path, ctype: js, body: good + good, status: 400, reason: "malformed JSON: data after the JSON value"},
		{name: "truncated inside a string", method: "POST", path: path, ctype: js, body: good[:len(good)-5], status: 400, reason: "truncated JSON"},
		{name: "wrong type: phone object", method: "POST", path: path, ctype: js, body: `{"phone":{"n":1},"branch":"2001","headnumber":"8023",` + tt + `}`, status: 400, reason: `field "phone" must be a string, not object`},
		{name: "wrong type: branch array", method: "POST", path: path, ctype: js, body: `{"phone":"0151","branch":[2001],"headnumber":"8023",` + tt + `}`, status: 400, reason: `field "branch" must be a string, not array`},
		{name: "wrong type: triggertime bool", method: "POST", path: path, ctype: js, body: `{"phone":"0151","branch":"2001","headnumber":"8023","triggertime":true}`, status: 400, reason: `field "triggertime" must be a string, not bool`},
		{name: "wrong type: array document", method: "POST", path: path, ctype: js, body: "[" + good + "]", status: 400, reason: "request body must be a JSON object, not array"},
		{name: "missing: every field", method: "POST", path: path, ctype: js, body: `{}`, status: 400, reason: "missing or empty field(s): phone, branch, headnumber, triggertime"},
		{name: "missing: null document", method: "POST", path: path, ctype: js, body: `null`, status: 400, reason: "missing or empty field(s): phone, branch, headnumber, triggertime"},
		{name: "empty: JSON fields", method: "POST", path: path, ctype: js, body: `{"phone":"","branch":" ","headnumber":"\t",` + tt + `}`, status: 400, reason: "missing or empty field(s): phone, branch, headnumber"},
		{name: "empty: trigger time", method: "POST", path: path, ctype: js, body: `{"phone":"0151","branch":"2001","headnumber":"8023","triggertime":""}`, status: 400, reason: "missing or empty field(s): triggertime"},
		{name: "empty: query values", method: "POST", path: path + "?Phone=&Branch=2001&Headnumber=&TriggerTime=2026-11-26T04:00:00Z", status: 400, reason: "missing or empty field(s): Phone, Headnumber"},
		{name: "empty: body", method: "POST", path: path, ctype: js, body: "", status: 400, reason: "request body is empty"},
		{name: "empty: body without content type", method: "POST", path: path, body: " \n", status: 400, reason: "request body is empty"},
		{name: "non-UTF-8 body", method: "POST", path: path, ctype: js, body: "{\"phone\":\"\xff0151\",\"branch\":\"2001\",\"headnumber\":\"8023\"," + tt + "}", status: 400, reason: "request body is not valid UTF-8"},
		{name: "non-UTF-8 query value", method: "POST", path: path + "?Phone=%FF0151&Branch=2001&Headnumber=8023&TriggerTime=2026-11-26T04:00:00Z", status: 400, reason: "Phone is not valid UTF-8"},
		{name: "oversized, chunked", method: "POST", path: path, ctype: js, chunked: true, body: `{"phone":"` + strings.Repeat("1", 2*badBodyLimit) + `"}`, status: 413, reason: "request body exceeds the limit of 1024 bytes"},
		{name: "oversized, declared", method: "POST", path: path, ctype: js, body: `{"phone":"` + strings.Repeat("1", badBodyLimit) + `"}`, status: 413, reason: fmt.Sprintf("request body of %d bytes exceeds the limit of 1024 bytes", badBodyLimit+12)},
		{name: "content type: text", method: "POST", path: path, ctype: "text/plain", body: good, status: 415, reason: `content type "text/plain" is not application/json`},
		{name: "content type: form", method: "POST", path: path, ctype: "application/x-www-form-urlencoded", body: good, status: 415, reason: `content type "application/x-www-form-urlencoded" is not application/json`},
		{name: "method: GET with a valid query", method: "GET", path: path + query, status: 405, reason: "method GET is not allowed on /api/v1/simple; use POST"},
		{name: "method: PUT", method: "PUT", path: path, ctype: js, body: good, status: 405, reason: "method PUT is not allowed on /api/v1/simple; use POST"},
		{name: "other path", method: "POST", path: "/api/v1/simple/x" + query, status: 404, reason: "no such endpoint /api/v1/simple/x; this service serves POST /api/v1/simple"},
		{name: "10,000-byte header", method: "POST", path: path, ctype: js, body: good, bigHeader: true, status: 431, reason: "request headers of 10* bytes exceed the limit of 8192 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, base) })
	}

	t.Run("slowloris body", func(t *testing.T) {
		status, reason, took := slowBody(t, addr, comp1.Path, slowAlarm)()
		if status != 400 || !strings.HasPrefix(reason, "reading request body: ") || !strings.Contains(reason, "i/o timeout") {
			t.Errorf("got %d %q, want 400 with the body read's timeout", status, reason)
		}
		if took < badReadTimeout {
			t.Errorf("answered after %s, before the read timeout of %s", took, badReadTimeout)
		}
	})
	t.Run("slowloris headers", func(t *testing.T) {
		if took := slowHeaders(t, addr, comp1.Path); took < badReadTimeout {
			t.Errorf("closed after %s, before the read header timeout of %s", took, badReadTimeout)
		}
	})
	if n := forwarded(); n != 0 {
		t.Fatalf("bad input reached component 2 %d times: %+v", n, rec.alarms)
	}

	// Still serving: a valid alarm is forwarded while a slow client holds a connection.
	slow := slowBody(t, addr, comp1.Path, slowAlarm)
	status, _, body := badCase{method: "POST", path: path, ctype: js, body: good}.do(t, base)
	if status != 200 {
		t.Fatalf("valid alarm after bad input: %d %s", status, body)
	}
	if status, reason, _ := slow(); status != 400 {
		t.Errorf("concurrent slow client got %d %q, want 400", status, reason)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := roles.Alarm{ID: "0151", Body: "Phone: 0151, Branch: 2001, Headnumber: 8023, TriggerTime: 2026-11-26T04:00:00Z"}
	if len(rec.alarms) != 1 || rec.alarms[0] != want {
		t.Errorf("component 2 received %+v, want only %+v", rec.alarms, want)
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
	// reason is the JSON error's reason; a * matches any text.
	reason string
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

// Package badinput holds what the bad-input tests of the HTTP roles share: a table of requests
// and the answer each must get (a JSON error with a reason, or the simulator's plain text), and
// slowloris clients that drip a body or a header over a raw connection.
//
// A role under test is given ReadTimeout as its read and read-header timeout, so that a slow
// client is cut off within the test's time; every exchange here is bounded by Deadline.
package badinput

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
)

const (
	// ReadTimeout is the read and read-header timeout the role under test gets.
	ReadTimeout = time.Second
	// Deadline bounds every request, answer and raw connection of these tests.
	Deadline = 10 * time.Second
)

// Case is one request of bad input and the answer it must get.
type Case struct {
	Name         string
	Method, Path string
	ContentType  string // "" sends no Content-Type
	Body         string
	Chunked      bool   // hide the length: the body goes chunked
	BigHeader    bool   // add a 10,000-byte header
	RequestID    string // "" sends none
	Status       int
	// Reason is the JSON error's reason; a * matches any text. Text, when set, is the exact
	// plain-text answer instead (the original simulator's "Success" and "Command not found").
	Reason, Text string
}

// Run checks every case against the server at base (http://host:port), each as a subtest
// named after it.
func Run(t *testing.T, base string, cases []Case) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) { c.Check(t, base) })
	}
}

// Do sends the case's request to base and returns the answer's status, headers and body.
func (c Case) Do(t testing.TB, base string) (int, http.Header, string) {
	t.Helper()
	var body io.Reader = strings.NewReader(c.Body)
	if c.Chunked {
		body = io.MultiReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Deadline)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, c.Method, base+c.Path, body)
	if err != nil {
		t.Fatal(err)
	}
	if c.ContentType != "" {
		req.Header.Set("Content-Type", c.ContentType)
	}
	if c.BigHeader {
		req.Header.Set("X-Big", strings.Repeat("x", 10000))
	}
	if c.RequestID != "" {
		req.Header.Set("Request-Id", c.RequestID)
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

// Check sends the case's request to base and checks its status, its Allow header on a 405,
// and its body: the exact Text as text/plain, or else a JSON error with the Reason.
func (c Case) Check(t testing.TB, base string) {
	t.Helper()
	status, header, body := c.Do(t, base)
	if status != c.Status {
		t.Fatalf("status %d (%s), want %d", status, body, c.Status)
	}
	if status == http.StatusMethodNotAllowed && header.Get("Allow") != http.MethodPost {
		t.Errorf("405 with Allow %q, want POST", header.Get("Allow"))
	}
	if c.Text != "" {
		if ct := header.Get("Content-Type"); body != c.Text || ct != "text/plain; charset=utf-8" {
			t.Errorf("answer %q (%s), want %q as text/plain", body, ct, c.Text)
		}
		return
	}
	if ct := header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	MatchReason(t, body, c.Reason)
}

// MatchReason checks that body is exactly {"status":"error","reason":...} with the reason want,
// in which a * matches any text.
func MatchReason(t testing.TB, body, want string) {
	t.Helper()
	var e struct{ Status, Reason string }
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Status != "error" {
		t.Fatalf("body %q is not a JSON error (%v)", body, err)
	}
	if !Glob(want, e.Reason) {
		t.Errorf("reason %q, want %q", e.Reason, want)
	}
}

// Glob reports whether s matches pattern, in which each * stands for any text.
func Glob(pattern, s string) bool {
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

// Slowloris runs the two slow clients against the POST endpoint path at addr (host:port) as
// the subtests "slowloris body" and "slowloris headers": one sends body (which should be valid,
// so that only its pace can be why it is refused) too slowly and must get the body read's
// timeout; the other never finishes its headers and must be cut off without an answer. Neither
// may be cut off before ReadTimeout.
func Slowloris(t *testing.T, addr, path, body string) {
	t.Helper()
	t.Run("slowloris body", func(t *testing.T) {
		SlowBody(t, addr, path, body).CheckTimedOut(t)
	})
	t.Run("slowloris headers", func(t *testing.T) {
		if took := SlowHeaders(t, addr, path); took < ReadTimeout {
			t.Errorf("closed after %s, before the read header timeout of %s", took, ReadTimeout)
		}
	})
}

// SlowClient is a connection that sent a POST's headers and is dripping its body.
type SlowClient struct {
	conn  net.Conn
	began time.Time
}

// SlowBody sends a POST's headers at once and then body one byte every 20 ms over a raw
// connection, as a slowloris client does (500 bytes would take 10 s). The connection closes
// when the test ends.
func SlowBody(t testing.TB, addr, path, body string) *SlowClient {
	t.Helper()
	conn, began := dialRaw(t, addr)
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, addr, len(body))
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	drip(t, conn, body)
	return &SlowClient{conn: conn, began: began}
}

// Answer waits for the server's answer and returns its status, its JSON reason and how long
// after connecting it came; it fails the test if the server keeps the connection open.
func (s *SlowClient) Answer(t testing.TB) (status int, reason string, took time.Duration) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(s.conn), nil)
	if err != nil {
		t.Fatalf("no answer to the slow body: %v", err)
	}
	took = time.Since(s.began)
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

// CheckTimedOut waits for the server's answer and checks that it is 408 Request Timeout with
// the body read's timeout as the reason, given no sooner than ReadTimeout.
func (s *SlowClient) CheckTimedOut(t testing.TB) {
	t.Helper()
	status, reason, took := s.Answer(t)
	if status != http.StatusRequestTimeout || !strings.HasPrefix(reason, "reading request body: ") || !strings.Contains(reason, "i/o timeout") {
		t.Errorf("got %d %q, want 408 with the body read's timeout", status, reason)
	}
	if took < ReadTimeout {
		t.Errorf("answered after %s, before the read timeout of %s", took, ReadTimeout)
	}
}

// SlowHeaders sends a request line and the start of its headers at once and then a header
// value one byte every 20 ms, so the headers never end; it returns how long after connecting
// the server closed the connection, failing if it answered anything. (Dripped from the first
// byte, the request line or a header name could be cut short when the timeout strikes, and
// net/http answers that with a plain-text 400 rather than closing.)
func SlowHeaders(t testing.TB, addr, path string) time.Duration {
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
		t.Fatalf("the server did not close the connection within %s", Deadline)
	}
	if len(got) > 0 {
		t.Errorf("the server answered %q; it should close without a word", got)
	}
	return took
}

// dialRaw connects to addr with every read bounded by Deadline; the connection closes when
// the test ends.
func dialRaw(t testing.TB, addr string) (net.Conn, time.Time) {
	t.Helper()
	began := time.Now()
	conn, err := net.DialTimeout("tcp", addr, Deadline)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetReadDeadline(began.Add(Deadline))
	return conn, began
}

// drip writes s to conn one byte every 20 ms in the background until it is written, a write
// fails (the server closed) or the test ends.
func drip(t testing.TB, conn net.Conn, s string) {
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

package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lpsdev/lps/internal/testutil"
)

// listen opens a loopback listener for a test.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// serve runs s until the test ends and returns its base URL and a function that stops it
// and returns Serve's error.
func serve(t *testing.T, s *Server) (string, func() error) {
	t.Helper()
	if s.Listener == nil {
		s.Listener = listen(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				err = errors.New("server did not stop")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return "http://" + s.Listener.Addr().String(), stop
}

func protoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Seen-Proto", r.Proto)
		w.Header().Set("X-Seen-Id", r.Header.Get(RequestIDHeader))
		w.Write([]byte("ok"))
	})
}

func TestServerSpeaksHTTP1AndH2COnOnePort(t *testing.T) {
	url, _ := serve(t, &Server{Handler: protoHandler()})
	for _, tc := range []struct {
		http2 bool
		want  string
	}{{false, "HTTP/1.1"}, {true, "HTTP/2.0"}} {
		c := &Client{HTTP2: tc.http2, Timeout: 5 * time.Second}
		resp, err := c.Post(context.Background(), url+"/x", "text/plain", []byte("hi"))
		if err != nil {
			t.Fatalf("http2=%v: %v", tc.http2, err)
		}
		if got := resp.Header.Get("X-Seen-Proto"); got != tc.want || resp.Proto != tc.want {
			t.Errorf("http2=%v: server saw %q, client got %q, want %q", tc.http2, got, resp.Proto, tc.want)
		}
	}
}

func TestClientPropagatesRequestID(t *testing.T) {
	url, _ := serve(t, &Server{Handler: protoHandler()})
	c := &Client{}
	resp, err := c.Post(WithRequestID(context.Background(), "abc-123"), url, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Header.Get("X-Seen-Id"); got != "abc-123" {
		t.Errorf("upstream saw Request-Id %q, want abc-123", got)
	}
	resp, err = c.Post(context.Background(), url, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Header.Get("X-Seen-Id"); len(got) != 36 {
		t.Errorf("without an id the client should make a UUID, upstream saw %q", got)
	}
}

func TestRequestIDMiddleware(t *testing.T) {
	url, _ := serve(t, &Server{Handler: RequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(RequestIDFrom(r.Context())))
	}))})
	for _, tc := range []struct {
		name, in string
		keep     bool
	}{
		{"kept", "req-1", true},
		{"absent", "", false},
		{"too long", strings.Repeat("a", 200), false},
		{"with space", "a b", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			if tc.in != "" {
				req.Header.Set(RequestIDHeader, tc.in)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if tc.keep && string(body) != tc.in {
				t.Errorf("id %q not kept, handler saw %q", tc.in, body)
			}
			if !tc.keep && (string(body) == tc.in || len(body) != 36) {
				t.Errorf("id %q should be replaced by a UUID, handler saw %q", tc.in, body)
			}
			if resp.Header.Get(RequestIDHeader) != string(body) {
				t.Errorf("response echoes %q, handler saw %q", resp.Header.Get(RequestIDHeader), body)
			}
		})
	}
}

func TestClientErrorsMapToGatewayStatuses(t *testing.T) {
	slow := make(chan struct{})
	t.Cleanup(func() { close(slow) })
	url, _ := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/500":
			http.Error(w, "broken", http.StatusInternalServerError)
		case "/slow":
			select {
			case <-slow:
			case <-r.Context().Done():
			}
		default:
			w.Write([]byte("ok"))
		}
	}), ShutdownTimeout: time.Second})
	refused := listen(t)
	refusedURL := "http://" + refused.Addr().String()
	refused.Close()

	c := &Client{Timeout: 300 * time.Millisecond}
	for _, tc := range []struct {
		name, url string
		status    int
		is        error
	}{
		{"ok", url + "/", http.StatusOK, nil},
		{"non-2xx", url + "/500", http.StatusBadGateway, nil},
		{"refused", refusedURL, http.StatusBadGateway, ErrUpstreamUnreachable},
		{"timeout", url + "/slow", http.StatusGatewayTimeout, ErrUpstreamTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Post(context.Background(), tc.url, "text/plain", nil)
			if got := UpstreamStatus(err); got != tc.status {
				t.Errorf("status %d for %v, want %d", got, err, tc.status)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
		})
	}
	var se *StatusError
	_, err := c.Post(context.Background(), url+"/500", "text/plain", nil)
	if !errors.As(err, &se) || se.Status != 500 || !strings.Contains(string(se.Body), "broken") {
		t.Errorf("want a StatusError 500 with the body, got %v", err)
	}
}

func TestServerLimitsBody(t *testing.T) {
	url, _ := serve(t, &Server{MaxBodyBytes: 10, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := ReadJSONBody(r); err != nil {
			WriteErr(w, err)
			return
		}
		w.Write([]byte("ok"))
	})})
	for _, tc := range []struct {
		name    string
		body    string
		chunked bool
		status  int
	}{
		{"small", `{"a":1}`, false, 200},
		{"declared too large", `{"a":"0123456789"}`, false, 413},
		{"chunked too large", `{"a":"0123456789"}`, true, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body) // hides the length: sent chunked
			}
			resp, err := http.Post(url, "application/json", body)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
}

func TestServerRejectsHugeHeader(t *testing.T) {
	url, _ := serve(t, &Server{Handler: protoHandler()})
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("X-Big", strings.Repeat("x", 10000))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d for a 10,000-byte header, want 431", resp.StatusCode)
	}
}

func TestGracefulShutdownFinishesRequestsInFlight(t *testing.T) {
	const n = 5
	entered := make(chan struct{}, n)
	release := make(chan struct{})
	url, stop := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		w.Write([]byte("done"))
	})})
	type result struct {
		body string
		err  error
	}
	results := make(chan result, n)
	for i := range n {
		c := &Client{HTTP2: i%2 == 0, Timeout: 20 * time.Second}
		go func() {
			resp, err := c.Post(context.Background(), url, "text/plain", nil)
			if err != nil {
				results <- result{err: err}
				return
			}
			results <- result{body: string(resp.Body)}
		}()
	}
	for range n {
		<-entered
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// New connections are refused once the shutdown began; wait for that before releasing.
	testutil.Eventually(t, 10*time.Second, func() error { // polling the listener state; nothing to await
		conn, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "http://"), time.Second)
		if err != nil {
			return nil
		}
		conn.Close()
		return errors.New("listener still accepting after shutdown began")
	})
	close(release)
	for range n {
		r := <-results
		if r.err != nil || r.body != "done" {
			t.Errorf("request in flight during shutdown: body %q, err %v", r.body, r.err)
		}
	}
	if err := <-stopped; err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// failingBody is a request body whose every read fails with err.
type failingBody struct{ err error }

func (b failingBody) Read([]byte) (int, error) { return 0, b.err }

func TestReadJSONBodyReadErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		reason string
	}{
		{"read timeout", &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, http.StatusRequestTimeout, "reading request body: read tcp: i/o timeout"},
		{"over the limit", &http.MaxBytesError{Limit: 10}, http.StatusRequestEntityTooLarge, "request body exceeds the limit of 10 bytes"},
		{"cut short", io.ErrUnexpectedEOF, http.StatusBadRequest, "reading request body: unexpected EOF"},
		{"connection reset", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, http.StatusBadRequest, "reading request body: read tcp: connection reset by peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", failingBody{tc.err})
			r.Header.Set("Content-Type", "application/json")
			_, err := ReadJSONBody(r)
			var he *HTTPError
			if !errors.As(err, &he) || he.Status != tc.status || he.Reason != tc.reason {
				t.Errorf("got %v, want %d %s", err, tc.status, tc.reason)
			}
		})
	}
}

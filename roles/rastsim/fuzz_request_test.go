package rastsim

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lpsdev/lps/roles"
)

// fuzzMethods are the methods FuzzCommandRequest picks from.
var fuzzMethods = []string{http.MethodPost, http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodHead, http.MethodOptions}

// FuzzCommandRequest sends a running simulator arbitrary methods, paths, Request-Ids and
// bodies and checks its parsing of them against its contract: a POST of a path the mapping
// finds (exactly or as a substring, ignoring case) is answered Success and counted once, under
// its Request-Id when usable and under a fresh one otherwise; a body over the limit is a 413,
// another method on such a path a 405, an unknown path the original's 404, a path that is not
// clean a redirect — none of them counted. The mapping is the production one when the shared data is there.
func FuzzCommandRequest(f *testing.F) {
	const limit = 4096
	for _, seed := range []struct {
		method   uint8
		path, id string
		body     string
	}{
		{0, "ID_REQ_KC_STORE7D3BPACKET", "r-1", `{"id":"1","body":"b"}`},
		{0, "store7d3b", "", ""},
		{0, "id_req_lcmd_mongetep", "a b", "x"},
		{1, "ID_REQ_KC_STORE7D3BPACKET", "r-2", ""},
		{0, "NOPE", "r-3", ""},
		{0, "", "r-4", ""},
		{0, "ID_REQ_KC_STORE7D3BPACKET/x", "r-5", ""},
		{0, "a/../ID_REQ_KC_STORE7D3BPACKET", "r-6", ""},
		{0, "%ff", "\xff", strings.Repeat("x", limit+1)},
	} {
		f.Add(seed.method, seed.path, seed.id, []byte(seed.body))
	}
	m := DefaultMapping()
	for _, p := range []string{
		filepath.Join("..", "..", "..", "shared", "data", "rast", "gs_requests_mapping_prod_workload.json"),
		filepath.Join("/work", "shared", "data", "rast", "gs_requests_mapping_prod_workload.json"),
	} {
		if file, err := os.Open(p); err == nil {
			m, err = LoadMapping(file)
			file.Close()
			if err != nil {
				f.Fatal(err)
			}
			break
		}
	}
	s, err := New(Config{Model: ModelNone, Mapping: m, Server: roles.Server{Listen: "127.0.0.1:0", MaxBodyBytes: limit}})
	if err != nil {
		f.Fatal(err)
	}
	stop := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { stop <- s.Run(ctx) }()
	f.Cleanup(func() {
		cancel()
		select {
		case err := <-stop:
			if err != nil {
				f.Errorf("Run: %v", err)
			}
		case <-time.After(testDeadline):
			f.Error("Run did not return after its context ended")
		}
	})
	addr := s.Addr().String()
	client := &http.Client{
		Timeout:       testDeadline,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	f.Fuzz(func(t *testing.T, method uint8, p, id string, body []byte) {
		u := &url.URL{Scheme: "http", Host: addr, Path: "/" + p}
		req, err := http.NewRequest(fuzzMethods[int(method)%len(fuzzMethods)], u.String(), bytes.NewReader(body))
		if err != nil {
			return
		}
		if id != "" {
			req.Header.Set("Request-Id", id)
		}
		before := s.Counts().Received
		beforeID := s.Received()[id]
		resp, err := client.Do(req)
		if err != nil {
			return // a header value net/http refuses to send
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		counted := s.Counts().Received - before

		// A declared body over the limit is refused before anything else looks at the request.
		if len(body) > limit {
			if resp.StatusCode != http.StatusRequestEntityTooLarge || counted != 0 {
				t.Fatalf("%s %q (%d bytes): %d, counted %d; want 413", req.Method, req.URL.Path, len(body), resp.StatusCode, counted)
			}
			return
		}
		// The muxes redirect paths that are not clean; the admin and stats paths are not commands.
		if cleanPath(req.URL.Path) != req.URL.Path {
			if resp.StatusCode/100 != 3 || counted != 0 {
				t.Fatalf("%s %q: %d, counted %d; want a redirect to the clean path", req.Method, req.URL.Path, resp.StatusCode, counted)
			}
			return
		}
		switch req.URL.Path {
		case "/healthz", "/readyz", "/metrics", "/stats", "/stats/requests":
			return
		}
		_, _, known := m.Lookup(req.URL.Path)
		want, wantCounted := http.StatusOK, 1
		switch {
		case !known:
			want, wantCounted = http.StatusNotFound, 0
		case req.Method != http.MethodPost:
			want, wantCounted = http.StatusMethodNotAllowed, 0
		}
		if resp.StatusCode != want || counted != wantCounted {
			t.Fatalf("%s %q (%d bytes): %d %q, counted %d; want %d, counted %d", req.Method, req.URL.Path, len(body), resp.StatusCode, answer, counted, want, wantCounted)
		}
		if want == http.StatusOK {
			usable := id != "" && len(id) <= 128 && strings.IndexFunc(id, func(r rune) bool { return r <= ' ' || r > '~' }) < 0
			if got := s.Received()[id] - beforeID; usable != (got == 1) || resp.Header.Get("Request-Id") == "" ||
				usable != (resp.Header.Get("Request-Id") == id) {
				t.Fatalf("Request-Id %q (usable %v): counted %d times under it, answered %q", id, usable, got, resp.Header.Get("Request-Id"))
			}
		}
	})
}

// cleanPath is the path net/http's ServeMux redirects to: path.Clean, keeping a trailing slash.
func cleanPath(p string) string {
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

package roles_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/roles"
)

func TestHTTPServiceServesAdminEndpoints(t *testing.T) {
	var ready atomic.Bool
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "api") })
	svc, err := roles.NewHTTPService(roles.Server{Listener: testutil.Listen(t)}, api,
		func(context.Context) error {
			if !ready.Load() {
				return errors.New("upstream not connected")
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, svc)
	base := "http://" + svc.Addr().String()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/anything"); code != 200 || body != "api" {
		t.Errorf("api: %d %s", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz %d", code)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "upstream not connected") {
		t.Errorf("/readyz while not ready: %d %s", code, body)
	}
	ready.Store(true)
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz when ready: %d", code)
	}
	_, metrics := get("/metrics")
	for _, want := range []string{`lps_http_requests_total{code="200",method="GET",proto="HTTP/1.1"} 1`, "lps_tcp_listen_overflows_total", "lps_http_request_duration_seconds"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestNewHTTPServiceFailsOnBadAddress(t *testing.T) {
	ln := testutil.Listen(t)
	t.Cleanup(func() { ln.Close() })
	if _, err := roles.NewHTTPService(roles.Server{Listen: ln.Addr().String()}, http.NotFoundHandler(), nil); err == nil || !strings.Contains(err.Error(), "listening on") {
		t.Errorf("listening on a used port: %v", err)
	}
}

func TestUpstreamURLs(t *testing.T) {
	u := roles.Upstream{URL: "http://a:8080, http://b:8080/custom ,http://c"}
	got := u.URLs(alarm.CommandPath)
	want := []string{"http://a:8080" + alarm.CommandPath, "http://b:8080/custom", "http://c" + alarm.CommandPath}
	if !slices.Equal(got, want) {
		t.Fatalf("URLs = %v, want %v", got, want)
	}
	for raw, ok := range map[string]bool{
		"http://a":               true,
		"http://a,https://b:1/x": true,
		"":                       false,
		" , ":                    false,
		"http://a,":              false,
		"http://a,ftp://b":       false,
		"http://a, http://a":     false,
		"http://a,http://:80/x":  false,
		"http://a,,http://b":     false,
	} {
		if err := roles.ValidateURLs(raw); (err == nil) != ok {
			t.Errorf("ValidateURLs(%q) = %v, want ok=%v", raw, err, ok)
		}
	}
}

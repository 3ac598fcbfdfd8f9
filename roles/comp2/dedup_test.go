package comp2_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/config"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/comp2"
)

// startDedup runs a comp2 with cfg's dedup settings in front of upstream until the test ends
// (or stop).
func startDedup(t *testing.T, upstream string, tweak func(*comp2.Config)) (url string, stop func() error) {
	t.Helper()
	cfg := comp2.Config{Upstream: roles.Upstream{URL: upstream}}
	cfg.Listener = testutil.Listen(t)
	if tweak != nil {
		tweak(&cfg)
	}
	c, err := comp2.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop = testutil.Run(t, c)
	return "http://" + c.Addr().String(), stop
}

// postAs posts an alarm with requestID as its Request-Id header (the original comp1 sends the
// literal "None" when its caller sent none).
func postAs(t *testing.T, url, requestID, id, body string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+alarm.CommandPath, strings.NewReader(fmt.Sprintf(`{"id":%q,"body":%q}`, id, body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Request-Id", requestID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestRequestIDNoneIsNotACopy: behind the original Python comp1 every alarm carries
// "Request-Id: None". Each distinct alarm is forwarded once; a true repeat (same id, same
// content) is still suppressed. With every store.
func TestRequestIDNoneIsNotACopy(t *testing.T) {
	for _, store := range []string{"memory", "dir", "redis"} {
		t.Run(store, func(t *testing.T) {
			b := &backend{}
			up := httptest.NewServer(b)
			t.Cleanup(up.Close)
			url, _ := startDedup(t, up.URL, func(c *comp2.Config) {
				switch store {
				case "dir":
					c.DedupDir = t.TempDir()
				case "redis":
					c.DedupStore = testutil.StartRedis(t).URL
				}
			})
			for i := range 10 {
				if s := postAs(t, url, "None", "0151", fmt.Sprintf("Phone: 0151, Branch: 20%02d", i)); s != 200 {
					t.Fatalf("alarm %d: status %d", i, s)
				}
			}
			if s := postAs(t, url, "None", "0151", "Phone: 0151, Branch: 2003"); s != 200 {
				t.Fatalf("repeat: status %d", s)
			}
			if n := b.count(); n != 10 {
				t.Errorf("backend received %d alarms, want the 10 distinct ones once each", n)
			}
		})
	}
}

// TestDedupDirSurvivesRestart: what a comp2 with --dedup-dir forwarded is still known to the
// comp2 started after it on the same directory.
func TestDedupDirSurvivesRestart(t *testing.T) {
	b := &backend{}
	up := httptest.NewServer(b)
	t.Cleanup(up.Close)
	dir := t.TempDir()
	url, stop := startDedup(t, up.URL, func(c *comp2.Config) { c.DedupDir = dir })
	for i := range 5 {
		postAs(t, url, fmt.Sprintf("r-%d", i), "0151", "b")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	url, _ = startDedup(t, up.URL, func(c *comp2.Config) { c.DedupDir = dir })
	for i := range 5 {
		if s := postAs(t, url, fmt.Sprintf("r-%d", i), "0151", "b"); s != 200 {
			t.Fatalf("copy %d after the restart: status %d", i, s)
		}
	}
	if n := b.count(); n != 5 {
		t.Errorf("backend received %d alarms, want 5: the restart forgot the window", n)
	}
}

// TestSharedStoreAcrossInstances: two comp2 with one Redis. A copy that reaches the other
// instance (a failover) is suppressed there; while Redis is down comp2 forwards nothing (503,
// not ready) rather than risk a second delivery, and resumes when it is back.
func TestSharedStoreAcrossInstances(t *testing.T) {
	b := &backend{}
	up := httptest.NewServer(b)
	t.Cleanup(up.Close)
	r := testutil.StartRedis(t)
	shared := func(c *comp2.Config) { c.DedupStore = r.URL }
	one, _ := startDedup(t, up.URL, shared)
	two, _ := startDedup(t, up.URL, shared)
	if s := postAs(t, one, "r-1", "0151", "b"); s != 200 {
		t.Fatalf("first: %d", s)
	}
	if s := postAs(t, two, "r-1", "0151", "b"); s != 200 {
		t.Fatalf("copy at the other instance: %d", s)
	}
	if n := b.count(); n != 1 {
		t.Fatalf("backend received %d, want 1", n)
	}
	r.Stop()
	if s := postAs(t, two, "r-2", "0151", "b"); s != http.StatusServiceUnavailable {
		t.Errorf("with Redis down: status %d, want 503", s)
	}
	if s, _ := getStatus(two + "/readyz"); s != http.StatusServiceUnavailable {
		t.Errorf("with Redis down: /readyz %d, want 503", s)
	}
	r.Start()
	testutil.Eventually(t, 10*time.Second, func() error {
		if s, body := getStatus(two + "/readyz"); s != 200 {
			return fmt.Errorf("readyz %d %s", s, body)
		}
		return nil
	})
	if s := postAs(t, two, "r-2", "0151", "b"); s != 200 || b.count() != 2 {
		t.Errorf("with Redis back: status %d, backend %d; want 200 and 2", s, b.count())
	}
}

func getStatus(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestDedupStoreValidates(t *testing.T) {
	for _, cfg := range []comp2.Config{
		{Upstream: roles.Upstream{URL: "http://a"}, DedupDir: "/tmp/x", DedupStore: "redis://127.0.0.1:1"},
		{Upstream: roles.Upstream{URL: "http://a"}, DedupWindow: -time.Second},
		{Upstream: roles.Upstream{URL: "http://a"}, DedupStore: "http://127.0.0.1:1"},
		{Upstream: roles.Upstream{URL: "http://a"}, DedupStore: "redis://[::1"},
	} {
		cfg.Listen = "127.0.0.1:0"
		var fe *config.FieldError
		if _, err := comp2.New(cfg); !errors.As(err, &fe) || !strings.HasPrefix(fe.Field, "Dedup") {
			t.Errorf("New(%+v): %v, want an error about DedupStore", cfg, err)
		}
	}
}

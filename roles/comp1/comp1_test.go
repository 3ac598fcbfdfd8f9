package comp1_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/comp1"
)

type recorder struct {
	mu     sync.Mutex
	alarms []alarm.Alarm
	paths  []string
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var a alarm.Alarm
	json.NewDecoder(req.Body).Decode(&a)
	r.mu.Lock()
	r.alarms = append(r.alarms, a)
	r.paths = append(r.paths, req.URL.Path)
	r.mu.Unlock()
	w.Write([]byte(`{"status":"success"}`))
}

func start(t *testing.T) (string, *recorder) {
	t.Helper()
	rec := &recorder{}
	up := httptest.NewServer(rec)
	t.Cleanup(up.Close)
	cfg := comp1.Config{Upstream: roles.Upstream{URL: up.URL}}
	cfg.Listener = testutil.Listen(t)
	c, err := comp1.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, c)
	return "http://" + c.Addr().String() + alarm.DevicePath, rec
}

func TestForwardsQueryAndJSONAlarms(t *testing.T) {
	url, rec := start(t)
	want := alarm.Alarm{ID: "0123", Body: "Phone: 0123, Branch: 2001, Headnumber: 8023, TriggerTime: 2026-11-26T04:00:00Z"}
	for _, tc := range []struct{ name, query, body string }{
		{"query", "?Phone=0123&Branch=2001&Headnumber=8023&TriggerTime=2026-11-26T04:00:00Z", ""},
		{"json strings", "", `{"phone":"0123","branch":"2001","headnumber":"8023","triggertime":"2026-11-26T04:00:00Z"}`},
		{"json numbers", "", `{"phone":"0123","branch":2001,"headnumber":8023,"triggertime":"2026-11-26T04:00:00Z"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(url+tc.query, "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			rec.mu.Lock()
			got, path := rec.alarms[len(rec.alarms)-1], rec.paths[len(rec.paths)-1]
			rec.mu.Unlock()
			if got != want || path != alarm.CommandPath {
				t.Errorf("forwarded %+v to %s, want %+v to %s", got, path, want, alarm.CommandPath)
			}
		})
	}
}

func TestRejectsBadAlarms(t *testing.T) {
	url, rec := start(t)
	for _, tc := range []struct{ name, query, ctype, body, reason string }{
		{"query missing", "?Phone=1&Branch=2", "", "", "Headnumber, TriggerTime"},
		{"query bad time", "?Phone=1&Branch=2&Headnumber=3&TriggerTime=yesterday", "", "", "RFC 3339"},
		{"json missing", "", "application/json", `{"phone":"1"}`, "branch, headnumber, triggertime"},
		{"json null", "", "application/json", `{"phone":null,"branch":"1","headnumber":"1","triggertime":"2026-01-01T00:00:00Z"}`, "phone"},
		{"json bool", "", "application/json", `{"phone":true,"branch":"1","headnumber":"1","triggertime":"2026-01-01T00:00:00Z"}`, "phone"},
		{"json bad time", "", "application/json", `{"phone":"1","branch":"1","headnumber":"1","triggertime":"26.11.2026"}`, "RFC 3339"},
		{"json time not string", "", "application/json", `{"phone":"1","branch":"1","headnumber":"1","triggertime":5}`, "triggertime"},
		{"json malformed", "", "application/json", `{"phone":`, "truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, url+tc.query, strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 || !strings.Contains(string(body), tc.reason) {
				t.Errorf("got %d %s, want 400 mentioning %q", resp.StatusCode, body, tc.reason)
			}
		})
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.alarms) != 0 {
		t.Errorf("invalid alarms were forwarded: %+v", rec.alarms)
	}
}

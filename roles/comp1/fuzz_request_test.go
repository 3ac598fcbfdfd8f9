package comp1_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/comp1"
)

// FuzzDeviceRequest posts arbitrary query strings and bodies to a running comp1 and checks
// its decoding of external input end to end: an alarm is forwarded, carrying exactly the
// device's values, if and only if the query parameters (when any is present) or else the body
// make a complete alarm of UTF-8 text with an RFC 3339 trigger time; everything else is a 4xx
// JSON error that reaches nothing. FuzzParseJSON covers the JSON decoder alone.
func FuzzDeviceRequest(f *testing.F) {
	const limit = 4096
	good := `{"phone":"0151","branch":"2001","headnumber":"8023","triggertime":"2026-11-26T04:00:00Z"}`
	for _, seed := range []struct {
		query, body string
		json        bool
	}{
		{"Phone=0151&Branch=2001&Headnumber=8023&TriggerTime=2026-11-26T04:00:00Z", "", false},
		{"Phone=%FF&Branch=2001&Headnumber=8023&TriggerTime=2026-11-26T04:00:00Z", "", false},
		{"Phone=&Branch=2001", "", false},
		{"Phone=1&Branch=2&Headnumber=3&TriggerTime=2026-11-26T04:00:00%2B01:00", "", false},
		{"Phone=1;Branch=2", good, true},
		{"", good, true},
		{"", good, false},
		{"x=1", `{"phone":151,"branch":2001,"headnumber":8023,"triggertime":"2026-11-26T04:00:00.5Z"}`, true},
		{"", `{"phone":true}`, true},
		{"", "{\"phone\":\"\xff\"}", true},
	} {
		f.Add(seed.query, []byte(seed.body), seed.json)
	}
	b := &testutil.LastAlarm{Answer: `{"status":"success"}`}
	up := httptest.NewServer(b)
	f.Cleanup(up.Close)
	cfg := comp1.Config{Upstream: roles.Upstream{URL: up.URL, Timeout: 10 * time.Second}}
	cfg.Listener = testutil.Listen(f)
	cfg.MaxBodyBytes = limit
	c, err := comp1.New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	testutil.Run(f, c)
	base := "http://" + c.Addr().String() + alarm.DevicePath
	client := &http.Client{Timeout: 10 * time.Second}

	f.Fuzz(func(t *testing.T, query string, body []byte, jsonType bool) {
		// Bytes that cannot be in a request line are the HTTP layer's business, not comp1's.
		for _, c := range []byte(query) {
			if c <= ' ' || c >= 0x7f || c == '#' {
				return
			}
		}
		url := base
		if query != "" {
			url += "?" + query
		}
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return
		}
		ctype := "text/plain"
		if jsonType {
			ctype = "application/json"
		}
		req.Header.Set("Content-Type", ctype)

		// What comp1 must make of it, read from its contract.
		var want alarm.Device
		valid := len(body) <= limit
		q := req.URL.Query()
		if q.Has("Phone") || q.Has("Branch") || q.Has("Headnumber") || q.Has("TriggerTime") {
			want = alarm.Device{Phone: q.Get("Phone"), Branch: q.Get("Branch"), Headnumber: q.Get("Headnumber"), TriggerTime: q.Get("TriggerTime")}
			for _, v := range []string{want.Phone, want.Branch, want.Headnumber, want.TriggerTime} {
				valid = valid && strings.TrimSpace(v) != "" && utf8.ValidString(v)
			}
			_, terr := time.Parse(time.RFC3339Nano, want.TriggerTime)
			valid = valid && terr == nil
		} else {
			var perr error
			want, perr = alarm.ParseDevice(body)
			valid = valid && jsonType && utf8.Valid(body) && perr == nil
		}

		before, _ := b.Last()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		after, got := b.Last()
		switch {
		case resp.StatusCode == http.StatusOK && valid:
			if w := (alarm.Alarm{ID: want.Phone, Body: want.Body()}); after != before+1 || got != w {
				t.Fatalf("?%s %q: forwarded %d alarms, the last %+v; want one, %+v", query, body, after-before, got, w)
			}
		case resp.StatusCode == http.StatusOK || valid:
			t.Fatalf("?%s %q: %d %s, but its validity is %v", query, body, resp.StatusCode, answer, valid)
		default:
			var e struct{ Status, Reason string }
			if resp.StatusCode/100 != 4 || json.Unmarshal(answer, &e) != nil || e.Status != "error" || e.Reason == "" {
				t.Fatalf("?%s %q: %d %s, want a 4xx JSON error", query, body, resp.StatusCode, answer)
			}
			if after != before {
				t.Fatalf("?%s %q: answered %d, but forwarded %+v", query, body, resp.StatusCode, got)
			}
		}
	})
}

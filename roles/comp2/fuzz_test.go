package comp2_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/comp2"
)

// fuzzContentTypes are the Content-Types FuzzAlarmRequest picks from, and whether comp2 takes
// them ("" sends none, which the original services accepted).
var fuzzContentTypes = []struct {
	value string
	ok    bool
}{
	{"application/json", true}, {"", true}, {"application/json; charset=utf-8", true}, {"application/problem+json", true},
	{"text/plain", false}, {"application/x-www-form-urlencoded", false}, {"json;;", false},
}

// FuzzAlarmRequest posts arbitrary bodies to a running comp2 and checks its decoding of
// external input end to end: an alarm is forwarded, exactly as alarm.Parse reads it and
// with the Request-Id it answered, if and only if the body is a valid UTF-8 alarm within the
// limit with a JSON (or no) Content-Type; everything else is a 4xx JSON error and reaches
// nothing.
func FuzzAlarmRequest(f *testing.F) {
	const limit = 4096
	for i, seed := range []string{
		`{"id":"0151","body":"Phone: 0151, Branch: 2001"}`, `{"id":"1","body":"b","request_id":"r"}`,
		`{"id":1,"body":"b"}`, `{"id":"","body":"b"}`, `{"id":"1"}`, `{"id":"1","body":`, `{"id":"1" "body":"b"}`,
		`{"id":"1","body":"b"}{}`, `null`, `[]`, ` `, "{\"id\":\"\xff\",\"body\":\"b\"}", `{"id":"\ud800","body":"\u2028"}`,
	} {
		f.Add([]byte(seed), uint8(i))
	}
	b := &testutil.LastAlarm{Answer: "Success"}
	up := httptest.NewServer(b)
	f.Cleanup(up.Close)
	cfg := comp2.Config{Upstream: roles.Upstream{URL: up.URL, Timeout: 10 * time.Second}}
	cfg.Listener = testutil.Listen(f)
	cfg.MaxBodyBytes = limit
	c, err := comp2.New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	testutil.Run(f, c)
	url := "http://" + c.Addr().String() + alarm.CommandPath
	client := &http.Client{Timeout: 10 * time.Second}

	f.Fuzz(func(t *testing.T, body []byte, ct uint8) {
		ctype := fuzzContentTypes[int(ct)%len(fuzzContentTypes)]
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if ctype.value != "" {
			req.Header.Set("Content-Type", ctype.value)
		}
		before, _ := b.Last()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		after, got := b.Last()

		parsed, perr := alarm.Parse(body)
		valid := ctype.ok && len(body) <= limit && utf8.Valid(body) && perr == nil
		switch {
		case resp.StatusCode == http.StatusOK && valid:
			parsed.RequestID = resp.Header.Get("Request-Id")
			if after != before+1 || got != parsed {
				t.Fatalf("%q: forwarded %d alarms, the last %+v; want one, %+v", body, after-before, got, parsed)
			}
		case resp.StatusCode == http.StatusOK || valid:
			t.Fatalf("%q (%q): %d %s, but its validity is %v (%v)", body, ctype.value, resp.StatusCode, answer, valid, perr)
		default:
			var e struct{ Status, Reason string }
			if resp.StatusCode/100 != 4 || json.Unmarshal(answer, &e) != nil || e.Status != "error" || e.Reason == "" {
				t.Fatalf("%q (%q): %d %s, want a 4xx JSON error", body, ctype.value, resp.StatusCode, answer)
			}
			if after != before {
				t.Fatalf("%q (%q): answered %d, but forwarded %+v", body, ctype.value, resp.StatusCode, got)
			}
		}
	})
}

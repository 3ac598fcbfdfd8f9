package comp1_test

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/internal/testutil/badinput"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/comp1"
)

// badBodyLimit is the role's body limit in the bad-input tests.
const badBodyLimit = 1024

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
	cfg := comp1.Config{Upstream: roles.Upstream{URL: up.URL, Timeout: badinput.Deadline}}
	cfg.Listener = testutil.Listen(t)
	cfg.MaxBodyBytes = badBodyLimit
	cfg.ReadTimeout, cfg.ReadHeaderTimeout = badinput.ReadTimeout, badinput.ReadTimeout
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
	path := alarm.DevicePath
	const tt = `"triggertime":"2026-11-26T04:00:00Z"`
	good := `{"phone":"0151","branch":"2001","headnumber":"8023",` + tt + `}`
	const query = "?Phone=0151&Branch=2001&Headnumber=8023&TriggerTime=2026-11-26T04:00:00Z"
	badinput.Run(t, base, []badinput.Case{
		{Name: "malformed: missing comma", Method: "POST", Path: path, ContentType: js, Body: `{"phone":"0151" "branch":"2001"}`, Status: 400, Reason: "malformed JSON at byte 17: invalid character '\"' after object key:value pair"},
		{Name: "malformed: form body", Method: "POST", Path: path, ContentType: js, Body: `phone=0151&branch=2001`, Status: 400, Reason: "malformed JSON at byte 1: *"},
		{Name: "malformed: second alarm after the first", Method: "POST", Path: path, ContentType: js, Body: good + good, Status: 400, Reason: "malformed JSON: data after the JSON value"},
		{Name: "truncated inside a string", Method: "POST", Path: path, ContentType: js, Body: good[:len(good)-5], Status: 400, Reason: "truncated JSON"},
		{Name: "wrong type: phone object", Method: "POST", Path: path, ContentType: js, Body: `{"phone":{"n":1},"branch":"2001","headnumber":"8023",` + tt + `}`, Status: 400, Reason: `field "phone" must be a string, not object`},
		{Name: "wrong type: branch array", Method: "POST", Path: path, ContentType: js, Body: `{"phone":"0151","branch":[2001],"headnumber":"8023",` + tt + `}`, Status: 400, Reason: `field "branch" must be a string, not array`},
		{Name: "wrong type: triggertime bool", Method: "POST", Path: path, ContentType: js, Body: `{"phone":"0151","branch":"2001","headnumber":"8023","triggertime":true}`, Status: 400, Reason: `field "triggertime" must be a string, not bool`},
		{Name: "wrong type: array document", Method: "POST", Path: path, ContentType: js, Body: "[" + good + "]", Status: 400, Reason: "request body must be a JSON object, not array"},
		{Name: "missing: every field", Method: "POST", Path: path, ContentType: js, Body: `{}`, Status: 400, Reason: "missing or empty field(s): phone, branch, headnumber, triggertime"},
		{Name: "missing: null document", Method: "POST", Path: path, ContentType: js, Body: `null`, Status: 400, Reason: "missing or empty field(s): phone, branch, headnumber, triggertime"},
		{Name: "empty: JSON fields", Method: "POST", Path: path, ContentType: js, Body: `{"phone":"","branch":" ","headnumber":"\t",` + tt + `}`, Status: 400, Reason: "missing or empty field(s): phone, branch, headnumber"},
		{Name: "empty: trigger time", Method: "POST", Path: path, ContentType: js, Body: `{"phone":"0151","branch":"2001","headnumber":"8023","triggertime":""}`, Status: 400, Reason: "missing or empty field(s): triggertime"},
		{Name: "empty: query values", Method: "POST", Path: path + "?Phone=&Branch=2001&Headnumber=&TriggerTime=2026-11-26T04:00:00Z", Status: 400, Reason: "missing or empty field(s): Phone, Headnumber"},
		{Name: "empty: body", Method: "POST", Path: path, ContentType: js, Body: "", Status: 400, Reason: "request body is empty"},
		{Name: "empty: body without content type", Method: "POST", Path: path, Body: " \n", Status: 400, Reason: "request body is empty"},
		{Name: "non-UTF-8 body", Method: "POST", Path: path, ContentType: js, Body: "{\"phone\":\"\xff0151\",\"branch\":\"2001\",\"headnumber\":\"8023\"," + tt + "}", Status: 400, Reason: "request body is not valid UTF-8"},
		{Name: "non-UTF-8 query value", Method: "POST", Path: path + "?Phone=%FF0151&Branch=2001&Headnumber=8023&TriggerTime=2026-11-26T04:00:00Z", Status: 400, Reason: "Phone is not valid UTF-8"},
		{Name: "oversized, chunked", Method: "POST", Path: path, ContentType: js, Chunked: true, Body: `{"phone":"` + strings.Repeat("1", 2*badBodyLimit) + `"}`, Status: 413, Reason: "request body exceeds the limit of 1024 bytes"},
		{Name: "oversized, declared", Method: "POST", Path: path, ContentType: js, Body: `{"phone":"` + strings.Repeat("1", badBodyLimit) + `"}`, Status: 413, Reason: fmt.Sprintf("request body of %d bytes exceeds the limit of 1024 bytes", badBodyLimit+12)},
		{Name: "content type: text", Method: "POST", Path: path, ContentType: "text/plain", Body: good, Status: 415, Reason: `content type "text/plain" is not application/json`},
		{Name: "content type: form", Method: "POST", Path: path, ContentType: "application/x-www-form-urlencoded", Body: good, Status: 415, Reason: `content type "application/x-www-form-urlencoded" is not application/json`},
		{Name: "method: GET with a valid query", Method: "GET", Path: path + query, Status: 405, Reason: "method GET is not allowed on /api/v1/simple; use POST"},
		{Name: "method: PUT", Method: "PUT", Path: path, ContentType: js, Body: good, Status: 405, Reason: "method PUT is not allowed on /api/v1/simple; use POST"},
		{Name: "other path", Method: "POST", Path: "/api/v1/simple/x" + query, Status: 404, Reason: "no such endpoint /api/v1/simple/x; this service serves POST /api/v1/simple"},
		{Name: "10,000-byte header", Method: "POST", Path: path, ContentType: js, Body: good, BigHeader: true, Status: 431, Reason: "request headers of 10* bytes exceed the limit of 8192 bytes"},
	})

	badinput.Slowloris(t, addr, alarm.DevicePath, slowAlarm)
	if n := forwarded(); n != 0 {
		t.Fatalf("bad input reached component 2 %d times: %+v", n, rec.alarms)
	}

	// Still serving: a valid alarm is forwarded while a slow client holds a connection.
	slow := badinput.SlowBody(t, addr, alarm.DevicePath, slowAlarm)
	status, _, body := badinput.Case{Method: "POST", Path: path, ContentType: js, Body: good}.Do(t, base)
	if status != 200 {
		t.Fatalf("valid alarm after bad input: %d %s", status, body)
	}
	slow.CheckTimedOut(t)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := alarm.Alarm{ID: "0151", Body: "Phone: 0151, Branch: 2001, Headnumber: 8023, TriggerTime: 2026-11-26T04:00:00Z"}
	if len(rec.alarms) != 1 || rec.alarms[0] != want {
		t.Errorf("component 2 received %+v, want only %+v", rec.alarms, want)
	}
}

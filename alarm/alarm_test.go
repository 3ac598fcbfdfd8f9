package alarm

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestDecodeJSONErrors(t *testing.T) {
	type v struct {
		ID string `json:"id"`
	}
	for _, tc := range []struct{ in, want string }{
		{`{"id":"x"}`, ""},
		{`{"id":"x","extra":1}`, ""},
		{`{"id":`, "truncated"},
		{`{"id":1}`, `field "id" must be a string`},
		{`[1]`, "must be a JSON object"},
		{`{"id":"x"} {}`, "data after"},
		{`{id:1}`, "malformed JSON"},
	} {
		err := decodeJSON([]byte(tc.in), &v{})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: unexpected %v", tc.in, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want it to contain %q", tc.in, err, tc.want)
		}
		var ae *Error
		if err != nil && !errors.As(err, &ae) {
			t.Errorf("%s: want an *alarm.Error, got %T", tc.in, err)
		}
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"id":"0151","body":"Phone: 0151","request_id":"r"}`, ""},
		{`{"id":"0151"}`, "missing or empty field(s): body"},
		{`{"id":" ","body":""}`, "missing or empty field(s): id, body"},
		{`{"id":1,"body":"b"}`, `field "id"`},
	} {
		a, err := Parse([]byte(tc.in))
		switch {
		case tc.want == "" && (err != nil || a.ID != "0151" || a.RequestID != "r"):
			t.Errorf("%s: %+v %v", tc.in, a, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestDevice(t *testing.T) {
	d, err := ParseDevice([]byte(`{"phone":151,"branch":"2001","headnumber":8023,"triggertime":"2026-11-26T04:00:00Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Alarm(); got.ID != "151" || got.Body != "Phone: 151, Branch: 2001, Headnumber: 8023, TriggerTime: 2026-11-26T04:00:00Z" {
		t.Errorf("alarm of a device report: %+v", got)
	}
	if back, err := ParseDevice(d.Marshal()); err != nil || back != d {
		t.Errorf("round trip: %+v %v", back, err)
	}
	for _, body := range []string{`{"phone":true}`, `{"phone":"1","branch":"2","headnumber":"3","triggertime":"yesterday"}`, `{"phone":{}}`} {
		var ae *Error
		if _, err := ParseDevice([]byte(body)); !errors.As(err, &ae) {
			t.Errorf("%s: %v, want an *alarm.Error", body, err)
		}
	}
	if _, ok, _ := DeviceFromQuery(url.Values{}); ok {
		t.Error("no query parameter is no query report")
	}
	if _, ok, err := DeviceFromQuery(url.Values{"Phone": {"1"}}); !ok || err == nil || !strings.Contains(err.Error(), "Branch") {
		t.Errorf("one query parameter: ok %v err %v, want the others missing", ok, err)
	}
	q := url.Values{"Phone": {"0151"}, "Branch": {"2001"}, "Headnumber": {"8023"}, "TriggerTime": {time.Now().UTC().Format(time.RFC3339)}}
	if d, ok, err := DeviceFromQuery(q); !ok || err != nil || d.Phone != "0151" {
		t.Errorf("query report: %+v %v %v", d, ok, err)
	}
}

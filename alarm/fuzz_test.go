package alarm_test

import (
	"strings"
	"testing"
	"time"

	"github.com/lpsdev/lps/alarm"
)

// FuzzParse: whatever arrives, Parse either rejects it or returns an alarm with both fields set
// that survives its own encoding unchanged.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		`{"id":"0151","body":"Phone: 0151, Branch: 2001"}`,
		`{"id":"1","body":"b","request_id":"r"}`,
		`{"id":1}`, `{"id":"","body":"x"}`, `[]`, `null`, `{"id":"\u00ff","body":"\ud800"}`, `{"id":"a","body":"b"}{}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := alarm.Parse(data)
		if err != nil {
			return
		}
		if a.ID == "" || a.Body == "" {
			t.Fatalf("accepted an alarm with an empty field: %+v", a)
		}
		b, err := alarm.Parse(a.Marshal())
		if err != nil || b != a {
			t.Fatalf("round trip changed %+v into %+v (%v)", a, b, err)
		}
	})
}

// FuzzParseDevice: a device's report is either rejected or complete, with an RFC 3339 trigger
// time.
func FuzzParseDevice(f *testing.F) {
	for _, seed := range []string{
		`{"phone":"0151","branch":"2001","headnumber":"8023","triggertime":"2026-11-26T04:00:00Z"}`,
		`{"phone":151,"branch":2001,"headnumber":8023,"triggertime":"2026-11-26T04:00:00.123+01:00"}`,
		`{"phone":true}`, `{"phone":null,"branch":{}}`, `{"triggertime":5}`, `{`, `""`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := alarm.ParseDevice(data)
		if err != nil {
			return
		}
		for _, v := range []string{d.Phone, d.Branch, d.Headnumber, d.TriggerTime} {
			if strings.TrimSpace(v) == "" {
				t.Fatalf("accepted an incomplete report %+v", d)
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, d.TriggerTime); err != nil {
			t.Fatalf("accepted trigger time %q: %v", d.TriggerTime, err)
		}
	})
}

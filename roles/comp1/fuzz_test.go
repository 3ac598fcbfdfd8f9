package comp1_test

import (
	"strings"
	"testing"
	"time"

	"github.com/lpsdev/lps/roles/comp1"
)

// FuzzParseJSON: a device alarm is either rejected or complete, with an RFC 3339 trigger time.
func FuzzParseJSON(f *testing.F) {
	for _, seed := range []string{
		`{"phone":"0151","branch":"2001","headnumber":"8023","triggertime":"2026-11-26T04:00:00Z"}`,
		`{"phone":151,"branch":2001,"headnumber":8023,"triggertime":"2026-11-26T04:00:00.123+01:00"}`,
		`{"phone":true}`, `{"phone":null,"branch":{}}`, `{"triggertime":5}`, `{`, `""`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := comp1.ParseJSON(data)
		if err != nil {
			return
		}
		for _, v := range []string{a.Phone, a.Branch, a.Headnumber, a.TriggerTime} {
			if strings.TrimSpace(v) == "" {
				t.Fatalf("accepted an incomplete alarm %+v", a)
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, a.TriggerTime); err != nil {
			t.Fatalf("accepted trigger time %q: %v", a.TriggerTime, err)
		}
	})
}

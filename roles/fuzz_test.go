package roles_test

import (
	"testing"

	"github.com/lpsdev/lps/roles"
)

// FuzzParseAlarm: whatever arrives, ParseAlarm either rejects it or returns an alarm with both
// fields set that survives its own encoding unchanged.
func FuzzParseAlarm(f *testing.F) {
	for _, seed := range []string{
		`{"id":"0151","body":"Phone: 0151, Branch: 2001"}`,
		`{"id":"1","body":"b","request_id":"r"}`,
		`{"id":1}`, `{"id":"","body":"x"}`, `[]`, `null`, `{"id":"\u00ff","body":"\ud800"}`, `{"id":"a","body":"b"}{}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := roles.ParseAlarm(data)
		if err != nil {
			return
		}
		if a.ID == "" || a.Body == "" {
			t.Fatalf("accepted an alarm with an empty field: %+v", a)
		}
		b, err := roles.ParseAlarm(a.Marshal())
		if err != nil || b != a {
			t.Fatalf("round trip changed %+v into %+v (%v)", a, b, err)
		}
	})
}

package mqtt2http

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/lpsdev/lps/alarm"
)

// FuzzDecode: whatever payload arrives on MQTT, decode either refuses it with a reason, or
// returns a complete alarm from a UTF-8 payload within the limit that survives its own
// encoding, which is what mqtt2http forwards. Either way the dead letter it would go to carries
// the payload's exact bytes.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"id":"0151","body":"Phone: 0151, Branch: 2001","request_id":"r-1"}`,
		`{"id":"1","body":"b"}`, `{"id":"1","body":`, `not json`, `{"id":"1"}`, `{"id":"","body":"x"}`,
		`{"id":1,"body":"x"}`, "\xff\xfe{\x00", ``, " \n", `null`, `[]`, `{"id":"1","body":"b"}{}`,
		"{\"id\":\"0151\",\"body\":\"Stra\xdfe\"}", "\xef\xbb\xbf{\"id\":\"1\",\"body\":\"b\"}",
		`{"id":"\u003c\u2028","body":"\ud800"}`, `{"id":"1","body":"b","request_id":{}}`,
	} {
		f.Add([]byte(seed), 64)
	}
	f.Add([]byte(`{"id":"1","body":"b"}`), -1)
	f.Add([]byte(`{"id":"1","body":"b"}`), 0)
	f.Fuzz(func(t *testing.T, payload []byte, limit int) {
		a, reason := decode(payload, limit)
		if reason != "" {
			if a != (alarm.Alarm{}) || !strings.HasPrefix(reason, "payload ") {
				t.Fatalf("refused %q with alarm %+v and reason %q", payload, a, reason)
			}
		} else {
			if limit >= 0 && len(payload) > limit {
				t.Fatalf("accepted %d bytes over the limit of %d", len(payload), limit)
			}
			if !utf8.Valid(payload) || strings.TrimSpace(a.ID) == "" || strings.TrimSpace(a.Body) == "" {
				t.Fatalf("accepted %q as %+v", payload, a)
			}
			again, err := alarm.Parse(a.Marshal())
			if err != nil || again != a {
				t.Fatalf("%q decoded into %+v, which encodes into %s, which decodes into %+v (%v)", payload, a, a.Marshal(), again, err)
			}
		}
		// The dead letter's payload, through its JSON, gives back the original bytes.
		p, enc := encodePayload(payload)
		b, err := json.Marshal(DeadLetter{Payload: p, PayloadEncoding: enc})
		if err != nil {
			t.Fatal(err)
		}
		var dl DeadLetter
		if err := json.Unmarshal(b, &dl); err != nil {
			t.Fatal(err)
		}
		orig := []byte(dl.Payload)
		if dl.PayloadEncoding == "base64" {
			if orig, err = base64.StdEncoding.DecodeString(dl.Payload); err != nil {
				t.Fatal(err)
			}
		}
		if string(orig) != string(payload) {
			t.Fatalf("dead letter carries %q (%s) for %q", orig, dl.PayloadEncoding, payload)
		}
	})
}

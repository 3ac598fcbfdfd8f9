package rastsim

import (
	"bytes"
	"testing"
)

// FuzzLoadMapping: a mapping file either fails to load or every command it names is found by
// its own name with its own type (an exact match wins over substrings).
func FuzzLoadMapping(f *testing.F) {
	for _, seed := range []string{
		`{"ID_REQ_KC_STORE7D3BPACKET": 9}`,
		`{"ID_A": 1, "ID_AB": 2, "id_abc": 3.0}`,
		`{"X": 1, "x": 2}`, `{}`, `[]`, `{"A": 1.5}`, `{"A": 1} trailing`, `{"": 1}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := LoadMapping(bytes.NewReader(data))
		if err != nil {
			return
		}
		if m.Len() == 0 {
			t.Fatal("loaded an empty mapping")
		}
		for _, e := range m.entries {
			name, typ, ok := m.Lookup("/" + e.name)
			if !ok || name != e.name || typ != e.typ {
				t.Fatalf("Lookup(%q) = %q %d %v, want itself with type %d", e.name, name, typ, ok, e.typ)
			}
		}
	})
}

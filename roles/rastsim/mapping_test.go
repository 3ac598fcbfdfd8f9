package rastsim

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/lpsdev/lps/internal/testutil"
)

func TestLoadMappingProdWorkload(t *testing.T) {
	f, err := os.Open(testutil.SharedData(t, "gs_requests_mapping_prod_workload.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := LoadMapping(f)
	if err != nil {
		t.Fatalf("LoadMapping: %v", err)
	}
	if m.Len() != 348 {
		t.Errorf("Len = %d, want 348", m.Len())
	}
	tests := []struct {
		path     string
		wantName string
		wantType int
	}{
		{"/ID_REQ_KC_STORE7D3BPACKET", AlarmCommand, 9},
		{"ID_REQ_LCMD_MONGETMASTERSTATUS", "ID_REQ_LCMD_MONGETMASTERSTATUS", 0}, // first in the file
		{"ID_REQ_LCMD_MONSEARCHKUNDEEP1", "ID_REQ_LCMD_MONSEARCHKUNDEEP1", 347}, // last in the file
		// ID_REQ_LCMD_MONGETEPN comes first in the file and contains ID_REQ_LCMD_MONGETEP: the
		// original answered the wrong command; the exact match must win.
		{"/ID_REQ_LCMD_MONGETEP", "ID_REQ_LCMD_MONGETEP", 49},
		{"/ID_REQ_LCMD_MONGETEPN", "ID_REQ_LCMD_MONGETEPN", 39},
		{"/id_get_terminplan", "ID_GET_TERMINPLAN", 97},
		// A substring takes the first key in file order that contains it.
		{"/TERMINPLAN", "ID_GET_TERMINPLAN_GRUPPE", 96},
		{"/store7d3b", AlarmCommand, 9},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			name, typ, ok := m.Lookup(tt.path)
			if !ok || name != tt.wantName || typ != tt.wantType {
				t.Errorf("Lookup(%q) = %q, %d, %v; want %q, %d, true", tt.path, name, typ, ok, tt.wantName, tt.wantType)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	m := mustMapping(t, `{"ID_AB_LONG": 1, "ID_AB": 2, "X_FOO_1": 3, "Y_FOO_2": 4}`)
	tests := []struct {
		path     string
		wantName string
		wantType int
		wantOK   bool
	}{
		{"/ID_AB", "ID_AB", 2, true},           // exact wins over the earlier ID_AB_LONG
		{"ID_AB", "ID_AB", 2, true},            // the slash is optional
		{"/id_ab", "ID_AB", 2, true},           // case-insensitive exact
		{"/Id_Ab_LoNg", "ID_AB_LONG", 1, true}, // case-insensitive exact
		{"/AB", "ID_AB_LONG", 1, true},         // substring: first in file order
		{"/foo", "X_FOO_1", 3, true},           // substring, case-insensitive, file order
		{"/FOO_2", "Y_FOO_2", 4, true},         // substring of a later key only
		{"/", "", 0, false},                    // an empty path names nothing
		{"", "", 0, false},                     //
		{"/ID_ABC", "", 0, false},              // longer than every key
		{"/ID_AB/", "", 0, false},              // a trailing slash is part of the path
		{"/NOPE", "", 0, false},                //
		{"/ID_AB_LONG_X", "", 0, false},        //
		{"/x_foo_1", "X_FOO_1", 3, true},       //
		{"/_", "ID_AB_LONG", 1, true},          // the original's quirk: any substring matches
		{"/ID_AB_LONG", "ID_AB_LONG", 1, true}, //
		{"//ID_AB", "", 0, false},              // only one leading slash is dropped
		{"/Y_FOO_2", "Y_FOO_2", 4, true},       //
		{"/ID_AB_LON", "ID_AB_LONG", 1, true},  //
		{"/id_ab_long ", "", 0, false},         // no trimming
		{"/X_FOO_1Y_FOO_2", "", 0, false},      //
		{"/ID_REQ_KC_STORE7D3BPACKET", "", 0, false},
	}
	for _, tt := range tests {
		name, typ, ok := m.Lookup(tt.path)
		if name != tt.wantName || typ != tt.wantType || ok != tt.wantOK {
			t.Errorf("Lookup(%q) = %q, %d, %v; want %q, %d, %v", tt.path, name, typ, ok, tt.wantName, tt.wantType, tt.wantOK)
		}
	}
}

func TestDefaultMapping(t *testing.T) {
	m := DefaultMapping()
	if m.Len() != 1 {
		t.Errorf("Len = %d, want 1", m.Len())
	}
	if name, typ, ok := m.Lookup("/ID_REQ_KC_STORE7D3BPACKET"); !ok || name != AlarmCommand || typ != 9 {
		t.Errorf("Lookup(alarm) = %q, %d, %v", name, typ, ok)
	}
}

func TestLoadMappingErrors(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"empty input", ``, "truncated or empty JSON"},
		{"truncated", `{"A": 1`, "truncated"},
		{"malformed", `{"A" 1}`, "malformed JSON at byte"},
		{"non-string key", `{1: 2}`, "malformed JSON"},
		{"array", `[1, 2]`, "must be a JSON object of command name to request type, not an array"},
		{"number", `9`, "not a number"},
		{"empty object", `{}`, "mapping has no commands"},
		{"string type", `{"A": "9"}`, `request type of "A" must be an integer, not "9"`},
		{"fraction", `{"A": 9.5}`, `request type of "A" must be an integer, not 9.5`},
		{"null", `{"A": null}`, `must be an integer, not null`},
		{"bool", `{"A": true}`, `must be an integer, not true`},
		{"object", `{"A": {"x": 1}}`, `must be an integer, not {"x": 1}`},
		{"huge", `{"A": 1e300}`, `must be an integer, not 1e300`},
		{"duplicate", `{"A": 1, "B": 2, "A": 3}`, `duplicate command "A"`},
		{"duplicate ignoring case", `{"ID_X": 1, "id_x": 2}`, `duplicate command "id_x" (same as "ID_X" ignoring case)`},
		{"empty name", `{"": 1}`, "empty command name"},
		{"trailing data", `{"A": 1} {"B": 2}`, "data after the JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := LoadMapping(strings.NewReader(tt.doc))
			if err == nil {
				t.Fatalf("LoadMapping(%s) = %d commands, want an error containing %q", tt.doc, m.Len(), tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadMapping(%s) error = %q, want it to contain %q", tt.doc, err, tt.want)
			}
		})
	}
	if _, err := LoadMapping(strings.NewReader(`{}`)); !errors.Is(err, ErrEmptyMapping) {
		t.Errorf("empty mapping: error %v is not ErrEmptyMapping", err)
	}
}

func TestLoadMappingAcceptsIntegralDoubles(t *testing.T) {
	m := mustMapping(t, `{"A": 9.0, "B": -1, "C": 1e2}`)
	for path, want := range map[string]int{"A": 9, "B": -1, "C": 100} {
		if _, typ, ok := m.Lookup(path); !ok || typ != want {
			t.Errorf("Lookup(%q) = %d, %v; want %d", path, typ, ok, want)
		}
	}
}

package rastsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// The alarm command, the only one the built-in mapping knows.
const (
	AlarmCommand     = "ID_REQ_KC_STORE7D3BPACKET"
	AlarmRequestType = 9
)

// ErrEmptyMapping is returned by LoadMapping for a mapping without commands.
var ErrEmptyMapping = errors.New("mapping has no commands")

// Mapping maps command names to the request types the model takes, in the order of the file it
// was loaded from. It is immutable and safe for concurrent use.
type Mapping struct {
	entries []mappingEntry
	exact   map[string]int // lower-case name -> index in entries
}

type mappingEntry struct {
	name  string
	lower string
	typ   int
}

// DefaultMapping returns the built-in mapping: only AlarmCommand, request type 9, which is all
// the LPS experiments send besides the background workload.
func DefaultMapping() *Mapping {
	return &Mapping{
		entries: []mappingEntry{{name: AlarmCommand, lower: strings.ToLower(AlarmCommand), typ: AlarmRequestType}},
		exact:   map[string]int{strings.ToLower(AlarmCommand): 0},
	}
}

// LoadMapping reads a mapping in the original's JSON format, one object of command name to
// request type ({"ID_REQ_KC_STORE7D3BPACKET": 9, ...}), keeping the file's order, which
// substring lookups depend on. Request types must be integers (9.0 is accepted, as the original
// read them as doubles). A malformed document, an empty object, an empty name or a name that
// appears twice (ignoring case, as lookups do) is an error.
func LoadMapping(r io.Reader) (*Mapping, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("reading mapping: %w", jsonErr(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("reading mapping: must be a JSON object of command name to request type, not %s", describe(tok))
	}
	m := &Mapping{exact: make(map[string]int)}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("reading mapping: %w", jsonErr(err))
		}
		name := tok.(string) // inside an object, Token returns keys as strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("reading mapping: value of %q: %w", name, jsonErr(err))
		}
		if name == "" {
			return nil, errors.New("reading mapping: empty command name")
		}
		typ, err := requestType(raw)
		if err != nil {
			return nil, fmt.Errorf("reading mapping: request type of %q %w", name, err)
		}
		lower := strings.ToLower(name)
		if i, dup := m.exact[lower]; dup {
			if m.entries[i].name == name {
				return nil, fmt.Errorf("reading mapping: duplicate command %q", name)
			}
			return nil, fmt.Errorf("reading mapping: duplicate command %q (same as %q ignoring case)", name, m.entries[i].name)
		}
		m.exact[lower] = len(m.entries)
		m.entries = append(m.entries, mappingEntry{name: name, lower: lower, typ: typ})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, fmt.Errorf("reading mapping: %w", jsonErr(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("reading mapping: data after the JSON object")
	}
	if len(m.entries) == 0 {
		return nil, ErrEmptyMapping
	}
	return m, nil
}

// requestType parses a request type, which must be an integral JSON number.
func requestType(raw json.RawMessage) (int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || !(raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')) {
		return 0, fmt.Errorf("must be an integer, not %s", abbreviate(raw))
	}
	if n, err := strconv.Atoi(string(raw)); err == nil {
		return n, nil
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > math.MaxInt32 {
		return 0, fmt.Errorf("must be an integer, not %s", abbreviate(raw))
	}
	return int(f), nil
}

// Len is the number of commands.
func (m *Mapping) Len() int { return len(m.entries) }

// Lookup finds the command a request path names; a leading "/" is ignored. A name equal to the
// path ignoring case wins; otherwise the first name in file order that contains the path as a
// substring, ignoring case, as the original simulator matched (so "/store7d3b" finds
// ID_REQ_KC_STORE7D3BPACKET). An empty path names no command.
func (m *Mapping) Lookup(path string) (name string, reqType int, ok bool) {
	i, ok := m.lookup(path)
	if !ok {
		return "", 0, false
	}
	return m.entries[i].name, m.entries[i].typ, true
}

func (m *Mapping) lookup(path string) (int, bool) {
	path = strings.ToLower(strings.TrimPrefix(path, "/"))
	if path == "" {
		return 0, false
	}
	if i, ok := m.exact[path]; ok {
		return i, true
	}
	// A linear scan: substring matches are rare (the load sends exact names) and mappings have a
	// few hundred entries.
	for i := range m.entries {
		if strings.Contains(m.entries[i].lower, path) {
			return i, true
		}
	}
	return 0, false
}

// jsonErr makes decoder errors say where they happened.
func jsonErr(err error) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("malformed JSON at byte %d: %w", se.Offset, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("truncated or empty JSON")
	default:
		return err
	}
}

func describe(tok json.Token) string {
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			return "an array"
		}
		return string(t)
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	default:
		return fmt.Sprintf("%v", t)
	}
}

func abbreviate(raw []byte) string {
	const limit = 40
	if len(raw) > limit {
		return string(raw[:limit]) + "..."
	}
	return string(raw)
}

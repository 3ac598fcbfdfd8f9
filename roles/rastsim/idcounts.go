package rastsim

import (
	"bufio"
	"encoding/json"
	"maps"
	"math"
	"slices"
	"strconv"
)

// idCounts counts the arrivals of every Request-Id. It is the simulator's largest use of memory,
// since an experiment needs the whole of it: a map entry with its string costs about 100 bytes
// of heap an id, and with the garbage collector's headroom rast-sim peaked at 166 MB after 10
// minutes at 1,000 alarms/s. The load generator's ids (lps load, the experiments, the
// background workload) are a run's prefix and a sequence number, "<prefix>-0000001": those are
// kept as counts indexed by the number, 4 bytes an id, and their strings are made again only
// when the ledger is read. Any other id is a map entry.
type idCounts struct {
	seqs     map[string][]uint32 // prefix -> arrivals by sequence number
	other    map[string]int      // the other ids
	distinct int
	spilled  bool // a sequence id went to other for being far ahead of its series
}

func newIDCounts() *idCounts {
	return &idCounts{seqs: map[string][]uint32{}, other: map[string]int{}}
}

// seqDigits is the width the load generator pads its sequence numbers to (%07d).
const seqDigits = 7

// seqSlack bounds how far beyond its series a sequence number may start a slot: an id far
// ahead ("x-9999999999") goes to the map instead of growing a series by gigabytes.
const seqSlack = 1 << 16

// splitSeq splits id into prefix and sequence number when it is one the load generator makes,
// exactly as fmt.Sprintf("%s-%07d", prefix, n) would write it, so that the id can be made
// again from the two.
func splitSeq(id string) (prefix string, n int, ok bool) {
	dash := -1
	for i := len(id) - 1; i >= 0; i-- {
		if id[i] == '-' {
			dash = i
			break
		}
		if id[i] < '0' || id[i] > '9' {
			return "", 0, false
		}
	}
	digits := id[dash+1:]
	if dash < 0 || len(digits) < seqDigits || len(digits) > 10 || (len(digits) > seqDigits && digits[0] == '0') {
		return "", 0, false
	}
	v, err := strconv.ParseUint(digits, 10, 31)
	if err != nil {
		return "", 0, false
	}
	return id[:dash], int(v), true
}

// appendSeqID appends the id of prefix and n as the load generator writes it.
func appendSeqID(b []byte, prefix string, n int) []byte {
	b = append(b, prefix...)
	b = append(b, '-')
	var digits [10]byte
	d := strconv.AppendInt(digits[:0], int64(n), 10)
	for range seqDigits - len(d) {
		b = append(b, '0')
	}
	return append(b, d...)
}

// inOther marks a sequence slot whose id is counted in the map instead: it arrived far ahead
// of its series before the series reached it, or its count reached the slot's maximum.
const inOther = math.MaxUint32

// add counts an arrival of id and returns how many arrived before it.
func (c *idCounts) add(id string) int {
	if prefix, n, ok := splitSeq(id); ok {
		if s := c.seqs[prefix]; n < len(s)+seqSlack {
			if n >= len(s) {
				old := len(s)
				s = slices.Grow(s, n+1-old)[:n+1]
				clear(s[old:])
				c.seqs[prefix] = s
			}
			if s[n] == 0 && c.spilled {
				if _, ok := c.other[id]; ok {
					s[n] = inOther
				}
			}
			switch {
			case s[n] < inOther-1:
				before := int(s[n])
				if before == 0 {
					c.distinct++
				}
				s[n]++
				return before
			case s[n] == inOther-1: // full: the id moves to the map
				c.other[id] = int(s[n])
				s[n] = inOther
			}
		} else {
			c.spilled = true
		}
	}
	before := c.other[id]
	if before == 0 {
		c.distinct++
	}
	c.other[id] = before + 1
	return before
}

// clone copies the counts, so that they can be read outside the simulator's lock: 4 bytes a
// sequence id, where a copy of the map was 24 bytes and a string an id.
func (c *idCounts) clone() *idCounts {
	cp := &idCounts{seqs: make(map[string][]uint32, len(c.seqs)), other: maps.Clone(c.other), distinct: c.distinct, spilled: c.spilled}
	for p, s := range c.seqs {
		cp.seqs[p] = slices.Clone(s)
	}
	return cp
}

// each calls f with every id and its arrivals, in no particular order; id is valid only during
// the call.
func (c *idCounts) each(f func(id []byte, n int)) {
	var buf []byte
	for p, s := range c.seqs {
		for n, k := range s {
			if k != 0 && k != inOther {
				buf = appendSeqID(buf[:0], p, n)
				f(buf, int(k))
			}
		}
	}
	for id, n := range c.other {
		buf = append(buf[:0], id...)
		f(buf, n)
	}
}

// writeJSON writes the counts as the members of a JSON object, "id":n,…. A series's prefix is
// escaped once; its numbers need no escaping.
func (c *idCounts) writeJSON(w *bufio.Writer) {
	sep := func() {}
	comma := func() { w.WriteByte(',') }
	var num []byte
	for p, s := range c.seqs {
		key, _ := json.Marshal(p) // a string always encodes
		open := key[:len(key)-1]  // without its closing quote
		for n, k := range s {
			if k == 0 || k == inOther {
				continue
			}
			sep()
			sep = comma
			w.Write(open)
			num = appendSeqID(num[:0], "", n) // "-0000001"
			w.Write(num)
			w.WriteByte('"')
			w.WriteByte(':')
			w.Write(strconv.AppendUint(num[:0], uint64(k), 10))
		}
	}
	for id, n := range c.other {
		sep()
		sep = comma
		key, _ := json.Marshal(id)
		w.Write(key)
		w.WriteByte(':')
		w.Write(strconv.AppendInt(num[:0], int64(n), 10))
	}
}

// toMap returns the counts as a map of id to arrivals.
func (c *idCounts) toMap() map[string]int {
	m := make(map[string]int, c.distinct)
	c.each(func(id []byte, n int) { m[string(id)] = n })
	return m
}

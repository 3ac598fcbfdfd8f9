package rastsim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"runtime"
	"testing"

	"github.com/lpsdev/lps/internal/testutil"
)

// TestIDCountsMatchAMap: whatever the ids (the load generator's, near misses of its format,
// far-ahead sequence numbers, arbitrary strings), the counts, the number before each arrival
// and the distinct count are those of a plain map, and so are the JSON and the map made from
// them.
func TestIDCountsMatchAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	ids := []func() string{
		func() string { return fmt.Sprintf("run1-%07d", rng.IntN(3000)) },
		func() string { return fmt.Sprintf("bg-run1-%07d", rng.IntN(500)) },
		func() string { return fmt.Sprintf("performance-lps-s01-%07d", rng.IntN(2000)) },
		func() string { return fmt.Sprintf("run1-%08d", rng.IntN(50)) },               // 8 digits with a leading zero: not the format
		func() string { return fmt.Sprintf("run1-%d", rng.IntN(50)) },                 // too short
		func() string { return fmt.Sprintf("run1-%07d", 9_000_000+rng.IntN(5)) },      // far ahead of its series
		func() string { return fmt.Sprintf("run2-%07d", 10_000_000+rng.IntN(3)) },     // 8 digits, no leading zero
		func() string { return fmt.Sprintf("%07d", rng.IntN(10)) },                    // no prefix, no dash
		func() string { return fmt.Sprintf("-%07d", rng.IntN(10)) },                   // an empty prefix
		func() string { return fmt.Sprintf("x-%07d-y", rng.IntN(10)) },                // not at the end
		func() string { return fmt.Sprintf("%x", rng.Uint64()%64) },                   // anything
		func() string { return fmt.Sprintf(`a"<&>-%07d`, rng.IntN(10)) },              // JSON escapes in the prefix
		func() string { return fmt.Sprintf("run3-%010d", 2_147_483_648+rng.IntN(3)) }, // past 31 bits
	}
	c := newIDCounts()
	model := map[string]int{}
	for i := range 60_000 {
		id := ids[rng.IntN(len(ids))]()
		if got, want := c.add(id), model[id]; got != want {
			t.Fatalf("arrival %d of %q: %d before, want %d", i, id, got, want)
		}
		model[id]++
		if c.distinct != len(model) {
			t.Fatalf("after %d arrivals: %d distinct, want %d", i+1, c.distinct, len(model))
		}
	}
	if got := c.toMap(); !reflect.DeepEqual(got, model) {
		t.Fatalf("toMap differs from the model: %d ids against %d", len(got), len(model))
	}
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	w.WriteByte('{')
	c.clone().writeJSON(w)
	w.WriteByte('}')
	w.Flush()
	var decoded map[string]int
	if err := json.Unmarshal(buf.Bytes(), &decoded); err != nil {
		t.Fatalf("writeJSON: %v", err)
	}
	if !reflect.DeepEqual(decoded, model) {
		t.Fatalf("writeJSON differs from the model: %d ids against %d", len(decoded), len(model))
	}
	if !c.spilled {
		t.Error("no id was far ahead of its series: the test does not cover that path")
	}
	for p, s := range c.seqs { // the far-ahead ids did not stretch their series
		if len(s) > 3000+seqSlack {
			t.Errorf("series %q has %d slots for at most 3,000 ids", p, len(s))
		}
	}
}

// TestIDCountsSlotFull: an id that arrived as often as a slot counts moves to the map and goes
// on counting there.
func TestIDCountsSlotFull(t *testing.T) {
	c := newIDCounts()
	id := "run-0000002"
	c.add(id)
	c.seqs["run"][2] = inOther - 2 // as if it had arrived that often
	if before := c.add(id); before != inOther-2 {
		t.Fatalf("before the last arrival a slot counts: %d", before)
	}
	for want := inOther - 1; want < inOther+2; want++ {
		if before := c.add(id); before != want {
			t.Fatalf("before an arrival in the map: %d, want %d", before, want)
		}
	}
	if got := c.toMap(); len(got) != 1 || got[id] != inOther+2 || c.distinct != 1 {
		t.Errorf("counts %v, %d distinct; want %s: %d", got, c.distinct, id, inOther+2)
	}
}

// TestIDCountsFarAheadThenReached: an id that arrived far ahead of its series is in the map;
// when the series has grown to it, its next arrival is still counted with the first.
func TestIDCountsFarAheadThenReached(t *testing.T) {
	c := newIDCounts()
	far := fmt.Sprintf("s-%07d", seqSlack+10)
	c.add(far)
	for i := range seqSlack + 20 {
		if before := c.add(fmt.Sprintf("s-%07d", i)); i != seqSlack+10 && before != 0 {
			t.Fatalf("s-%07d arrives first with %d before", i, before)
		}
	}
	if before := c.add(far); before != 2 {
		t.Errorf("%s's third arrival: %d before, want 2", far, before)
	}
	if got := c.toMap(); len(got) != seqSlack+20 || got[far] != 3 || c.distinct != seqSlack+20 {
		t.Errorf("%d ids, %s: %d, %d distinct; want %d ids, 3 and %d", len(got), far, got[far], c.distinct, seqSlack+20, seqSlack+20)
	}
}

// BenchmarkIDCounts reports the heap a ledger of b.N load generator ids takes:
//
//	go test -run '^$' -bench '^BenchmarkIDCounts$' -benchtime 1000000x ./roles/rastsim/
func BenchmarkIDCounts(b *testing.B) {
	for _, kind := range []string{"ledger", "map"} {
		b.Run(kind, func(b *testing.B) {
			before := testutil.HeapInUse()
			c, m := newIDCounts(), map[string]int{}
			for i := range b.N {
				id := fmt.Sprintf("performance-lps-s01-%07d", i)
				if kind == "ledger" {
					c.add(id)
				} else {
					m[id]++
				}
			}
			b.ReportMetric(float64(testutil.HeapInUse()-before)/float64(b.N), "heap-B/id")
			runtime.KeepAlive(c)
			runtime.KeepAlive(m)
		})
	}
}

// BenchmarkIDCountsJSON writes a ledger of 600,000 load generator ids (10 minutes at 1,000
// alarms/s), as every poll of GET /stats/requests does.
func BenchmarkIDCountsJSON(b *testing.B) {
	c := newIDCounts()
	for i := range 600_000 {
		c.add(fmt.Sprintf("performance-lps-s01-%07d", i))
	}
	w := bufio.NewWriterSize(io.Discard, 32<<10)
	b.ReportAllocs()
	for b.Loop() {
		c.clone().writeJSON(w)
		w.Flush()
	}
}

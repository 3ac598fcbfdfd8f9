package broker

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/lpsdev/lps/internal/testutil"
)

// groupState returns the in-memory window length and the spilled count of a
// group queue.
func groupState(b *runningBroker, filter string) (window, spilled int) {
	b.disp.mu.Lock()
	defer b.disp.mu.Unlock()
	g := b.disp.groups[filter]
	if g == nil {
		return 0, 0
	}
	return g.queue.len(), g.spilled
}

// publishQueued publishes n QoS 2 messages to the legacy queue, with no
// consumer, and returns their payloads.
func publishQueued(t *testing.T, addr string, n int) []string {
	t.Helper()
	pub, _ := dialRaw(t, addr, rawOpts{id: "proxy1-1"})
	want := payloads("proxy1-1", n)
	for _, p := range want {
		if rec, comp := pub.publish2("proxy1-1/message", p); rec != 0 || comp != 0 {
			t.Fatalf("publishing %s: PUBREC %#x, PUBCOMP %#x; want 0 and 0", p, rec, comp)
		}
	}
	return want
}

func payloadIndex(p string) int {
	k, _ := strconv.Atoi(p[strings.LastIndexByte(p, '-')+1:])
	return k
}

// TestGroupWindowRefillsFromStore: with a data dir, a group queue keeps a
// window of its backlog in memory and the rest on disk; a restart reads a
// window, not the backlog; a consumer gets every message once, in order, as
// the window refills from the data dir.
func TestGroupWindowRefillsFromStore(t *testing.T) {
	const n, window = 300, 8
	cfg := Config{DataDir: t.TempDir(), Queues: []Queue{legacyQueue}, window: window}
	b := startBroker(t, cfg)
	want := publishQueued(t, b.Addr().String(), n)
	if w, s := groupState(b, sharedFilter); w != window || s != n-window {
		t.Fatalf("before restart: window %d, spilled %d; want %d and %d", w, s, window, n-window)
	}
	b.stop()

	b = startBroker(t, cfg)
	if w, s := groupState(b, sharedFilter); w != window || s != n-window {
		t.Fatalf("after restart: window %d, spilled %d; want %d and %d", w, s, window, n-window)
	}
	if got := b.Stats().Queues[legacyQueue.String()]; got != n {
		t.Fatalf("Stats.Queues after restart = %d, want %d", got, n)
	}

	col := newCollector()
	c := mustDial(t, b.Addr().String(), consumer("legacy-proxy-2-1", 3, col, 0))
	subscribe(t, c, sharedFilter)
	testutil.Eventually(t, testTimeout, func() error {
		if col.distinct() != n || b.QueueDepth() != 0 {
			return fmt.Errorf("waiting for the consumer to get all %d (has %d, depth %d)", n, col.distinct(), b.QueueDepth())
		}
		return nil
	})
	if d := col.duplicates(); d != 0 {
		t.Errorf("%d duplicates", d)
	}
	if got := col.arrivals(); !slices.Equal(got, want) {
		t.Errorf("arrivals out of order or incomplete: first %v", got[:min(20, len(got))])
	}
	if w, s := groupState(b, sharedFilter); w != 0 || s != 0 {
		t.Errorf("after the drain: window %d, spilled %d; want 0 and 0", w, s)
	}
	disconnect(c)
	b.stop()

	// Nothing of the backlog is left in the data dir either.
	b = startBroker(t, cfg)
	if d := b.QueueDepth(); d != 0 {
		t.Errorf("QueueDepth after a second restart = %d, want 0", d)
	}
}

// TestGroupWindowMembersJoinAndLeave: a backlog larger than the window is
// shared by members that come and go; one disconnects with messages it never
// acknowledged, which go back to the group and reach another member. Every
// message arrives; none twice at the members that acknowledge; each member
// gets its messages in order, but for those returned by the one that left.
func TestGroupWindowMembersJoinAndLeave(t *testing.T) {
	const n, window = 400, 16
	cfg := Config{DataDir: t.TempDir(), Queues: []Queue{legacyQueue}, window: window}
	b := startBroker(t, cfg)
	want := publishQueued(t, b.Addr().String(), n)

	// A takes its receive maximum and never acknowledges it.
	held := newCollector()
	a := mustDial(t, b.Addr().String(), clientOpts{
		id: "legacy-proxy-2-a", expiry: 3600, receiveMax: 4, manualAck: true,
		onPublish: func(_ *paho.Client, p *paho.Publish) { held.add(string(p.Payload)) },
	})
	subscribe(t, a, sharedFilter)
	testutil.Eventually(t, testTimeout, func() error {
		if held.distinct() != 4 {
			return fmt.Errorf("waiting for A to hold 4 messages (has %d)", held.distinct())
		}
		return nil
	})

	cols := []*collector{newCollector(), newCollector()}
	var members []*paho.Client
	for i, col := range cols {
		c := mustDial(t, b.Addr().String(), consumer(fmt.Sprintf("legacy-proxy-2-%d", i+1), 3, col, 0))
		subscribe(t, c, sharedFilter)
		members = append(members, c)
	}
	disconnect(a) // its four go back to the group

	total := func() int { return cols[0].distinct() + cols[1].distinct() }
	testutil.Eventually(t, testTimeout, func() error {
		if total() != n || b.QueueDepth() != 0 {
			return fmt.Errorf("waiting for the members to get all %d (have %d, depth %d)", n, total(), b.QueueDepth())
		}
		return nil
	})
	seen := map[string]bool{}
	for i, col := range cols {
		if d := col.duplicates(); d != 0 {
			t.Errorf("member %d got %d duplicates", i+1, d)
		}
		last := -1
		for _, p := range col.arrivals() {
			if seen[p] {
				t.Errorf("%s delivered to both members", p)
			}
			seen[p] = true
			if held.count[p] > 0 {
				continue // returned by A: may come after later ones
			}
			if k := payloadIndex(p); k <= last {
				t.Errorf("member %d got %s after #%d: out of order", i+1, p, last)
			} else {
				last = k
			}
		}
	}
	for _, p := range want {
		if !seen[p] {
			t.Errorf("%s never delivered", p)
		}
	}
	for _, c := range members {
		disconnect(c)
	}
}

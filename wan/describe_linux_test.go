//go:build linux

package wan

import (
	"math"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// The kernel these tests were written on has no netem, so the netem side is
// checked here as data; its netlink request was compared with tc's (see
// egressQdiscs).
func TestEgressQdiscs(t *testing.T) {
	tick := netlink.TickInUsec()
	if tick == 0 {
		t.Skip("skipping: /proc/net/psched is unreadable")
	}
	corp, _ := Builtin("corporate-wan")
	tests := []struct {
		name string
		p    Profile
		want []string // describeQdisc of each, root first
	}{
		{
			name: "corporate-wan",
			p:    corp,
			want: []string{
				"qdisc netem 4c50: root limit 10000 delay 30ms jitter 3ms loss 0.01%",
				"qdisc tbf 4c51: parent 4c50:1 rate 5mbit burst 18750b limit 81250b",
			},
		},
		{
			name: "rate only",
			p:    corp.RateOnly(),
			want: []string{"qdisc tbf 4c50: root rate 5mbit burst 18750b limit 81250b"},
		},
		{
			name: "delay only",
			p:    Profile{Delay: 80 * time.Millisecond},
			want: []string{"qdisc netem 4c50: root limit 10000 delay 80ms"},
		},
		{
			name: "loss only",
			p:    Profile{LossPercent: 1.5},
			want: []string{"qdisc netem 4c50: root limit 10000 delay 0s loss 1.5%"},
		},
		{
			// The bucket holds two full frames (3028 bytes, 3027 after the
			// round trip through scheduler ticks) even when 30 ms at the
			// rate is less.
			name: "slow",
			p:    Profile{EgressRate: 64_000},
			want: []string{"qdisc tbf 4c50: root rate 64kbit burst 3027b limit 3828b"},
		},
		{name: "ingress only", p: Profile{IngressRate: 1e6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			qs := egressQdiscs(7, 1500, tt.p)
			if len(qs) != len(tt.want) {
				t.Fatalf("got %d qdiscs %v, want %d", len(qs), qs, len(tt.want))
			}
			for i, q := range qs {
				if q.Attrs().LinkIndex != 7 {
					t.Errorf("qdisc %d on link %d", i, q.Attrs().LinkIndex)
				}
				if got := describeQdisc(q); got != tt.want[i] {
					t.Errorf("qdisc %d: %q, want %q", i, got, tt.want[i])
				}
			}
		})
	}

	// The raw values the kernel gets, as tc sends them for
	// "netem limit 10000 delay 30ms 3ms loss 0.01%".
	n := egressQdiscs(1, 1500, corp)[0].(*netlink.Netem)
	if want := uint32(30000 * tick); n.Latency != want {
		t.Errorf("netem latency %d ticks, want %d", n.Latency, want)
	}
	if want := uint32(3000 * tick); n.Jitter != want {
		t.Errorf("netem jitter %d ticks, want %d", n.Jitter, want)
	}
	if want := 0.0001 * math.MaxUint32; math.Abs(float64(n.Loss)-want) > 2 {
		t.Errorf("netem loss %d, want %.0f", n.Loss, want)
	}
}

func TestHandleStrings(t *testing.T) {
	for _, tt := range []struct {
		got, want string
	}{
		{handleString(netlink.MakeHandle(0x4c50, 0)), "4c50:"},
		{handleString(netlink.MakeHandle(0x4c50, 1)), "4c50:1"},
		{handleString(netlink.HANDLE_INGRESS), "ffff:fff1"},
		{u32HandleString(0x80000800), "800::800"},
		{u32HandleString(0x80000000), "800::"},
		{protoString(0x0003), "all"},
		{protoString(0x86dd), "ipv6"},
		{protoString(0x0806), "0x0806"},
		{ifbNameFor(123456789), "ifb-lps123456789"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

package faults

import (
	"net"
	"strconv"
	"testing"
)

// The ports handed out are distinct, below the ephemeral range, and free: a program that binds
// them afterwards (the Docker engine) gets them.
func TestLoopbackPortsAreFreeAndBelowTheEphemeralRange(t *testing.T) {
	ports, err := LoopbackPorts(20)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 20 {
		t.Fatalf("%d ports, want 20", len(ports))
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < lowPortMin || p >= lowPortMax {
			t.Errorf("port %d outside [%d, %d)", p, lowPortMin, lowPortMax)
		}
		if seen[p] {
			t.Errorf("port %d handed out twice", p)
		}
		seen[p] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Errorf("port %d is not free: %v", p, err)
			continue
		}
		l.Close()
	}
}

// A port that is taken is skipped, not handed out.
func TestLoopbackPortsSkipATakenPort(t *testing.T) {
	first, err := LoopbackPorts(1)
	if err != nil {
		t.Fatal(err)
	}
	// The next candidate is first+1 (they are taken in turn); hold it.
	next := first[0] + 1
	if next >= lowPortMax {
		next = lowPortMin
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(next)))
	if err != nil {
		t.Skipf("port %d was already taken by someone else: %v", next, err)
	}
	defer l.Close()
	got, err := LoopbackPorts(1)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] == next {
		t.Fatalf("the held port %d was handed out", next)
	}
}

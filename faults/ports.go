package faults

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

// The ports processes are given, below the kernel's range of ephemeral ports (32768–60999
// unless net.ipv4.ip_local_port_range says otherwise). A process keeps its port across
// restarts (Pin); a port from the ephemeral range, free while the process is down, can be
// handed to any listener on port 0 or any outgoing connection meanwhile — another test's — and
// the restart then fails, or worse, its readiness check asks the other listener. CI saw that
// once.
const (
	lowPortMin = 20000
	lowPortMax = 32000
)

var lowPorts struct {
	sync.Mutex
	next int
}

// LoopbackAddr returns 127.0.0.1:PORT with a port below the ephemeral range that was free a
// moment ago and that this process has not handed out before (they are taken in turn from a
// random start, so two test binaries rarely meet). When none is free it returns
// 127.0.0.1:0, a port the kernel picks.
func LoopbackAddr() string {
	if p := lowPort(); p != 0 {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	return "127.0.0.1:0"
}

// LoopbackPorts returns n ports as LoopbackAddr picks them, for a program that binds them
// itself later, such as the Docker engine publishing a compose file's ports, or an error when
// there are not that many free.
func LoopbackPorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		p := lowPort()
		if p == 0 {
			return nil, fmt.Errorf("no free loopback port between %d and %d", lowPortMin, lowPortMax)
		}
		ports = append(ports, p)
	}
	return ports, nil
}

// lowPort is the next free port below the ephemeral range, or 0 when none is.
func lowPort() int {
	lowPorts.Lock()
	defer lowPorts.Unlock()
	if lowPorts.next == 0 {
		lowPorts.next = lowPortMin + rand.IntN(lowPortMax-lowPortMin)
	}
	for range lowPortMax - lowPortMin {
		p := lowPorts.next
		if lowPorts.next++; lowPorts.next >= lowPortMax {
			lowPorts.next = lowPortMin
		}
		if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p))); err == nil {
			l.Close()
			return p
		}
	}
	return 0
}

//go:build linux

package tcptune

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lpsdev/lps/internal/testutil"
)

// tcpListen is TCP_LISTEN of the kernel's include/net/tcp_states.h.
const tcpListen = 10

// errNoDiag marks a kernel that does not answer inet_diag queries, which
// makes the tests that need them skip rather than fail.
var errNoDiag = errors.New("inet_diag netlink not available")

// diagListener asks the kernel, through inet_diag, about the listening
// socket bound to addr: for listeners the diag message's WQueue is
// sk_max_ack_backlog (what `ss -ltn` shows as Send-Q) and RQueue the number
// of connections waiting to be accepted (Recv-Q).
func diagListener(addr *net.TCPAddr) (backlog, queued uint32, err error) {
	family := uint8(unix.AF_INET6)
	if addr.IP.To4() != nil {
		family = unix.AF_INET
	}
	var socks []*netlink.Socket
	for range 3 {
		socks, err = netlink.SocketDiagTCP(family)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %w", errNoDiag, err)
	}
	for _, s := range socks {
		if s.State == tcpListen && s.ID.SourcePort == uint16(addr.Port) && s.ID.Source.Equal(addr.IP) {
			return s.WQueue, s.RQueue, nil
		}
	}
	return 0, 0, fmt.Errorf("no listening socket for %v among %d TCP sockets", addr, len(socks))
}

func kernelBacklog(t *testing.T, addr *net.TCPAddr) uint32 {
	t.Helper()
	backlog, _, err := diagListener(addr)
	if errors.Is(err, errNoDiag) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return backlog
}

func somaxconn(t *testing.T) int {
	t.Helper()
	s, err := ReadSettings("")
	if err != nil || !s.Known(KeySoMaxConn) {
		t.Skipf("net.core.somaxconn not readable: %v %v", err, s.Unreadable[KeySoMaxConn])
	}
	return s.SoMaxConn
}

func TestListenBacklogInKernel(t *testing.T) {
	maxConn := somaxconn(t)
	tests := []struct {
		name    string
		backlog int
		want    int
	}{
		{"one", 1, min(1, maxConn)},
		{"odd value", 37, min(37, maxConn)},
		{"zero means DefaultBacklog", 0, min(DefaultBacklog, maxConn)},
		{"DefaultBacklog", DefaultBacklog, min(DefaultBacklog, maxConn)},
		{"above somaxconn is capped", maxConn + 1, maxConn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := listenT(t, "tcp4", "127.0.0.1:0", tt.backlog)
			got := kernelBacklog(t, ln.Addr().(*net.TCPAddr))
			if int(got) != tt.want {
				t.Fatalf("kernel reports backlog %d for Listen(backlog=%d), want %d (somaxconn %d)", got, tt.backlog, tt.want, maxConn)
			}
		})
	}
}

// Listen must hand the kernel our backlog and not net.Listen's somaxconn:
// compare with what the standard library gets.
func TestListenBacklogDiffersFromNetListen(t *testing.T) {
	maxConn := somaxconn(t)
	if maxConn <= 37 {
		t.Skipf("somaxconn %d too small to tell the two apart", maxConn)
	}
	std, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { std.Close() })
	ours := listenT(t, "tcp4", "127.0.0.1:0", 37)
	stdBacklog := kernelBacklog(t, std.Addr().(*net.TCPAddr))
	ourBacklog := kernelBacklog(t, ours.Addr().(*net.TCPAddr))
	if ourBacklog != 37 || int(stdBacklog) != maxConn {
		t.Fatalf("backlogs: ours %d (want 37), net.Listen %d (want somaxconn %d)", ourBacklog, stdBacklog, maxConn)
	}
}

func TestListenWildcardIsDualStack(t *testing.T) {
	if _, err := os.Stat("/proc/net/if_inet6"); err != nil {
		t.Skip("no IPv6 in this kernel")
	}
	ln := listenT(t, "tcp", ":0", 16)
	addr := ln.Addr().(*net.TCPAddr)
	if !addr.IP.IsUnspecified() {
		t.Fatalf("listener address %v, want the unspecified address", addr)
	}
	serveEcho(t, ln)
	for _, host := range []string{"127.0.0.1", "::1"} {
		target := net.JoinHostPort(host, fmt.Sprint(addr.Port))
		if got := roundTrip(t, "tcp", target); got != "ping\n" {
			t.Errorf("round trip to %s returned %q", target, got)
		}
	}
	backlog := kernelBacklog(t, &net.TCPAddr{IP: net.IPv6unspecified, Port: addr.Port})
	if backlog != 16 {
		t.Errorf("kernel backlog %d, want 16", backlog)
	}
}

func TestListenSyscallErrors(t *testing.T) {
	busy := listenT(t, "tcp", "127.0.0.1:0", 0)
	tests := []struct {
		name, address string
		want          error
	}{
		{"port in use", busy.Addr().String(), syscall.EADDRINUSE},
		// 192.0.2.0/24 is TEST-NET-1, never an address of this host.
		{"address not on this host", "192.0.2.1:0", syscall.EADDRNOTAVAIL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := Listen(testContext(t), "tcp", tt.address, 0)
			if err == nil {
				ln.Close()
				t.Fatalf("Listen(%q) succeeded", tt.address)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v: want errors.Is(%v)", err, tt.want)
			}
		})
	}
}

// Listen goes through os.NewFile and net.FileListener, which dups the
// socket; neither copy may outlive the listener.
func TestListenDoesNotLeakDescriptors(t *testing.T) {
	countFDs := func() int {
		entries, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skipf("cannot list descriptors: %v", err)
		}
		return len(entries)
	}
	cycle := func() {
		ln, err := Listen(testContext(t), "tcp", "127.0.0.1:0", 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
		// A failing Listen must not leak either.
		if ln, err := Listen(testContext(t), "tcp", "192.0.2.1:0", 0); err == nil {
			ln.Close()
		}
	}
	cycle() // lets the runtime open its poller first
	before := countFDs()
	for range 50 {
		cycle()
	}
	if after := countFDs(); after > before {
		t.Fatalf("%d descriptors open after 50 listeners, %d before", after, before)
	}
}

// With a full accept queue the kernel turns connection attempts away and
// counts them in ListenOverflows; this is the mechanism behind the
// original's stalls, watched through the counters this package exports.
func TestListenOverflowIsCounted(t *testing.T) {
	before, err := ReadCounters("")
	if err != nil {
		t.Skipf("kernel counters not readable: %v", err)
	}
	// Backlog 1 and nobody accepting: the queue is full after two
	// connections (the kernel admits backlog+1).
	ln := listenT(t, "tcp4", "127.0.0.1:0", 1)
	addr := ln.Addr().String()

	ctx, cancel := context.WithCancel(testContext(t))
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{Timeout: testTimeout}
			if conn, err := d.DialContext(ctx, "tcp4", addr); err == nil {
				<-ctx.Done()
				conn.Close()
			}
		}()
	}

	if _, _, err := diagListener(ln.Addr().(*net.TCPAddr)); errors.Is(err, errNoDiag) {
		t.Skip(err)
	}
	// The counters are the whole namespace's, so another process's
	// overflow could raise them too; only a full queue of ours as well
	// shows that ours overflowed.
	testutil.Eventually(t, 10*time.Second, func() error {
		_, queued, err := diagListener(ln.Addr().(*net.TCPAddr))
		if err != nil {
			return err
		}
		if queued != 2 {
			return fmt.Errorf("%d connections queued, want 2 (backlog 1 + 1)", queued)
		}
		now, err := ReadCounters("")
		if err != nil {
			return err
		}
		if now.ListenOverflows <= before.ListenOverflows || now.ListenDrops <= before.ListenDrops {
			return fmt.Errorf("counters %+v, before %+v", now, before)
		}
		return nil
	})
}

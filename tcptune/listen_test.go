package tcptune

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// listenT opens a listener that is closed when the test ends.
func listenT(t *testing.T, network, address string, backlog int) net.Listener {
	t.Helper()
	ln, err := Listen(testContext(t), network, address, backlog)
	if err != nil {
		t.Fatalf("Listen(%q, %q, %d): %v", network, address, backlog, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serveEcho answers each line received on ln with the same line, until ln
// is closed; the test waits for it to stop.
func serveEcho(t *testing.T, ln net.Listener) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.SetDeadline(time.Now().Add(testTimeout))
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err == nil {
				conn.Write([]byte(line))
			}
			conn.Close()
		}
	}()
}

// roundTrip dials addr, sends a line and returns what came back.
func roundTrip(t *testing.T, network, addr string) string {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(testContext(t), network, addr)
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		t.Fatalf("writing: %v", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	return line
}

func TestListenRoundTrip(t *testing.T) {
	tests := []struct {
		name, network, address string
		backlog                int
	}{
		{"tcp loopback default backlog", "tcp", "127.0.0.1:0", 0},
		{"tcp4 loopback small backlog", "tcp4", "127.0.0.1:0", 3},
		{"localhost name", "tcp", "localhost:0", 64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := listenT(t, tt.network, tt.address, tt.backlog)
			addr, ok := ln.Addr().(*net.TCPAddr)
			if !ok || addr.Port == 0 || !addr.IP.IsLoopback() {
				t.Fatalf("listener address %v: want a loopback TCP address with a port", ln.Addr())
			}
			serveEcho(t, ln)
			if got := roundTrip(t, "tcp", addr.String()); got != "ping\n" {
				t.Fatalf("round trip returned %q, want %q", got, "ping\n")
			}
		})
	}
}

func TestListenErrors(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name, network, address string
		backlog                int
		ctx                    context.Context
		wantIs                 error  // if set, errors.Is must hold
		wantText               string // if set, the message must contain it
	}{
		{name: "context cancelled before listen", network: "tcp", address: "127.0.0.1:0", ctx: cancelled, wantIs: context.Canceled},
		{name: "missing port", network: "tcp", address: "127.0.0.1", wantText: "missing port"},
		{name: "port out of range", network: "tcp", address: "127.0.0.1:70000", wantText: "70000"},
		{name: "unknown service", network: "tcp", address: "127.0.0.1:no-such-service", wantText: "no-such-service"},
		{name: "unsupported network", network: "udp", address: "127.0.0.1:0", wantText: "unknown network udp"},
		{name: "negative backlog", network: "tcp", address: "127.0.0.1:0", backlog: -1, wantText: "invalid backlog -1"},
		{name: "IPv6 address on tcp4", network: "tcp4", address: "[::1]:0", wantText: "::1"},
		{name: "IPv4 address on tcp6", network: "tcp6", address: "127.0.0.1:0", wantText: "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := tt.ctx
			if ctx == nil {
				ctx = testContext(t)
			}
			ln, err := Listen(ctx, tt.network, tt.address, tt.backlog)
			if err == nil {
				ln.Close()
				t.Fatalf("Listen(%q, %q) succeeded on %v, want an error", tt.network, tt.address, ln.Addr())
			}
			var opErr *net.OpError
			if !errors.As(err, &opErr) || opErr.Op != "listen" {
				t.Errorf("error %v (%T) is not a listen *net.OpError", err, err)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v: want errors.Is(%v)", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not mention %q", err, tt.wantText)
			}
		})
	}
}

// A closed listener must give its port back, which also shows that no
// descriptor of it was left open.
func TestListenCloseReleasesPort(t *testing.T) {
	ln := listenT(t, "tcp", "127.0.0.1:0", 0)
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("closing: %v", err)
	}
	ln2 := listenT(t, "tcp", addr, 0)
	serveEcho(t, ln2)
	if got := roundTrip(t, "tcp", addr); got != "ping\n" {
		t.Fatalf("round trip returned %q", got)
	}
}

//go:build linux

package wan

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// The tests below build their own world: two network namespaces joined by
// a veth pair, "eth0" (169.254.77.1/30) in the client namespace, the end the
// tests shape, and "srv0" (169.254.77.2/30) in the server namespace. No
// packet leaves the pair and nothing is added to the namespace the test
// process runs in; the namespaces have no name and vanish when their last
// handle and socket are closed.
const (
	clientAddr = "169.254.77.1"
	serverAddr = "169.254.77.2"
)

type testNet struct {
	client, server netns.NsHandle
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: creating network namespaces and shaping needs root")
	}
	n := &testNet{client: newNS(t), server: newNS(t)}
	err := inNS(n.client, func() error {
		veth := netlink.NewVeth(netlink.LinkAttrs{Name: "eth0", TxQLen: -1})
		veth.PeerName = "srv0"
		veth.PeerNamespace = netlink.NsFd(int(n.server))
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("adding veth pair: %w", err)
		}
		return configure("eth0", clientAddr, serverAddr)
	})
	if err != nil {
		t.Skipf("skipping: cannot build the test network (%v)", err)
	}
	if err := inNS(n.server, func() error { return configure("srv0", serverAddr, "") }); err != nil {
		t.Fatalf("configuring the server end: %v", err)
	}
	return n
}

// configure gives the link its /30 address, sets it up and, with a gateway,
// routes everything through it, so the link is the default interface.
func configure(name, addr, gateway string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	a, err := netlink.ParseAddr(addr + "/30")
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(link, a); err != nil {
		return fmt.Errorf("adding %s to %s: %w", addr, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting %s up: %w", name, err)
	}
	if gateway == "" {
		return nil
	}
	return netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP(gateway)})
}

// newNS creates an anonymous network namespace, closed at cleanup.
func newNS(t *testing.T) netns.NsHandle {
	t.Helper()
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread ends up in the new namespace; never unlocking makes Go
		// discard it when this goroutine returns.
		runtime.LockOSThread()
		ns, err := netns.New()
		ch <- result{ns, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Skipf("skipping: cannot create a network namespace (%v)", r.err)
	}
	t.Cleanup(func() { r.ns.Close() })
	return r.ns
}

// inNS runs f on a thread of its own in namespace ns. Sockets f opens stay in
// ns and may be used from any goroutine afterwards.
func inNS(ns netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see newNS
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("entering namespace: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// apply applies p to the client's eth0 ("" = its default interface) and
// registers undo as a cleanup, so that a failing test leaves nothing behind
// in case the namespace outlives it.
func (n *testNet) apply(t *testing.T, ifname string, p Profile) (undo func() error, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = inNS(n.client, func() (err error) {
		undo, err = Apply(ctx, ifname, p, zap.NewNop())
		return err
	})
	if err == nil {
		t.Cleanup(func() { _ = undo() })
	}
	return undo, err
}

func (n *testNet) ifindex(t *testing.T, name string) int {
	t.Helper()
	var idx int
	err := inNS(n.client, func() error {
		link, err := netlink.LinkByName(name)
		if err == nil {
			idx = link.Attrs().Index
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func (n *testNet) describe(t *testing.T) string {
	t.Helper()
	var out string
	if err := inNS(n.client, func() (err error) { out, err = Describe("eth0"); return err }); err != nil {
		t.Fatalf("Describe: %v", err)
	}
	return out
}

// servers starts the server side: an echo service, a sink that answers
// with the number of bytes it read once the client closes its side, and a
// source that sends as many bytes as the client asks for.
type servers struct {
	echo, sink, source string
}

func (n *testNet) startServers(t *testing.T) servers {
	t.Helper()
	var lns []net.Listener
	err := inNS(n.server, func() error {
		for range 3 {
			ln, err := net.Listen("tcp", serverAddr+":0")
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		return nil
	})
	if err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		t.Fatalf("listening in the server namespace: %v", err)
	}
	handlers := []func(net.Conn){
		func(c net.Conn) { _, _ = io.Copy(c, c) },
		func(c net.Conn) {
			got, _ := io.Copy(io.Discard, c)
			_ = binary.Write(c, binary.BigEndian, got)
		},
		func(c net.Conn) {
			var want int64
			if binary.Read(c, binary.BigEndian, &want) == nil {
				_, _ = io.CopyN(c, zeros{}, want)
			}
		},
	}
	done := make(chan struct{})
	for i, ln := range lns {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(30 * time.Second))
					handlers[i](c)
				}()
			}
		}()
	}
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		for range lns {
			<-done
		}
	})
	return servers{echo: lns[0].Addr().String(), sink: lns[1].Addr().String(), source: lns[2].Addr().String()}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// dial connects from the client namespace.
func (n *testNet) dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	err := inNS(n.client, func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return c
}

// rtt is the median time of ten one-byte round trips through the echo
// service, on a fresh connection.
func (n *testNet) rtt(t *testing.T, s servers) time.Duration {
	t.Helper()
	c := n.dial(t, s.echo)
	defer c.Close()
	var rtts []time.Duration
	b := []byte{0}
	for range 10 {
		start := time.Now()
		if _, err := c.Write(b); err != nil {
			t.Fatalf("echo write: %v", err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatalf("echo read: %v", err)
		}
		rtts = append(rtts, time.Since(start))
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2]
}

// upload sends size bytes from the client to the sink and returns the time
// until the sink confirmed it had them all.
func (n *testNet) upload(t *testing.T, s servers, size int64) time.Duration {
	t.Helper()
	c := n.dial(t, s.sink)
	defer c.Close()
	start := time.Now()
	if _, err := io.CopyN(c, zeros{}, size); err != nil {
		t.Fatalf("upload: %v", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		t.Fatalf("reading the sink's count: %v", err)
	}
	if got != size {
		t.Fatalf("sink got %d bytes, sent %d", got, size)
	}
	return time.Since(start)
}

// download has the source send size bytes to the client and returns the
// time until the client had them all.
func (n *testNet) download(t *testing.T, s servers, size int64) time.Duration {
	t.Helper()
	c := n.dial(t, s.source)
	defer c.Close()
	start := time.Now()
	if err := binary.Write(c, binary.BigEndian, size); err != nil {
		t.Fatal(err)
	}
	got, err := io.Copy(io.Discard, c)
	if err != nil || got != size {
		t.Fatalf("download: got %d of %d bytes: %v", got, size, err)
	}
	return time.Since(start)
}

func mbit(bytes int64, d time.Duration) float64 { return float64(bytes*8) / d.Seconds() / 1e6 }

const (
	uploadSize   = 2_000_000  // 3.2 s at 5 mbit
	downloadSize = 12_500_000 // 1 s at 100 mbit
)

func TestApplyCorporateWAN(t *testing.T) {
	n := newTestNet(t)
	s := n.startServers(t)

	before := n.describe(t)
	baseRTT := n.rtt(t, s)
	t.Logf("before: rtt %v\n%s", baseRTT, before)
	if baseRTT >= 5*time.Millisecond {
		t.Fatalf("unshaped rtt %v, want < 5ms", baseRTT)
	}

	p, _ := Builtin("corporate-wan")
	haveNetem := true
	undo, err := n.apply(t, "", p) // "": the default route's interface, eth0
	if errors.Is(err, ErrUnsupported) && strings.Contains(err.Error(), "netem") {
		// The original's script did the same on hosts without netem.
		t.Logf("this kernel has no netem; testing the rates only: %v", err)
		haveNetem = false
		if got := n.describe(t); got != before {
			t.Fatalf("failed Apply left changes:\n%s", got)
		}
		undo, err = n.apply(t, "", p.RateOnly())
	}
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	shaped := n.describe(t)
	t.Logf("shaped:\n%s", shaped)

	t.Run("qdiscs", func(t *testing.T) {
		ifb := ifbNameFor(n.ifindex(t, "eth0"))
		want := []string{
			"dev eth0\n",
			"qdisc tbf 4c50: root rate 5mbit burst 18750b limit 81250b",
			"qdisc ingress ffff: parent ffff:fff1",
			"filter u32 parent ffff: prio 1 protocol all",
			"action mirred egress redirect dev " + ifb,
			"dev " + ifb + " (ingress of eth0)\n  qdisc tbf 4c50: root rate 100mbit burst 375000b limit 1625000b",
		}
		if haveNetem {
			want[1] = "qdisc netem 4c50: root limit 10000 delay 30ms jitter 3ms loss 0.01%\n" +
				"  qdisc tbf 4c51: parent 4c50:1 rate 5mbit burst 18750b limit 81250b"
		}
		for _, w := range want {
			if !strings.Contains(shaped, w) {
				t.Errorf("Describe lacks %q", w)
			}
		}
	})

	t.Run("delay", func(t *testing.T) {
		if !haveNetem {
			t.Skip("skipping: this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM), so no delay to measure")
		}
		got := n.rtt(t, s)
		t.Logf("rtt %v (unshaped %v)", got, baseRTT)
		if got < 25*time.Millisecond || got > 200*time.Millisecond {
			t.Errorf("shaped rtt %v, want about 30ms", got)
		}
	})

	t.Run("egress rate", func(t *testing.T) {
		d := n.upload(t, s, uploadSize)
		t.Logf("uploaded %d bytes in %v: %.2f mbit/s", uploadSize, d, mbit(uploadSize, d))
		if d < 2500*time.Millisecond || d > 15*time.Second {
			t.Errorf("upload took %v, want about 3.3s at 5 mbit", d)
		}
	})

	t.Run("ingress rate", func(t *testing.T) {
		d := n.download(t, s, downloadSize)
		t.Logf("downloaded %d bytes in %v: %.2f mbit/s", downloadSize, d, mbit(downloadSize, d))
		if d < 750*time.Millisecond || d > 15*time.Second {
			t.Errorf("download took %v, want about 1s at 100 mbit", d)
		}
	})

	t.Run("undo", func(t *testing.T) {
		if err := undo(); err != nil {
			t.Fatalf("undo: %v", err)
		}
		if err := undo(); err != nil {
			t.Fatalf("second undo: %v", err)
		}
		if got := n.describe(t); got != before {
			t.Errorf("after undo:\n%s\nwant as before:\n%s", got, before)
		}
		rtt := n.rtt(t, s)
		up := n.upload(t, s, uploadSize)
		down := n.download(t, s, downloadSize)
		t.Logf("after undo: rtt %v, upload %.0f mbit/s, download %.0f mbit/s", rtt, mbit(uploadSize, up), mbit(downloadSize, down))
		if rtt >= 5*time.Millisecond || up >= 2500*time.Millisecond || down >= 750*time.Millisecond {
			t.Errorf("still shaped after undo: rtt %v, upload %v, download %v", rtt, up, down)
		}
	})
}

func TestApplyLeavesForeignQdiscAlone(t *testing.T) {
	n := newTestNet(t)
	err := inNS(n.client, func() error {
		link, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.QdiscAdd(newTbf(link.Attrs().Index, netlink.HANDLE_ROOT, netlink.MakeHandle(1, 0), 8e6, 1500))
	})
	if err != nil {
		t.Fatalf("adding someone else's qdisc: %v", err)
	}
	before := n.describe(t)

	_, err = n.apply(t, "eth0", Profile{Name: "slow", EgressRate: 1e6, IngressRate: 1e6})
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "tbf 1: root") {
		t.Fatalf("Apply over a foreign root qdisc: %v, want ErrBusy naming it", err)
	}
	if got := n.describe(t); got != before {
		t.Errorf("Apply changed the interface:\n%s\nwant:\n%s", got, before)
	}

	// Ingress alone does not touch the root qdisc.
	undo, err := n.apply(t, "eth0", Profile{Name: "in", IngressRate: 1e6})
	if err != nil {
		t.Fatalf("Apply of an ingress-only profile: %v", err)
	}
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	if got := n.describe(t); got != before {
		t.Errorf("after undo:\n%s\nwant:\n%s", got, before)
	}
}

// A process killed before it could undo leaves its shaping behind in the
// namespace; the next Apply replaces it instead of failing with ErrBusy.
func TestApplyReplacesStaleShaping(t *testing.T) {
	n := newTestNet(t)
	before := n.describe(t)
	p := Profile{Name: "first", EgressRate: 2e6, IngressRate: 3e6}
	if _, err := n.apply(t, "eth0", p); err != nil { // its undo is "lost"
		t.Fatalf("first Apply: %v", err)
	}
	p = Profile{Name: "second", EgressRate: 4e6, IngressRate: 6e6}
	undo, err := n.apply(t, "eth0", p)
	if err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	got := n.describe(t)
	if !strings.Contains(got, "rate 4mbit") || !strings.Contains(got, "rate 6mbit") ||
		strings.Contains(got, "rate 2mbit") || strings.Contains(got, "rate 3mbit") ||
		strings.Count(got, "filter u32") != strings.Count(before, "filter u32")+1 {
		t.Errorf("after the second Apply:\n%s", got)
	}
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	if got := n.describe(t); got != before {
		t.Errorf("after undo:\n%s\nwant:\n%s", got, before)
	}
}

// Without CAP_NET_ADMIN Apply fails with ErrNotPermitted and a hint, and
// changes nothing. Capabilities are per thread in Linux, so the test drops
// CAP_NET_ADMIN on the thread that calls Apply only (a thread Go discards).
func TestApplyWithoutNetAdmin(t *testing.T) {
	n := newTestNet(t)
	before := n.describe(t)
	p, _ := Builtin("corporate-wan")
	err := inNS(n.client, func() error {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return fmt.Errorf("capget: %w", err)
		}
		data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
		data[0].Permitted &^= 1 << unix.CAP_NET_ADMIN
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			return fmt.Errorf("capset: %w", err)
		}
		_, err := Apply(context.Background(), "eth0", p, zap.NewNop())
		if err == nil {
			return errors.New("Apply succeeded without CAP_NET_ADMIN")
		}
		return err
	})
	if !errors.Is(err, ErrNotPermitted) {
		t.Fatalf("Apply without CAP_NET_ADMIN: %v, want ErrNotPermitted", err)
	}
	for _, w := range []string{"eth0", "CAP_NET_ADMIN", "cap_add: [NET_ADMIN]"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	t.Logf("error: %v", err)
	if got := n.describe(t); got != before {
		t.Errorf("Apply changed the interface:\n%s\nwant:\n%s", got, before)
	}
}

func TestApplyUnknownInterface(t *testing.T) {
	n := newTestNet(t)
	_, err := n.apply(t, "nope0", Profile{EgressRate: 1e6})
	if err == nil || !strings.Contains(err.Error(), `"nope0"`) {
		t.Fatalf("Apply on a missing interface: %v", err)
	}
}

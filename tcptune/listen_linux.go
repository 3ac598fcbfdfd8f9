//go:build linux

package tcptune

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

func listen(ctx context.Context, network, address string, backlog int) (net.Listener, error) {
	opErr := func(addr net.Addr, err error) error {
		return &net.OpError{Op: "listen", Net: network, Addr: addr, Err: err}
	}

	laddr, err := resolveListenAddr(ctx, network, address)
	if err != nil {
		return nil, opErr(nil, err)
	}
	// Resolution may have taken a while; do not open a socket for a caller
	// that has given up.
	if err := ctx.Err(); err != nil {
		return nil, opErr(laddr, err)
	}
	// listen(2) takes a C int; the kernel caps it at somaxconn anyway.
	if backlog > math.MaxInt32 {
		backlog = math.MaxInt32
	}

	fd, err := listenSocket(network, laddr, backlog)
	if err != nil {
		return nil, opErr(laddr, err)
	}
	// net.FileListener dups the descriptor, so the original must be closed
	// whether or not it succeeds; the listener owns only the copy.
	f := os.NewFile(uintptr(fd), "tcptune-listener")
	ln, err := net.FileListener(f)
	if cerr := f.Close(); cerr != nil && err == nil {
		ln.Close()
		err = cerr
	}
	if err != nil {
		return nil, opErr(laddr, err)
	}
	return ln, nil
}

// listenSocket returns a listening, non-blocking, close-on-exec socket.
func listenSocket(network string, laddr *net.TCPAddr, backlog int) (int, error) {
	ip, _ := netip.AddrFromSlice(laddr.IP) // nil IP: the zero Addr
	ip = ip.Unmap()
	wildcard := !ip.IsValid() || ip.IsUnspecified()

	family, v6only := unix.AF_INET, false
	switch {
	case network == "tcp6":
		family, v6only = unix.AF_INET6, true
	case network == "tcp4":
	case ip.Is6():
		family = unix.AF_INET6
	case wildcard:
		// As net.Listen does: a wildcard "tcp" listener is one dual-stack
		// IPv6 socket, so ":8080" also answers on ::1 and the container's
		// IPv6 address. Kernels without IPv6 get an IPv4 socket instead.
		family = unix.AF_INET6
	}

	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if errors.Is(err, unix.EAFNOSUPPORT) && family == unix.AF_INET6 && network == "tcp" && wildcard {
		family = unix.AF_INET
		fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	}
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()

	// Without SO_REUSEADDR a restarted role could not bind its port while
	// connections of its previous run linger in TIME_WAIT. It does not let
	// two listeners share a port (that would be SO_REUSEPORT).
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return -1, os.NewSyscallError("setsockopt", err)
	}

	var sa unix.Sockaddr
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, boolInt(v6only)); err != nil {
			return -1, os.NewSyscallError("setsockopt", err)
		}
		if ip.Is4() && !wildcard {
			return -1, fmt.Errorf("address %s is not IPv6", ip)
		}
		sa6 := &unix.SockaddrInet6{Port: laddr.Port}
		if !wildcard {
			sa6.Addr = ip.As16()
		}
		if laddr.Zone != "" {
			zone, err := zoneIndex(laddr.Zone)
			if err != nil {
				return -1, err
			}
			sa6.ZoneId = zone
		}
		sa = sa6
	} else {
		if !ip.Is4() && !wildcard {
			return -1, fmt.Errorf("address %s is not IPv4", ip)
		}
		sa4 := &unix.SockaddrInet4{Port: laddr.Port}
		if !wildcard {
			sa4.Addr = ip.As4()
		}
		sa = sa4
	}

	if err := unix.Bind(fd, sa); err != nil {
		return -1, os.NewSyscallError("bind", err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return -1, os.NewSyscallError("listen", err)
	}
	ok = true
	return fd, nil
}

// resolveListenAddr turns "host:port" into one address, honouring ctx. Like
// net.Listen it listens on only one address of a name, preferring IPv4 on
// "tcp" because that is what a name such as "localhost" is most often meant
// to reach.
func resolveListenAddr(ctx context.Context, network, address string) (*net.TCPAddr, error) {
	host, service, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	port, err := net.DefaultResolver.LookupPort(ctx, network, service)
	if err != nil {
		return nil, err
	}
	if host == "" {
		return &net.TCPAddr{Port: port}, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if network == "tcp4" && !ip.Unmap().Is4() {
			return nil, &net.AddrError{Err: "not an IPv4 address", Addr: host}
		}
		if network == "tcp6" && !ip.Is6() {
			return nil, &net.AddrError{Err: "not an IPv6 address", Addr: host}
		}
		return &net.TCPAddr{IP: ip.AsSlice(), Port: port, Zone: ip.Zone()}, nil
	}

	ipNet := map[string]string{"tcp": "ip", "tcp4": "ip4", "tcp6": "ip6"}[network]
	ips, err := net.DefaultResolver.LookupNetIP(ctx, ipNet, host)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, &net.AddrError{Err: "no suitable address found", Addr: host}
	}
	pick := ips[0]
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			pick = ip.Unmap()
			break
		}
	}
	return &net.TCPAddr{IP: pick.AsSlice(), Port: port, Zone: pick.Zone()}, nil
}

func zoneIndex(zone string) (uint32, error) {
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n), nil
	}
	ifi, err := net.InterfaceByName(zone)
	if err != nil {
		return 0, fmt.Errorf("resolving IPv6 zone %q: %w", zone, err)
	}
	return uint32(ifi.Index), nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

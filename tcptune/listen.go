package tcptune

import (
	"context"
	"fmt"
	"net"
)

// DefaultBacklog is the listen backlog used when none is given. It is the
// value that ended the original system's 15-second stalls (uvicorn's
// backlog=8192); the kernel still caps it at net.core.somaxconn.
const DefaultBacklog = 8192

// Listen opens a TCP listener on address with the given backlog: the length
// of the queue of connections that completed the handshake but were not yet
// accepted. A backlog of 0 means DefaultBacklog; a negative one is an error.
// The kernel silently caps the backlog at net.core.somaxconn, which
// [Settings.Warnings] reports.
//
// network is "tcp", "tcp4" or "tcp6" and address is "host:port" as for
// net.Listen, with the same meaning of an empty or unspecified host: on
// "tcp" it listens on all IPv4 and IPv6 addresses at once. ctx governs the
// resolution of host and service names; a ctx that is already done makes
// Listen fail without opening a socket.
//
// On Linux the socket is made with socket, setsockopt(SO_REUSEADDR), bind and
// listen(fd, backlog), because net.Listen offers no way to choose the
// backlog. Elsewhere Listen falls back to net.ListenConfig and the backlog is
// whatever the platform's Go runtime uses.
//
// Errors are *net.OpError values, as from net.Listen, so errors.Is works
// against syscall errors such as syscall.EADDRINUSE.
func Listen(ctx context.Context, network, address string, backlog int) (net.Listener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, &net.OpError{Op: "listen", Net: network, Err: net.UnknownNetworkError(network)}
	}
	if backlog < 0 {
		return nil, &net.OpError{Op: "listen", Net: network, Err: fmt.Errorf("invalid backlog %d: must be 0 (default %d) or positive", backlog, DefaultBacklog)}
	}
	if backlog == 0 {
		backlog = DefaultBacklog
	}
	if err := ctx.Err(); err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	return listen(ctx, network, address, backlog)
}

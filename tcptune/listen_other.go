//go:build !linux

package tcptune

import (
	"context"
	"net"
)

// listen falls back to the standard library, which always asks for the
// platform's maximum backlog; the requested one cannot be honoured here.
func listen(ctx context.Context, network, address string, _ int) (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(ctx, network, address)
}

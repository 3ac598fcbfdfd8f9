package broker

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// When the broker closes a connection — after a DISCONNECT with a reason
// code (receive maximum exceeded, session taken over, keep alive timeout) —
// it stops writing at once but goes on reading, and discarding, for up to
// lingerTimeout or lingerMaxBytes, before it closes the socket: a lingering
// close, as HTTP servers do.
//
// Why: a socket closed with data still arriving makes the kernel answer
// that data with a reset. The peer's next write then fails (EPIPE), and a
// reset can discard what the peer had not read yet, the DISCONNECT among
// it. A client that was still sending when the broker gave up on it — the
// typical case of "Receive Maximum exceeded" (0x93, MQTT 5 section
// 4.9), where it sent more QoS 1/2 messages than the broker allows without
// reading the acknowledgements — would see a broken connection instead of
// the reason [MQTT-3.14.2-1] the broker gave. The Paho MQTT 5 conformance
// suite's test_flow_control2 does just that: it reads the PUBRECs, sending
// PUBREL for each, and expects the DISCONNECT 0x93 behind them.
//
// The broker still sends nothing after the DISCONNECT [MQTT-3.14.4-1] and
// closes the connection [MQTT-3.14.4-2]: its sending half at once (FIN, so
// the client reads the DISCONNECT and then the end of the stream), its
// receiving half when the client closes too or the bound is reached.
const (
	lingerTimeout  = 5 * time.Second
	lingerMaxBytes = 1 << 20
)

// lingerConn is an accepted connection whose Close lingers. It sits below
// batchconn, which writes what is queued before it calls Close.
type lingerConn struct {
	net.Conn
	l      *listener
	readMu sync.Mutex // held by a Read on the socket
	closed atomic.Bool
}

// Read reads from the socket until Close.
func (c *lingerConn) Read(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	return c.Conn.Read(p)
}

// Close shuts the sending half and leaves the receiving half to a goroutine
// that discards what still arrives, then closes the socket. A connection
// that cannot half-close, or a listener that is closing, closes at once.
func (c *lingerConn) Close() error {
	if c.closed.Swap(true) {
		return net.ErrClosed
	}
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil || !c.l.linger(c) {
		return c.Conn.Close()
	}
	// Wakes mochi's reader if it is blocked in Read (it then sees an error
	// and ends the connection, as after a close); the drain waits for it to
	// leave Read, and Read refuses from now on.
	_ = c.Conn.SetReadDeadline(time.Now())
	go func() {
		defer c.l.unlinger(c)
		c.readMu.Lock()
		defer c.readMu.Unlock()
		_ = c.Conn.SetReadDeadline(time.Now().Add(lingerTimeout))
		_, _ = io.CopyN(io.Discard, c.Conn, lingerMaxBytes)
		_ = c.Conn.Close()
	}()
	return nil
}

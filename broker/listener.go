package broker

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/lpsdev/lps/batchconn"
	"go.uber.org/zap"
)

// connectTimeout bounds the wait for a new connection's CONNECT packet.
// mochi's attachClient reads it with no deadline (it sets one from the
// keepalive only afterwards), so a peer that connects and stays silent would
// hold a goroutine forever.
const connectTimeout = 30 * time.Second

// listener adapts a net.Listener made by the caller (tcptune makes them
// with an explicit backlog) to mochi's listeners.Listener.
//
// It differs from mochi's listeners.TCP on purpose:
//   - TCP.Serve stores every connection's error in one variable shared by
//     all connection goroutines (a data race the race detector reports);
//   - TCP.Close disconnects clients before it closes the socket, so a
//     connection accepted in between, or one that has not finished its
//     CONNECT yet, is never closed and Server.Close waits for it forever;
//   - TCP.Serve returns on the first Accept error, even a temporary one
//     such as running out of file descriptors;
//   - nothing bounds the wait for a connection's CONNECT (connectTimeout).
//
// Close here stops accepting first, then disconnects clients, then closes
// whatever connections are left, ends those still lingering (linger.go)
// and waits for their goroutines, so that mochi's Listeners.CloseAll finds
// nothing left to wait for.
type listener struct {
	id  string
	ln  net.Listener
	log *zap.Logger

	mu      sync.Mutex
	closed  bool
	serving bool
	conns   map[net.Conn]chan struct{} // each closed when mochi is done with it (ended)
	lingers map[*lingerConn]struct{}   // closed, still reading (linger.go)
	closing chan struct{}              // closed when Close starts
	served  chan struct{}              // closed when Serve returns
	wg      sync.WaitGroup
}

var _ listeners.Listener = (*listener)(nil)

func newListener(id string, ln net.Listener, log *zap.Logger) *listener {
	return &listener{
		id:      id,
		ln:      ln,
		log:     log,
		conns:   map[net.Conn]chan struct{}{},
		lingers: map[*lingerConn]struct{}{},
		closing: make(chan struct{}),
		served:  make(chan struct{}),
	}
}

// Init does nothing: the socket is already open.
func (l *listener) Init(*slog.Logger) error { return nil }

// ID returns the listener's id.
func (l *listener) ID() string { return l.id }

// Address returns the address the socket is bound to.
func (l *listener) Address() string { return l.ln.Addr().String() }

// Protocol returns the protocol name mochi logs.
func (l *listener) Protocol() string { return "tcp" }

// Serve accepts connections until Close and hands each to mochi.
func (l *listener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		close(l.served)
		return
	}
	l.serving = true
	l.mu.Unlock()
	defer close(l.served)

	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if l.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			// As net/http.Server.Serve: wait and retry (EMFILE and friends).
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("accepting mqtt connection; retrying", zap.Duration("backoff", backoff), zap.Error(err))
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-l.closing:
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		c = batchconn.New(&lingerConn{Conn: c, l: l})     // mochi writes each packet on its own
		_ = c.SetDeadline(time.Now().Add(connectTimeout)) // mochi replaces it after CONNECT
		if !l.track(c) {
			_ = c.Close()
			return
		}
		go func() {
			defer l.untrack(c)
			if err := establish(l.id, c); err != nil {
				l.log.Debug("mqtt connection ended", zap.String("remote", c.RemoteAddr().String()), zap.Error(err))
			}
		}()
	}
}

func (l *listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

func (l *listener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.conns[c] = make(chan struct{})
	l.wg.Add(1)
	return true
}

// linger registers a connection that lingers after Close (linger.go), so
// that Close can end it; false if the listener is closing: close at once.
func (l *listener) linger(c *lingerConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.lingers[c] = struct{}{}
	l.wg.Add(1)
	return true
}

func (l *listener) unlinger(c *lingerConn) {
	l.mu.Lock()
	delete(l.lingers, c)
	l.mu.Unlock()
	l.wg.Done()
}

func (l *listener) untrack(c net.Conn) {
	l.mu.Lock()
	ended := l.conns[c]
	delete(l.conns, c)
	l.mu.Unlock()
	_ = c.Close()
	close(ended)
	l.wg.Done()
}

// ended is closed when mochi is done with c: its EstablishConnection, which reads the
// connection and then ends its session, has returned (handover.go). At once for a connection
// that is not open.
func (l *listener) ended(c net.Conn) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ch := l.conns[c]; ch != nil {
		return ch
	}
	return closedChan // commit.go's
}

// Close stops accepting, disconnects the clients of this listener through
// mochi (closeClients sends them DISCONNECT "server shutting down"), closes
// any connection still open and waits until all have ended.
func (l *listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	serving := l.serving
	close(l.closing)
	l.mu.Unlock()

	if err := l.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		l.log.Warn("closing mqtt listener", zap.Error(err))
	}
	if serving {
		<-l.served
	}
	closeClients(l.id)
	// Closed outside l.mu: closing a connection may come back for it (a
	// lingerConn's Close asks linger, which sees l.closed and closes at once).
	l.mu.Lock()
	conns := make([]net.Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	lingering := make([]*lingerConn, 0, len(l.lingers))
	for c := range l.lingers {
		lingering = append(lingering, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	for _, c := range lingering { // a shutdown does not wait for lingering peers
		_ = c.Conn.Close()
	}
	l.wg.Wait()
}

package faults

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// proxyDialTimeout bounds the proxy's connection to its target.
const proxyDialTimeout = 5 * time.Second

// Proxy is a TCP proxy on a loopback port in front of one address: the network between two
// parts of the LPS, which a test can cut. It forwards bytes both ways until Cut drops every
// connection (and refuses new ones) or Blackhole silences them; Restore heals it.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	state  proxyState
	healed chan struct{} // closed when the proxy forwards again (replaced at every fault)
	conns  map[*proxyConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

type proxyState int

const (
	proxyOpen      proxyState = iota
	proxyCut                  // connections dropped, new ones refused
	proxyBlackhole            // connections kept, no byte forwarded
)

// proxyConn is one proxied connection: the client's side and the target's.
type proxyConn struct {
	client, target net.Conn
}

func (c *proxyConn) drop() {
	for _, conn := range []net.Conn{c.client, c.target} {
		if conn == nil {
			continue
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // reset, as a dropped link looks to both ends
		}
		conn.Close()
	}
}

// ListenProxy starts a proxy on 127.0.0.1 with a free port in front of target (host:port).
func ListenProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for a proxy to %s: %w", target, err)
	}
	p := &Proxy{ln: ln, target: target, conns: make(map[*proxyConn]struct{}), healed: make(chan struct{})}
	close(p.healed)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is where the proxy listens (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Conns is the number of connections open through the proxy.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Cut drops every open connection (both ends see a reset) and refuses new ones (they are
// closed as soon as they are accepted) until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault(proxyCut)
	for c := range p.conns {
		c.drop()
		delete(p.conns, c)
	}
}

// Blackhole silences the network until Restore: open connections stay open but carry no byte
// in either direction (what is sent waits, as in a partition TCP survives), and new
// connections are accepted but not connected to the target, so a client's handshake hangs.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault(proxyBlackhole)
}

// fault enters state s. Called with p.mu held.
func (p *Proxy) fault(s proxyState) {
	if p.state == proxyOpen {
		p.healed = make(chan struct{})
	}
	p.state = s
}

// Restore lets bytes flow again: connections held by Blackhole resume, new connections are
// forwarded.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != proxyOpen {
		p.state = proxyOpen
		close(p.healed)
	}
}

// Close stops the proxy and drops every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	err := p.ln.Close()
	for c := range p.conns {
		c.drop()
		delete(p.conns, c)
	}
	if p.state != proxyOpen {
		p.state = proxyOpen
		close(p.healed)
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		conn, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.wg.Add(1)
		go p.serve(conn)
	}
}

// wait blocks while the proxy is blackholed; it reports false when the connection must go
// (cut or closed).
func (p *Proxy) wait(c *proxyConn) bool {
	for {
		p.mu.Lock()
		state, healed, closed := p.state, p.healed, p.closed
		_, live := p.conns[c]
		p.mu.Unlock()
		switch {
		case closed || !live || state == proxyCut:
			return false
		case state == proxyOpen:
			return true
		}
		<-healed
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	c := &proxyConn{client: client}
	p.mu.Lock()
	if p.closed || p.state == proxyCut {
		p.mu.Unlock()
		c.drop()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.drop()
	}()
	if !p.wait(c) { // a blackholed proxy holds the handshake
		return
	}
	target, err := net.DialTimeout("tcp", p.target, proxyDialTimeout)
	if err != nil {
		return // the client sees its connection closed, as if refused
	}
	p.mu.Lock()
	if _, live := p.conns[c]; !live {
		p.mu.Unlock()
		target.Close()
		return
	}
	c.target = target
	p.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(c, target, client) }()
	go func() { defer wg.Done(); p.pipe(c, client, target) }()
	wg.Wait()
}

// pipe copies src to dst until either side ends or the proxy cuts the connection; while the
// proxy is blackholed it holds what it read.
func (p *Proxy) pipe(c *proxyConn, dst, src net.Conn) {
	defer func() {
		// One direction ended: end the other too, as a closed connection does.
		c.client.Close()
		c.target.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.wait(c) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.drop()
			}
			return
		}
	}
}

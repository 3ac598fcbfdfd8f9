// Package batchconn makes an MQTT connection cost fewer system calls: writes that arrive while
// the previous one is still being written go out together, and reads are buffered.
//
// Why: on loopback and in containers a TCP write costs the sender the receiver's work as well
// (the kernel runs the receiving side's TCP processing and wakes its reader in the same call),
// about 20 µs each on our 2-core test machine. An MQTT QoS 2 message is four packets in each
// direction, and paho and mochi write every packet with its own call, so at a few thousand
// alarms per second the bridges and the broker spend a third of their CPU time in write(2). The
// packets of one connection are written by several goroutines (publishers, the acknowledger,
// the reader answering PUBREL), and under load they arrive faster than they are written: here
// they queue up in one buffer, and a writer goroutine writes the whole buffer at once. When the
// connection is idle a write goes out at once (one goroutine wake-up later); the busier it is,
// the more each call carries.
//
// Reads: paho reads a packet's fixed header byte by byte from the connection it is given (one
// read(2) for the type, one per length byte, one for the rest), so a buffered reader saves it
// two or more calls per packet. mochi buffers its reads itself; for it the buffer here only
// adds a copy.
package batchconn

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"time"
)

// MaxPending bounds the bytes waiting to be written: a Write beyond it waits, as a write to a
// full socket buffer would.
const MaxPending = 1 << 20

// readBufferSize is the read buffer: several packets of the LPS's size at once.
const readBufferSize = 16 << 10

// closeFlushTimeout bounds how long Close waits for pending bytes to reach the socket.
const closeFlushTimeout = time.Second

// Conn is a net.Conn whose Writes are queued and written by one goroutine. A Write returns
// once its bytes are queued; a write error is returned by the next Write, and closes the
// connection so that its reader sees it too. Conn is also a sync.Locker: paho locks a
// connection that is one around the Writes of one packet, so that packets written by several
// goroutines never interleave.
type Conn struct {
	net.Conn
	packet sync.Mutex // Lock and Unlock
	r      *bufio.Reader

	mu      sync.Mutex
	room    *sync.Cond // signalled when the writer took the buffer
	buf     []byte
	spare   []byte
	err     error // the writer's error, or net.ErrClosed after Close
	closing bool
	wake    chan struct{}
	done    chan struct{} // closed when the writer returned
}

// New wraps c and starts its writer; Close stops it.
func New(c net.Conn) *Conn {
	bc := &Conn{Conn: c, r: bufio.NewReaderSize(c, readBufferSize), wake: make(chan struct{}, 1), done: make(chan struct{})}
	bc.room = sync.NewCond(&bc.mu)
	go bc.run()
	return bc
}

// Lock locks the connection for the Writes of one packet.
func (c *Conn) Lock() { c.packet.Lock() }

// Unlock unlocks it.
func (c *Conn) Unlock() { c.packet.Unlock() }

// Read reads through the buffer. Only one goroutine may read, as for any stream.
func (c *Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write queues p.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.err == nil && !c.closing && len(c.buf) > 0 && len(c.buf)+len(p) > MaxPending {
		c.room.Wait()
	}
	switch {
	case c.err != nil:
		err := c.err
		c.mu.Unlock()
		return 0, err
	case c.closing:
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.buf = append(c.buf, p...)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// run writes the buffer whenever there is something in it, until Close or an error.
func (c *Conn) run() {
	defer close(c.done)
	for {
		c.mu.Lock()
		out := c.buf
		c.buf, c.spare = c.spare[:0], nil
		closing := c.closing
		c.room.Broadcast()
		c.mu.Unlock()
		if len(out) > 0 {
			if _, err := c.Conn.Write(out); err != nil {
				c.fail(err)
				return
			}
			if cap(out) <= 64<<10 { // keep a buffer of ordinary size for the next round
				c.mu.Lock()
				c.spare = out[:0]
				c.mu.Unlock()
			}
			continue // more may have come meanwhile
		}
		if closing {
			return
		}
		<-c.wake
	}
}

// fail records the writer's error and closes the connection, so that a reader blocked on it
// returns as well.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.room.Broadcast()
	c.mu.Unlock()
	_ = c.Conn.Close()
}

// Close writes what is queued (waiting at most a second for a peer that does not read) and
// closes the connection.
func (c *Conn) Close() error {
	c.mu.Lock()
	already := c.closing
	c.closing = true
	c.room.Broadcast()
	c.mu.Unlock()
	if already {
		<-c.done
		return net.ErrClosed
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
	t := time.NewTimer(closeFlushTimeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C: // the peer does not read: closing unblocks the writer
	}
	err := c.Conn.Close()
	<-c.done
	c.mu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.mu.Unlock()
	if errors.Is(err, net.ErrClosed) {
		return nil // the writer closed it after an error
	}
	return err
}

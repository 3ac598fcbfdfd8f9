package batchconn

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/lpsdev/lps/internal/testutil"
)

const testTimeout = 30 * time.Second

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// counting counts the writes and reads that reach the connection under it; a write waits
// while hold is set.
type counting struct {
	net.Conn
	writes, reads atomic.Int64
	hold          chan struct{} // nil: no wait
	entered       chan struct{}
}

func (c *counting) Write(p []byte) (int, error) {
	if c.writes.Add(1) == 1 && c.hold != nil {
		close(c.entered)
		<-c.hold
	}
	return c.Conn.Write(p)
}

func (c *counting) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(p)
}

// TestWritesDuringAWriteGoOutTogether: while the first write is in the kernel (held here),
// 100 packets from 10 goroutines queue up, and reach the socket in one more write, whole and
// in each goroutine's order.
func TestWritesDuringAWriteGoOutTogether(t *testing.T) {
	client, server := tcpPair(t)
	cc := &counting{Conn: client, hold: make(chan struct{}), entered: make(chan struct{})}
	c := New(cc)
	defer c.Close()

	first := []byte("first|")
	if _, err := c.Write(first); err != nil {
		t.Fatal(err)
	}
	<-cc.entered
	var wg sync.WaitGroup
	for g := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				pkt := fmt.Appendf(nil, "g%d-%d|", g, i)
				c.Lock()
				// Two Writes for one packet, as paho's net.Buffers makes them.
				_, err1 := c.Write(pkt[:2])
				_, err2 := c.Write(pkt[2:])
				c.Unlock()
				if err := errors.Join(err1, err2); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait() // every Write returned while the first was still held
	close(cc.hold)

	want := len(first)
	for g := range 10 {
		for i := range 10 {
			want += len(fmt.Sprintf("g%d-%d|", g, i))
		}
	}
	got := make([]byte, want)
	_ = server.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadFull(server, got); err != nil {
		t.Fatalf("reading %d bytes: %v", want, err)
	}
	if n := cc.writes.Load(); n != 2 {
		t.Errorf("%d writes reached the socket, want 2", n)
	}
	parts := bytes.Split(bytes.TrimSuffix(got, []byte("|")), []byte("|"))
	if string(parts[0]) != "first" || len(parts) != 101 {
		t.Fatalf("received %d packets starting %q", len(parts), parts[0])
	}
	next := map[int]int{}
	for _, p := range parts[1:] {
		var g, i int
		if _, err := fmt.Sscanf(string(p), "g%d-%d", &g, &i); err != nil {
			t.Fatalf("torn packet %q: %v", p, err)
		}
		if i != next[g] {
			t.Fatalf("goroutine %d: packet %d arrived when %d was due", g, i, next[g])
		}
		next[g]++
	}
}

// TestReadsAreBuffered: 50 PUBACKs sent in one segment are read by paho's ReadPacket, which
// reads a fixed header byte by byte, with one read of the socket.
func TestReadsAreBuffered(t *testing.T) {
	client, server := tcpPair(t)
	cc := &counting{Conn: client}
	c := New(cc)
	defer c.Close()

	var all bytes.Buffer
	for i := range 50 {
		ack := packets.Puback{PacketID: uint16(i + 1), Properties: &packets.Properties{}}
		if _, err := ack.WriteTo(&all); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := server.Write(all.Bytes()); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	for i := range 50 {
		cp, err := packets.ReadPacket(c)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if id := cp.PacketID(); id != uint16(i+1) {
			t.Fatalf("packet %d has id %d", i, id)
		}
	}
	// TCP may split the segment; anything like one read per header byte is far above 5.
	if n := cc.reads.Load(); n > 5 {
		t.Errorf("%d reads of the socket for 50 packets", n)
	}
}

// TestCloseWritesWhatIsQueued: bytes queued before Close reach the peer, then EOF.
func TestCloseWritesWhatIsQueued(t *testing.T) {
	client, server := tcpPair(t)
	c := New(client)
	payload := bytes.Repeat([]byte("0123456789"), 20_000) // 200 kB, several socket buffers' worth
	for off := 0; off < len(payload); off += 1000 {
		if _, err := c.Write(payload[off : off+1000]); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan []byte, 1)
	go func() {
		_ = server.SetReadDeadline(time.Now().Add(testTimeout))
		b, _ := io.ReadAll(server)
		got <- b
	}()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if b := <-got; !bytes.Equal(b, payload) {
		t.Fatalf("peer read %d bytes, want the %d written", len(b), len(payload))
	}
	if _, err := c.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want net.ErrClosed", err)
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
}

// TestPeerThatDoesNotRead: Writes beyond MaxPending wait, as on a full socket; Close gives up
// on the queued bytes after closeFlushTimeout and releases the waiting writer with an error.
func TestPeerThatDoesNotRead(t *testing.T) {
	client, _ := tcpPair(t) // the server end is never read
	c := New(client)
	chunk := make([]byte, 64<<10)
	blocked := make(chan error, 1)
	go func() {
		for range 200 { // 12.8 MB: far beyond MaxPending and the socket buffers
			if _, err := c.Write(chunk); err != nil {
				blocked <- err
				return
			}
		}
		blocked <- nil
	}()
	// The writer fills the socket buffers and MaxPending, then waits: wait for that.
	testutil.Eventually(t, testTimeout, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.buf)+len(chunk) <= MaxPending {
			return fmt.Errorf("%d bytes queued", len(c.buf))
		}
		return nil
	})
	start := time.Now()
	_ = c.Close()
	if took := time.Since(start); took > closeFlushTimeout+5*time.Second {
		t.Errorf("Close took %s", took)
	}
	select {
	case err := <-blocked:
		if err == nil {
			t.Error("every write succeeded to a peer that never read")
		}
	case <-time.After(testTimeout):
		t.Fatal("the waiting writer was not released by Close")
	}
}

// TestWriteErrorIsReturnedAndClosesTheConnection: once a write to the socket failed, the next
// Write returns the error, and the connection is closed so that its reader returns too.
func TestWriteErrorIsReturnedAndClosesTheConnection(t *testing.T) {
	client, server := tcpPair(t)
	c := New(client)
	defer c.Close()
	server.(*net.TCPConn).SetLinger(0)
	server.Close() // the peer resets: writes fail
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()
	var err error
	testutil.Eventually(t, testTimeout, func() error {
		if _, err = c.Write([]byte("x")); err == nil {
			return errors.New("writes to a reset connection still succeed")
		}
		return nil
	})
	select {
	case <-readErr:
	case <-time.After(testTimeout):
		t.Fatal("the reader was not released")
	}
}

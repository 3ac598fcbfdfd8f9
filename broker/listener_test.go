package broker

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/lpsdev/lps/internal/testutil"
)

// A broker stops while a connection has not sent its CONNECT yet (mochi has no client for it,
// so the listener closes it itself). That close used to take the listener's lock a second time
// through the lingering close and hang the shutdown for good (CI saw an http2mqtt test hang).
func TestShutdownWithAConnectionBeforeConnect(t *testing.T) {
	for _, dir := range []string{"", t.TempDir()} {
		b := startBroker(t, Config{DataDir: dir})
		conn, err := net.DialTimeout("tcp", b.Addr().String(), testTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		l := b.ln
		testutil.Eventually(t, testTimeout, func() error {
			l.mu.Lock()
			defer l.mu.Unlock()
			if len(l.conns) == 0 {
				return errors.New("waiting for the listener to track the connection")
			}
			return nil
		})
		stopped := make(chan struct{})
		go func() { b.stop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(testTimeout + 5*time.Second):
			t.Fatal("the broker did not stop")
		}
		// The broker closed the connection: the peer reads the end of the stream.
		_ = conn.SetReadDeadline(time.Now().Add(testTimeout))
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Error("the connection is still open after the broker stopped")
		}
	}
}

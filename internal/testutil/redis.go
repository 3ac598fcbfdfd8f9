package testutil

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RedisBinary is where Debian installs the Redis server; otherwise it is looked up in PATH.
const RedisBinary = "/usr/bin/redis-server"

// Redis is a redis-server process started by a test, on a free loopback port, without
// persistence. It stops when the test ends.
type Redis struct {
	// URL is redis://127.0.0.1:<port>; Addr is host:port.
	URL, Addr string

	t    testing.TB
	bin  string
	dir  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// StartRedis starts a Redis server for the test. Without one installed the test is skipped,
// unless LPS_REQUIRE_REDIS=1 (CI sets it), which fails it.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin := RedisBinary
	if _, err := os.Stat(bin); err != nil {
		p, lerr := exec.LookPath("redis-server")
		if lerr != nil {
			if os.Getenv("LPS_REQUIRE_REDIS") == "1" {
				t.Fatalf("no redis-server at %s or in PATH, and LPS_REQUIRE_REDIS=1", RedisBinary)
			}
			t.Skipf("skipping: no redis-server at %s or in PATH (apt-get install redis-server)", RedisBinary)
		}
		bin = p
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := &Redis{URL: "redis://" + addr, Addr: addr, t: t, bin: bin, dir: t.TempDir()}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Start starts a stopped server again on its address (empty: it keeps nothing).
func (r *Redis) Start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return
	}
	_, port, _ := net.SplitHostPort(r.Addr)
	cmd := exec.Command(r.bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--logfile", filepath.Join(r.dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.Addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			r.t.Fatalf("redis-server exited at start: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			r.t.Fatalf("redis-server did not listen on %s within 10s: %v", r.Addr, err)
		}
		time.Sleep(10 * time.Millisecond) // polling a port: there is no event to wait for
	}
	r.cmd, r.done = cmd, done
}

// Stop stops the server (SIGTERM, then SIGKILL after 10 s).
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		r.cmd.Process.Kill()
		<-r.done
	}
	r.cmd = nil
}

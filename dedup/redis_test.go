package dedup

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/lpsdev/lps/internal/testutil"
)

// A URL the store cannot use is an error when comp2 starts, not at its first alarm.
func TestRedisBadURL(t *testing.T) {
	for _, url := range []string{
		"http://127.0.0.1:6379",
		"127.0.0.1:6379",
		"redis://127.0.0.1:6379/x",
		"redis://127.0.0.1:6379/1/2",
		"redis:opaque",
		"redis://[::1",
	} {
		if s, err := NewRedis(url, time.Minute); err == nil {
			s.Close()
			t.Errorf("NewRedis(%q): no error", url)
		} else if !strings.Contains(err.Error(), url) {
			t.Errorf("NewRedis(%q): %v; want the URL in the error", url, err)
		}
	}
}

// NewRedis does not connect; Ping names the address that does not answer.
func TestRedisAwayAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s, err := NewRedis("redis://"+addr, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Ping(ctx); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Ping with nothing at %s: %v; want an error naming the address", addr, err)
	}
}

// A server that takes the connection and never answers fails an operation after the client's
// timeout, well before the caller's own deadline: comp2 answers 503 instead of hanging.
func TestRedisSilentServerTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			go func() { _, _ = c.Read(make([]byte, 1<<16)) }()
		}
	}()
	s, err := NewRedis("redis://"+ln.Addr().String(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 4*redisIOTimeout)
	defer cancel()
	_, err = s.Claim(ctx, KeyOf("r-1", "a"), time.Second)
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Claim against a silent server: %v; want the client's own timeout", err)
	}
}

// The database in the URL is used: two stores on two databases of one server do not share keys.
func TestRedisDatabaseFromURL(t *testing.T) {
	r := testutil.StartRedis(t)
	a := openRedis(t, r.URL, time.Minute)
	b := openRedis(t, r.URL+"/1", time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	k := KeyOf("r-1", "a")
	if st, err := a.Claim(ctx, k, time.Minute); st != Claimed || err != nil {
		t.Fatalf("claim on db 0: %v %v", st, err)
	}
	if st, err := b.Claim(ctx, k, time.Minute); st != Claimed || err != nil {
		t.Fatalf("claim on db 1 of a key held on db 0: %v %v; want Claimed", st, err)
	}
	if st, err := openRedis(t, r.URL+"/0", time.Minute).Claim(ctx, k, time.Minute); st != Busy || err != nil {
		t.Fatalf("claim on db 0 again: %v %v; want Busy", st, err)
	}
}

// The URL's credentials are used: a password alone (requirepass) and an ACL user with one.
func TestRedisCredentialsFromURL(t *testing.T) {
	r := testutil.StartRedis(t)
	admin := openRedis(t, r.URL, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := admin.command(ctx, "ACL", "SETUSER", "comp2", "on", ">s3cret", "~lps:*", "+@all"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.command(ctx, "CONFIG", "SET", "requirepass", "hunter2"); err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(r.URL, "redis://")
	for _, c := range []struct {
		url string
		ok  bool
	}{
		{"redis://:hunter2@" + host, true},
		{"redis://comp2:s3cret@" + host, true},
		{"redis://" + host, false},
		{"redis://:wrong@" + host, false},
		{"redis://comp2:wrong@" + host, false},
	} {
		s, err := NewRedis(c.url, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Claim(ctx, KeyOf("r-1", c.url), time.Minute)
		s.Close()
		if (err == nil) != c.ok {
			t.Errorf("Claim through %s: %v; want ok=%v", c.url, err, c.ok)
		}
	}
}

// A burst of operations shares a bounded pool: it waits for a connection instead of opening
// one per operation.
func TestRedisPoolIsBounded(t *testing.T) {
	r := testutil.StartRedis(t)
	s := openRedis(t, r.URL, time.Minute)
	admin := openRedis(t, r.URL, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opened := func() int {
		t.Helper()
		info, err := redis.String(admin.command(ctx, "INFO", "stats"))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "total_connections_received:"); ok {
				n, err := strconv.Atoi(v)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
		t.Fatal("no total_connections_received in INFO stats")
		return 0
	}
	before := opened()
	const burst = 2000
	errs := make(chan error, burst)
	for i := range burst {
		go func() {
			_, err := s.Claim(ctx, KeyOf(fmt.Sprintf("r-%d", i), "a"), time.Minute)
			errs <- err
		}()
	}
	for range burst {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// The store already had one connection from its Ping.
	if n := opened() - before; n > redisMaxActive() {
		t.Errorf("%d operations at once opened %d connections; the pool's bound is %d", burst, n, redisMaxActive())
	}
}

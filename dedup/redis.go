package dedup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"runtime"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// RedisPrefix starts the keys Redis keeps: RedisPrefix + the key in hex.
const RedisPrefix = "lps:dedup:"

// Redis is a Store in a Redis or Valkey server, shared by the comp2 instances that fail over to
// each other: a copy of an alarm that reaches another instance than the first is recognised
// there too. A key is claimed with SET NX and a lease (the value names the instance, which renews
// it while its forward runs), replaced
// by "forwarded" with the window as its expiry when the forward succeeded, deleted when it
// failed. What survives depends on the server's own persistence (appendonly): a Redis that
// restarts without it forgets the window.
//
// The client is redigo, not go-redis: this store needs five commands on a pool of connections,
// and go-redis (cluster, sentinel, its maintenance notifications) made the image's binary 1.8 MB
// larger (16.0 against 14.2 MB), where the image has a size budget of 15 MB.
type Redis struct {
	pool  *redis.Pool
	addr  string
	ttl   time.Duration
	token string // this instance's claims
}

var _ Store = (*Redis)(nil)

const redisForwarded = "forwarded"

// The client's timeouts, those go-redis had by default: a server that stops answering fails an
// operation (and so comp2's forward, with a 503) instead of holding it.
const (
	redisDialTimeout = 5 * time.Second
	redisIOTimeout   = 3 * time.Second
	redisIdleTimeout = 5 * time.Minute
)

// redisMaxActive bounds the connections to the server as go-redis's pool did (ten per
// processor): a burst of alarms queues for a connection instead of opening thousands.
func redisMaxActive() int { return 10 * runtime.GOMAXPROCS(0) }

// claimScript takes a key for ARGV[1] (a claim) for ARGV[2] milliseconds unless it is there:
// 0 claimed, 1 forwarded, 2 claimed by someone else. One round trip, atomic.
var claimScript = redis.NewScript(1, `
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 0
end
if v == ARGV[3] then return 1 end
return 2`)

// releaseScript deletes a key only while it holds ARGV[1]: a claim whose lease ran out may
// belong to another instance by now.
var releaseScript = redis.NewScript(1, `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// renewScript extends a key's expiry to ARGV[2] milliseconds only while it holds ARGV[1].
var renewScript = redis.NewScript(1, `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)

// errParsed stops the dry run of a dial in NewRedis once the URL has been read.
var errParsed = errors.New("parsed")

// NewRedis prepares the store of the server at url (redis://[user:password@]host:port[/db], or
// rediss:// for TLS), keeping keys for ttl (zero means DefaultTTL). It does not connect:
// every operation does, and fails while the server is away; Ping tells whether it answers.
func NewRedis(url string, ttl time.Duration) (*Redis, error) {
	if ttl == 0 {
		ttl = DefaultTTL
	}
	// A bad URL is an error now, not at the first alarm: dial it once with a dialer that only
	// notes the address, so that the URL is read by the same code that reads it for real.
	var addr string
	_, err := redis.DialURL(url, redis.DialContextFunc(func(_ context.Context, _, a string) (net.Conn, error) {
		addr = a
		return nil, errParsed
	}))
	if !errors.Is(err, errParsed) {
		return nil, fmt.Errorf("parsing %q: %w", url, err)
	}
	// redigo reads the database from the last segment of the path only: /1/2 would be db 2.
	if u, _ := neturl.Parse(url); strings.Count(u.Path, "/") > 1 {
		return nil, fmt.Errorf("parsing %q: the path is one database number, not %s", url, u.Path)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	pool := &redis.Pool{
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialURLContext(ctx, url,
				redis.DialConnectTimeout(redisDialTimeout),
				redis.DialReadTimeout(redisIOTimeout),
				redis.DialWriteTimeout(redisIOTimeout))
		},
		MaxIdle:     redisMaxActive(), // fewer would close and reopen connections under load
		MaxActive:   redisMaxActive(),
		Wait:        true, // for a free connection, until ctx ends
		IdleTimeout: redisIdleTimeout,
	}
	return &Redis{pool: pool, addr: addr, ttl: ttl, token: "claim:" + hex.EncodeToString(b[:])}, nil
}

// do runs one command on a connection of the pool. A connection that failed is not put back.
func (s *Redis) do(ctx context.Context, f func(redis.Conn) (any, error)) (any, error) {
	c, err := s.pool.GetContext(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return f(c)
}

// command runs cmd with args.
func (s *Redis) command(ctx context.Context, cmd string, args ...any) (any, error) {
	return s.do(ctx, func(c redis.Conn) (any, error) { return redis.DoContext(c, ctx, cmd, args...) })
}

// script runs sc on key with args.
func (s *Redis) script(ctx context.Context, sc *redis.Script, key Key, args ...any) (any, error) {
	return s.do(ctx, func(c redis.Conn) (any, error) {
		return sc.DoContext(ctx, c, append([]any{s.name(key)}, args...)...)
	})
}

// Ping checks that the server answers.
func (s *Redis) Ping(ctx context.Context) error {
	if _, err := s.command(ctx, "PING"); err != nil {
		return fmt.Errorf("reaching redis at %s: %w", s.addr, err)
	}
	return nil
}

func (s *Redis) name(key Key) string { return RedisPrefix + key.String() }

// Claim takes key unless it was forwarded within the window or another instance holds it.
func (s *Redis) Claim(ctx context.Context, key Key, lease time.Duration) (State, error) {
	n, err := redis.Int(s.script(ctx, claimScript, key, s.token, millis(lease), redisForwarded))
	if err != nil {
		return Claimed, err
	}
	switch n {
	case 0:
		return Claimed, nil
	case 1:
		return Forwarded, nil
	}
	return Busy, nil
}

// Done replaces the claim by the record of the forward, for the window.
func (s *Redis) Done(ctx context.Context, key Key) error {
	_, err := s.command(ctx, "SET", s.name(key), redisForwarded, "PX", millis(s.ttl))
	return err
}

// Release deletes this instance's claim.
func (s *Redis) Release(ctx context.Context, key Key) error {
	_, err := s.script(ctx, releaseScript, key, s.token)
	return err
}

// Renew extends this instance's claim of key to lease from now.
func (s *Redis) Renew(ctx context.Context, key Key, lease time.Duration) (bool, error) {
	n, err := redis.Int(s.script(ctx, renewScript, key, s.token, millis(lease)))
	return n == 1, err
}

var _ Renewer = (*Redis)(nil)

// millis is d in whole milliseconds for PX and PEXPIRE, at least 1: Redis refuses 0.
func millis(d time.Duration) int64 { return max(d.Milliseconds(), 1) }

// Close closes the connections.
func (s *Redis) Close() error { return s.pool.Close() }

package dedup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
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
type Redis struct {
	c     *redis.Client
	ttl   time.Duration
	token string // this instance's claims
}

var _ Store = (*Redis)(nil)

const redisForwarded = "forwarded"

// claimScript takes a key for ARGV[1] (a claim) for ARGV[2] milliseconds unless it is there:
// 0 claimed, 1 forwarded, 2 claimed by someone else. One round trip, atomic.
var claimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 0
end
if v == ARGV[3] then return 1 end
return 2`)

// releaseScript deletes a key only while it holds ARGV[1]: a claim whose lease ran out may
// belong to another instance by now.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// renewScript extends a key's expiry to ARGV[2] milliseconds only while it holds ARGV[1].
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)

// NewRedis prepares the store of the server at url (redis://[user:password@]host:port[/db], or
// rediss:// for TLS), keeping keys for ttl (zero means DefaultTTL). It does not connect:
// every operation does, and fails while the server is away; Ping tells whether it answers.
func NewRedis(url string, ttl time.Duration) (*Redis, error) {
	if ttl == 0 {
		ttl = DefaultTTL
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("parsing %q: %w", url, err)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	return &Redis{c: redis.NewClient(opts), ttl: ttl, token: "claim:" + hex.EncodeToString(b[:])}, nil
}

// Ping checks that the server answers.
func (s *Redis) Ping(ctx context.Context) error {
	if err := s.c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("reaching redis at %s: %w", s.c.Options().Addr, err)
	}
	return nil
}

func (s *Redis) name(key Key) string { return RedisPrefix + key.String() }

// Claim takes key unless it was forwarded within the window or another instance holds it.
func (s *Redis) Claim(ctx context.Context, key Key, lease time.Duration) (State, error) {
	n, err := claimScript.Run(ctx, s.c, []string{s.name(key)}, s.token, lease.Milliseconds(), redisForwarded).Int()
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
	return s.c.Set(ctx, s.name(key), redisForwarded, s.ttl).Err()
}

// Release deletes this instance's claim.
func (s *Redis) Release(ctx context.Context, key Key) error {
	return releaseScript.Run(ctx, s.c, []string{s.name(key)}, s.token).Err()
}

// Renew extends this instance's claim of key to lease from now.
func (s *Redis) Renew(ctx context.Context, key Key, lease time.Duration) (bool, error) {
	n, err := renewScript.Run(ctx, s.c, []string{s.name(key)}, s.token, lease.Milliseconds()).Int()
	return n == 1, err
}

var _ Renewer = (*Redis)(nil)

// Close closes the connections.
func (s *Redis) Close() error { return s.c.Close() }

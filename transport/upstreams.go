package transport

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// DefaultCooldown is how long an upstream that could not be connected to is tried after the
// others (Upstreams.Cooldown).
const DefaultCooldown = 5 * time.Second

// ErrNotConnected marks a request that failed before a connection to the upstream existed (the
// dial or the name lookup failed): the upstream cannot have seen it, so another may be tried.
var ErrNotConnected = errors.New("no connection to the upstream")

// Upstreams sends each request to one of several equivalent upstreams, chosen by the request's
// Request-Id with rendezvous hashing: every copy of one alarm — redelivered by the broker to
// another bridge, or sent again by a device that never heard back — goes to the same upstream,
// so that upstream's idempotency window (comp2's --dedup-window) sees all of them and the
// backend gets the alarm once. Ids spread evenly, and adding or removing an upstream moves only
// the ids that it gains or loses.
//
// When the chosen upstream cannot be connected to, the request goes to the id's next choice;
// any other failure (an answer, a timeout, a connection broken mid-request) is returned as it
// is, because the upstream may have acted on the request. An upstream that failed to connect
// is tried last for a cooldown, so an outage does not cost every request a failed dial.
type Upstreams struct {
	client    *Client
	urls      []string
	cooldown  time.Duration
	log       *zap.Logger
	downUntil []atomic.Int64 // per URL: unix nanoseconds until which it is tried last
	now       func() time.Time
}

// NewUpstreams returns Upstreams over urls (at least one), sent through c. cooldown is how
// long an upstream that could not be connected to is tried last; zero means DefaultCooldown.
// logger logs fail-overs at debug level; nil means none.
func NewUpstreams(c *Client, urls []string, cooldown time.Duration, logger *zap.Logger) *Upstreams {
	if logger == nil {
		logger = zap.NewNop()
	}
	if cooldown <= 0 {
		cooldown = DefaultCooldown
	}
	return &Upstreams{client: c, urls: slices.Clone(urls), cooldown: cooldown, log: logger,
		downUntil: make([]atomic.Int64, len(urls)), now: time.Now}
}

// URLs returns the upstreams in their configured order.
func (u *Upstreams) URLs() []string { return slices.Clone(u.urls) }

// Client is the client the requests go through.
func (u *Upstreams) Client() *Client { return u.client }

// Post sends body to the upstream that the Request-Id of ctx prefers (a new id is made and put
// in ctx's place when there is none, so every attempt carries the same one), failing over as
// the type's documentation says. It returns the URL that answered last, along with what
// Client.Post returns.
func (u *Upstreams) Post(ctx context.Context, contentType string, body []byte) (*Response, string, error) {
	if len(u.urls) == 0 {
		return nil, "", errors.New("no upstream configured")
	}
	id := RequestIDFrom(ctx)
	if id == "" {
		id = NewRequestID()
		ctx = WithRequestID(ctx, id)
	}
	if len(u.urls) == 1 {
		resp, err := u.client.Post(ctx, u.urls[0], contentType, body)
		return resp, u.urls[0], err
	}
	var errs []error
	for _, i := range u.Order(id) {
		url := u.urls[i]
		resp, err := u.client.Post(ctx, url, contentType, body)
		if err == nil || !errors.Is(err, ErrNotConnected) || ctx.Err() != nil {
			if err == nil {
				u.downUntil[i].Store(0)
			}
			return resp, url, err
		}
		u.downUntil[i].Store(u.now().Add(u.cooldown).UnixNano())
		u.log.Debug("upstream not reachable, trying the next", zap.String("request_id", id), zap.String("url", url), zap.Error(err))
		errs = append(errs, err)
	}
	return nil, u.urls[len(u.urls)-1], fmt.Errorf("every upstream failed to connect: %w", errors.Join(errs...))
}

// Order returns the indexes of URLs in the order a request with this id tries them: by
// rendezvous score, the ones in cooldown last (in the same relative order).
func (u *Upstreams) Order(id string) []int {
	type cand struct {
		i     int
		score uint64
		down  bool
	}
	now := u.now().UnixNano()
	cands := make([]cand, len(u.urls))
	for i, url := range u.urls {
		cands[i] = cand{i: i, score: rendezvous(id, url), down: u.downUntil[i].Load() > now}
	}
	slices.SortStableFunc(cands, func(a, b cand) int {
		switch {
		case a.down != b.down:
			if a.down {
				return 1
			}
			return -1
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return 0
	})
	out := make([]int, len(cands))
	for k, c := range cands {
		out[k] = c.i
	}
	return out
}

// rendezvous is the highest-random-weight score of (id, url): FNV-1a of both, finished with
// SplitMix64's mixer so that ids differing in one character still spread evenly.
func rendezvous(id, url string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(url))
	h.Write([]byte{0})
	h.Write([]byte(id))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

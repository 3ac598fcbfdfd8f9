package dnscache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Defaults of a Resolver's zero fields.
const (
	// DefaultTTL is how long an answer is reused when Resolver.TTL is zero. Thirty seconds keeps
	// the query rate per upstream at two a minute, which no DNS server notices, while bounding
	// how long a moved target that still accepts connections at its old address (a port reused
	// by something else) is missed. Failed connections drop an entry at once, so the TTL is not
	// what makes failover work; it only refreshes answers that still seem to work.
	DefaultTTL = 30 * time.Second
	// DefaultDialTimeout bounds one connection attempt of the default dialer. Ten seconds lets a
	// SYN be retransmitted twice (after 1 s and 3 s), so an upstream with a briefly full listen
	// queue is still reached, yet a vanished container (whose address nobody answers for) is
	// given up on well within the shortest outage of the failover experiment (26 s), in time to
	// look up its new address.
	DefaultDialTimeout = 10 * time.Second
	// DefaultKeepAlive is the TCP keep-alive period of the default dialer, the same as
	// net/http's DefaultTransport: pooled idle connections to a peer that vanished without a FIN
	// (a killed container) are detected instead of being handed to the next request.
	DefaultKeepAlive = 30 * time.Second
)

// Resolver caches host lookups for outbound dials. The zero value is usable. A Resolver is safe
// for concurrent use; its exported fields must be set before first use and not changed after,
// and it must not be copied after first use.
type Resolver struct {
	// TTL is how long an answer is reused. Zero means DefaultTTL; a negative TTL makes every
	// answer expire at once (concurrent lookups are still shared, and an expired answer is still
	// served when the DNS server fails).
	TTL time.Duration
	// LookupHost resolves a hostname to addresses. Nil means net.DefaultResolver.LookupHost;
	// tests swap it for a fake.
	LookupHost func(ctx context.Context, host string) ([]string, error)
	// Dialer connects to resolved addresses. Nil means a net.Dialer with DefaultDialTimeout and
	// DefaultKeepAlive. Its own resolver is never used: it is always given IP addresses.
	Dialer *net.Dialer
	// Logger logs hits at debug level and fresh answers and drops at info level. Nil means
	// zap.NewNop(). The caller names it (logger.Named("dnscache")).
	Logger *zap.Logger
	// Now tells the time for expiry. Nil means time.Now; tests swap it to expire entries
	// without waiting.
	Now func() time.Time

	mu      sync.Mutex
	entries map[string]*entry // host -> current answer, possibly expired
	calls   map[string]*call  // host -> lookup in flight

	hits, misses, drops, lookups, lookupErrors, stale atomic.Uint64
}

// entry is one cached answer. Entries are never modified after they are stored, so a dial can
// hold one without the lock and later tell, by pointer, whether it is still the current one.
type entry struct {
	addrs   []string
	expires time.Time
}

// call is one lookup in flight, shared by every caller that missed the same host meanwhile.
type call struct {
	done chan struct{}
	e    *entry // the answer (possibly an expired one, served stale); nil when err is set
	err  error
	// abandoned is set when the lookup failed because the context of the caller that ran it
	// ended. That says nothing about the host, so waiters whose contexts are still alive look
	// it up again rather than failing with someone else's cancellation.
	abandoned bool
}

// Stats is a snapshot of a Resolver's counters.
type Stats struct {
	// Hits counts lookups answered from an unexpired entry.
	Hits uint64
	// Misses counts lookups that found no unexpired entry, including those that shared a
	// lookup started by another caller.
	Misses uint64
	// Drops counts entries removed because a dial to one of their addresses failed, or by
	// Forget.
	Drops uint64
	// Lookups counts the queries actually made through LookupHost.
	Lookups uint64
	// LookupErrors counts queries that failed.
	LookupErrors uint64
	// Stale counts failed queries answered with an expired entry instead.
	Stale uint64
}

// Stats returns the current values of r's counters.
func (r *Resolver) Stats() Stats {
	return Stats{
		Hits:         r.hits.Load(),
		Misses:       r.misses.Load(),
		Drops:        r.drops.Load(),
		Lookups:      r.lookups.Load(),
		LookupErrors: r.lookupErrors.Load(),
		Stale:        r.stale.Load(),
	}
}

// Lookup returns the addresses of host, from the cache while its entry is fresh. An IP literal
// is returned as it is, without touching the cache. Lookup errors are not cached; but when the
// DNS server fails with anything other than "no such host" and host has an expired entry, that
// entry's addresses are returned instead of the error.
func (r *Resolver) Lookup(ctx context.Context, host string) ([]string, error) {
	if isIPLiteral(host) {
		return []string{host}, nil
	}
	e, _, err := r.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	// The entry is shared; the caller gets its own slice.
	return slices.Clone(e.addrs), nil
}

// Forget drops the cached entry of host, if any, so that the next dial or Lookup asks the DNS
// server again. It counts as a drop.
func (r *Resolver) Forget(host string) {
	r.mu.Lock()
	_, ok := r.entries[host]
	delete(r.entries, host)
	r.mu.Unlock()
	if ok {
		r.drops.Add(1)
		r.logger().Info("dropped cached addresses", zap.String("host", host), zap.String("reason", "forgotten"))
	}
}

// DialContext connects to address (host:port) on network, resolving host through the cache. It
// has the signature of net/http.Transport.DialContext.
//
// The cached addresses are tried in order. When a dial to one fails, the host's entry is
// dropped at once; if every cached address failed, the host is looked up again and the
// addresses of the fresh answer not tried yet are dialed, so a target that came back on a new
// IP is reached within the same call. A dial that fails because ctx ended drops nothing. The
// error names address and wraps the last dial error, which reflects the freshest answer.
//
// IP literals bypass the cache, and networks other than TCP and UDP (unix, ip4:icmp, ...) go to
// the dialer unchanged.
func (r *Resolver) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
	default:
		conn, err := r.dialer().DialContext(ctx, network, address)
		if err != nil {
			return nil, fmt.Errorf("dialing %s: %w", address, err)
		}
		return conn, nil
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", address, err)
	}
	if isIPLiteral(host) {
		conn, err := r.dialer().DialContext(ctx, network, address)
		if err != nil {
			return nil, fmt.Errorf("dialing %s: %w", address, err)
		}
		return conn, nil
	}

	e, cached, err := r.resolve(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", address, err)
	}
	var tried []string
	conn, dialErr := r.dialEach(ctx, network, host, port, e, &tried)
	if conn != nil {
		return conn, nil
	}
	if dialErr == nil {
		return nil, fmt.Errorf("dialing %s: %w", address, &net.AddrError{Err: "no suitable address found", Addr: host})
	}
	if ctx.Err() != nil || !cached {
		// Either the caller gave up, or the addresses came from a lookup made for this very
		// call: asking again at once would only repeat the answer.
		return nil, fmt.Errorf("dialing %s: %w", address, dialErr)
	}

	// The target may have moved. Its entry was dropped by dialEach, so this asks the DNS server
	// (or joins a lookup another failed dial started meanwhile).
	fresh, _, err := r.resolve(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w (looking it up again: %w)", address, dialErr, err)
	}
	conn, err = r.dialEach(ctx, network, host, port, fresh, &tried)
	if conn != nil {
		return conn, nil
	}
	if err != nil {
		dialErr = err
	}
	return nil, fmt.Errorf("dialing %s: %w", address, dialErr)
}

// dialEach dials the addresses of e that suit network and are not in tried yet, in order,
// appending each to tried. A failure drops e from the cache unless ctx has ended. It returns the
// first connection made, or the last dial error (nil if there was nothing to dial).
func (r *Resolver) dialEach(ctx context.Context, network, host, port string, e *entry, tried *[]string) (net.Conn, error) {
	d := r.dialer()
	var lastErr error
	for _, addr := range e.addrs {
		if slices.Contains(*tried, addr) || !suits(network, addr) {
			continue
		}
		*tried = append(*tried, addr)
		conn, err := d.DialContext(ctx, network, net.JoinHostPort(addr, port))
		if err == nil {
			return conn, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			// The caller gave up (or its deadline passed); that says nothing about addr.
			return nil, err
		}
		r.drop(host, e, addr, err)
	}
	return nil, lastErr
}

// drop removes e from the cache if it is still host's current entry. A newer entry, stored by a
// lookup after e was handed out, is kept: a failure at an old address says nothing about it.
func (r *Resolver) drop(host string, e *entry, addr string, cause error) {
	r.mu.Lock()
	current := r.entries[host] == e
	if current {
		delete(r.entries, host)
	}
	r.mu.Unlock()
	if current {
		r.drops.Add(1)
		r.logger().Info("dropped cached addresses",
			zap.String("host", host), zap.String("reason", "dial failed"),
			zap.String("addr", addr), zap.Error(cause))
	}
}

// resolve returns host's entry, from the cache (cached is true) or from a lookup, shared with any
// other caller that misses host meanwhile.
func (r *Resolver) resolve(ctx context.Context, host string) (e *entry, cached bool, err error) {
	counted := false
	for {
		r.mu.Lock()
		if e := r.entries[host]; e != nil && r.now().Before(e.expires) {
			r.mu.Unlock()
			r.hits.Add(1)
			if ce := r.logger().Check(zap.DebugLevel, "cache hit"); ce != nil {
				ce.Write(zap.String("host", host), zap.Strings("addrs", e.addrs))
			}
			return e, true, nil
		}
		if !counted {
			// A caller that retries after an abandoned lookup is still one miss.
			counted = true
			r.misses.Add(1)
		}
		c, inFlight := r.calls[host]
		if !inFlight {
			c = &call{done: make(chan struct{})}
			if r.calls == nil {
				r.calls = make(map[string]*call)
			}
			r.calls[host] = c
		}
		r.mu.Unlock()

		if !inFlight {
			r.lookup(ctx, host, c)
			return c.e, false, c.err
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, false, fmt.Errorf("looking up %s: %w", host, ctx.Err())
		}
		if c.abandoned && ctx.Err() == nil {
			continue
		}
		return c.e, false, c.err
	}
}

// errLookupIncomplete is what waiters see if LookupHost panicked in the caller that ran it.
var errLookupIncomplete = errors.New("lookup did not complete")

// lookup runs the query of c for host in the caller's goroutine, so that no goroutine outlives
// the calls that need it, stores the answer and wakes the waiters.
func (r *Resolver) lookup(ctx context.Context, host string, c *call) {
	finished := false
	defer func() {
		if !finished {
			// LookupHost panicked. Fail the waiters and forget the call, so that the next
			// caller tries again instead of joining a lookup that will never end.
			c.err = fmt.Errorf("looking up %s: %w", host, errLookupIncomplete)
			r.mu.Lock()
			delete(r.calls, host)
			r.mu.Unlock()
		}
		close(c.done)
	}()

	r.lookups.Add(1)
	start := time.Now()
	addrs, err := r.lookupHost()(ctx, host)
	finished = true
	if err == nil && len(addrs) == 0 {
		// net.Resolver never does this, but a replaced LookupHost might; an empty entry would
		// make every dial fail without dropping it.
		err = &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	took := time.Since(start)

	var served *entry
	r.mu.Lock()
	delete(r.calls, host)
	if err == nil {
		c.e = &entry{addrs: slices.Clone(addrs), expires: r.now().Add(r.ttl())}
		c.err = nil
		if r.entries == nil {
			r.entries = make(map[string]*entry)
		}
		r.entries[host] = c.e
	} else if old := r.entries[host]; old != nil && ctx.Err() == nil && !isNotFound(err) {
		// The DNS server failed (Docker's did under load) rather than denying the name. The
		// expired answer is the best knowledge there is, and if the target did move the dial
		// fails and drops it. It stays expired, so the next caller asks again.
		c.e, c.err, served = old, nil, old
	} else {
		c.err = fmt.Errorf("looking up %s: %w", host, err)
		c.abandoned = ctx.Err() != nil
	}
	r.mu.Unlock()

	log := r.logger()
	switch {
	case err == nil:
		log.Info("resolved host", zap.String("host", host), zap.Strings("addrs", addrs), zap.Duration("took", took))
	case served != nil:
		r.lookupErrors.Add(1)
		r.stale.Add(1)
		log.Warn("lookup failed, using expired addresses",
			zap.String("host", host), zap.Strings("addrs", served.addrs), zap.Error(err))
	default:
		// The error goes back to the caller, which decides how loud to be about it.
		r.lookupErrors.Add(1)
		log.Debug("lookup failed", zap.String("host", host), zap.Error(err))
	}
}

func (r *Resolver) ttl() time.Duration {
	if r.TTL == 0 {
		return DefaultTTL
	}
	return r.TTL
}

func (r *Resolver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Resolver) lookupHost() func(context.Context, string) ([]string, error) {
	if r.LookupHost != nil {
		return r.LookupHost
	}
	return net.DefaultResolver.LookupHost
}

func (r *Resolver) dialer() *net.Dialer {
	if r.Dialer != nil {
		return r.Dialer
	}
	return &net.Dialer{Timeout: DefaultDialTimeout, KeepAlive: DefaultKeepAlive}
}

func (r *Resolver) logger() *zap.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return zap.NewNop()
}

// isIPLiteral reports whether host is an IP address (IPv6 possibly with a zone), which needs no
// lookup and so bypasses the cache.
func isIPLiteral(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}

// isNotFound reports whether err says that the name does not exist, as opposed to the DNS
// server failing to answer.
func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// suits reports whether addr can be dialed on network: tcp4 and udp4 want IPv4 addresses, tcp6
// and udp6 IPv6 ones. Dialing a misfit would fail and wrongly drop the entry.
func suits(network, addr string) bool {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		// Not ours to judge; let the dialer say what is wrong with it.
		return true
	}
	switch network[len(network)-1] {
	case '4':
		return ip.Unmap().Is4()
	case '6':
		return ip.Is6() && !ip.Is4In6()
	}
	return true
}

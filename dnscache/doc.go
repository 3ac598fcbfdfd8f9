// Package dnscache resolves the hostnames of outbound connections once and reuses the answer,
// while still following a target that comes back on a new address.
//
// The original Legacy Proxy System resolved every upstream hostname once and kept the answer
// forever, because Docker's embedded DNS server failed under the experiments' load. That cache
// had to be switched off for the failover experiments: a restarted container comes back on a
// new IP, and the cached one pointed at nothing until the proxy itself was restarted. One
// setting therefore could not serve both kinds of run.
//
// A [Resolver] serves both. Its entries expire after a TTL, and an entry is dropped the moment a
// connection to one of its addresses fails; the same dial then looks the host up again and, if
// the answer names an address it has not tried yet, connects there. A target that moved is
// followed within the request that noticed, and every other request keeps being answered from
// the cache. Concurrent misses for one host share a single lookup, so a burst of new connections
// does not turn into a burst of DNS queries, and when a lookup fails for a reason other than "no
// such host" (a DNS server overloaded, as Docker's was) an expired entry is served rather than
// failing a connection that would have worked.
//
// A Resolver plugs into an [net/http.Transport] as its DialContext and reports its hits,
// misses and drops as Prometheus counters (it is a [github.com/prometheus/client_golang/prometheus.Collector]).
package dnscache

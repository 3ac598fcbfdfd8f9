package roles

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/dnscache"
	"github.com/lpsdev/lps/tcptune"
	"github.com/lpsdev/lps/transport"
)

// DefaultListen is the listen address of the original services (HTTP_HOST/HTTP_PORT defaults).
const DefaultListen = ":8080"

// Server are the settings of a role that serves HTTP. Zero fields take documented defaults.
type Server struct {
	// Listen is the address to listen on; "" means DefaultListen. Ignored when Listener is set.
	Listen string
	// Listener, when set, is served instead of opening Listen (tests and `lps up` pass one).
	Listener net.Listener
	// Backlog is the listen backlog; zero means tcptune.DefaultBacklog.
	Backlog int
	// ServiceName names the instance in logs and metrics.
	ServiceName string
	// MaxBodyBytes limits request bodies; zero means transport.DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxConcurrent bounds the API requests handled at once; more are answered 503 with
	// Retry-After (transport.LimitConcurrent). Zero means transport.DefaultMaxConcurrent,
	// negative no limit. The admin endpoints are not bounded, so health checks and metrics
	// still answer under overload.
	MaxConcurrent int
	// ShutdownTimeout bounds the graceful shutdown; zero means transport.DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// ReadHeaderTimeout and ReadTimeout bound how long a client may take to send its headers and
	// its whole request (what a slowloris client stretches); zero means
	// transport.DefaultReadHeaderTimeout and transport.DefaultReadTimeout.
	ReadHeaderTimeout, ReadTimeout time.Duration
	// Logger is the role's logger; nil means none. Registry collects its metrics; nil means a
	// fresh registry of its own.
	Logger   *zap.Logger
	Registry *prometheus.Registry
	// ProcRoot is where tcptune reads kernel counters; "" means /proc.
	ProcRoot string
}

// SetDefaults fills the zero fields that roles use before building their service: Listen,
// Logger and Registry.
func (s *Server) SetDefaults() {
	if s.Listen == "" {
		s.Listen = DefaultListen
	}
	if s.Logger == nil {
		s.Logger = zap.NewNop()
	}
	if s.Registry == nil {
		s.Registry = prometheus.NewRegistry()
	}
}

// Upstream are the settings of a role's outbound HTTP requests.
type Upstream struct {
	// URL is where to forward (TARGET_URL); required. Several equivalent upstreams are given
	// as a comma-separated list: each alarm then goes to the one its Request-Id picks (see
	// transport.Upstreams), so all copies of an alarm meet the same upstream and its dedup
	// window, and the next one takes over when that one refuses connections.
	URL string
	// HTTP2 sends with h2c prior knowledge (USE_HTTP_2).
	HTTP2 bool
	// NoDNSCache turns the resolver cache off (SKIP_DNS_CACHE). The cache follows moved targets,
	// so it is on by default for performance and failover runs alike.
	NoDNSCache bool
	// Timeout bounds one request; zero means transport.DefaultClientTimeout.
	Timeout time.Duration
}

// URLs returns the upstream URLs of u.URL, each with defaultPath when it names no path (see
// ForwardURL).
func (u Upstream) URLs(defaultPath string) []string {
	var out []string
	for _, raw := range strings.Split(u.URL, ",") {
		if raw = strings.TrimSpace(raw); raw != "" {
			out = append(out, ForwardURL(raw, defaultPath))
		}
	}
	return out
}

// ValidateURLs checks that raw is one URL or a comma-separated list of URLs that each pass
// ValidateURL, with none given twice.
func ValidateURLs(raw string) error {
	if strings.TrimSpace(raw) == "" {
		return fmt.Errorf("is required")
	}
	seen := map[string]bool{}
	for _, one := range strings.Split(raw, ",") {
		one = strings.TrimSpace(one)
		if err := ValidateURL(one); err != nil {
			if one == "" {
				return fmt.Errorf("%q: has an empty entry", raw)
			}
			return err
		}
		if seen[one] {
			return fmt.Errorf("%q: lists %q twice", raw, one)
		}
		seen[one] = true
	}
	return nil
}

// ValidateURL checks that raw is an absolute http(s) URL with a host.
func ValidateURL(raw string) error {
	if raw == "" {
		return fmt.Errorf("is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q: scheme must be http or https", raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%q: has no host", raw)
	}
	return nil
}

// NewClient builds the transport.Client of an upstream, with the DNS cache unless disabled; the
// cache's counters go to reg.
func (u Upstream) NewClient(logger *zap.Logger, reg prometheus.Registerer) *transport.Client {
	c := &transport.Client{HTTP2: u.HTTP2, Timeout: u.Timeout, Logger: logger}
	if !u.NoDNSCache {
		r := &dnscache.Resolver{Logger: logger.Named("dnscache")}
		if reg != nil {
			reg.MustRegister(r)
		}
		c.DialContext = r.DialContext
	}
	return c
}

// NewUpstreams builds the client of u (see NewClient) and the Upstreams over u's URLs, each
// with defaultPath when it names no path.
func (u Upstream) NewUpstreams(defaultPath string, logger *zap.Logger, reg prometheus.Registerer) *transport.Upstreams {
	return transport.NewUpstreams(u.NewClient(logger, reg), u.URLs(defaultPath), 0, logger)
}

// HTTPService is the serving part of a role: its listener, API, admin endpoints and metrics.
type HTTPService struct {
	cfg    Server
	server transport.Server
	ln     net.Listener
}

// NewHTTPService opens the listener (so a bad address fails at start and the address is known
// at once) and assembles the handler: admin endpoints at /healthz, /readyz and /metrics, every
// other path to api, which gets Request-Id handling, metrics and access logs.
func NewHTTPService(cfg Server, api http.Handler, ready func(context.Context) error) (*HTTPService, error) {
	cfg.SetDefaults()
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = tcptune.Listen(context.Background(), "tcp", cfg.Listen, cfg.Backlog); err != nil {
			return nil, fmt.Errorf("listening on %s: %w", cfg.Listen, err)
		}
	}
	cfg.Registry.MustRegister(tcptune.NewCollector(cfg.ProcRoot))
	metrics := transport.NewMetrics(cfg.Registry)

	mux := http.NewServeMux()
	transport.Admin{Gatherer: cfg.Registry, Ready: ready}.Register(mux)
	limit := cfg.MaxConcurrent
	if limit == 0 {
		limit = transport.DefaultMaxConcurrent
	}
	// Inside the metrics, so that shed requests are counted (code 503) and logged.
	mux.Handle("/", transport.RequestID(metrics.Wrap(transport.LimitConcurrent(api, limit), cfg.Logger)))

	s := &HTTPService{cfg: cfg, ln: ln}
	s.server = transport.Server{
		Listener:          ln,
		Handler:           mux,
		MaxBodyBytes:      cfg.MaxBodyBytes,
		ShutdownTimeout:   cfg.ShutdownTimeout,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		Logger:            cfg.Logger,
	}
	return s, nil
}

// Addr is the address the service listens on.
func (s *HTTPService) Addr() net.Addr { return s.ln.Addr() }

// Run serves until ctx is done, then finishes the requests in flight and returns.
func (s *HTTPService) Run(ctx context.Context) error {
	s.cfg.Logger.Info("listening", zap.Stringer("addr", s.ln.Addr()))
	return s.server.Serve(ctx)
}

// Close releases the listener of a service that will not Run.
func (s *HTTPService) Close() error { return s.ln.Close() }

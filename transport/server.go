package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// Defaults of the Server, applied in one place (Server.defaults).
const (
	// DefaultReadHeaderTimeout bounds how long a client may take to send its headers, which is
	// what a slowloris client stretches.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout bounds the whole request including its body, so a client that sends its
	// body byte by byte cannot hold a connection and a goroutine forever.
	DefaultReadTimeout = 30 * time.Second
	// DefaultIdleTimeout closes idle keep-alive connections; the roles' clients pool connections
	// for longer than a request, so this is generous.
	DefaultIdleTimeout = 120 * time.Second
	// DefaultShutdownTimeout is how long a graceful shutdown waits for requests in flight. It is
	// longer than DefaultClientTimeout so a request that waits for its upstream can still finish.
	DefaultShutdownTimeout = 65 * time.Second
	// DefaultMaxBodyBytes limits request bodies. An alarm is a few hundred bytes; 1 MiB leaves
	// room for other commands while keeping a hostile client from filling memory.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultMaxHeaderBytes limits request headers. net/http adds 4 KiB of slack, so headers up to
	// about 8 KiB pass and larger ones get 431, like common reverse proxies' defaults.
	DefaultMaxHeaderBytes = 4 << 10
	// headerSlack is net/http's slack over MaxHeaderBytes (bufio's default buffer size).
	headerSlack = 4 << 10
	// DefaultMaxConcurrent bounds the requests one role's API handles at once. Each waits for
	// its upstream holding a goroutine, buffers and a connection (about 10 KiB), so without a
	// bound an upstream that stalls turns into memory growing with the offered load. 4,096 is
	// above what the experiments put on one instance (3,000 alarm devices over three comp1, all
	// of them on one comp2 in the worst case), so shedding starts only beyond them.
	DefaultMaxConcurrent = 4096
	// RetryAfterSeconds is the Retry-After of a shed request: the original's devices retry after
	// a second as well.
	RetryAfterSeconds = 1
)

// LimitConcurrent answers 503 with Retry-After to a request that arrives while n are in
// progress, instead of queueing it; n ≤ 0 means no limit. Shedding at once keeps a server that
// is overloaded fast for the requests it takes, and a client gets an answer it can act on (the
// devices and comp1 retry) instead of a timeout.
func LimitConcurrent(next http.Handler, n int) http.Handler {
	if n <= 0 {
		return next
	}
	slots := make(chan struct{}, n)
	reason := fmt.Sprintf("overloaded: %d requests in progress, the most this service handles at once; retry in %d s", n, RetryAfterSeconds)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
			next.ServeHTTP(w, r)
		default:
			w.Header().Set("Retry-After", fmt.Sprint(RetryAfterSeconds))
			WriteError(w, http.StatusServiceUnavailable, reason)
		}
	})
}

// Server serves one role's HTTP API on a listener, accepting HTTP/1.1 and h2c with prior
// knowledge on the same port. Zero fields take the documented defaults.
type Server struct {
	// Listener is where to serve; required. tcptune.Listen makes it, with the role's backlog.
	Listener net.Listener
	// Handler serves the requests; it is wrapped with the body limit. Required.
	Handler http.Handler
	// ReadHeaderTimeout, ReadTimeout, IdleTimeout: zero means the Default* value.
	ReadHeaderTimeout, ReadTimeout, IdleTimeout time.Duration
	// ShutdownTimeout bounds the graceful shutdown; zero means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// MaxBodyBytes limits request bodies; zero means DefaultMaxBodyBytes, negative means no limit.
	MaxBodyBytes int64
	// MaxHeaderBytes limits request headers; zero means DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// Logger logs server errors and the shutdown; nil means no logging.
	Logger *zap.Logger
}

func (s *Server) defaults() {
	if s.ReadHeaderTimeout == 0 {
		s.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if s.ReadTimeout == 0 {
		s.ReadTimeout = DefaultReadTimeout
	}
	if s.IdleTimeout == 0 {
		s.IdleTimeout = DefaultIdleTimeout
	}
	if s.ShutdownTimeout == 0 {
		s.ShutdownTimeout = DefaultShutdownTimeout
	}
	if s.MaxBodyBytes == 0 {
		s.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if s.MaxHeaderBytes == 0 {
		s.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if s.Logger == nil {
		s.Logger = zap.NewNop()
	}
}

// Serve serves until ctx is done, then shuts down gracefully: it stops accepting, lets the
// requests in flight finish (up to ShutdownTimeout) and returns nil. It returns an error when
// serving fails or the shutdown could not finish in time.
func (s *Server) Serve(ctx context.Context) error {
	if s.Listener == nil || s.Handler == nil {
		return errors.New("serving: transport.Server needs a Listener and a Handler")
	}
	s.defaults()

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)

	handler := s.Handler
	if s.MaxBodyBytes > 0 {
		handler = limitBody(handler, s.MaxBodyBytes)
	}
	// net/http enforces MaxHeaderBytes (+ its slack) only on a connection's first request: on a
	// kept-alive connection the 4 KiB it buffered while waiting for the next request come on top,
	// so headers up to about 12 KiB passed there, and its own 431 is plain text. The handler
	// checks the limit itself, answering a JSON 431, and net/http's limit, raised by the slack,
	// only bounds the memory a request can take before the check.
	handler = limitHeader(handler, s.MaxHeaderBytes+headerSlack)
	srv := &http.Server{
		Handler:           handler,
		Protocols:         &protocols,
		ReadHeaderTimeout: s.ReadHeaderTimeout,
		ReadTimeout:       s.ReadTimeout,
		IdleTimeout:       s.IdleTimeout,
		MaxHeaderBytes:    s.MaxHeaderBytes + headerSlack,
		ErrorLog:          zap.NewStdLog(s.Logger.Named("http")),
		// Requests must not inherit cancellation from ctx: a shutdown lets them finish.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.Listener) }()

	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", s.Listener.Addr(), err)
	case <-ctx.Done():
	}
	s.Logger.Info("shutting down, finishing requests in flight", zap.Stringer("addr", s.Listener.Addr()))
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		<-errc
		return fmt.Errorf("shutting down %s: %w", s.Listener.Addr(), err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving on %s: %w", s.Listener.Addr(), err)
	}
	return nil
}

// limitBody rejects a declared Content-Length over the limit at once and caps the body of
// every other request, so a handler reading it sees *http.MaxBytesError.
func limitBody(next http.Handler, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			WriteError(w, http.StatusRequestEntityTooLarge,
				fmt.Sprintf("request body of %d bytes exceeds the limit of %d bytes", r.ContentLength, limit))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}

// limitHeader answers 431 to a request whose request line and headers, as sent in HTTP/1.1,
// take more than limit bytes.
func limitHeader(next http.Handler, limit int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n := headerSize(r); n > limit {
			WriteError(w, http.StatusRequestHeaderFieldsTooLarge,
				fmt.Sprintf("request headers of %d bytes exceed the limit of %d bytes", n, limit))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// headerSize is the size of r's request line and headers in HTTP/1.1 form: what net/http's
// MaxHeaderBytes counts.
func headerSize(r *http.Request) int {
	n := len(r.Method) + 1 + len(r.RequestURI) + 1 + len(r.Proto) + 2
	n += len("Host: ") + len(r.Host) + 2
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n + 2
}

package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Defaults of the Client, applied in one place (Client.init).
const (
	// DefaultClientTimeout bounds one request, as the original services' httpx clients did.
	DefaultClientTimeout = 60 * time.Second
	// DefaultMaxIdleConnsPerHost keeps enough pooled connections for a few hundred requests per
	// second to one upstream. net/http's default of 2 makes every burst open and close
	// connections, which fills the port range with TIME_WAIT sockets under load.
	DefaultMaxIdleConnsPerHost = 512
	// DefaultMaxConnsPerHost bounds the connections to one upstream host; a request beyond it
	// waits for one to come free (within its timeout) instead of opening yet another to an
	// upstream that is already slow. It is above what the experiments need (about 1,000 per
	// host at 3,000 devices) and below what exhausts ports or file descriptors.
	DefaultMaxConnsPerHost = 1024
	// maxResponseBody bounds how much of an upstream's answer is read into memory.
	maxResponseBody = 1 << 20
)

// Errors a Client returns, so that callers can answer 502 or 504 (see UpstreamStatus).
var (
	// ErrUpstreamTimeout means the upstream did not answer within the timeout.
	ErrUpstreamTimeout = errors.New("upstream timed out")
	// ErrUpstreamUnreachable means no connection could be made or it broke before an answer.
	ErrUpstreamUnreachable = errors.New("upstream unreachable")
)

// StatusError reports an upstream that answered with a status other than 2xx.
type StatusError struct {
	Status int
	Body   []byte
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("upstream answered %d %s", e.Status, bytes.TrimSpace(e.Body))
}

// UpstreamStatus maps an error of Client.Post to the status a proxy answers: 504 for a
// timeout, 502 for an unreachable upstream or a non-2xx answer, 499-like cancellation as 503.
func UpstreamStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrUpstreamTimeout):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	default:
		var se *StatusError
		if errors.As(err, &se) || errors.Is(err, ErrUpstreamUnreachable) {
			return http.StatusBadGateway
		}
		return http.StatusInternalServerError
	}
}

// Client sends a role's requests to its upstream. Zero fields take the documented defaults; a
// Client is safe for concurrent use and must not be copied after first use.
type Client struct {
	// HTTP2 makes every request use HTTP/2 over cleartext with prior knowledge (USE_HTTP_2).
	// Otherwise requests use HTTP/1.1, the only protocol the legacy backend speaks.
	HTTP2 bool
	// Timeout bounds each request from dial to the end of the answer; zero means
	// DefaultClientTimeout.
	Timeout time.Duration
	// DialContext dials connections; nil means a net.Dialer. Set it to a dnscache.Resolver's
	// DialContext to cache name resolution.
	DialContext func(ctx context.Context, network, address string) (net.Conn, error)
	// MaxIdleConnsPerHost: zero means DefaultMaxIdleConnsPerHost.
	MaxIdleConnsPerHost int
	// MaxConnsPerHost: zero means DefaultMaxConnsPerHost, negative no limit.
	MaxConnsPerHost int
	// Logger logs failed requests at debug level; nil means none.
	Logger *zap.Logger

	once sync.Once
	hc   *http.Client
}

func (c *Client) init() {
	if c.Timeout == 0 {
		c.Timeout = DefaultClientTimeout
	}
	if c.MaxIdleConnsPerHost == 0 {
		c.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if c.MaxConnsPerHost == 0 {
		c.MaxConnsPerHost = DefaultMaxConnsPerHost
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	dial := c.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	var protocols http.Protocols
	if c.HTTP2 {
		protocols.SetUnencryptedHTTP2(true)
	} else {
		protocols.SetHTTP1(true)
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			conn, err := dial(ctx, network, address)
			if err != nil {
				return nil, notConnected{err}
			}
			return conn, nil
		},
		Protocols:           &protocols,
		MaxIdleConns:        0, // no global bound; the per-host bound matters
		MaxIdleConnsPerHost: c.MaxIdleConnsPerHost,
		MaxConnsPerHost:     max(c.MaxConnsPerHost, 0),
		IdleConnTimeout:     90 * time.Second,
		// Compression is pointless for small JSON on a LAN and costs CPU on every hop.
		DisableCompression: true,
	}
	c.hc = &http.Client{Transport: tr, Timeout: c.Timeout}
}

// notConnected marks a failed dial: the request never left this process (ErrNotConnected).
type notConnected struct{ err error }

func (e notConnected) Error() string   { return e.err.Error() }
func (e notConnected) Unwrap() []error { return []error{ErrNotConnected, e.err} }

// Response is an upstream's answer, read whole (up to 1 MiB).
type Response struct {
	Status int
	Proto  string
	Header http.Header
	Body   []byte
}

// Post sends body to url with the Request-Id from ctx (a new one if ctx has none). It returns
// the response for a 2xx answer, a *StatusError for any other answer, and an error wrapping
// ErrUpstreamTimeout or ErrUpstreamUnreachable when no answer came.
func (c *Client) Post(ctx context.Context, url, contentType string, body []byte) (*Response, error) {
	c.once.Do(c.init)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("building request to %s: %w", url, err)
	}
	id := RequestIDFrom(ctx)
	if id == "" {
		id = NewRequestID()
	}
	req.Header.Set(RequestIDHeader, id)
	req.Header.Set("Content-Type", contentType)

	resp, err := c.hc.Do(req)
	if err != nil {
		err = classify(ctx, err)
		c.Logger.Debug("upstream request failed", zap.String("request_id", id), zap.String("url", url), zap.Error(err))
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return nil, fmt.Errorf("reading answer of %s: %w", url, classify(ctx, err))
	}
	out := &Response{Status: resp.StatusCode, Proto: resp.Proto, Header: resp.Header, Body: data}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return out, &StatusError{Status: resp.StatusCode, Body: data}
	}
	return out, nil
}

// CloseIdleConnections closes pooled connections that carry no request.
func (c *Client) CloseIdleConnections() {
	c.once.Do(c.init)
	c.hc.CloseIdleConnections()
}

// classify wraps a transport error with ErrUpstreamTimeout or ErrUpstreamUnreachable, keeping
// a cancellation by the caller recognisable as context.Canceled.
func classify(ctx context.Context, err error) error {
	if ctx.Err() == context.Canceled {
		return fmt.Errorf("%w: %w", context.Canceled, err)
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Errorf("%w: %w", ErrUpstreamTimeout, err)
	}
	return fmt.Errorf("%w: %w", ErrUpstreamUnreachable, err)
}

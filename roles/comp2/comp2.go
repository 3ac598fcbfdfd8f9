// Package comp2 is component 2 of the legacy system (the original's ars_comp_2_proxy.py): it
// accepts an alarm on POST /ID_REQ_KC_STORE7D3BPACKET and forwards it, with its Request-Id, to the
// legacy backend, answering 200 only when the backend did. It forwards each alarm once however
// many copies arrive (package dedup), remembering what it forwarded in memory, on disk
// (DedupDir) or in a Redis shared with the comp2 instances that fail over to each other
// (DedupStore).
package comp2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/config"
	"github.com/lpsdev/lps/dedup"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/transport"
)

// Config configures a Comp2.
type Config struct {
	roles.Server
	Upstream roles.Upstream
	// DedupWindow makes forwarding idempotent: an alarm (its Request-Id and its content) that
	// was forwarded successfully within the window is answered 200 without forwarding it again,
	// and one being forwarded right now waits for that outcome. Zero means dedup.DefaultTTL.
	DedupWindow time.Duration
	// NoDedup turns the dedup window off: every copy is forwarded (the original's behaviour).
	NoDedup bool
	// DedupMax bounds the alarms the in-memory window remembers; zero means
	// dedup.DefaultMax(window), the whole window at dedup.SizingRate alarms/s.
	DedupMax int
	// DedupDir keeps the window in DedupDir/dedup.db (bbolt, fsynced), so that a restart or
	// kill -9 of comp2 keeps it; "" keeps it in memory.
	DedupDir string
	// DedupStore, a redis:// or rediss:// URL, keeps the window in a Redis or Valkey server
	// shared by comp2 instances that fail over to each other. Not with DedupDir.
	DedupStore string
	// ForwardTimeout bounds one forward to the backend when the dedup window is on; zero means
	// DefaultForwardFactor × Upstream.Timeout. Upstream.Timeout is then how long the caller
	// waits: when it passes the caller gets 504, but the forward goes on, because the backend
	// may be about to take the alarm. Its outcome goes into the dedup window, so the caller's
	// retry waits for it instead of sending the alarm a second time. Without dedup there is
	// nothing to remember the outcome in, and a forward ends with the caller's wait.
	ForwardTimeout time.Duration
}

// DefaultForwardFactor is ForwardTimeout's default, as a multiple of Upstream.Timeout.
const DefaultForwardFactor = 3

// Comp2 is a running component 2.
type Comp2 struct {
	dedup      *dedup.Window // nil when off
	store      dedup.Store   // the window's; nil when off
	wait       time.Duration // how long a caller waits for the backend
	suppressed prometheus.Counter
	svc        *roles.HTTPService
	forwards   sync.WaitGroup // forwards that outlived their caller's wait
	upstreams  *transport.Upstreams
	log        *zap.Logger
}

// Validate checks cfg; New calls it.
func (cfg Config) Validate() error {
	if err := cfg.Server.Validate(); err != nil {
		return err
	}
	if err := config.Within("Upstream", cfg.Upstream.Validate()); err != nil {
		return err
	}
	switch {
	case cfg.DedupWindow < 0:
		return config.Invalid("DedupWindow", cfg.DedupWindow, "must not be negative (0: the default)")
	case cfg.DedupMax < 0:
		return config.Invalid("DedupMax", cfg.DedupMax, "must not be negative (0: the whole window at %d alarms/s)", dedup.SizingRate)
	case cfg.ForwardTimeout < 0:
		return config.Invalid("ForwardTimeout", cfg.ForwardTimeout, "must not be negative (0: %d × the upstream timeout)", DefaultForwardFactor)
	case cfg.DedupDir != "" && cfg.DedupStore != "":
		return config.Invalid("DedupStore", cfg.DedupStore, "excludes a dedup dir: the window is either shared (redis://) or this instance's own (a directory)")
	case cfg.DedupStore != "" && !strings.HasPrefix(cfg.DedupStore, "redis://") && !strings.HasPrefix(cfg.DedupStore, "rediss://"):
		return config.Invalid("DedupStore", cfg.DedupStore, "want redis://host:port[/db] or rediss://...")
	}
	return nil
}

// New validates cfg and opens the listener.
func New(cfg Config) (*Comp2, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.SetDefaults()
	c := &Comp2{log: cfg.Logger}
	if cfg.Upstream.Timeout <= 0 {
		cfg.Upstream.Timeout = transport.DefaultClientTimeout
	}
	c.wait = cfg.Upstream.Timeout
	var ready func(context.Context) error
	if !cfg.NoDedup {
		if cfg.ForwardTimeout <= 0 {
			cfg.ForwardTimeout = DefaultForwardFactor * cfg.Upstream.Timeout
		}
		cfg.Upstream.Timeout = max(cfg.Upstream.Timeout, cfg.ForwardTimeout)
		store, err := openStore(cfg)
		if err != nil {
			return nil, err
		}
		c.store = store
		c.dedup = &dedup.Window{Store: store, Logger: cfg.Logger.Named("dedup")}
		if r, ok := store.(*dedup.Redis); ok {
			ready = r.Ping // without its store comp2 forwards nothing
		}
	}
	c.suppressed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lps_comp2_duplicates_suppressed_total",
		Help: "Alarms not forwarded again because they (their Request-Id and content) were forwarded within the dedup window.",
	})
	cfg.Registry.MustRegister(c.suppressed)
	svc, err := roles.NewHTTPService(cfg.Server, transport.Endpoint(http.MethodPost, alarm.CommandPath, http.HandlerFunc(c.serveAlarm)), ready)
	if err != nil {
		if c.store != nil {
			c.store.Close()
		}
		return nil, err
	}
	c.svc = svc
	c.upstreams = cfg.Upstream.NewUpstreams(alarm.CommandPath, cfg.Logger.Named("client"), cfg.Registry)
	return c, nil
}

// Addr is where Comp2 listens.
func (c *Comp2) Addr() net.Addr { return c.svc.Addr() }

// Run serves until ctx is done, then finishes the requests in flight.
// Forwards that outlived their caller's wait are finished too (each is bounded by
// Config.ForwardTimeout): cutting one short would leave the backend's outcome unknown.
func (c *Comp2) Run(ctx context.Context) error {
	err := c.svc.Run(ctx)
	c.forwards.Wait()
	if c.store != nil {
		err = errors.Join(err, c.store.Close())
	}
	return err
}

// openStore opens the dedup window's store that cfg names.
func openStore(cfg Config) (dedup.Store, error) {
	switch {
	case cfg.DedupStore != "":
		s, err := dedup.NewRedis(cfg.DedupStore, cfg.DedupWindow)
		if err != nil {
			return nil, config.Invalid("DedupStore", cfg.DedupStore, "%v", err)
		}
		return s, nil
	case cfg.DedupDir != "":
		s, err := dedup.OpenBolt(cfg.DedupDir, cfg.DedupWindow)
		if err != nil {
			return nil, config.Invalid("DedupDir", cfg.DedupDir, "%v", err)
		}
		return s, nil
	}
	return &dedup.Memory{TTL: cfg.DedupWindow, Max: cfg.DedupMax}, nil
}

func (c *Comp2) serveAlarm(w http.ResponseWriter, r *http.Request) {
	body, err := transport.ReadJSONBody(r)
	if err != nil {
		roles.WriteErr(w, err)
		return
	}
	al, err := alarm.Parse(body)
	if err != nil {
		roles.WriteErr(w, err)
		return
	}
	al.RequestID = transport.RequestIDFrom(r.Context())
	// The forward does not end when the caller goes away: the backend may already have taken
	// the alarm, and a forward cut short would be forgotten by the dedup window, so the caller's
	// redelivery would reach the backend a second time. The client's timeout still bounds it.
	fctx := context.WithoutCancel(r.Context())
	forward := func() error {
		_, _, err := c.upstreams.Post(fctx, alarm.ContentType, al.Marshal())
		return err
	}
	if c.dedup == nil {
		err = forward()
	} else {
		// A copy is the same alarm again: the same Request-Id and content. The id alone is not
		// unique (the original comp1 sends "None" when its caller sent none).
		err = c.forwardOnce(r.Context(), al.RequestID, dedup.KeyOf(al.RequestID, al.ID, al.Body), forward)
	}
	if errors.Is(err, dedup.ErrStore) {
		// Forwarding without knowing whether the alarm went out before could run it twice;
		// the caller (mqtt2http) retries it once the store is back.
		c.log.Warn("dedup store unavailable; alarm not forwarded", zap.String("request_id", al.RequestID), zap.Error(err))
		transport.WriteError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if err != nil {
		c.log.Warn("forwarding alarm failed", zap.String("request_id", al.RequestID), zap.Error(err))
		transport.WriteError(w, transport.UpstreamStatus(err), "forwarding to the legacy system: "+err.Error())
		return
	}
	transport.WriteJSON(w, http.StatusOK, roles.SuccessBody)
}

// forwardOnce runs forward through the dedup window and waits for its outcome up to c.wait.
// The forward itself is not bound to the wait (see Config.ForwardTimeout): when the wait ends
// first, the caller gets a timeout and the forward's outcome is left for the dedup window.
func (c *Comp2) forwardOnce(ctx context.Context, id string, key dedup.Key, forward func() error) error {
	ctx, cancel := context.WithTimeout(ctx, c.wait)
	defer cancel()
	type outcome struct {
		dup bool
		err error
	}
	done := make(chan outcome, 1)
	var mine atomic.Bool // this call runs the forward (the others wait for it)
	c.forwards.Add(1)
	go func() {
		defer c.forwards.Done()
		// ctx bounds only waiting for another caller's forward, not the forward.
		dup, err := c.dedup.Do(ctx, key, func() error { mine.Store(true); return forward() })
		done <- outcome{dup, err}
	}()
	select {
	case o := <-done:
		if o.dup && o.err == nil {
			c.suppressed.Inc()
			c.log.Info("duplicate alarm not forwarded again", zap.String("request_id", id))
		}
		if o.err == nil || !errors.Is(o.err, context.DeadlineExceeded) || mine.Load() {
			return o.err
		}
	case <-ctx.Done():
	}
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return fmt.Errorf("%w: the caller went away", context.Canceled)
	case mine.Load():
		return fmt.Errorf("%w: no answer within %s; the forward goes on, and a retry of this alarm waits for its outcome",
			transport.ErrUpstreamTimeout, c.wait)
	default:
		return fmt.Errorf("%w: no answer within %s; still forwarding an earlier copy of this alarm",
			transport.ErrUpstreamTimeout, c.wait)
	}
}

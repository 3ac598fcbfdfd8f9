// Package comp2 is component 2 of the legacy system (the original's ars_comp_2_proxy.py): it
// accepts an alarm on POST /ID_REQ_KC_STORE7D3BPACKET and forwards it, with its Request-Id, to the
// legacy backend, answering 200 only when the backend did.
package comp2

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/dedup"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/transport"
)

// Config configures a Comp2.
type Config struct {
	roles.Server
	Upstream roles.Upstream
	// DedupWindow makes forwarding idempotent by Request-Id: an alarm whose id was forwarded
	// successfully within the window is answered 200 without forwarding it again, and one whose
	// id is being forwarded right now waits for that outcome. Zero means dedup.DefaultTTL,
	// negative turns it off.
	DedupWindow time.Duration
	// DedupMax bounds the ids remembered; zero means dedup.DefaultMax.
	DedupMax int
}

// Comp2 is a running component 2.
type Comp2 struct {
	dedup      *dedup.Window // nil when off
	suppressed prometheus.Counter
	svc        *roles.HTTPService
	upstreams  *transport.Upstreams
	log        *zap.Logger
}

// New validates cfg and opens the listener.
func New(cfg Config) (*Comp2, error) {
	if err := roles.ValidateURLs(cfg.Upstream.URL); err != nil {
		return nil, fmt.Errorf("upstream %w", err)
	}
	cfg.SetDefaults()
	c := &Comp2{log: cfg.Logger}
	if cfg.DedupWindow >= 0 {
		c.dedup = &dedup.Window{TTL: cfg.DedupWindow, Max: cfg.DedupMax}
	}
	c.suppressed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lps_comp2_duplicates_suppressed_total",
		Help: "Alarms not forwarded again because their Request-Id was forwarded within the dedup window.",
	})
	cfg.Registry.MustRegister(c.suppressed)
	svc, err := roles.NewHTTPService(cfg.Server, transport.Endpoint(http.MethodPost, roles.AlarmPath, http.HandlerFunc(c.serveAlarm)), nil)
	if err != nil {
		return nil, err
	}
	c.svc = svc
	c.upstreams = cfg.Upstream.NewUpstreams(roles.AlarmPath, cfg.Logger.Named("client"), cfg.Registry)
	return c, nil
}

// Addr is where Comp2 listens.
func (c *Comp2) Addr() net.Addr { return c.svc.Addr() }

// Run serves until ctx is done, then finishes the requests in flight.
func (c *Comp2) Run(ctx context.Context) error { return c.svc.Run(ctx) }

func (c *Comp2) serveAlarm(w http.ResponseWriter, r *http.Request) {
	body, err := transport.ReadJSONBody(r)
	if err != nil {
		transport.WriteErr(w, err)
		return
	}
	alarm, err := roles.ParseAlarm(body)
	if err != nil {
		transport.WriteErr(w, err)
		return
	}
	alarm.RequestID = transport.RequestIDFrom(r.Context())
	// The forward does not end when the caller goes away: the backend may already have taken
	// the alarm, and a forward cut short would be forgotten by the dedup window, so the caller's
	// redelivery would reach the backend a second time. The client's timeout still bounds it.
	fctx := context.WithoutCancel(r.Context())
	forward := func() error {
		_, _, err := c.upstreams.Post(fctx, "application/json", alarm.Marshal())
		return err
	}
	if c.dedup == nil {
		err = forward()
	} else {
		var dup bool
		dup, err = c.dedup.Do(r.Context(), alarm.RequestID, forward)
		if dup && err == nil {
			c.suppressed.Inc()
			c.log.Info("duplicate alarm not forwarded again", zap.String("request_id", alarm.RequestID))
		}
	}
	if err != nil {
		c.log.Warn("forwarding alarm failed", zap.String("request_id", alarm.RequestID), zap.Error(err))
		transport.WriteError(w, transport.UpstreamStatus(err), "forwarding to the legacy system: "+err.Error())
		return
	}
	transport.WriteJSON(w, http.StatusOK, roles.SuccessBody)
}

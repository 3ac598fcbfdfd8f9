// Package comp1 is component 1 of the legacy system (the original's ars_comp_1_proxy.py): alarm
// devices POST to /api/v1/simple, with query parameters or a JSON body, and component 1 forwards
// each alarm to component 2 (or, in the LPS, to http2mqtt) with its Request-Id.
package comp1

import (
	"context"
	"net"
	"net/http"

	"go.uber.org/zap"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/config"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/transport"
)

// Config configures a Comp1.
type Config struct {
	roles.Server
	Upstream roles.Upstream
}

// Validate checks cfg; New calls it.
func (cfg Config) Validate() error {
	if err := cfg.Server.Validate(); err != nil {
		return err
	}
	return config.Within("Upstream", cfg.Upstream.Validate())
}

// Comp1 is a running component 1.
type Comp1 struct {
	svc       *roles.HTTPService
	upstreams *transport.Upstreams
	log       *zap.Logger
}

// New validates cfg and opens the listener.
func New(cfg Config) (*Comp1, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.SetDefaults()
	c := &Comp1{log: cfg.Logger}
	svc, err := roles.NewHTTPService(cfg.Server, transport.Endpoint(http.MethodPost, alarm.DevicePath, http.HandlerFunc(c.serveAlarm)), nil)
	if err != nil {
		return nil, err
	}
	c.svc = svc
	c.upstreams = cfg.Upstream.NewUpstreams(alarm.CommandPath, cfg.Logger.Named("client"), cfg.Registry)
	return c, nil
}

// Addr is where Comp1 listens.
func (c *Comp1) Addr() net.Addr { return c.svc.Addr() }

// Run serves until ctx is done, then finishes the requests in flight.
func (c *Comp1) Run(ctx context.Context) error { return c.svc.Run(ctx) }

func (c *Comp1) serveAlarm(w http.ResponseWriter, r *http.Request) {
	device, err := parseRequest(r)
	if err != nil {
		roles.WriteErr(w, err)
		return
	}
	if _, _, err := c.upstreams.Post(r.Context(), alarm.ContentType, device.Alarm().Marshal()); err != nil {
		c.log.Warn("forwarding alarm failed", zap.String("request_id", transport.RequestIDFrom(r.Context())), zap.Error(err))
		transport.WriteError(w, transport.UpstreamStatus(err), "forwarding to component 2: "+err.Error())
		return
	}
	transport.WriteJSON(w, http.StatusOK, roles.SuccessBody)
}

// parseRequest reads a device's report from the query parameters when any is present (then
// all four are required), else from the JSON body.
func parseRequest(r *http.Request) (alarm.Device, error) {
	if d, ok, err := alarm.DeviceFromQuery(r.URL.Query()); ok {
		return d, err
	}
	body, err := transport.ReadJSONBody(r)
	if err != nil {
		return alarm.Device{}, err
	}
	return alarm.ParseDevice(body)
}

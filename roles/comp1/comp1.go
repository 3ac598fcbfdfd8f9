// Package comp1 is component 1 of the legacy system (the original's ars_comp_1_proxy.py): alarm
// devices POST to /api/v1/simple, with query parameters or a JSON body, and component 1 forwards
// each alarm to component 2 (or, in the LPS, to http2mqtt) with its Request-Id.
package comp1

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/transport"
)

// Path is the endpoint alarm devices post to.
const Path = "/api/v1/simple"

// Config configures a Comp1.
type Config struct {
	roles.Server
	Upstream roles.Upstream
}

// Comp1 is a running component 1.
type Comp1 struct {
	svc       *roles.HTTPService
	upstreams *transport.Upstreams
	log       *zap.Logger
}

// New validates cfg and opens the listener.
func New(cfg Config) (*Comp1, error) {
	if err := roles.ValidateURLs(cfg.Upstream.URL); err != nil {
		return nil, fmt.Errorf("upstream %w", err)
	}
	cfg.SetDefaults()
	c := &Comp1{log: cfg.Logger}
	svc, err := roles.NewHTTPService(cfg.Server, transport.Endpoint(http.MethodPost, Path, http.HandlerFunc(c.serveAlarm)), nil)
	if err != nil {
		return nil, err
	}
	c.svc = svc
	c.upstreams = cfg.Upstream.NewUpstreams(roles.AlarmPath, cfg.Logger.Named("client"), cfg.Registry)
	return c, nil
}

// Addr is where Comp1 listens.
func (c *Comp1) Addr() net.Addr { return c.svc.Addr() }

// Run serves until ctx is done, then finishes the requests in flight.
func (c *Comp1) Run(ctx context.Context) error { return c.svc.Run(ctx) }

// DeviceAlarm is what an alarm device reports.
type DeviceAlarm struct {
	Phone, Branch, Headnumber string
	// TriggerTime is kept as sent, after checking it is RFC 3339, so the forwarded body carries
	// the device's own text.
	TriggerTime string
}

// Body is the alarm text component 2 receives, in the original's format.
func (a DeviceAlarm) Body() string {
	return fmt.Sprintf("Phone: %s, Branch: %s, Headnumber: %s, TriggerTime: %s", a.Phone, a.Branch, a.Headnumber, a.TriggerTime)
}

func (c *Comp1) serveAlarm(w http.ResponseWriter, r *http.Request) {
	alarm, err := parseRequest(r)
	if err != nil {
		transport.WriteErr(w, err)
		return
	}
	payload := roles.Alarm{ID: alarm.Phone, Body: alarm.Body()}.Marshal()
	if _, _, err := c.upstreams.Post(r.Context(), "application/json", payload); err != nil {
		c.log.Warn("forwarding alarm failed", zap.String("request_id", transport.RequestIDFrom(r.Context())), zap.Error(err))
		transport.WriteError(w, transport.UpstreamStatus(err), "forwarding to component 2: "+err.Error())
		return
	}
	transport.WriteJSON(w, http.StatusOK, roles.SuccessBody)
}

// queryParams are the original's query parameter names.
var queryParams = []string{"Phone", "Branch", "Headnumber", "TriggerTime"}

// parseRequest reads an alarm from the query parameters when any is present (then all four
// are required), else from the JSON body.
func parseRequest(r *http.Request) (DeviceAlarm, error) {
	q := r.URL.Query()
	for _, name := range queryParams {
		if q.Has(name) {
			return validate(DeviceAlarm{Phone: q.Get("Phone"), Branch: q.Get("Branch"),
				Headnumber: q.Get("Headnumber"), TriggerTime: q.Get("TriggerTime")}, queryParams)
		}
	}
	body, err := transport.ReadJSONBody(r)
	if err != nil {
		return DeviceAlarm{}, err
	}
	return ParseJSON(body)
}

// ParseJSON decodes a device's JSON alarm {"phone","branch","headnumber","triggertime"}.
// Phone, branch and headnumber may be strings or numbers (devices send both); the trigger
// time must be an RFC 3339 string.
func ParseJSON(body []byte) (DeviceAlarm, error) {
	var raw struct {
		Phone       textOrNumber `json:"phone"`
		Branch      textOrNumber `json:"branch"`
		Headnumber  textOrNumber `json:"headnumber"`
		TriggerTime *string      `json:"triggertime"`
	}
	if err := transport.DecodeJSON(body, &raw); err != nil {
		return DeviceAlarm{}, err
	}
	a := DeviceAlarm{Phone: string(raw.Phone), Branch: string(raw.Branch), Headnumber: string(raw.Headnumber)}
	if raw.TriggerTime != nil {
		a.TriggerTime = *raw.TriggerTime
	}
	return validate(a, []string{"phone", "branch", "headnumber", "triggertime"})
}

// validate checks that every field is present and the trigger time is RFC 3339; names are the
// field names as the caller sent them, for the error.
func validate(a DeviceAlarm, names []string) (DeviceAlarm, error) {
	var missing []string
	for i, v := range []string{a.Phone, a.Branch, a.Headnumber, a.TriggerTime} {
		if strings.TrimSpace(v) == "" {
			missing = append(missing, names[i])
		}
	}
	if len(missing) > 0 {
		return DeviceAlarm{}, transport.Errorf(http.StatusBadRequest, "missing or empty field(s): %s", strings.Join(missing, ", "))
	}
	// A JSON body was checked whole, but a query value may hold any bytes (%FF); JSON encoding
	// would forward each invalid byte as U+FFFD, a silently different alarm.
	for i, v := range []string{a.Phone, a.Branch, a.Headnumber, a.TriggerTime} {
		if !utf8.ValidString(v) {
			return DeviceAlarm{}, transport.Errorf(http.StatusBadRequest, "%s is not valid UTF-8", names[i])
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, a.TriggerTime); err != nil {
		return DeviceAlarm{}, transport.Errorf(http.StatusBadRequest, "%s %q is not an RFC 3339 time", names[3], a.TriggerTime)
	}
	return a, nil
}

// textOrNumber accepts a JSON string or number and keeps its text.
type textOrNumber string

func (t *textOrNumber) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*t = textOrNumber(s)
		return nil
	}
	if bytes.Equal(b, []byte("null")) {
		return nil // absent, reported as missing by validate
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return &json.UnmarshalTypeError{Value: jsonKind(b), Type: reflect.TypeFor[string]()}
	}
	*t = textOrNumber(n)
	return nil
}

// jsonKind names the kind of a JSON value for an error message.
func jsonKind(b []byte) string {
	switch b[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "bool"
	default:
		return "value " + string(b)
	}
}

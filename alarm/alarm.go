// Package alarm is the one contract for an alarm on the wire, in every form it takes through
// the LPS:
//
//   - Device is what an alarm device POSTs to component 1 at DevicePath: a JSON body
//     {"phone","branch","headnumber","triggertime"} or the original's query parameters.
//   - Alarm is what component 1 forwards to component 2 (or http2mqtt) at CommandPath, what the
//     bridges carry as the MQTT payload, and what component 2 forwards to the legacy backend:
//     the original JSON {"id","body","request_id"}, so that Go and Python parts interoperate.
//   - The MQTT v5 properties that travel with an alarm between the bridges: its Request-Id, the
//     attempts of a retry and when the retry is due.
//
// Parsing validates and returns plain errors (*Error); each role maps them to its protocol's
// answer — a 400 at components 1 and 2 and at http2mqtt, a dead letter at mqtt2http — as
// net/http/httputil's ReverseProxy leaves the status to its ErrorHandler. The package depends on
// the standard library and paho's property type only.
package alarm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/paho"
)

// The paths of the alarm, as the original services serve them.
const (
	// DevicePath is component 1's endpoint, where alarm devices post.
	DevicePath = "/api/v1/simple"
	// Command is the legacy backend's alarm command (request type 9).
	Command = "ID_REQ_KC_STORE7D3BPACKET"
	// CommandPath is where components 2, http2mqtt and the backend take an alarm.
	CommandPath = "/" + Command
)

// The MQTT side of an alarm.
const (
	// ContentType is the content type of every alarm body and MQTT payload.
	ContentType = "application/json"
	// PayloadFormatUTF8 is the MQTT v5 Payload Format Indicator of an alarm: UTF-8 text.
	PayloadFormatUTF8 byte = 1
	// RequestIDProperty is the MQTT v5 user property that carries the Request-Id besides the
	// payload's request_id.
	RequestIDProperty = "request_id"
	// AttemptsProperty counts the failed forwards of a republished alarm.
	AttemptsProperty = "attempts"
	// RetryAtProperty carries when a retry is due (RFC 3339, UTC), where the broker cannot delay
	// it itself.
	RetryAtProperty = "retry_at"
)

// Error is an alarm that is not valid: malformed or truncated JSON, a field of the wrong type,
// a missing or empty field, a trigger time that is not RFC 3339. Nothing of it is forwarded.
type Error struct {
	Reason string
}

func (e *Error) Error() string { return e.Reason }

func errorf(format string, args ...any) *Error { return &Error{Reason: fmt.Sprintf(format, args...)} }

// Alarm is the original JSON payload between the components and through the broker.
// RequestID is set by the forwarding hop.
type Alarm struct {
	ID        string `json:"id"`
	Body      string `json:"body"`
	RequestID string `json:"request_id,omitempty"`
}

// Parse decodes and validates an alarm: both fields present, strings and not empty.
func Parse(data []byte) (Alarm, error) {
	var raw struct {
		ID        *string `json:"id"`
		Body      *string `json:"body"`
		RequestID string  `json:"request_id"`
	}
	if err := decodeJSON(data, &raw); err != nil {
		return Alarm{}, err
	}
	var missing []string
	if raw.ID == nil || strings.TrimSpace(*raw.ID) == "" {
		missing = append(missing, "id")
	}
	if raw.Body == nil || strings.TrimSpace(*raw.Body) == "" {
		missing = append(missing, "body")
	}
	if len(missing) > 0 {
		return Alarm{}, errorf("missing or empty field(s): %s", strings.Join(missing, ", "))
	}
	return Alarm{ID: *raw.ID, Body: *raw.Body, RequestID: raw.RequestID}, nil
}

// Marshal encodes the alarm as its JSON payload.
func (a Alarm) Marshal() []byte {
	b, _ := json.Marshal(a) // three strings cannot fail to encode
	return b
}

// Device is what an alarm device reports.
type Device struct {
	Phone      string `json:"phone"`
	Branch     string `json:"branch"`
	Headnumber string `json:"headnumber"`
	// TriggerTime is kept as sent, after checking it is RFC 3339, so the forwarded body carries
	// the device's own text.
	TriggerTime string `json:"triggertime"`
}

// DeviceQueryParams are the original's query parameter names, in Device's field order.
var DeviceQueryParams = []string{"Phone", "Branch", "Headnumber", "TriggerTime"}

// Body is the alarm text component 2 receives, in the original's format.
func (d Device) Body() string {
	return fmt.Sprintf("Phone: %s, Branch: %s, Headnumber: %s, TriggerTime: %s", d.Phone, d.Branch, d.Headnumber, d.TriggerTime)
}

// Alarm is the alarm component 1 forwards for the device's report.
func (d Device) Alarm() Alarm { return Alarm{ID: d.Phone, Body: d.Body()} }

// Marshal encodes the device's report as a device's JSON body.
func (d Device) Marshal() []byte {
	b, _ := json.Marshal(d) // four strings cannot fail to encode
	return b
}

// DeviceFromQuery reads a device's report from the query parameters; ok is false when none of
// them is present (the report is then in the body), and when any is, all four are required.
func DeviceFromQuery(q url.Values) (d Device, ok bool, err error) {
	for _, name := range DeviceQueryParams {
		if q.Has(name) {
			d, err = validateDevice(Device{Phone: q.Get("Phone"), Branch: q.Get("Branch"),
				Headnumber: q.Get("Headnumber"), TriggerTime: q.Get("TriggerTime")}, DeviceQueryParams)
			return d, true, err
		}
	}
	return Device{}, false, nil
}

// ParseDevice decodes a device's JSON report {"phone","branch","headnumber","triggertime"}.
// Phone, branch and headnumber may be strings or numbers (devices send both; a number keeps
// its text); the trigger time must be an RFC 3339 string.
func ParseDevice(body []byte) (Device, error) {
	var raw struct {
		Phone       textOrNumber `json:"phone"`
		Branch      textOrNumber `json:"branch"`
		Headnumber  textOrNumber `json:"headnumber"`
		TriggerTime *string      `json:"triggertime"`
	}
	if err := decodeJSON(body, &raw); err != nil {
		return Device{}, err
	}
	d := Device{Phone: string(raw.Phone), Branch: string(raw.Branch), Headnumber: string(raw.Headnumber)}
	if raw.TriggerTime != nil {
		d.TriggerTime = *raw.TriggerTime
	}
	return validateDevice(d, []string{"phone", "branch", "headnumber", "triggertime"})
}

// validateDevice checks that every field is present and the trigger time is RFC 3339; names
// are the field names as the caller sent them, for the error.
func validateDevice(d Device, names []string) (Device, error) {
	var missing []string
	for i, v := range []string{d.Phone, d.Branch, d.Headnumber, d.TriggerTime} {
		if strings.TrimSpace(v) == "" {
			missing = append(missing, names[i])
		}
	}
	if len(missing) > 0 {
		return Device{}, errorf("missing or empty field(s): %s", strings.Join(missing, ", "))
	}
	// A JSON body was checked whole, but a query value may hold any bytes (%FF); JSON encoding
	// would forward each invalid byte as U+FFFD, a silently different alarm.
	for i, v := range []string{d.Phone, d.Branch, d.Headnumber, d.TriggerTime} {
		if !utf8.ValidString(v) {
			return Device{}, errorf("%s is not valid UTF-8", names[i])
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, d.TriggerTime); err != nil {
		return Device{}, errorf("%s %q is not an RFC 3339 time", names[3], d.TriggerTime)
	}
	return d, nil
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
		return nil // absent, reported as missing by validateDevice
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

// decodeJSON decodes one JSON value from body into v, with a reason that names the offending
// field for wrong types, rejecting trailing data. Unknown fields are accepted: the original
// payloads carry extra fields (request_id) that must pass through.
func decodeJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		var syntaxErr *json.SyntaxError
		switch {
		case errors.As(err, &typeErr) && typeErr.Field == "":
			return errorf("request body must be a JSON object, not %s", typeErr.Value)
		case errors.As(err, &typeErr):
			return errorf("field %q must be a %s, not %s", typeErr.Field, typeErr.Type, typeErr.Value)
		case errors.As(err, &syntaxErr):
			return errorf("malformed JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)
		case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
			return errorf("truncated JSON")
		default:
			return errorf("malformed JSON: %v", err)
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errorf("malformed JSON: data after the JSON value")
	}
	return nil
}

// PublishProperties are the MQTT v5 properties an alarm travels with between the bridges: its
// content type, the UTF-8 payload format, its Request-Id (when known) and further user
// properties.
func PublishProperties(requestID string, user ...paho.UserProperty) *paho.PublishProperties {
	format := PayloadFormatUTF8
	p := &paho.PublishProperties{ContentType: ContentType, PayloadFormat: &format}
	if requestID != "" {
		p.User = append(p.User, paho.UserProperty{Key: RequestIDProperty, Value: requestID})
	}
	p.User = append(p.User, user...)
	return p
}

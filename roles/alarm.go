package roles

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/lpsdev/lps/transport"
)

// AlarmPath is the legacy backend's alarm command, the path comp2 and http2mqtt serve.
const AlarmPath = "/ID_REQ_KC_STORE7D3BPACKET"

// Alarm is what comp2 and http2mqtt accept and what travels as the MQTT payload: the original
// JSON, so Go and Python bridges interoperate. RequestID is set by the forwarding hop.
type Alarm struct {
	ID        string `json:"id"`
	Body      string `json:"body"`
	RequestID string `json:"request_id,omitempty"`
}

// ParseAlarm decodes and validates an alarm: both fields present, strings and non-empty.
// The error is a *transport.HTTPError with status 400.
func ParseAlarm(data []byte) (Alarm, error) {
	var raw struct {
		ID        *string `json:"id"`
		Body      *string `json:"body"`
		RequestID string  `json:"request_id"`
	}
	if err := transport.DecodeJSON(data, &raw); err != nil {
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
		return Alarm{}, transport.Errorf(http.StatusBadRequest, "missing or empty field(s): %s", strings.Join(missing, ", "))
	}
	return Alarm{ID: *raw.ID, Body: *raw.Body, RequestID: raw.RequestID}, nil
}

// Marshal encodes the alarm as its JSON payload.
func (a Alarm) Marshal() []byte {
	b, _ := json.Marshal(a) // two strings cannot fail to encode
	return b
}

// SuccessBody is the answer of comp1, comp2 and http2mqtt when the alarm was taken.
var SuccessBody = map[string]string{"status": "success", "message": "Data published to Legacy System"}

// ForwardURL returns upstream, with defaultPath appended when upstream names no path, so that
// both TARGET_URL=http://host:8080/ID_REQ_... (the original's form) and http://host:8080 work.
func ForwardURL(upstream, defaultPath string) string {
	u, err := url.Parse(upstream)
	if err != nil || (u.Path != "" && u.Path != "/") {
		return upstream
	}
	u.Path = defaultPath
	return u.String()
}

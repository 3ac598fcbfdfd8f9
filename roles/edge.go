package roles

// This file is the HTTP roles' edge towards their callers: how an error becomes a status, what
// success says, where a forward goes. The alarm itself is package alarm.

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/transport"
)

// WriteErr answers err at an HTTP role's edge: an invalid alarm (*alarm.Error) 400 with its
// reason, anything else as transport.WriteErr does (an *HTTPError with its status, an upstream
// failure 502/504).
func WriteErr(w http.ResponseWriter, err error) {
	var ae *alarm.Error
	if errors.As(err, &ae) {
		transport.WriteError(w, http.StatusBadRequest, ae.Reason)
		return
	}
	transport.WriteErr(w, err)
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

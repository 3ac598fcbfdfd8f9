package transport

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"strings"
	"unicode/utf8"
)

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"status":"error","reason":"encoding response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// ErrorBody is the JSON every role answers an error with.
type ErrorBody struct {
	Status string `json:"status"` // always "error"
	Reason string `json:"reason"`
}

// WriteError answers status with a JSON reason.
func WriteError(w http.ResponseWriter, status int, reason string) {
	WriteJSON(w, status, ErrorBody{Status: "error", Reason: reason})
}

// HTTPError is an error that knows the status it should be answered with.
type HTTPError struct {
	Status int
	Reason string
}

func (e *HTTPError) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Reason) }

// Errorf makes an *HTTPError.
func Errorf(status int, format string, args ...any) *HTTPError {
	return &HTTPError{Status: status, Reason: fmt.Sprintf(format, args...)}
}

// WriteErr answers err: an *HTTPError with its status, an upstream failure as UpstreamStatus
// says, anything else as 500.
func WriteErr(w http.ResponseWriter, err error) {
	var he *HTTPError
	if errors.As(err, &he) {
		WriteError(w, he.Status, he.Reason)
		return
	}
	WriteError(w, UpstreamStatus(err), err.Error())
}

// ReadJSONBody reads a request body that must be JSON: a Content-Type other than JSON is 415,
// a body over the server's limit 413, a body not received within the server's read timeout 408,
// an empty, truncated, malformed or non-UTF-8 body 400 (a failed read as BodyReadError says).
// A missing Content-Type is accepted, as the original services did.
func ReadJSONBody(r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !(mt == "application/json" || strings.HasSuffix(mt, "+json")) {
			return nil, Errorf(http.StatusUnsupportedMediaType, "content type %q is not application/json", ct)
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, BodyReadError(err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, Errorf(http.StatusBadRequest, "request body is empty")
	}
	if !utf8.Valid(body) {
		return nil, Errorf(http.StatusBadRequest, "request body is not valid UTF-8")
	}
	return body, nil
}

// BodyReadError is the answer to a request body whose read failed with err: 413 for a body
// over the server's limit, 408 Request Timeout for a read that timed out (a slow client that
// the server's read timeout cut off), 400 for anything else.
func BodyReadError(err error) *HTTPError {
	var tooBig *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.As(err, &tooBig):
		return Errorf(http.StatusRequestEntityTooLarge, "request body exceeds the limit of %d bytes", tooBig.Limit)
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return Errorf(http.StatusRequestTimeout, "reading request body: %v", err)
	default:
		return Errorf(http.StatusBadRequest, "reading request body: %v", err)
	}
}

// Endpoint serves h at exactly path for method and answers every other request with a JSON
// 404 (other paths) or 405 (other methods, with an Allow header).
func Endpoint(method, path string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path != path:
			WriteError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %s; this service serves %s %s", r.URL.Path, method, path))
		case r.Method != method:
			w.Header().Set("Allow", method)
			WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s; use %s", r.Method, path, method))
		default:
			h.ServeHTTP(w, r)
		}
	})
}

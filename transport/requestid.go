package transport

import (
	"context"
	"net/http"

	"github.com/google/uuid"
)

// RequestIDHeader is the header that carries an alarm's identity end to end. The original
// system used this name; the simulator counts by it.
const RequestIDHeader = "Request-Id"

type requestIDKey struct{}

// WithRequestID returns a context that carries id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestIDFrom returns the Request-Id carried by ctx, or "" if there is none.
func RequestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// NewRequestID makes a fresh Request-Id.
func NewRequestID() string { return uuid.NewString() }

// maxRequestIDLen bounds an incoming id: it is logged and stored per request, so an attacker's
// 8 KiB header must not become every log line and map key.
const maxRequestIDLen = 128

// RequestID makes sure every request has a Request-Id: it keeps a well-formed incoming one,
// makes one when it is absent (or unusable), sets it on the request's header and context, and
// echoes it on the response so callers can correlate.
func RequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = NewRequestID()
			r.Header.Set(RequestIDHeader, id)
		}
		w.Header().Set(RequestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(WithRequestID(r.Context(), id)))
	})
}

// validRequestID accepts printable ASCII without spaces up to maxRequestIDLen, which covers
// UUIDs and the original load tester's ids while keeping logs and metrics labels sane.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

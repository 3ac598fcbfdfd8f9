// Package transport gives every lps role its HTTP server and HTTP client, so that no role opens
// sockets or builds clients of its own.
//
// The Server accepts HTTP/1.1 and HTTP/2 over cleartext with prior knowledge (h2c) on one port,
// applies read-header and idle timeouts and a body limit, and shuts down gracefully, finishing
// the requests in flight. The Client pools keep-alive connections, speaks HTTP/1.1 or h2c with
// prior knowledge, bounds every request with a timeout and propagates the Request-Id.
//
// HTTP/2 comes from the standard library's http.Protocols (UnencryptedHTTP2) rather than from
// golang.org/x/net/http2/h2c: since Go 1.24 net/http serves and dials h2c with prior knowledge
// itself, which keeps one server type for both protocols without a handler wrapper and gives the
// client the same pooling code for both. SPEC.md section 2 allows this choice.
package transport

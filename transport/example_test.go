package transport_test

import (
	"context"
	"fmt"
	"net"
	"net/http"

	"github.com/lpsdev/lps/transport"
)

// A Server accepts HTTP/1.1 and h2c on one port; a Client with HTTP2 set speaks h2c with prior
// knowledge and carries the Request-Id of its context.
func Example() {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := &transport.Server{Listener: ln, Handler: transport.RequestID(http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", r.Proto, transport.RequestIDFrom(r.Context()))
		}))}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error)
	go func() { done <- srv.Serve(ctx) }()

	client := &transport.Client{HTTP2: true}
	resp, err := client.Post(transport.WithRequestID(ctx, "alarm-1"), "http://"+ln.Addr().String(), "text/plain", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(resp.Body))
	stop()
	fmt.Println(<-done)
	// Output:
	// HTTP/2.0 alarm-1
	// <nil>
}

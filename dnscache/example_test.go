package dnscache_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"

	"github.com/lpsdev/lps/dnscache"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// A Resolver is an http.Transport's DialContext: every connection the client opens resolves its
// host through the cache, and a failed connection makes it look the host up again.
func ExampleResolver() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "Success")
	}))
	defer backend.Close()
	_, port, _ := net.SplitHostPort(backend.Listener.Addr().String())

	resolver := &dnscache.Resolver{
		Logger: zap.NewNop().Named("dnscache"),
		// Only for the example, so that it needs no DNS server: in a role LookupHost stays nil
		// and the system's resolver (Docker's embedded DNS in a container) answers.
		LookupHost: func(ctx context.Context, host string) ([]string, error) {
			return []string{"127.0.0.1"}, nil
		},
	}
	prometheus.NewRegistry().MustRegister(resolver) // its counters on the role's /metrics

	client := &http.Client{Transport: &http.Transport{DialContext: resolver.DialContext}}
	defer client.CloseIdleConnections()

	resp, err := client.Get("http://backend.example:" + port + "/")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status, string(body))
	// Output: 200 OK Success
}

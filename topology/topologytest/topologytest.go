// Package topologytest starts whole topologies for tests, as net/http/httptest starts servers.
package topologytest

import (
	"context"
	"os"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/lpsdev/lps/topology"
)

// Start runs cfg on ephemeral loopback ports until the test ends, and returns it
// once every role is ready. LPS_TEST_LOG=1 shows the roles' logs, a debugging aid.
func Start(t testing.TB, cfg topology.Config) *topology.Topology {
	t.Helper()
	cfg.Ephemeral = true
	if os.Getenv("LPS_TEST_LOG") != "" {
		cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	}
	top, err := topology.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- top.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("topology: %v", err)
			}
		case <-time.After(70 * time.Second): // the roles' drain limits, with room
			t.Error("topology did not stop")
		}
	})
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	if err := top.WaitReady(rctx); err != nil {
		t.Fatal(err)
	}
	return top
}

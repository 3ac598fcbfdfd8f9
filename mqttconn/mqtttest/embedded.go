package mqtttest

import (
	"context"
	"fmt"
	"testing"

	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/mqttbroker"
)

// StartEmbedded starts the broker the LPS ships — the `lps broker` role with its defaults
// (declared queues, delayed publish) and a data dir in a temporary directory — on 127.0.0.1
// with a free port. Stop and Kill both stop it gracefully (an in-process broker cannot be
// killed); Start runs it again on the same address and data.
func StartEmbedded(t testing.TB) *Broker {
	t.Helper()
	return StartEmbeddedWith(t, nil)
}

// StartEmbeddedWith is StartEmbedded with tweak applied to the role's config (for instance its
// TLS certificate) before every start; nil changes nothing.
func StartEmbeddedWith(t testing.TB, tweak func(*mqttbroker.Config)) *Broker {
	t.Helper()
	dir := t.TempDir()
	b := &Broker{Name: "embedded", t: t, Addr: "127.0.0.1:0"}
	var cancel context.CancelFunc
	var done chan error
	var running *mqttbroker.Broker
	b.depth = func() int { return running.Stats().QueueDepth }
	b.start = func() error {
		cfg := mqttbroker.Config{
			Admin:   roles.Server{Listen: "127.0.0.1:0", ServiceName: "broker"},
			Listen:  b.Addr,
			DataDir: dir,
		}
		if tweak != nil {
			tweak(&cfg)
		}
		mb, err := mqttbroker.New(cfg)
		if err != nil {
			return err
		}
		running = mb
		b.Addr = mb.Addr().String()
		b.URL = "mqtt://" + b.Addr
		var ctx context.Context
		ctx, cancel = context.WithCancel(context.Background())
		done = make(chan error, 1)
		go func() { done <- mb.Run(ctx) }()
		return nil
	}
	b.stop = func(bool) error {
		cancel()
		if err := <-done; err != nil {
			return fmt.Errorf("embedded broker: %w", err)
		}
		return nil
	}
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

package cli

import (
	"net"
	"strings"
	"testing"
)

// TestAdminListenersDefaultToLoopback: the listeners that serve only health, metrics and
// stats (mqtt2http's and the broker's --admin-listen) listen on loopback unless told
// otherwise, and their help says how to open them.
func TestAdminListenersDefaultToLoopback(t *testing.T) {
	root := NewRoot(Options{LookupEnv: env(nil)})
	for _, role := range []string{"mqtt2http", "broker"} {
		cmd, _, err := root.Find([]string{role})
		if err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		f := cmd.Flags().Lookup("admin-listen")
		if f == nil {
			t.Fatalf("%s has no --admin-listen", role)
		}
		host, _, err := net.SplitHostPort(f.DefValue)
		if err != nil || !net.ParseIP(host).IsLoopback() {
			t.Errorf("%s --admin-listen defaults to %q, want a loopback address", role, f.DefValue)
		}
		if !strings.Contains(f.Usage, "loopback by default") || !strings.Contains(f.Usage, "0.0.0.0:9090") {
			t.Errorf("%s --admin-listen help %q does not say it is loopback and how to open it", role, f.Usage)
		}
	}
}

package mqtt2http

import (
	"net"
	"testing"

	"github.com/lpsdev/lps/roles"
)

// TestAdminListenDefaultsToLoopback: the admin listener serves only health and metrics, so
// unless told otherwise it listens on loopback (issue 14), not on every address as an API does.
func TestAdminListenDefaultsToLoopback(t *testing.T) {
	s, err := Config{ServiceName: "proxy2-1", Broker: "mqtt://127.0.0.1:1883", Upstream: roles.Upstream{URL: "http://127.0.0.1:1"}}.settings()
	if err != nil {
		t.Fatalf("settings: %v", err)
	}
	if s.Admin.Listen != DefaultAdminListen {
		t.Errorf("admin listen %q, want %q", s.Admin.Listen, DefaultAdminListen)
	}
	host, _, err := net.SplitHostPort(DefaultAdminListen)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		t.Errorf("DefaultAdminListen %q is not a loopback address", DefaultAdminListen)
	}
	s, err = Config{ServiceName: "proxy2-1", Broker: "mqtt://127.0.0.1:1883", Upstream: roles.Upstream{URL: "http://127.0.0.1:1"}, Admin: roles.Server{Listen: "0.0.0.0:9090"}}.settings()
	if err != nil || s.Admin.Listen != "0.0.0.0:9090" {
		t.Errorf("an explicit admin address became %q (%v)", s.Admin.Listen, err)
	}
}

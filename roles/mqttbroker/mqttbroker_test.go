package mqttbroker_test

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/mqttbroker"
)

func TestBrokerRoleServesAdminAndStats(t *testing.T) {
	cfg := mqttbroker.Config{Listener: testutil.Listen(t), DataDir: t.TempDir(), Admin: roles.Server{Listener: testutil.Listen(t)}}
	b, err := mqttbroker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, b)
	admin := "http://" + b.AdminAddr().String()
	get := func(path string) (int, string) {
		resp, err := http.Get(admin + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if code, body := get("/readyz"); code != 200 {
			return &httpErr{code, body}
		}
		return nil
	})
	code, body := get("/stats")
	var st mqttbroker.StatsBody
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.QueueDepth != 0 {
		t.Errorf("/stats: %d %s", code, body)
	}
	if _, metrics := get("/metrics"); !strings.Contains(metrics, "lps_broker_") {
		t.Error("/metrics has no broker metrics")
	}
}

type httpErr struct {
	code int
	body string
}

func (e *httpErr) Error() string { return e.body }

func TestBrokerRoleRejectsBadTLSFiles(t *testing.T) {
	cfg := mqttbroker.Config{Listener: testutil.Listen(t), TLSCertFile: filepath.Join(t.TempDir(), "none.pem"), TLSKeyFile: "x", Admin: roles.Server{Listener: testutil.Listen(t)}}
	if _, err := mqttbroker.New(cfg); err == nil || !strings.Contains(err.Error(), "TLS certificate") {
		t.Errorf("error %v, want one about the TLS certificate", err)
	}
}

package mqttbroker_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/lpsdev/lps/broker"
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
	// One naming style for every key.
	var keys map[string]any
	json.Unmarshal([]byte(body), &keys)
	for _, k := range []string{"clients_connected", "sessions", "queued", "inflight", "releasing", "retained", "delayed", "queues", "queue_depth"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("/stats lacks %q: %s", k, body)
		}
	}
	if st, err := mqttbroker.NewClient(admin, nil).Stats(context.Background()); err != nil || st.QueueDepth != 0 || st.Queues == nil {
		t.Errorf("Client.Stats: %+v %v", st, err)
	}
	if _, err := mqttbroker.NewClient("http://"+testutil.RefusedAddr(t), nil).Stats(context.Background()); err == nil {
		t.Error("Client.Stats of a broker that is down: no error")
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

// TestBrokerRoleQueues: by default the role declares the LPS's own queues, so an alarm
// published before any mqtt2http subscribed is kept (and shown per queue in /stats); with
// Queues set to an empty slice none is declared and such a publish is answered 0x10.
func TestBrokerRoleQueues(t *testing.T) {
	tests := []struct {
		name       string
		queues     []broker.Queue
		wantQueues []string
		wantCode   byte // reason code of the PUBACK of a QoS 1 publish to svc/message
		wantDepth  int
	}{
		{name: "default", wantQueues: []string{"dead_letters:lps/dead-letter", "legacy_proxy:+/message", "legacy_proxy:+/retry/message"}, wantCode: 0, wantDepth: 1},
		{name: "none", queues: []broker.Queue{}, wantQueues: nil, wantCode: 0x10, wantDepth: 0},
		{name: "own", queues: []broker.Queue{{Group: "g", Filter: "svc/#"}}, wantQueues: []string{"g:svc/#"}, wantCode: 0, wantDepth: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := mqttbroker.New(mqttbroker.Config{Listener: testutil.Listen(t), Queues: tt.queues,
				Admin: roles.Server{Listener: testutil.Listen(t)}})
			if err != nil {
				t.Fatal(err)
			}
			testutil.Run(t, b)

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", b.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c := paho.NewClient(paho.ClientConfig{ClientID: "pub", Conn: conn})
			if _, err := c.Connect(ctx, &paho.Connect{ClientID: "pub", CleanStart: true, KeepAlive: 30}); err != nil {
				t.Fatal(err)
			}
			defer c.Disconnect(&paho.Disconnect{})
			pr, err := c.Publish(ctx, &paho.Publish{QoS: 1, Topic: "svc/message", Payload: []byte("alarm")})
			if err != nil {
				t.Fatal(err)
			}
			if pr.ReasonCode != tt.wantCode {
				t.Errorf("PUBACK reason code %#x, want %#x", pr.ReasonCode, tt.wantCode)
			}

			resp, err := http.Get("http://" + b.AdminAddr().String() + "/stats")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var st mqttbroker.StatsBody
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				t.Fatal(err)
			}
			got := make([]string, 0, len(st.Queues))
			for q := range st.Queues {
				got = append(got, q)
			}
			sort.Strings(got)
			if !slices.Equal(got, tt.wantQueues) {
				t.Errorf("/stats Queues %v, want %v", st.Queues, tt.wantQueues)
			}
			if st.QueueDepth != tt.wantDepth {
				t.Errorf("/stats queue_depth %d, want %d", st.QueueDepth, tt.wantDepth)
			}
		})
	}
}

package rastsim_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/roles/rastsim"
)

func TestClient(t *testing.T) {
	cfg := rastsim.Config{Model: "none"}
	cfg.Listener = testutil.Listen(t)
	s, err := rastsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, s)
	base := "http://" + s.Addr().String()
	for _, id := range []string{"r-1", "r-2", "r-1"} {
		req, _ := http.NewRequest(http.MethodPost, base+alarm.CommandPath, strings.NewReader(`{"id":"1","body":"b"}`))
		req.Header.Set("Request-Id", id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, u := range []string{base, base + "/", base + "/stats/requests"} {
		c := rastsim.NewClient(u, nil)
		got, err := c.Received(ctx)
		if err != nil || got["r-1"] != 2 || got["r-2"] != 1 || len(got) != 2 {
			t.Errorf("Received via %s: %v %v", u, got, err)
		}
		st, err := c.Counts(ctx)
		if err != nil || st.Received != 3 || st.Distinct != 2 || st.Duplicates != 1 {
			t.Errorf("Counts via %s: %+v %v", u, st, err)
		}
	}
	bad := rastsim.NewClient("http://"+testutil.RefusedAddr(t), nil)
	if _, err := bad.Received(ctx); err == nil || !strings.Contains(err.Error(), "rast-sim") {
		t.Errorf("a simulator that is down: %v", err)
	}
}

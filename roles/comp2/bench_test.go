package comp2_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/comp2"
)

// BenchmarkForward is comp2's forward rate with each dedup store: 16 concurrent callers post
// distinct alarms through comp2 to a backend that answers at once (one op = one alarm).
//
//	go test -run '^$' -bench Forward -benchtime 20000x ./roles/comp2/
func BenchmarkForward(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "Success")
	}))
	b.Cleanup(backend.Close)
	for _, store := range []string{"off", "memory", "dir", "redis"} {
		b.Run(store, func(b *testing.B) {
			cfg := comp2.Config{Upstream: roles.Upstream{URL: backend.URL}}
			cfg.Listener = testutil.Listen(b)
			switch store {
			case "off":
				cfg.NoDedup = true
			case "dir":
				cfg.DedupDir = b.TempDir()
			case "redis":
				cfg.DedupStore = testutil.StartRedis(b).URL
			}
			c, err := comp2.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			testutil.Run(b, c)
			url := "http://" + c.Addr().String() + alarm.CommandPath
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			var seq atomic.Int64
			b.SetParallelism(8) // 16 callers on two cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := seq.Add(1)
					req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(fmt.Sprintf(`{"id":"0151","body":"alarm %d"}`, i)))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Request-Id", fmt.Sprint("r-", i))
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "alarms/s")
		})
	}
}

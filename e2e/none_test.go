package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
)

// listenAddr waits for p's "listening" line and returns the address.
func listenAddr(t *testing.T, p *proc) string {
	t.Helper()
	var addr string
	testutil.Eventually(t, 10*time.Second, func() error {
		var ok bool
		if addr, ok = p.field("listening", "addr"); !ok {
			return fmt.Errorf("not listening yet; log:\n%s", p.log())
		}
		return nil
	})
	return addr
}

// ready waits until url answers 200.
func ready(t *testing.T, url string) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %d", url, resp.StatusCode)
		}
		return nil
	})
}

// TestOriginalComp1RequestIDNone: the original Python comp1 forwards "Request-Id: None" when
// its caller sent none. Put in front of comp2, and in front of http2mqtt (the whole LPS:
// broker, http2mqtt, mqtt2http, comp2 as processes of the built binary), every distinct alarm
// reaches the backend once, and a true repeat (the same alarm again) is still suppressed.
func TestOriginalComp1RequestIDNone(t *testing.T) {
	var mu sync.Mutex
	bodies := map[string]int{}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var a alarm.Alarm
		json.Unmarshal(b, &a)
		mu.Lock()
		bodies[r.Header.Get("Request-Id")+" "+a.Body]++
		mu.Unlock()
		io.WriteString(w, "Success")
	}))
	t.Cleanup(backend.Close)
	counts := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, v := range bodies {
			out[k] = v
		}
		return out
	}

	comp2 := start(t, nil, "comp2", "--listen", "127.0.0.1:0", "--upstream", backend.URL, "--dedup-dir", t.TempDir())
	comp2URL := "http://" + listenAddr(t, comp2)
	broker := start(t, nil, "broker", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0")
	var brokerAddr string
	testutil.Eventually(t, 10*time.Second, func() error {
		var ok bool
		if brokerAddr, ok = broker.field("started", "addr"); !ok {
			return fmt.Errorf("broker not started; log:\n%s", broker.log())
		}
		return nil
	})
	proxy1 := start(t, nil, "http2mqtt", "--listen", "127.0.0.1:0", "--broker", "mqtt://"+brokerAddr, "--service-name", "proxy1-1")
	proxy1URL := "http://" + listenAddr(t, proxy1)
	proxy2 := start(t, nil, "mqtt2http", "--admin-listen", "127.0.0.1:0", "--broker", "mqtt://"+brokerAddr,
		"--service-name", "proxy2-1", "--upstream", comp2URL)
	ready(t, proxy1URL+"/readyz")
	ready(t, "http://"+listenAddr(t, proxy2)+"/readyz")

	for _, front := range []struct{ name, url string }{{"comp2", comp2URL}, {"http2mqtt", proxy1URL}} {
		send := func(i int) {
			t.Helper()
			body := fmt.Sprintf(`{"id":"0151","body":"Phone: 0151, Branch: 20%02d, via %s"}`, i, front.name)
			req, _ := http.NewRequest(http.MethodPost, front.url+alarm.CommandPath, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Request-Id", "None") // as the original comp1 sends it
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s alarm %d: status %d", front.name, i, resp.StatusCode)
			}
		}
		for i := range 10 {
			send(i)
		}
		send(3) // the same alarm again
		want := func(c map[string]int) error {
			for i := range 10 {
				k := fmt.Sprintf("None Phone: 0151, Branch: 20%02d, via %s", i, front.name)
				if c[k] != 1 {
					return fmt.Errorf("in front of %s: %q reached the backend %d times, want once", front.name, k, c[k])
				}
			}
			return nil
		}
		testutil.Eventually(t, 20*time.Second, func() error { return want(counts()) })
	}
	// Both repeats reached comp2 and were suppressed there.
	testutil.Eventually(t, 20*time.Second, func() error {
		resp, err := http.Get(comp2URL + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), "\nlps_comp2_duplicates_suppressed_total 2\n") {
			return fmt.Errorf("comp2 has not suppressed both repeats yet")
		}
		return nil
	})
	total := 0
	for _, n := range counts() {
		total += n
	}
	if total != 20 {
		t.Errorf("the backend received %d alarms, want the 20 distinct ones: %v", total, counts())
	}
}

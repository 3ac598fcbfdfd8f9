package transport

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHeaderLimitOnKeptAliveConnections: the header limit holds on a connection's later
// requests as on its first (net/http alone let about 12 KiB through there), and the answer is
// the roles' JSON error.
func TestHeaderLimitOnKeptAliveConnections(t *testing.T) {
	url, _ := serve(t, &Server{Handler: protoHandler()})
	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for _, tc := range []struct {
		size   int
		status int
	}{
		{7000, 200}, {10000, 431}, {0, 200}, {12000, 431}, {0, 200}, {7000, 200}, {20000, 431},
	} {
		req, _ := http.NewRequest(http.MethodPost, url+"/x", strings.NewReader("{}"))
		if tc.size > 0 {
			req.Header.Set("X-Big", strings.Repeat("x", tc.size))
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%d-byte header: status %d, want %d", tc.size, resp.StatusCode, tc.status)
		}
		var e ErrorBody
		if tc.status == 431 && tc.size <= 12000 && (json.Unmarshal(body, &e) != nil || !strings.Contains(e.Reason, "exceed the limit of 8192 bytes")) {
			t.Errorf("%d-byte header: body %q, want a JSON error naming the limit", tc.size, body)
		}
	}
}

package mqttbroker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Client reads a running broker's state over its admin API (GET /stats): the fault suite and
// the compose test watch the backlog drain through it.
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a client of the broker whose admin listener is at base (http://host:port).
// hc nil means a client with a 10 s timeout.
func NewClient(base string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &Client{base: strings.TrimSuffix(base, "/"), http: hc}
}

// Stats returns the broker's state now.
func (c *Client) Stats(ctx context.Context) (StatsBody, error) {
	var st StatsBody
	url := c.base + "/stats"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, fmt.Errorf("asking the broker: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return st, fmt.Errorf("asking the broker: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return st, fmt.Errorf("asking the broker: GET %s answered %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("decoding the broker's answer to GET %s: %w", url, err)
	}
	return st, nil
}

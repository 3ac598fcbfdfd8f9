package rastsim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// DefaultClientTimeout bounds one request of a Client; a per-id map of a long run is tens of
// megabytes.
const DefaultClientTimeout = 30 * time.Second

// Client reads what a running simulator received, over its HTTP API: GET /stats (Counts) and
// GET /stats/requests (every Request-Id and how often it arrived). The load's --verify, the
// fault suite and the compose test all ask through it.
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a client of the simulator at base, its URL (http://host:port; a trailing
// /stats/requests or / is dropped). hc nil means a client with DefaultClientTimeout.
func NewClient(base string, hc *http.Client) *Client {
	base = strings.TrimSuffix(strings.TrimSuffix(base, "/"), "/stats/requests")
	if hc == nil {
		hc = &http.Client{Timeout: DefaultClientTimeout}
	}
	return &Client{base: base, http: hc}
}

// URL is the simulator's base URL.
func (c *Client) URL() string { return c.base }

// Counts returns the simulator's counters (GET /stats).
func (c *Client) Counts(ctx context.Context) (Counts, error) {
	var st Counts
	err := c.get(ctx, "/stats", &st)
	return st, err
}

// Received returns every Request-Id the simulator received and how often (GET /stats/requests).
func (c *Client) Received(ctx context.Context) (map[string]int, error) {
	var body RequestsBody
	if err := c.get(ctx, "/stats/requests", &body); err != nil {
		return nil, err
	}
	return body.Requests, nil
}

func (c *Client) get(ctx context.Context, path string, v any) error {
	url := c.base + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("asking rast-sim: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("asking rast-sim: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return fmt.Errorf("asking rast-sim: GET %s answered %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decoding rast-sim's answer to GET %s: %w", url, err)
	}
	return nil
}

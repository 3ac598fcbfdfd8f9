package faults

// This file reads what a cluster did: what rast-sim received, the broker's backlog, the
// roles' counters. cluster.go starts it.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/lpsdev/lps/roles/mqttbroker"
	"github.com/lpsdev/lps/roles/rastsim"
)

// brokerStats is the embedded broker's state, from its admin API.
func (c *Cluster) brokerStats(ctx context.Context) (mqttbroker.StatsBody, error) {
	return mqttbroker.NewClient("http://"+c.BrokerAdmin, c.client).Stats(ctx)
}

// sim is the client of rast-sim's API, on its pinned address.
func (c *Cluster) sim() *rastsim.Client {
	return rastsim.NewClient("http://"+c.RastSim.Arg("--listen"), c.client)
}

// Received is every Request-Id rast-sim received and how often, over all its runs (see
// SimReceived).
func (c *Cluster) Received(ctx context.Context) (map[string]int, error) {
	return c.received.Received(ctx, c.sim())
}

// LoggedReceived is what rast-sim's logs say it received, over all its runs (Received's
// cross-check).
func (c *Cluster) LoggedReceived() map[string]int { return c.received.Logged() }

// snapshot is the state Drain watches.
type snapshot struct {
	queueDepth int // the broker's: embedded from /stats, Mosquitto from $SYS
	inflight   float64
	deliveries float64
	received   int
	notReady   string // the first process not ready, "" if all are
}

func (c *Cluster) snapshot(ctx context.Context) (snapshot, error) {
	var s snapshot
	for _, p := range c.Processes() {
		if !p.Running() {
			// Say how it ended: a process that exits on its own is a finding, not a wait.
			s.notReady = fmt.Sprintf("%s (not running: %v; its log ends: %s)", p.Name(), p.ExitErr(), p.LogTail(800))
			return s, nil
		}
	}
	if c.cfg.Broker == Embedded {
		st, err := c.brokerStats(ctx)
		if err != nil {
			return s, err
		}
		s.queueDepth = st.QueueDepth
	} else {
		if c.sys == nil {
			c.sys = newSysWatcher(c.BrokerAddr)
		}
		depth, err := c.sys.depth(ctx)
		if err != nil {
			return s, err
		}
		s.queueDepth = depth
	}
	for _, p := range c.MQTT2HTTP {
		if err := p.cfg.Ready(ctx, p); err != nil {
			s.notReady = p.Name()
			return s, nil
		}
		m, err := c.metrics(ctx, "http://"+p.Arg("--admin-listen")+"/metrics")
		if err != nil {
			return s, fmt.Errorf("metrics of %s: %w", p.Name(), err)
		}
		// Received and not yet handled, held until its retry is due, or being handled: all
		// work the consumer still owes.
		s.inflight += m["lps_mqtt_inflight_forwards"] + m["lps_mqtt_queued_messages"] + m["lps_mqtt_held_retries"]
		s.deliveries += m["lps_mqtt_deliveries_total"]
	}
	st, err := c.sim().Counts(ctx)
	if err != nil {
		return s, err
	}
	s.received = st.Received
	return s, nil
}

// DrainResult is what Drain saw.
type DrainResult struct {
	// Took is the time from the call until the system went idle for good (the start of the
	// final quiet window).
	Took time.Duration
	// Polls counts the snapshots taken.
	Polls int
}

// Drain waits until the backlog is gone, and stays gone for quiet: every process runs and every
// mqtt2http is connected and idle (nothing handled, waiting for a worker or held for its retry:
// lps_mqtt_inflight_forwards, lps_mqtt_queued_messages, lps_mqtt_held_retries), the embedded
// broker's queue depth (queued, in flight and delayed, from its admin /stats) is 0, and nothing moved for quiet: no delivery at any mqtt2http
// (lps_mqtt_deliveries_total) and no request at rast-sim. Mosquitto's depth is what its store holds
// beyond retained messages, from $SYS (at most a second old); it must stop changing rather than
// reach 0 (see below). The quiet window must be longer than a $SYS interval and than the
// longest pause of a retrying consumer. Drain gives up when ctx ends. The load must have finished before.
func (c *Cluster) Drain(ctx context.Context, quiet time.Duration) (DrainResult, error) {
	start := time.Now()
	lastChange := start
	var last snapshot
	var res DrainResult
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		s, err := c.snapshot(ctx)
		res.Polls++
		now := time.Now()
		// Mosquitto's depth may never reach 0: a QoS 2 message whose publisher was killed
		// between PUBREC and PUBREL stays in its store, undelivered, while the publisher's new
		// process (its session state was in memory) never sends the PUBREL; the load retried
		// that alarm. So for Mosquitto the depth must only stop changing, and the run waits
		// for every acknowledged alarm as well (RunConfig.AwaitAcked).
		settled := s.queueDepth == 0 || (c.cfg.Broker == Mosquitto && s.queueDepth == last.queueDepth)
		idle := err == nil && s.notReady == "" && settled && s.inflight == 0
		moved := s.deliveries != last.deliveries || s.received != last.received || s.queueDepth != last.queueDepth
		if !idle || moved || res.Polls == 1 {
			lastChange = now
		}
		if err == nil {
			last = s
		}
		if idle && now.Sub(lastChange) >= quiet {
			res.Took = lastChange.Sub(start)
			return res, nil
		}
		select {
		case <-ctx.Done():
			why := fmt.Sprintf("queue depth %d, inflight %.0f, deliveries %.0f, received %d", s.queueDepth, s.inflight, s.deliveries, s.received)
			if s.notReady != "" {
				why = s.notReady + " not ready; " + why
			}
			if err != nil {
				why = err.Error()
			}
			return res, fmt.Errorf("the LPS did not drain: %w (%s)", ctx.Err(), why)
		case <-tick.C:
		}
	}
}

// Counters returns the LPS counters of every running lps process that has any (lps_mqtt_*,
// lps_broker_*, lps_comp2_*, lps_rastsim_* and the HTTP request count), one line per process:
// where an alarm that went missing stopped.
func (c *Cluster) Counters(ctx context.Context) string {
	var b strings.Builder
	for _, p := range c.Processes() {
		if !p.Running() || p.Arg("--log-format") == "" {
			continue
		}
		flag := "--listen"
		if p.Arg("--admin-listen") != "" {
			flag = "--admin-listen"
		}
		m, err := c.metrics(ctx, "http://"+p.Arg(flag)+"/metrics")
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", p.Name(), err)
			continue
		}
		var parts []string
		for _, name := range slices.Sorted(maps.Keys(m)) {
			if strings.HasSuffix(name, "_bucket") || strings.HasSuffix(name, "_sum") || strings.HasSuffix(name, "_count") {
				continue
			}
			for _, prefix := range []string{"lps_mqtt_", "lps_broker_", "lps_comp2_", "lps_rastsim_", "lps_http_requests_total"} {
				if strings.HasPrefix(name, prefix) {
					parts = append(parts, fmt.Sprintf("%s=%g", strings.TrimPrefix(name, "lps_"), m[name]))
					break
				}
			}
		}
		fmt.Fprintf(&b, "%s: %s\n", p.Name(), strings.Join(parts, " "))
	}
	return b.String()
}

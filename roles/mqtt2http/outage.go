package mqtt2http

import (
	"time"

	"github.com/lpsdev/lps/mqttconn"
)

// DefaultOutageAfter is how many forwards in a row must fail for a reason of the upstream's
// (refused, timed out, 5xx) before the bridge calls it an outage and stops taking messages.
// One failure may be the message's own; three different alarms failing in a row, with nothing
// succeeding in between, is the upstream.
const DefaultOutageAfter = 3

// result is what became of one message's turn, as far as the outage tracker cares.
type result uint8

const (
	// skipped: no forward was made (undecodable, held for its retry time, abandoned).
	skipped result = iota
	// delivered: the upstream answered 2xx.
	delivered
	// rejected: the upstream answered, but refused this message (4xx): it is up.
	rejected
	// unavailable: refused connection, timeout, 5xx or a broken exchange: the upstream may be
	// down.
	unavailable
)

// outage decides when the bridge may start a forward. While the upstream works, any number
// may (the workers are the limit). When DefaultOutageAfter forwards in a row found it
// unavailable, the bridge stops taking messages — they wait in the broker, untouched, instead
// of each being taken, failed, republished and taken again once per backoff round — and lets
// one message through at a time as a probe, at the pace of the retry backoff. The first probe
// that reaches the upstream ends the outage and the bridge resumes at full rate. Each probe is
// a different message (the failed probe is republished like any failed forward), so a message
// that the upstream refuses for its own sake cannot keep the bridge paused.
//
// It is not safe for concurrent use; the Bridge guards it with its mutex.
type outage struct {
	backoff   mqttconn.Backoff
	threshold int

	streak    int  // forwards in a row that found the upstream unavailable
	down      bool // in an outage: only probes go through
	probing   bool // a probe is running
	probes    int  // failed probes since the outage began
	nextProbe time.Time
	since     time.Time // when the outage began
}

// admit reports whether a forward may start now and whether it is a probe. When it may not,
// wait is when to ask again; zero means when the running probe ends.
func (o *outage) admit(now time.Time) (ok, probe bool, wait time.Time) {
	switch {
	case !o.down:
		return true, false, time.Time{}
	case o.probing:
		return false, false, time.Time{}
	case now.Before(o.nextProbe):
		return false, false, o.nextProbe
	}
	o.probing = true
	return true, true, time.Time{}
}

// done records the result of a turn that admit allowed. It reports a change of state: began
// (the upstream is now considered down) or ended (it is back).
func (o *outage) done(now time.Time, probe bool, r result) (began, ended bool) {
	if probe {
		o.probing = false
	}
	switch r {
	case skipped:
		return false, false
	case delivered, rejected:
		o.streak = 0
		if o.down {
			o.down, o.probes = false, 0
			return false, true
		}
		return false, false
	}
	o.streak++
	switch {
	case o.down && probe:
		o.probes++
		o.nextProbe = now.Add(o.backoff.Delay(o.probes + 1))
	case !o.down && o.streak >= o.threshold:
		o.down, o.probes, o.since = true, 0, now
		o.nextProbe = now.Add(o.backoff.Delay(1))
		return true, false
	}
	return false, false
}

package wan

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Profile is a set of link properties to emulate on one interface.
// The zero value shapes nothing.
type Profile struct {
	// Name is the builtin name the profile came from, or "custom".
	Name string
	// EgressRate and IngressRate are the rates of what the interface sends
	// and receives, in bits per second; 0 leaves that direction unlimited.
	EgressRate, IngressRate uint64
	// Delay is added to every packet sent; Jitter spreads it uniformly over
	// Delay±Jitter and must not exceed Delay.
	Delay, Jitter time.Duration
	// LossPercent is the share of sent packets dropped at random, 0 to 100.
	LossPercent float64
}

// builtins returns the profiles ParseProfile and Builtin know by name.
func builtins() map[string]Profile {
	return map[string]Profile{
		// The original's "Corporate WAN / MPLS" setting: a customer LAN with a
		// 5 mbit uplink behind a 100 mbit downlink.
		"corporate-wan": {
			EgressRate: 5_000_000, IngressRate: 100_000_000,
			Delay: 30 * time.Millisecond, Jitter: 3 * time.Millisecond, LossPercent: 0.01,
		},
		// The defaults of the original's script before it was switched to the
		// corporate WAN ("Simulate ADSL link").
		"adsl": {
			EgressRate: 1_000_000, IngressRate: 2_000_000,
			Delay: 40 * time.Millisecond, Jitter: 10 * time.Millisecond,
		},
		// A loaded mobile (LTE) uplink; illustrative numbers, not from the
		// original.
		"mobile": {
			EgressRate: 5_000_000, IngressRate: 20_000_000,
			Delay: 50 * time.Millisecond, Jitter: 15 * time.Millisecond, LossPercent: 0.5,
		},
		// No shaping at all: the containers' own network.
		"lan": {},
	}
}

// Builtin returns the builtin profile of that name: "corporate-wan" (5 mbit
// out, 100 mbit in, 30 ms ± 3 ms, 0.01 % loss, the original's setting),
// "adsl", "mobile" or "lan" (no shaping).
func Builtin(name string) (Profile, bool) {
	p, ok := builtins()[name]
	if !ok {
		return Profile{}, false
	}
	p.Name = name
	return p, true
}

// BuiltinNames lists the names Builtin knows, sorted.
func BuiltinNames() []string {
	all := builtins()
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Spec keys understood by ParseProfile.
const (
	keyRateOut = "rate-out"
	keyRateIn  = "rate-in"
	keyDelay   = "delay"
	keyJitter  = "jitter"
	keyLoss    = "loss"
)

var specKeys = []string{keyRateOut, keyRateIn, keyDelay, keyJitter, keyLoss}

// ParseProfile reads a profile from a builtin name ("corporate-wan"), an
// inline spec ("rate-out=5mbit,rate-in=100mbit,delay=30ms,jitter=3ms,loss=0.01%")
// or a builtin name followed by overrides ("corporate-wan,delay=80ms").
//
// Rates take tc's bit units (bit, kbit, mbit, gbit, tbit; kibit, mibit, gibit
// for powers of 1024) or "0"/"unlimited"; tc's byte units (kbps, mbps, …) are
// refused because they are too easily read as bits. Delay and jitter are Go
// durations ("30ms", "1.5ms"); loss is a percentage and needs its "%".
// Errors name the key and the value that could not be used.
func ParseProfile(s string) (Profile, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Profile{}, errors.New("parsing wan profile: empty; use a builtin name (" +
			strings.Join(BuiltinNames(), ", ") + ") or key=value pairs (" + strings.Join(specKeys, ", ") + ")")
	}
	parts := strings.Split(s, ",")
	p := Profile{Name: "custom"}
	if first := strings.TrimSpace(parts[0]); !strings.Contains(first, "=") {
		b, ok := Builtin(first)
		if !ok && slices.Contains(specKeys, strings.ToLower(first)) {
			return Profile{}, fmt.Errorf("parsing wan profile %q: %q is not key=value (keys: %s)",
				s, first, strings.Join(specKeys, ", "))
		}
		if !ok {
			return Profile{}, fmt.Errorf("parsing wan profile %q: unknown profile %q; builtins are %s",
				s, first, strings.Join(BuiltinNames(), ", "))
		}
		p = b
		parts = parts[1:]
		if len(parts) > 0 {
			p.Name = first + "+custom"
		}
	}
	seen := map[string]bool{}
	for _, part := range parts {
		part = strings.TrimSpace(part)
		if part == "" {
			return Profile{}, fmt.Errorf("parsing wan profile %q: empty element", s)
		}
		key, val, ok := strings.Cut(part, "=")
		key, val = strings.ToLower(strings.TrimSpace(key)), strings.TrimSpace(val)
		if !ok {
			return Profile{}, fmt.Errorf("parsing wan profile %q: %q is not key=value (keys: %s)",
				s, part, strings.Join(specKeys, ", "))
		}
		if seen[key] {
			return Profile{}, fmt.Errorf("parsing wan profile %q: %s given twice", s, key)
		}
		seen[key] = true
		var err error
		switch key {
		case keyRateOut:
			p.EgressRate, err = parseRate(val)
		case keyRateIn:
			p.IngressRate, err = parseRate(val)
		case keyDelay:
			p.Delay, err = parseDuration(val)
		case keyJitter:
			p.Jitter, err = parseDuration(val)
		case keyLoss:
			p.LossPercent, err = parseLoss(val)
		default:
			return Profile{}, fmt.Errorf("parsing wan profile %q: unknown key %q (keys: %s)",
				s, key, strings.Join(specKeys, ", "))
		}
		if err != nil {
			return Profile{}, fmt.Errorf("parsing wan profile %q: %s=%q: %w", s, key, val, err)
		}
	}
	if err := p.Validate(); err != nil {
		return Profile{}, fmt.Errorf("parsing wan profile %q: %w", s, err)
	}
	return p, nil
}

// Validate reports values Apply cannot set up: negative durations, jitter
// beyond the delay, loss outside 0–100 %, rates below 8 bit/s.
func (p Profile) Validate() error {
	if p.Delay < 0 {
		return fmt.Errorf("%s %v is negative", keyDelay, p.Delay)
	}
	if p.Jitter < 0 {
		return fmt.Errorf("%s %v is negative", keyJitter, p.Jitter)
	}
	if p.Jitter > p.Delay {
		return fmt.Errorf("%s %v exceeds %s %v", keyJitter, p.Jitter, keyDelay, p.Delay)
	}
	// netem takes microseconds in 32 bits.
	if maxNetem := time.Duration(math.MaxUint32) * time.Microsecond; p.Delay > maxNetem {
		return fmt.Errorf("%s %v exceeds netem's maximum of %v", keyDelay, p.Delay, maxNetem)
	}
	if math.IsNaN(p.LossPercent) || p.LossPercent < 0 || p.LossPercent > 100 {
		return fmt.Errorf("%s %v%% is outside 0–100%%", keyLoss, p.LossPercent)
	}
	// tbf counts bytes per second.
	if p.EgressRate != 0 && p.EgressRate < 8 {
		return fmt.Errorf("%s %dbit is below 8bit", keyRateOut, p.EgressRate)
	}
	if p.IngressRate != 0 && p.IngressRate < 8 {
		return fmt.Errorf("%s %dbit is below 8bit", keyRateIn, p.IngressRate)
	}
	return nil
}

// IsZero reports whether the profile shapes nothing (like "lan").
func (p Profile) IsZero() bool {
	return p.EgressRate == 0 && p.IngressRate == 0 && !p.needsNetem()
}

// needsNetem reports whether the egress side needs the netem qdisc.
func (p Profile) needsNetem() bool {
	return p.Delay > 0 || p.Jitter > 0 || p.LossPercent > 0
}

// RateOnly returns the profile without delay, jitter and loss: what the
// original's script applied on hosts whose kernel has no netem.
func (p Profile) RateOnly() Profile {
	p.Delay, p.Jitter, p.LossPercent = 0, 0, 0
	return p
}

// String returns the profile as an inline spec that ParseProfile reads back
// to the same values, e.g. "rate-out=5mbit,rate-in=100mbit,delay=30ms,
// jitter=3ms,loss=0.01%"; only non-zero values are listed, and a profile
// that shapes nothing is "lan".
func (p Profile) String() string {
	var parts []string
	if p.EgressRate != 0 {
		parts = append(parts, keyRateOut+"="+FormatRate(p.EgressRate))
	}
	if p.IngressRate != 0 {
		parts = append(parts, keyRateIn+"="+FormatRate(p.IngressRate))
	}
	if p.Delay != 0 {
		parts = append(parts, keyDelay+"="+p.Delay.String())
	}
	if p.Jitter != 0 {
		parts = append(parts, keyJitter+"="+p.Jitter.String())
	}
	if p.LossPercent != 0 {
		parts = append(parts, keyLoss+"="+strconv.FormatFloat(p.LossPercent, 'f', -1, 64)+"%")
	}
	if len(parts) == 0 {
		return "lan"
	}
	return strings.Join(parts, ",")
}

// rateUnits are tc's bit-rate units, longest suffix first so that "mbit"
// is not taken for "bit".
var rateUnits = []struct {
	suffix string
	mult   uint64
}{
	{"kibit", 1 << 10}, {"mibit", 1 << 20}, {"gibit", 1 << 30}, {"tibit", 1 << 40},
	{"kbit", 1e3}, {"mbit", 1e6}, {"gbit", 1e9}, {"tbit", 1e12},
	{"bit", 1},
}

// parseRate reads a rate such as "5mbit" into bits per second.
func parseRate(s string) (uint64, error) {
	ls := strings.ToLower(s)
	switch ls {
	case "0", "unlimited", "none":
		return 0, nil
	case "":
		return 0, errors.New("missing rate, e.g. 5mbit")
	}
	if strings.HasSuffix(ls, "bps") {
		return 0, fmt.Errorf("byte unit %q is ambiguous (tc reads mbps as megabytes per second); write bits, e.g. 5mbit", s)
	}
	for _, u := range rateUnits {
		num, ok := strings.CutSuffix(ls, u.suffix)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, fmt.Errorf("%q is not a number", num)
		}
		if v < 0 {
			return 0, errors.New("rate is negative")
		}
		bits := v * float64(u.mult)
		if bits >= math.MaxUint64/2 {
			return 0, errors.New("rate is too large")
		}
		return uint64(math.Round(bits)), nil
	}
	return 0, fmt.Errorf("missing or unknown unit; use bit, kbit, mbit, gbit (e.g. 5mbit)")
}

// FormatRate writes bits per second in tc's units: 5000000 is "5mbit".
func FormatRate(bits uint64) string {
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"tbit", 1e12}, {"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}} {
		if bits >= u.mult {
			return strconv.FormatFloat(float64(bits)/float64(u.mult), 'f', -1, 64) + u.suffix
		}
	}
	return strconv.FormatUint(bits, 10) + "bit"
}

func parseDuration(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("not a duration such as 30ms")
	}
	if d < 0 {
		return 0, errors.New("duration is negative")
	}
	return d, nil
}

func parseLoss(s string) (float64, error) {
	if s == "0" {
		return 0, nil
	}
	num, ok := strings.CutSuffix(s, "%")
	if !ok {
		return 0, errors.New(`loss is a percentage and needs its "%", e.g. 0.01%`)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%q is not a number", num)
	}
	if v < 0 || v > 100 {
		return 0, errors.New("loss is outside 0–100%")
	}
	return v, nil
}

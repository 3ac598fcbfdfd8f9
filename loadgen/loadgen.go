// Package loadgen is the alarm-device workload of the experiments (the original's Locust
// scripts): it POSTs alarms to component 1's /api/v1/simple, retries a failed one on the next
// component 1 instance until it is answered 2xx, and records every Request-Id in a ledger so
// that the run can be checked for lost and doubled alarms.
//
// Two models drive it:
//
//   - The closed model of the original: Devices simulated alarm devices, each POSTing one alarm,
//     waiting Think (1 s) after it was answered, and repeating. A device's latency runs from its
//     first try to the success, as Locust measured it.
//   - An open model for performance work and fault tests: alarms start at a fixed Rate whatever
//     the system does, and each latency runs from the alarm's intended start, so that a stalled
//     system cannot hide its stall by slowing the load down (coordinated omission).
//
// A request that fails — a non-2xx answer or a transport error — is retried every
// RetryInterval on the next URL (the URLs rotate), keeping its Request-Id. Retrying stops when
// the alarm succeeds or, at the latest, RetryDeadline after the load stopped starting new
// alarms, so every run ends by itself.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/ledger"
	"github.com/lpsdev/lps/transport"
)

// Defaults of Config, applied in one place (Config.defaults).
const (
	// DefaultThink is the original devices' wait between alarms.
	DefaultThink = time.Second
	// DefaultRetryInterval is the original load tester's pause before a failed alarm is tried
	// again on the next instance.
	DefaultRetryInterval = time.Second
	// DefaultRetryDeadline bounds the retries after the load stopped starting alarms: long
	// enough for the SPEC's 30-second failovers, short enough that a broken run ends.
	DefaultRetryDeadline = 2 * time.Minute
	// DefaultTimeout bounds one request, as the original's clients (60 s).
	DefaultTimeout = transport.DefaultClientTimeout
	// DefaultMaxOutstanding bounds the open model's alarms in progress (each is a goroutine);
	// when it is reached the next start waits, and its latency still counts from its intended
	// start.
	DefaultMaxOutstanding = 10_000
	// Headnumber is the original devices' head number.
	Headnumber = "8023"
)

// MsgTryFailed is the message of the debug line Config.Logger gets for every failed try of an
// alarm, with its request_id, url, try and error.
const MsgTryFailed = "alarm failed; retrying on the next instance"

// DefaultPhones are the three phone numbers the devices take turns at.
var DefaultPhones = []string{"0151", "0160", "0170"}

// Branches are the branch numbers an alarm is drawn from: 2001–2010 and 2012–2016, as the
// original Locust script.
var Branches = []string{
	"2001", "2002", "2003", "2004", "2005", "2006", "2007", "2008", "2009", "2010",
	"2012", "2013", "2014", "2015", "2016",
}

// Config configures a Load. Zero fields take the documented defaults.
type Config struct {
	// URLs are component 1's alarm endpoints; a URL without a path gets alarm.DevicePath. Required.
	URLs []string
	// Rate selects the open model: alarms started per second. Devices selects the closed
	// model: that many devices. Exactly one of them must be set.
	Rate    float64
	Devices int
	// Think is a device's wait after its alarm was answered; zero means DefaultThink.
	Think time.Duration
	// Duration is how long new alarms are started; zero means until Stop is called or Run's
	// context ends.
	Duration time.Duration
	// RetryInterval is the pause before a failed request is tried again on the next URL; zero
	// means DefaultRetryInterval.
	RetryInterval time.Duration
	// RetryDeadline is how long, after the load stopped starting alarms, the alarms still
	// failing are retried; then they are given up (unacknowledged in the ledger). Zero means
	// DefaultRetryDeadline.
	RetryDeadline time.Duration
	// MaxOutstanding bounds the open model's alarms in progress; zero means
	// DefaultMaxOutstanding.
	MaxOutstanding int
	// Prefix starts every Request-Id ("<prefix>-0000001"); "" means a random run id. It may
	// not make ids that start with BackgroundIDPrefix.
	Prefix string
	// Phones are the devices' phone numbers (device i has Phones[i%len]); nil means
	// DefaultPhones.
	Phones []string
	// Seed seeds the branch draws; zero means 42, so that runs are reproducible.
	Seed uint64
	// Client sends the requests; nil means a transport.Client with DefaultTimeout.
	Client *transport.Client
	// Ledger records every alarm; nil means a new one (see Load.Ledger).
	Ledger *ledger.Ledger
	// Logger logs failures at debug level; nil means none.
	Logger *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.Think == 0 {
		c.Think = DefaultThink
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = DefaultRetryInterval
	}
	if c.RetryDeadline == 0 {
		c.RetryDeadline = DefaultRetryDeadline
	}
	if c.MaxOutstanding == 0 {
		c.MaxOutstanding = DefaultMaxOutstanding
	}
	if c.Prefix == "" {
		c.Prefix = fmt.Sprintf("run%08x", rand.Uint32())
	}
	if len(c.Phones) == 0 {
		c.Phones = DefaultPhones
	}
	if c.Seed == 0 {
		c.Seed = 42
	}
	if c.Client == nil {
		c.Client = &transport.Client{Timeout: DefaultTimeout}
	}
	if c.Ledger == nil {
		c.Ledger = ledger.New()
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	if len(c.URLs) == 0 {
		return errors.New("no URL to send alarms to")
	}
	for _, u := range c.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("invalid URL %q: want http(s)://host:port/path", u)
		}
	}
	switch {
	case c.Rate < 0 || c.Devices < 0:
		return fmt.Errorf("rate %g and devices %d must not be negative", c.Rate, c.Devices)
	case (c.Rate > 0) == (c.Devices > 0):
		return errors.New("set exactly one of rate (open model) and devices (closed model)")
	case c.Duration < 0 || c.Think < 0 || c.RetryInterval < 0 || c.RetryDeadline < 0 || c.MaxOutstanding < 0:
		return errors.New("durations and bounds must not be negative")
	case IsBackgroundID(c.Prefix + "-"):
		// The ledgers leave background ids out; an alarm must never look like one.
		return fmt.Errorf("prefix %q: alarm ids must not start with %q, the background's", c.Prefix, BackgroundIDPrefix)
	}
	return nil
}

// Stats are a Load's counters.
type Stats struct {
	// Started counts the alarms started, Acked those answered 2xx, GivenUp those abandoned at
	// the retry deadline (or when Run's context ended), Outstanding those in progress.
	Started, Acked, GivenUp, Outstanding int64
	// Attempts counts the requests, Failures those that failed (each is retried or given up).
	Attempts, Failures int64
}

// Load is one run of the workload. Make it with New, run it once with Run.
type Load struct {
	cfg  Config
	urls []string

	next atomic.Uint64 // the URL the next alarm starts at

	seq         atomic.Int64
	acked       atomic.Int64
	givenUp     atomic.Int64
	outstanding atomic.Int64
	attempts    atomic.Int64
	failures    atomic.Int64

	mu      sync.Mutex
	rng     *rand.Rand // branch draws
	stop    context.CancelFunc
	stopped bool
	ran     bool
}

// New validates cfg.
func New(cfg Config) (*Load, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	l := &Load{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))}
	for _, u := range cfg.URLs {
		p, _ := url.Parse(u) // validated
		if p.Path == "" || p.Path == "/" {
			p.Path = alarm.DevicePath
		}
		l.urls = append(l.urls, p.String())
	}
	return l, nil
}

// Ledger is where the load records its alarms.
func (l *Load) Ledger() *ledger.Ledger { return l.cfg.Ledger }

// Prefix is the Request-Id prefix of this run.
func (l *Load) Prefix() string { return l.cfg.Prefix }

// Stats returns the counters now.
func (l *Load) Stats() Stats {
	return Stats{
		Started: l.seq.Load(), Acked: l.acked.Load(), GivenUp: l.givenUp.Load(), Outstanding: l.outstanding.Load(),
		Attempts: l.attempts.Load(), Failures: l.failures.Load(),
	}
}

// Stop makes the load start no new alarms; those in progress go on being retried until they
// succeed or RetryDeadline passes. Stop before Run makes Run start nothing.
func (l *Load) Stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.stop != nil {
		l.stop()
	}
}

// Run starts alarms until Duration passes, Stop is called or ctx ends, then waits for the
// alarms in progress: they end when answered 2xx or, at the latest, RetryDeadline later. When
// ctx ends every request is abandoned at once. Run returns ctx's error if ctx ended it, else
// nil; the outcome is in the ledger and Stats.
func (l *Load) Run(ctx context.Context) error {
	sendCtx, stopSending := context.WithCancel(ctx)
	defer stopSending()
	l.mu.Lock()
	if l.ran {
		l.mu.Unlock()
		return errors.New("a load runs once")
	}
	l.ran = true
	l.stop = stopSending
	if l.stopped {
		stopSending()
	}
	l.mu.Unlock()
	if l.cfg.Duration > 0 {
		t := time.AfterFunc(l.cfg.Duration, stopSending)
		defer t.Stop()
	}

	// retryCtx ends RetryDeadline after the sending ended (or with ctx).
	retryCtx, stopRetrying := context.WithCancel(ctx)
	defer stopRetrying()
	deadline := context.AfterFunc(sendCtx, func() {
		t := time.AfterFunc(l.cfg.RetryDeadline, stopRetrying)
		context.AfterFunc(retryCtx, func() { t.Stop() })
	})
	defer deadline()

	var wg sync.WaitGroup
	if l.cfg.Rate > 0 {
		l.open(sendCtx, retryCtx, &wg)
	} else {
		l.closed(sendCtx, retryCtx, &wg)
	}
	wg.Wait()
	return ctx.Err()
}

// open starts alarms at the configured rate until sendCtx ends.
func (l *Load) open(sendCtx, retryCtx context.Context, wg *sync.WaitGroup) {
	sem := make(chan struct{}, l.cfg.MaxOutstanding)
	interval := float64(time.Second) / l.cfg.Rate
	start := l.cfg.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := 0; ; i++ {
		intended := start.Add(time.Duration(float64(i) * interval))
		if wait := intended.Sub(l.cfg.Now()); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-sendCtx.Done():
				return
			}
		} else if sendCtx.Err() != nil {
			return
		}
		select {
		case sem <- struct{}{}:
		case <-sendCtx.Done():
			return
		}
		a := l.newAlarm(i%len(l.cfg.Phones), intended)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			l.deliver(retryCtx, a)
		}()
	}
}

// closed runs the devices until sendCtx ends; a device finishes the alarm it is on.
func (l *Load) closed(sendCtx, retryCtx context.Context, wg *sync.WaitGroup) {
	for d := range l.cfg.Devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			timer := time.NewTimer(0)
			<-timer.C
			defer timer.Stop()
			for sendCtx.Err() == nil {
				a := l.newAlarm(d%len(l.cfg.Phones), l.cfg.Now())
				if !l.deliver(retryCtx, a) {
					return
				}
				timer.Reset(l.cfg.Think)
				select {
				case <-timer.C:
				case <-sendCtx.Done():
					return
				}
			}
		}()
	}
}

// delivery is one alarm being delivered.
type delivery struct {
	id    string
	body  []byte
	start time.Time // intended (open model) or first try (closed model)
	url   int       // index of the URL of the next try
}

func (l *Load) newAlarm(phone int, start time.Time) *delivery {
	n := l.seq.Add(1)
	l.mu.Lock()
	branch := Branches[l.rng.IntN(len(Branches))]
	l.mu.Unlock()
	body := alarm.Device{
		Phone:       l.cfg.Phones[phone],
		Branch:      branch,
		Headnumber:  Headnumber,
		TriggerTime: l.cfg.Now().UTC().Format(time.RFC3339),
	}.Marshal()
	a := &delivery{
		id:    fmt.Sprintf("%s-%07d", l.cfg.Prefix, n),
		body:  body,
		start: start,
		url:   int((l.next.Add(1) - 1) % uint64(len(l.urls))),
	}
	l.cfg.Ledger.SentAt(a.id, start)
	l.outstanding.Add(1)
	return a
}

// deliver tries the alarm until it is answered 2xx or ctx ends, rotating over the URLs. It
// reports whether the alarm was acknowledged.
func (l *Load) deliver(ctx context.Context, a *delivery) bool {
	defer l.outstanding.Add(-1)
	timer := time.NewTimer(0)
	<-timer.C
	defer timer.Stop()
	rctx := transport.WithRequestID(ctx, a.id)
	for try := 1; ; try++ {
		u := l.urls[a.url]
		a.url = (a.url + 1) % len(l.urls)
		l.attempts.Add(1)
		l.cfg.Ledger.Attempt(a.id)
		_, err := l.cfg.Client.Post(rctx, u, "application/json", a.body)
		if err == nil {
			l.acked.Add(1)
			l.cfg.Ledger.Acked(a.id, l.cfg.Now().Sub(a.start))
			return true
		}
		l.failures.Add(1)
		if ce := l.cfg.Logger.Check(zapcore.DebugLevel, MsgTryFailed); ce != nil {
			ce.Write(zap.String("request_id", a.id), zap.String("url", u), zap.Int("try", try), zap.Error(err))
		}
		if ctx.Err() != nil {
			break
		}
		timer.Reset(l.cfg.RetryInterval)
		select {
		case <-timer.C:
			continue
		case <-ctx.Done():
		}
		break
	}
	l.givenUp.Add(1)
	if ce := l.cfg.Logger.Check(zapcore.InfoLevel, "alarm given up at the retry deadline"); ce != nil {
		ce.Write(zap.String("request_id", a.id))
	}
	return false
}

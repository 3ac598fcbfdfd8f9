package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/config"
	"github.com/lpsdev/lps/transport"
)

// The background workload of the original experiments: besides the alarms, 70 requests per
// second of random non-alarm commands went straight to the legacy backend, so that the
// simulator's delay model (which depends on the requests in flight) saw the production mix.

// Defaults and constants of the background workload.
const (
	// DefaultBackgroundRate is the original experiments' background: 70 requests/s.
	DefaultBackgroundRate = 70.0
	// DefaultBackgroundMaxInFlight bounds the background requests waiting for an answer. It is
	// transport.DefaultMaxIdleConnsPerHost: up to there every request reuses a pooled
	// connection; beyond it a stalled simulator would make the background open and close
	// connections (TIME_WAIT) and pile up goroutines. At 70/s it is 7 s of a simulator that
	// does not answer; the requests due after that are skipped and counted.
	DefaultBackgroundMaxInFlight = transport.DefaultMaxIdleConnsPerHost
	// BackgroundIDPrefix starts every background Request-Id ("bg-<run>-0000001"). Alarm ids
	// never start with it: transport.NewRequestID makes UUIDs (hex digits and dashes, no "g"),
	// a Load's default prefix is "run…", and Config.Prefix may not make one (see
	// IsBackgroundID). So a per-Request-Id ledger can leave the background out.
	BackgroundIDPrefix = "bg-"
	// maxRunLen keeps "bg-<run>-0000001" within the 128 characters a Request-Id may have
	// (longer ones are replaced by the server with a fresh UUID, losing the prefix).
	maxRunLen = 100
)

// IsBackgroundID reports whether id is a background request's Request-Id.
func IsBackgroundID(id string) bool { return strings.HasPrefix(id, BackgroundIDPrefix) }

// BackgroundConfig configures a Background. Zero fields take the documented defaults.
type BackgroundConfig struct {
	// URL is the simulator's base URL (http://host:port); a command NAME is POSTed to URL/NAME.
	// Required.
	URL string
	// Rate is the requests started per second, evenly paced whatever the simulator does (open
	// model). Required, positive.
	Rate float64
	// Names are the commands drawn from. The alarm command (alarm.Command) and every name the
	// simulator could take for it are left out; none left is an error.
	Names []string
	// Seed seeds the draws of the commands, so that a run's sequence is reproducible; zero
	// means 42.
	Seed uint64
	// Run names the run in the Request-Ids, "bg-<Run>-0000001"; "" means a random run id.
	Run string
	// MaxInFlight bounds the requests waiting for an answer; a request due when it is reached
	// is skipped (counted, not queued). Zero means DefaultBackgroundMaxInFlight.
	MaxInFlight int
	// Client sends the requests; nil means a transport.Client with DefaultTimeout.
	Client *transport.Client
	// Duration is how long requests are started; zero means until Stop is called or Run's
	// context ends.
	Duration time.Duration
	// Logger logs failures at debug level; nil means none.
	Logger *zap.Logger
}

func (c *BackgroundConfig) validate() error {
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		return config.Invalid("URL", c.URL, "the simulator's base URL is required")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "":
		return config.Invalid("URL", c.URL, "want the simulator's base URL, http(s)://host:port")
	case !(c.Rate > 0) || math.IsInf(c.Rate, 0):
		return config.Invalid("Rate", c.Rate, "must be a positive number of requests per second")
	case c.Duration < 0:
		return config.Invalid("Duration", c.Duration, "must not be negative")
	case c.MaxInFlight < 0:
		return config.Invalid("MaxInFlight", c.MaxInFlight, "must not be negative")
	case len(c.Run) > maxRunLen:
		return config.Invalid("Run", c.Run, "longer than %d characters", maxRunLen)
	case !validIDPart(c.Run):
		return config.Invalid("Run", c.Run, "must be printable ASCII without spaces (it goes into the Request-Id header)")
	}
	for _, n := range c.Names {
		if n == "" || !validIDPart(n) || strings.ContainsAny(n, "/?#%") {
			return config.Invalid("Names", n, "a command name must be printable ASCII without spaces, /, ?, # or %%")
		}
	}
	return nil
}

// validIDPart accepts what a Request-Id may hold (printable ASCII without spaces), as the
// servers' transport.RequestID does.
func validIDPart(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// isAlarm reports whether the simulator could run name as the alarm command. rast-sim matches
// a path equal to a command ignoring case and, failing that, the first command that contains
// it (so "/store7d3b" is the alarm); a name that is part of the alarm command's name is left
// out whatever the simulator's mapping holds.
func isAlarm(name string) bool {
	return strings.Contains(strings.ToLower(alarm.Command), strings.ToLower(name))
}

// BackgroundStats are a Background's counters. Sent = OK + Failed + InFlight.
type BackgroundStats struct {
	// Sent counts the requests sent, OK those answered 2xx, Failed those that got another
	// answer, no answer, or were abandoned when Run's context ended; InFlight those waiting.
	Sent, OK, Failed, InFlight int64
	// Skipped counts the requests not sent because MaxInFlight requests were waiting.
	Skipped int64
}

// BackgroundSecond is what happened to the requests due in one second of a run.
type BackgroundSecond struct {
	Sent, OK, Failed, Skipped int64
}

// Background is one run of the background workload. Make it with NewBackground, run it once
// with Run.
type Background struct {
	cfg   BackgroundConfig
	urls  []string // one per name: URL/NAME
	names []string
	rng   *rand.Rand // only Run's loop draws: the n-th request sent gets the n-th draw

	seq     atomic.Int64 // requests sent; the last one's number
	ok      atomic.Int64
	failed  atomic.Int64
	skipped atomic.Int64
	// lastSend is when the last request was sent, in nanoseconds since the first: the span
	// of Rate.
	lastSend atomic.Int64

	mu       sync.Mutex
	seconds  []BackgroundSecond
	firstErr error
	stop     context.CancelFunc
	stopped  bool
	ran      bool
}

// NewBackground validates cfg and leaves out the alarm command.
func NewBackground(cfg BackgroundConfig) (*Background, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var names []string
	for _, n := range cfg.Names {
		if !isAlarm(n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, config.Invalid("Names", strings.Join(cfg.Names, ","),
			"no command left once the alarm command %s is left out", alarm.Command)
	}
	if cfg.Seed == 0 {
		cfg.Seed = 42
	}
	if cfg.Run == "" {
		cfg.Run = fmt.Sprintf("%08x", rand.Uint32())
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultBackgroundMaxInFlight
	}
	if cfg.Client == nil {
		cfg.Client = &transport.Client{Timeout: DefaultTimeout}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	b := &Background{cfg: cfg, names: names, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))}
	base := strings.TrimRight(cfg.URL, "/")
	for _, n := range names {
		b.urls = append(b.urls, base+"/"+n)
	}
	return b, nil
}

// Prefix starts every Request-Id of this run: "bg-<run>"; ids are "<prefix>-0000001", ….
func (b *Background) Prefix() string { return BackgroundIDPrefix + b.cfg.Run }

// Names are the commands drawn from (without the alarm command).
func (b *Background) Names() []string { return append([]string(nil), b.names...) }

// MaxInFlight is the bound on the requests waiting for an answer.
func (b *Background) MaxInFlight() int { return b.cfg.MaxInFlight }

// Stats returns the counters now.
func (b *Background) Stats() BackgroundStats {
	// The outcomes are read before Sent: a request is counted sent before it can end, so the
	// snapshot never has more ended than sent, and InFlight is what remains.
	ok, failed := b.ok.Load(), b.failed.Load()
	sent := b.seq.Load()
	return BackgroundStats{Sent: sent, OK: ok, Failed: failed, InFlight: sent - ok - failed, Skipped: b.skipped.Load()}
}

// Rate is the rate the requests went out at: those after the first over the time from the
// first to the last (so a perfectly paced run gives Config.Rate); 0 before two were sent.
// Skipped requests lower it, a sender that fell behind too.
func (b *Background) Rate() float64 {
	// lastSend is read first: a request is counted in seq before its time is stored, so seq
	// read afterwards covers it (a later one would make the rate too high by one request at
	// most, and only while the run goes on).
	span := time.Duration(b.lastSend.Load())
	n := b.seq.Load()
	if n < 2 || span <= 0 {
		return 0
	}
	return float64(n-1) / span.Seconds()
}

// Seconds returns, per second since Run started, what happened to the requests due in it:
// sent, skipped, and of those sent which were answered OK or failed so far. A request counts
// in the second it was due, not the one it ended in, so that a second shows how the simulator
// treated the requests it was sent then.
func (b *Background) Seconds() []BackgroundSecond {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]BackgroundSecond(nil), b.seconds...)
}

// FirstError is the first failure of a request, nil if none failed.
func (b *Background) FirstError() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.firstErr
}

// Stop makes the background send no more requests; those waiting for an answer get it (or
// their timeout). Stop before Run makes Run send nothing.
func (b *Background) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	if b.stop != nil {
		b.stop()
	}
}

// count adds to the second at index sec.
func (b *Background) count(sec int, add func(*BackgroundSecond)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.seconds) <= sec {
		b.seconds = append(b.seconds, BackgroundSecond{})
	}
	add(&b.seconds[sec])
}

// Run sends requests at Rate until Duration passes, Stop is called or ctx ends, then waits
// for those still waiting for an answer. When ctx ends they are abandoned at once (and count
// as failed). Run returns ctx's error if ctx ended it, else nil; the outcome is in Stats.
func (b *Background) Run(ctx context.Context) error {
	sendCtx, stopSending := context.WithCancel(ctx)
	defer stopSending()
	b.mu.Lock()
	if b.ran {
		b.mu.Unlock()
		return errors.New("a background runs once")
	}
	b.ran = true
	b.stop = stopSending
	if b.stopped {
		stopSending()
	}
	b.mu.Unlock()
	if ce := b.cfg.Logger.Check(zapcore.InfoLevel, "sending the background workload"); ce != nil {
		ce.Write(zap.String("url", b.cfg.URL), zap.Float64("rate", b.cfg.Rate), zap.Int("commands", len(b.names)),
			zap.String("prefix", b.Prefix()), zap.Int("max_in_flight", b.cfg.MaxInFlight))
	}

	// The requests are paced by their due times, start + i/Rate, rather than by sleeping an
	// interval after each send: a late wake-up does not slow the rate down, and a run of
	// Duration sends exactly the requests due within it.
	interval := float64(time.Second) / b.cfg.Rate
	start := time.Now()
	sem := make(chan struct{}, b.cfg.MaxInFlight)
	timer := time.NewTimer(0)
	<-timer.C
	defer timer.Stop()
	var wg sync.WaitGroup
	for i := 0; ; i++ {
		offset := time.Duration(float64(i) * interval)
		if b.cfg.Duration > 0 && offset >= b.cfg.Duration {
			break
		}
		if wait := time.Until(start.Add(offset)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-sendCtx.Done():
			}
		}
		if sendCtx.Err() != nil {
			break
		}
		sec := int(offset / time.Second)
		// A full semaphore skips the request rather than waiting for a slot: waiting would
		// turn the open model into bursts when the simulator recovers.
		select {
		case sem <- struct{}{}:
		default:
			b.skipped.Add(1)
			b.count(sec, func(s *BackgroundSecond) { s.Skipped++ })
			continue
		}
		n := b.seq.Add(1)
		b.lastSend.Store(int64(time.Since(start)))
		b.count(sec, func(s *BackgroundSecond) { s.Sent++ })
		k := b.rng.IntN(len(b.urls))
		id := fmt.Sprintf("%s-%07d", b.Prefix(), n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			b.send(ctx, sec, id, k)
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// send sends request id, command k; ctx is Run's, so that Stop and Duration let it finish.
func (b *Background) send(ctx context.Context, sec int, id string, k int) {
	u := b.urls[k]
	_, err := b.cfg.Client.Post(transport.WithRequestID(ctx, id), u, "application/json", nil)
	if err == nil {
		b.ok.Add(1)
		b.count(sec, func(s *BackgroundSecond) { s.OK++ })
		return
	}
	b.failed.Add(1)
	b.count(sec, func(s *BackgroundSecond) { s.Failed++ })
	b.mu.Lock()
	if b.firstErr == nil {
		b.firstErr = fmt.Errorf("%s: %w", b.names[k], err)
	}
	b.mu.Unlock()
	if ce := b.cfg.Logger.Check(zapcore.DebugLevel, "background request failed"); ce != nil {
		ce.Write(zap.String("request_id", id), zap.String("url", u), zap.Error(err))
	}
}

// LoadNames reads a file of command names, one a line (the original's all_request_names.txt);
// blank lines and the space around names are ignored. A file without names is an error.
func LoadNames(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading request names: %w", err)
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if n := strings.TrimSpace(sc.Text()); n != "" {
			names = append(names, n)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading request names from %s: %w", path, err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("reading request names: %s has no names (want one command name a line)", path)
	}
	return names, nil
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/ledger"
	"github.com/lpsdev/lps/loadgen"
	"github.com/lpsdev/lps/roles/rastsim"
	"github.com/lpsdev/lps/transport"
)

// Defaults of `lps load` that loadgen does not have.
const (
	// defaultLoadDuration is how long alarms are started: one step of the original's
	// performance experiment.
	defaultLoadDuration = time.Minute
	// defaultVerifyTimeout bounds the wait for rast-sim to receive every acked alarm.
	defaultVerifyTimeout = 2 * time.Minute
	// defaultVerifyQuiet ends that wait early when nothing new arrived for this long: longer
	// than mqtt2http's default retry backoff cap (10 s), so that an alarm waiting for its next
	// forward is not taken for lost.
	defaultVerifyQuiet = 15 * time.Second
	// defaultProgress is the interval of the progress lines.
	defaultProgress = 5 * time.Second
	// verifyPoll is how often rast-sim's received ids are fetched while waiting.
	verifyPoll = 250 * time.Millisecond
	// verifyFetchTimeout bounds one fetch of rast-sim's received ids.
	verifyFetchTimeout = 30 * time.Second
)

// defaultLoadURLs are the three comp1 of `lps up` and of the compose files (ports 7081–7083).
var defaultLoadURLs = []string{
	"http://127.0.0.1:7081" + alarm.DevicePath,
	"http://127.0.0.1:7082" + alarm.DevicePath,
	"http://127.0.0.1:7083" + alarm.DevicePath,
}

// loadFlags are the flags of `lps load`.
type loadFlags struct {
	urls          []string
	rate          float64
	devices       int
	duration      time.Duration
	think         time.Duration
	retryInterval time.Duration
	retryDeadline time.Duration
	timeout       time.Duration
	prefix        string
	seed          uint64
	http2         bool
	verify        string
	verifyTimeout time.Duration
	verifyQuiet   time.Duration
	out           string
	progress      time.Duration
}

func (a *app) newLoadCmd() *cobra.Command {
	var f loadFlags
	cmd := &cobra.Command{
		Use:   "load",
		Short: "The alarm-device workload: POST alarms to comp1, retry failures on the next one, check rast-sim got them",
		Long: `load sends alarms to component 1 the way the original's alarm devices (Locust) did: a JSON
alarm to /api/v1/simple; a request that fails is retried every --retry-interval on the next
--url, keeping its Request-Id, until it is answered 2xx or --retry-deadline after the load
stopped starting alarms.

Exactly one model: --rate N starts N alarms per second whatever the system does (open model;
latencies count from the intended start, so a stall cannot hide), --devices N runs N devices
that each send an alarm, wait --think after its answer and repeat (closed model, the original).

A progress line goes to stderr every --progress, the summary to stdout. With --verify, rast-sim
is asked afterwards which Request-Ids it received, and every acked alarm it lacks is lost.
Exit status 1 when an alarm was lost or given up. Ctrl-C stops starting alarms and lets those in
progress finish (within --retry-deadline); a second Ctrl-C abandons them.`,
		Example: `  lps load --rate 300 --duration 60s --verify http://127.0.0.1:<rast-sim port>
  lps load --devices 250 --duration 60s --out results/step-250
  LPS_URL=http://comp1-a:8080,http://comp1-b:8080 LPS_RATE=100 lps load`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	fs.StringSliceVar(&f.urls, "url", defaultLoadURLs, "comp1's alarm endpoints, repeatable or comma-separated; a URL without a path gets "+alarm.DevicePath+"; retries rotate over them")
	fs.Float64Var(&f.rate, "rate", 0, "open model: start this many alarms per second")
	fs.IntVar(&f.devices, "devices", 0, "closed model: this many alarm devices, each one alarm at a time")
	fs.DurationVar(&f.duration, "duration", defaultLoadDuration, "how long new alarms are started (0: until Ctrl-C)")
	fs.DurationVar(&f.think, "think", loadgen.DefaultThink, "closed model: a device's wait after its alarm was answered")
	fs.DurationVar(&f.retryInterval, "retry-interval", loadgen.DefaultRetryInterval, "pause before a failed alarm is tried again on the next URL")
	fs.DurationVar(&f.retryDeadline, "retry-deadline", loadgen.DefaultRetryDeadline, "how long after the load stopped starting alarms the failing ones are still retried; then they are given up")
	fs.DurationVar(&f.timeout, "timeout", loadgen.DefaultTimeout, "timeout of one request")
	fs.StringVar(&f.prefix, "prefix", "", "Request-Id prefix, ids are <prefix>-0000001, … (empty: a random run id)")
	fs.Uint64Var(&f.seed, "seed", 42, "seed of the branch draws (0: 42)")
	fs.BoolVar(&f.http2, "http2", false, "send the alarms as HTTP/2 over cleartext with prior knowledge")
	fs.StringVar(&f.verify, "verify", "", "rast-sim's base URL: after the load, compare what it received (GET /stats/requests) with what was acked")
	fs.DurationVar(&f.verifyTimeout, "verify-timeout", defaultVerifyTimeout, "with --verify, wait at most this long for rast-sim to receive every acked alarm")
	fs.DurationVar(&f.verifyQuiet, "verify-quiet", defaultVerifyQuiet, "with --verify, stop waiting when nothing new arrived at rast-sim for this long")
	fs.StringVar(&f.out, "out", "", "write the report to FILE.json and FILE.csv (a .json or .csv ending of FILE is dropped)")
	fs.DurationVar(&f.progress, "progress", defaultProgress, "interval of the progress lines on stderr (0: none)")
	// A value the flag parser rejects (--rate abc) is an invalid value too: exit 2, as for
	// the values validate rejects.
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &ConfigError{err} })
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(cmd); err != nil {
			return &ConfigError{err}
		}
		return a.runLoad(cmd, f)
	}
	return cmd
}

// validate checks the flags; every message names its flag.
func (f *loadFlags) validate(cmd *cobra.Command) error {
	var urls []string
	for _, u := range f.urls {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		if err := httpURL(u); err != nil {
			return fmt.Errorf("invalid --url %q: %v", u, err)
		}
		urls = append(urls, u)
	}
	if len(urls) == 0 {
		return errors.New("invalid --url: no URL to send alarms to")
	}
	f.urls = urls
	rateSet, devicesSet := cmd.Flags().Changed("rate"), cmd.Flags().Changed("devices")
	switch {
	case rateSet && devicesSet:
		return errors.New("invalid --rate with --devices: set only one, --rate (open model) or --devices (closed model)")
	case !rateSet && !devicesSet:
		return errors.New("missing --rate or --devices: set one, --rate N alarms/s (open model) or --devices N (closed model)")
	case rateSet && (!(f.rate > 0) || math.IsInf(f.rate, 0)):
		return fmt.Errorf("invalid --rate %g: must be a positive number of alarms per second", f.rate)
	case devicesSet && f.devices <= 0:
		return fmt.Errorf("invalid --devices %d: must be positive", f.devices)
	case rateSet && cmd.Flags().Changed("think"):
		return errors.New("invalid --think with --rate: the open model has no think time (it belongs to --devices)")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		zero bool // zero allowed
	}{
		{"duration", f.duration, true},
		{"think", f.think, false},
		{"retry-interval", f.retryInterval, false},
		{"retry-deadline", f.retryDeadline, false},
		{"timeout", f.timeout, false},
		{"verify-timeout", f.verifyTimeout, false},
		{"verify-quiet", f.verifyQuiet, false},
		{"progress", f.progress, true},
	} {
		switch {
		case d.v < 0:
			return fmt.Errorf("invalid --%s %s: must not be negative", d.name, d.v)
		case d.v == 0 && !d.zero:
			return fmt.Errorf("invalid --%s 0: must be positive", d.name)
		}
	}
	if f.verify != "" {
		if err := httpURL(f.verify); err != nil {
			return fmt.Errorf("invalid --verify %q: %v", f.verify, err)
		}
	}
	if f.out != "" {
		f.out = strings.TrimSuffix(strings.TrimSuffix(f.out, ".json"), ".csv")
		if fi, err := os.Stat(filepath.Dir(f.out)); err != nil || !fi.IsDir() {
			return fmt.Errorf("invalid --out %q: directory %s does not exist", f.out, filepath.Dir(f.out))
		}
	}
	return nil
}

// httpURL checks an http(s)://host[:port][/path] URL.
func httpURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("want http(s)://host:port[/path]")
	}
	return nil
}

// runLoad runs the load, prints progress and the summary, and verifies at rast-sim.
func (a *app) runLoad(cmd *cobra.Command, f loadFlags) error {
	ctx := cmd.Context()
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	logger, closeLog, err := a.logger("lps-load")
	if err != nil {
		return err
	}
	defer closeLog()
	// Each given-up alarm is an info line and each failed try a debug line: thousands when a
	// system is down, burying the progress lines. The summary and --out have the counts and
	// sample ids; an explicit --log-level shows them one by one.
	if !cmd.Flags().Changed("log-level") {
		logger = logger.WithOptions(zap.IncreaseLevel(zap.WarnLevel))
	}

	// The signals are taken before anything starts: the first stops the load, the second
	// abandons what is still in progress (or the wait at rast-sim).
	interrupts := make(chan os.Signal, 1)
	signal.Notify(interrupts, a.opts.Signals...)
	defer signal.Stop(interrupts)

	var v *verifier
	if f.verify != "" {
		v = newVerifier(f.verify)
		// Fail before a long run that could not be checked.
		before, err := v.fetch(ctx)
		if err != nil {
			return fmt.Errorf("--verify %s: %w", f.verify, err)
		}
		if f.prefix != "" {
			if n := len(ofRun(before, f.prefix)); n > 0 {
				fmt.Fprintf(stderr, "lps load: warning: rast-sim already has %d Request-Ids with prefix %q; they count as unknown or duplicated\n", n, f.prefix)
			}
		}
	}

	load, err := loadgen.New(loadgen.Config{
		URLs:          f.urls,
		Rate:          f.rate,
		Devices:       f.devices,
		Think:         f.think,
		Duration:      f.duration,
		RetryInterval: f.retryInterval,
		RetryDeadline: f.retryDeadline,
		Prefix:        f.prefix,
		Seed:          f.seed,
		Client:        &transport.Client{HTTP2: f.http2, Timeout: f.timeout},
		Logger:        logger.Named("load"),
	})
	if err != nil {
		return &ConfigError{err} // validate checked every field; kept for safety
	}
	model := fmt.Sprintf("open model, %g alarms/s", f.rate)
	if f.devices > 0 {
		model = fmt.Sprintf("closed model, %d devices, think %s", f.devices, f.think)
	}
	howLong := ", for " + f.duration.String()
	if f.duration == 0 {
		howLong = ", until Ctrl-C"
	}
	fmt.Fprintf(stderr, "lps load: %s%s, to %s (Request-Id prefix %s); Ctrl-C stops\n", model, howLong, strings.Join(f.urls, ", "), load.Prefix())

	start := time.Now()
	abandoned := runWithProgress(ctx, load, f, interrupts, stderr, start)
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		printSummary(stdout, f, model, load, nil, elapsed)
		return fmt.Errorf("load ended early: %w", err)
	}

	var problems []string
	var vr *verification
	if v != nil && !abandoned {
		if st := load.Stats(); st.Acked > 0 {
			fmt.Fprintf(stderr, "lps load: waiting up to %s for rast-sim to receive the %d acked alarms\n", f.verifyTimeout, st.Acked)
		}
		vr, err = v.await(ctx, load, f.verifyTimeout, f.verifyQuiet, interrupts)
		if err != nil {
			problems = append(problems, fmt.Sprintf("verifying at rast-sim: %v", err))
			vr = nil
		}
	}
	report := printSummary(stdout, f, model, load, vr, elapsed)

	if f.out != "" {
		if err := writeReport(f.out, report); err != nil {
			problems = append(problems, err.Error())
		} else {
			abs, _ := filepath.Abs(f.out)
			fmt.Fprintf(stderr, "lps load: wrote %s.json and %s.csv\n", abs, abs)
		}
	}
	if n := load.Stats().GivenUp; n > 0 {
		problems = append(problems, fmt.Sprintf("%d alarms given up (never answered 2xx)", n))
	}
	if vr != nil && report.Lost > 0 {
		problems = append(problems, fmt.Sprintf("%d acked alarms lost (never received by rast-sim)", report.Lost))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// runWithProgress runs the load until it ends, printing a progress line every f.progress. The
// first signal stops starting alarms, a second one abandons those in progress. It reports
// whether they were abandoned: an operator who stopped the load still wants it verified, one
// who abandoned it does not want to wait any more.
func runWithProgress(ctx context.Context, load *loadgen.Load, f loadFlags, interrupts <-chan os.Signal, stderr io.Writer, start time.Time) (abandoned bool) {
	runCtx, abandon := context.WithCancel(ctx)
	defer abandon()
	done := make(chan error, 1)
	go func() { done <- load.Run(runCtx) }()

	var tick <-chan time.Time
	if f.progress > 0 {
		t := time.NewTicker(f.progress)
		defer t.Stop()
		tick = t.C
	}
	last, lastAt := loadgen.Stats{}, start
	stopping := false
	for {
		select {
		case <-done:
			return abandoned
		case <-interrupts:
			if !stopping {
				stopping = true
				load.Stop()
				fmt.Fprintf(stderr, "lps load: stopping: no new alarms; the %d in progress get until the retry deadline (%s); interrupt again to abandon them\n",
					load.Stats().Outstanding, f.retryDeadline)
				continue
			}
			abandoned = true
			fmt.Fprintf(stderr, "lps load: abandoning the %d alarms in progress\n", load.Stats().Outstanding)
			abandon()
		case now := <-tick:
			st := load.Stats()
			fmt.Fprintln(stderr, progressLine(now.Sub(start), st, last, now.Sub(lastAt), load.Ledger().Latency()))
			last, lastAt = st, now
		}
	}
}

// progressLine is one line of progress: totals, the rates over the last interval, and the
// latency percentiles so far.
func progressLine(elapsed time.Duration, st, last loadgen.Stats, interval time.Duration, lat ledger.Latency) string {
	per := func(n int64) float64 {
		if interval <= 0 {
			return 0
		}
		return float64(n) / interval.Seconds()
	}
	s := fmt.Sprintf("lps load %6s: started %d (%.1f/s), acked %d (%.1f/s), outstanding %d, failed tries +%d, given up %d",
		elapsed.Round(100*time.Millisecond), st.Started, per(st.Started-last.Started), st.Acked, per(st.Acked-last.Acked),
		st.Outstanding, st.Failures-last.Failures, st.GivenUp)
	if lat.Count > 0 {
		s += fmt.Sprintf(", latency p50 %s p99 %s", ledger.RoundDuration(lat.P50), ledger.RoundDuration(lat.P99))
	}
	return s
}

// printSummary prints the summary table and returns the ledger's report: compared with what
// rast-sim received when vr is set, else without the backend's side.
func printSummary(w io.Writer, f loadFlags, model string, load *loadgen.Load, vr *verification, elapsed time.Duration) ledger.Report {
	st := load.Stats()
	var report ledger.Report
	if vr != nil {
		report = load.Ledger().Compare(vr.received)
		report.Name = load.Prefix()
	} else {
		// Compare with nothing received counts every acked id as lost; unverified, nothing is.
		report = load.Ledger().Compare(nil)
		report.Lost, report.LostIDs = 0, nil
		report.Name = load.Prefix() + " (not verified)"
	}
	run := ledger.Run{
		Title:   fmt.Sprintf("%s, %s, %s", load.Prefix(), model, elapsed.Round(time.Millisecond)),
		GivenUp: int(st.GivenUp),
		Entries: load.Ledger().Entries(),
	}
	if vr != nil {
		run.Verified, run.Waited, run.Why, run.Others = true, vr.waited, vr.why, vr.others
	}
	ledger.WriteTable(w, report, run)
	return report
}

// writeReport writes the report to out.json and out.csv with the ledger's writers.
func writeReport(out string, r ledger.Report) error {
	for _, w := range []struct {
		ext   string
		write func(io.Writer, ...ledger.Report) error
	}{{".json", ledger.WriteJSON}, {".csv", ledger.WriteCSV}} {
		file, err := os.Create(out + w.ext)
		if err != nil {
			return fmt.Errorf("writing --out: %w", err)
		}
		err = w.write(file, r)
		if cerr := file.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing --out %s: %w", out+w.ext, err)
		}
	}
	return nil
}

// verifier asks rast-sim which Request-Ids it received (GET /stats/requests), as the fault
// suite does.
type verifier struct {
	sim *rastsim.Client
}

func newVerifier(base string) *verifier {
	return &verifier{sim: rastsim.NewClient(base, &http.Client{Timeout: verifyFetchTimeout})}
}

// fetch returns every Request-Id rast-sim received and how often.
func (v *verifier) fetch(ctx context.Context) (map[string]int, error) {
	return v.sim.Received(ctx)
}

// verification is what rast-sim had when the wait ended.
type verification struct {
	// received are the ids of this run (by prefix) and how often each arrived.
	received map[string]int
	// others counts the distinct ids of other runs or sources, left out of the comparison.
	others int
	waited time.Duration
	why    string
}

// ofRun keeps the ids of the run with prefix.
func ofRun(all map[string]int, prefix string) map[string]int {
	out := map[string]int{}
	for id, n := range all {
		if strings.HasPrefix(id, prefix+"-") {
			out[id] = n
		}
	}
	return out
}

// await polls rast-sim until it has every acked alarm of the load, nothing new arrived for
// quiet, timeout passed or a signal came, and returns what it had then. It fails only when
// rast-sim never answered.
func (v *verifier) await(ctx context.Context, load *loadgen.Load, timeout, quiet time.Duration, interrupts <-chan os.Signal) (*verification, error) {
	var acked []string
	for _, e := range load.Ledger().Entries() {
		if e.Acked {
			acked = append(acked, e.ID)
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(verifyPoll)
	defer tick.Stop()
	var (
		res        *verification
		lastErr    error
		copies     = -1
		lastChange = start
	)
	for {
		all, err := v.fetch(ctx)
		now := time.Now()
		if err != nil && ctx.Err() == nil {
			lastErr = err
		}
		if err == nil {
			res = &verification{received: ofRun(all, load.Prefix())}
			res.others = len(all) - len(res.received)
			res.waited = now.Sub(start)
			missing, n := 0, 0
			for _, id := range acked {
				if res.received[id] == 0 {
					missing++
				}
			}
			for _, c := range res.received {
				n += c
			}
			if missing == 0 {
				res.why = "every acked alarm arrived"
				return res, nil
			}
			if n != copies {
				copies, lastChange = n, now
			} else if now.Sub(lastChange) >= quiet {
				res.why = fmt.Sprintf("%d acked alarms missing, nothing new for %s", missing, quiet)
				return res, nil
			}
			res.why = fmt.Sprintf("%d acked alarms missing at --verify-timeout %s", missing, timeout)
		}
		select {
		case <-ctx.Done():
			if res == nil {
				if lastErr == nil {
					lastErr = ctx.Err()
				}
				return nil, lastErr
			}
			return res, nil
		case <-interrupts:
			if res == nil {
				return nil, errors.New("interrupted before rast-sim answered")
			}
			res.why = "interrupted; " + res.why
			return res, nil
		case <-tick.C:
		}
	}
}

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
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/config"
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

// defaultRequestNames is the original's list of the legacy backend's commands, where the
// project's shared data sits beside the repository (../shared/data beside a checkout run from
// its top directory).
var defaultRequestNames = filepath.Join("..", "shared", "data", "rast", "all_request_names.txt")

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
	background    float64
	backgroundURL string
	requestNames  string
	names         []string // read from requestNames by validate
}

// alarms reports whether the run sends alarms: without --rate and --devices only the
// background runs.
func (f *loadFlags) alarms() bool { return f.rate > 0 || f.devices > 0 }

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

--background N adds the original experiments' background workload (N = 70 there): N requests
per second, evenly paced, of commands drawn at random from --request-names (never the alarm
command), POSTed straight to rast-sim at --background-url/<COMMAND> for the same --duration,
without retries, at most ` + strconv.Itoa(loadgen.DefaultBackgroundMaxInFlight) + ` waiting for an answer (those due beyond are skipped and
counted). Their Request-Ids are bg-<prefix>-0000001, …, which --verify leaves out. Given
without --rate and --devices, only the background runs.

A progress line goes to stderr every --progress, the summary to stdout. With --verify, rast-sim
is asked afterwards which Request-Ids it received, and every acked alarm it lacks is lost.
Exit status 1 when an alarm was lost or given up, or a background request failed or was skipped.
Ctrl-C stops starting alarms and background requests and lets those in progress finish (alarms
within --retry-deadline); a second Ctrl-C abandons them.`,
		Example: `  lps load --rate 300 --duration 60s --verify http://127.0.0.1:<rast-sim port>
  lps load --devices 250 --duration 60s --out results/step-250
  lps load --devices 250 --background 70 --background-url http://127.0.0.1:<rast-sim port> --request-names all_request_names.txt
  lps load --background 70 --duration 10m --background-url http://127.0.0.1:<rast-sim port>   # the background alone
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
	fs.StringVar(&f.prefix, "prefix", "", "Request-Id prefix, ids are <prefix>-0000001, … and the background's bg-<prefix>-0000001, … (empty: a random run id; must not start with bg-)")
	fs.Uint64Var(&f.seed, "seed", 42, "seed of the branch draws and of the background's command draws (0: 42)")
	fs.BoolVar(&f.http2, "http2", false, "send the alarms as HTTP/2 over cleartext with prior knowledge")
	fs.StringVar(&f.verify, "verify", "", "rast-sim's base URL: after the load, compare what it received (GET /stats/requests) with what was acked")
	fs.DurationVar(&f.verifyTimeout, "verify-timeout", defaultVerifyTimeout, "with --verify, wait at most this long for rast-sim to receive every acked alarm")
	fs.DurationVar(&f.verifyQuiet, "verify-quiet", defaultVerifyQuiet, "with --verify, stop waiting when nothing new arrived at rast-sim for this long")
	fs.StringVar(&f.out, "out", "", "write the report to FILE.json and FILE.csv (a .json or .csv ending of FILE is dropped)")
	fs.DurationVar(&f.progress, "progress", defaultProgress, "interval of the progress lines on stderr (0: none)")
	fs.Float64Var(&f.background, "background", 0, "background workload: this many requests/s of random non-alarm commands straight to rast-sim (the original experiments: 70; 0: none); without --rate and --devices it runs alone")
	fs.StringVar(&f.backgroundURL, "background-url", "", "rast-sim's base URL for --background (empty: --verify's URL)")
	fs.StringVar(&f.requestNames, "request-names", defaultRequestNames, "with --background, the file of command names to draw from, one a line (the alarm command is left out)")
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
	if !(f.background >= 0) || math.IsInf(f.background, 0) {
		return fmt.Errorf("invalid --background %g: must be a number of requests per second, 0 for none", f.background)
	}
	switch {
	case rateSet && devicesSet:
		return errors.New("invalid --rate with --devices: set only one, --rate (open model) or --devices (closed model)")
	case !rateSet && !devicesSet && f.background == 0:
		return errors.New("missing --rate or --devices: set one, --rate N alarms/s (open model) or --devices N (closed model); or --background N alone for the background workload")
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
	if loadgen.IsBackgroundID(f.prefix + "-") {
		return fmt.Errorf("invalid --prefix %q: alarm ids must not start with %q, the background's", f.prefix, loadgen.BackgroundIDPrefix)
	}
	if f.background > 0 {
		if err := f.validateBackground(cmd); err != nil {
			return err
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

// validateBackground checks the flags of --background and reads the command names.
func (f *loadFlags) validateBackground(cmd *cobra.Command) error {
	if !f.alarms() {
		// Both are about alarms; with none they would be silently empty.
		for _, name := range []string{"verify", "out"} {
			if cmd.Flags().Changed(name) {
				return fmt.Errorf("invalid --%s with only --background: it reports on alarms; add --rate or --devices", name)
			}
		}
	}
	if f.backgroundURL == "" {
		f.backgroundURL = f.verify // both are rast-sim's base URL
	}
	if f.backgroundURL == "" {
		return errors.New("missing --background-url: rast-sim's base URL, where --background sends its commands")
	}
	if err := httpURL(f.backgroundURL); err != nil {
		return fmt.Errorf("invalid --background-url %q: %v", f.backgroundURL, err)
	}
	if !cmd.Flags().Changed("request-names") {
		if _, err := os.Stat(f.requestNames); err != nil {
			wd, _ := os.Getwd()
			return fmt.Errorf("missing --request-names: the default %s is not there (from %s); set --request-names FILE, the command names for --background", f.requestNames, wd)
		}
	}
	names, err := loadgen.LoadNames(f.requestNames)
	if err != nil {
		return fmt.Errorf("invalid --request-names %q: %v", f.requestNames, err)
	}
	f.names = names
	return nil
}

// backgroundFlag names the flag of a field of loadgen.BackgroundConfig.
var backgroundFlag = map[string]string{"URL": "background-url", "Rate": "background", "Names": "request-names", "Run": "prefix", "Duration": "duration"}

// backgroundFlagError turns NewBackground's *config.FieldError into the one-line error naming
// the flag that sets the field; a command name's error names the file it came from.
func backgroundFlagError(err error, f loadFlags) error {
	var fe *config.FieldError
	if !errors.As(err, &fe) || backgroundFlag[fe.Field] == "" {
		return err
	}
	if fe.Field == "Names" {
		return fmt.Errorf("invalid --request-names %q: %s (%v)", f.requestNames, fe.Reason, fe.Value)
	}
	return fmt.Errorf("invalid --%s %v: %s", backgroundFlag[fe.Field], fe.Value, fe.Reason)
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

// workloads are what one `lps load` runs: the alarms, the background, or both.
type workloads struct {
	load *loadgen.Load       // nil: only the background
	bg   *loadgen.Background // nil: no background
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

	var w workloads
	var what []string
	run := f.prefix // names the background's ids when there are no alarms
	if f.alarms() {
		w.load, err = loadgen.New(loadgen.Config{
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
		run = w.load.Prefix() // the background's ids are bg-<the alarms' prefix>-N
		what = append(what, fmt.Sprintf("%s, to %s (Request-Id prefix %s)", alarmModel(f), strings.Join(f.urls, ", "), w.load.Prefix()))
	}
	if f.background > 0 {
		w.bg, err = loadgen.NewBackground(loadgen.BackgroundConfig{
			URL:   f.backgroundURL,
			Rate:  f.background,
			Names: f.names,
			Seed:  f.seed,
			Run:   run,
			// HTTP/1.1 whatever --http2 says: the background stands for the legacy clients,
			// and the legacy backend speaks only HTTP/1.1.
			Client:   &transport.Client{Timeout: f.timeout},
			Duration: f.duration,
			Logger:   logger.Named("background"),
		})
		if err != nil {
			return &ConfigError{backgroundFlagError(err, f)}
		}
		what = append(what, fmt.Sprintf("background %g requests/s of %d commands, to %s (Request-Id prefix %s)",
			f.background, len(w.bg.Names()), f.backgroundURL, w.bg.Prefix()))
	}
	howLong := "for " + f.duration.String()
	if f.duration == 0 {
		howLong = "until Ctrl-C"
	}
	fmt.Fprintf(stderr, "lps load: %s, %s; Ctrl-C stops\n", strings.Join(what, "; "), howLong)

	start := time.Now()
	abandoned := runWithProgress(ctx, &w, f, interrupts, stderr, start)
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		printSummary(stdout, f, &w, nil, elapsed)
		return fmt.Errorf("load ended early: %w", err)
	}

	var problems []string
	var vr *verification
	if v != nil && !abandoned && w.load != nil {
		if st := w.load.Stats(); st.Acked > 0 {
			fmt.Fprintf(stderr, "lps load: waiting up to %s for rast-sim to receive the %d acked alarms\n", f.verifyTimeout, st.Acked)
		}
		vr, err = v.await(ctx, &w, f.verifyTimeout, f.verifyQuiet, interrupts)
		if err != nil {
			problems = append(problems, fmt.Sprintf("verifying at rast-sim: %v", err))
			vr = nil
		}
	}
	report := printSummary(stdout, f, &w, vr, elapsed)

	if f.out != "" && w.load != nil {
		if err := writeReport(f.out, report); err != nil {
			problems = append(problems, err.Error())
		} else {
			abs, _ := filepath.Abs(f.out)
			fmt.Fprintf(stderr, "lps load: wrote %s.json and %s.csv\n", abs, abs)
		}
	}
	if w.load != nil {
		if n := w.load.Stats().GivenUp; n > 0 {
			problems = append(problems, fmt.Sprintf("%d alarms given up (never answered 2xx)", n))
		}
	}
	if vr != nil && report.Lost > 0 {
		problems = append(problems, fmt.Sprintf("%d acked alarms lost (never received by rast-sim)", report.Lost))
	}
	problems = append(problems, backgroundProblems(w.bg)...)
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// alarmModel describes the alarms' model.
func alarmModel(f loadFlags) string {
	if f.devices > 0 {
		return fmt.Sprintf("closed model, %d devices, think %s", f.devices, f.think)
	}
	return fmt.Sprintf("open model, %g alarms/s", f.rate)
}

// backgroundProblems are what makes a background run fail: a request that failed or was
// skipped means rast-sim did not see the load the run was meant to put on it.
func backgroundProblems(bg *loadgen.Background) []string {
	if bg == nil {
		return nil
	}
	var out []string
	st := bg.Stats()
	if st.Failed > 0 {
		out = append(out, fmt.Sprintf("%d background requests failed (first: %v%s)", st.Failed, bg.FirstError(), notFoundHint(bg.FirstError())))
	}
	if st.Skipped > 0 {
		out = append(out, fmt.Sprintf("%d background requests skipped (%d were waiting for rast-sim's answer)", st.Skipped, bg.MaxInFlight()))
	}
	return out
}

// notFoundHint explains a 404: rast-sim answers it for a command its mapping lacks, and its
// default mapping knows only the alarm command.
func notFoundHint(err error) string {
	var se *transport.StatusError
	if errors.As(err, &se) && se.Status == http.StatusNotFound {
		return "; rast-sim knows only the commands of its --mapping: start it with --mapping gs_requests_mapping_prod_workload.json"
	}
	return ""
}

// runWithProgress runs the workloads until they end, printing a progress line every
// f.progress. The first signal stops starting alarms and background requests, a second one
// abandons those in progress. It reports whether they were abandoned: an operator who stopped
// the load still wants it verified, one who abandoned it does not want to wait any more.
func runWithProgress(ctx context.Context, w *workloads, f loadFlags, interrupts <-chan os.Signal, stderr io.Writer, start time.Time) (abandoned bool) {
	runCtx, abandon := context.WithCancel(ctx)
	defer abandon()
	done := make(chan struct{}, 2)
	pending := 0
	if w.load != nil {
		pending++
		go func() { w.load.Run(runCtx); done <- struct{}{} }()
	}
	if w.bg != nil {
		pending++
		go func() { w.bg.Run(runCtx); done <- struct{}{} }()
	}

	var tick <-chan time.Time
	if f.progress > 0 {
		t := time.NewTicker(f.progress)
		defer t.Stop()
		tick = t.C
	}
	last, lastBg, lastAt := loadgen.Stats{}, loadgen.BackgroundStats{}, start
	stopping := false
	for pending > 0 {
		select {
		case <-done:
			pending--
		case <-interrupts:
			if !stopping {
				stopping = true
				var parts []string
				if w.load != nil {
					w.load.Stop()
					parts = append(parts, fmt.Sprintf("no new alarms; the %d in progress get until the retry deadline (%s)", w.load.Stats().Outstanding, f.retryDeadline))
				}
				if w.bg != nil {
					w.bg.Stop()
					parts = append(parts, fmt.Sprintf("no new background requests; the %d in flight get their answer or --timeout", w.bg.Stats().InFlight))
				}
				fmt.Fprintf(stderr, "lps load: stopping: %s; interrupt again to abandon them\n", strings.Join(parts, "; "))
				continue
			}
			abandoned = true
			var parts []string
			if w.load != nil {
				parts = append(parts, fmt.Sprintf("the %d alarms in progress", w.load.Stats().Outstanding))
			}
			if w.bg != nil {
				parts = append(parts, fmt.Sprintf("the %d background requests in flight", w.bg.Stats().InFlight))
			}
			fmt.Fprintf(stderr, "lps load: abandoning %s\n", strings.Join(parts, " and "))
			abandon()
		case now := <-tick:
			interval := now.Sub(lastAt)
			var line string
			if w.load != nil {
				st := w.load.Stats()
				line = progressLine(now.Sub(start), st, last, interval, w.load.Ledger().Latency())
				last = st
			} else {
				line = fmt.Sprintf("lps load %6s: only the background", now.Sub(start).Round(100*time.Millisecond))
			}
			if w.bg != nil {
				st := w.bg.Stats()
				line += backgroundProgress(st, lastBg, interval)
				lastBg = st
			}
			fmt.Fprintln(stderr, line)
			lastAt = now
		}
	}
	return abandoned
}

// perSecond is n over interval.
func perSecond(n int64, interval time.Duration) float64 {
	if interval <= 0 {
		return 0
	}
	return float64(n) / interval.Seconds()
}

// progressLine is one line of progress: totals, the rates over the last interval, and the
// latency percentiles so far.
func progressLine(elapsed time.Duration, st, last loadgen.Stats, interval time.Duration, lat ledger.Latency) string {
	s := fmt.Sprintf("lps load %6s: started %d (%.1f/s), acked %d (%.1f/s), outstanding %d, failed tries +%d, given up %d",
		elapsed.Round(100*time.Millisecond), st.Started, perSecond(st.Started-last.Started, interval), st.Acked, perSecond(st.Acked-last.Acked, interval),
		st.Outstanding, st.Failures-last.Failures, st.GivenUp)
	if lat.Count > 0 {
		s += fmt.Sprintf(", latency p50 %s p99 %s", ledger.RoundDuration(lat.P50), ledger.RoundDuration(lat.P99))
	}
	return s
}

// backgroundProgress is the background's part of a progress line.
func backgroundProgress(st, last loadgen.BackgroundStats, interval time.Duration) string {
	return fmt.Sprintf("; background sent %d (%.1f/s), in flight %d, failed +%d, skipped +%d",
		st.Sent, perSecond(st.Sent-last.Sent, interval), st.InFlight, st.Failed-last.Failed, st.Skipped-last.Skipped)
}

// printSummary prints the summary table and returns the ledger's report: compared with what
// rast-sim received when vr is set, else without the backend's side. The background's rows
// follow the alarms'.
func printSummary(w io.Writer, f loadFlags, wl *workloads, vr *verification, elapsed time.Duration) ledger.Report {
	var report ledger.Report
	if load := wl.load; load != nil {
		st := load.Stats()
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
			Title:   fmt.Sprintf("%s, %s, %s", load.Prefix(), alarmModel(f), elapsed.Round(time.Millisecond)),
			GivenUp: int(st.GivenUp),
			Entries: load.Ledger().Entries(),
		}
		if vr != nil {
			run.Verified, run.Waited, run.Why, run.Others = true, vr.waited, vr.why, vr.others
		}
		ledger.WriteTable(w, report, run)
	}
	if bg := wl.bg; bg != nil {
		writeBackgroundTable(w, f, wl, vr, elapsed)
	}
	return report
}

// writeBackgroundTable writes the background's rows of the summary, in the table's two
// columns.
func writeBackgroundTable(w io.Writer, f loadFlags, wl *workloads, vr *verification, elapsed time.Duration) {
	bg := wl.bg
	st := bg.Stats()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if wl.load == nil {
		fmt.Fprintf(tw, "run\t%s, only the background, %s\n", bg.Prefix(), elapsed.Round(time.Millisecond))
	}
	fmt.Fprintf(tw, "background sent\t%d\t%g requests/s of %d commands to %s\n", st.Sent, f.background, len(bg.Names()), f.backgroundURL)
	pct := ""
	if st.Sent > 0 {
		pct = fmt.Sprintf("%.1f%%", 100*float64(st.OK)/float64(st.Sent))
	}
	fmt.Fprintf(tw, "background ok\t%d\t%s\n", st.OK, pct)
	failed := fmt.Sprintf("background failed\t%d", st.Failed)
	if err := bg.FirstError(); err != nil {
		failed += fmt.Sprintf("\tfirst: %v", err)
	}
	fmt.Fprintln(tw, failed)
	skipped := fmt.Sprintf("background skipped\t%d", st.Skipped)
	if st.Skipped > 0 {
		skipped += fmt.Sprintf("\t%d were waiting for an answer", bg.MaxInFlight())
	}
	fmt.Fprintln(tw, skipped)
	if r := bg.Rate(); r > 0 {
		fmt.Fprintf(tw, "background rate\t%.1f/s\tfrom the first send to the last\n", r)
	}
	if vr != nil {
		fmt.Fprintf(tw, "background received\t%d\tdistinct ids at rast-sim, left out of the alarms' counts\n", vr.background)
	}
	tw.Flush()
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
	// background counts the distinct ids of this run's background, also left out: they are
	// not alarms (see loadgen.BackgroundIDPrefix).
	background int
	waited     time.Duration
	why        string
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
func (v *verifier) await(ctx context.Context, w *workloads, timeout, quiet time.Duration, interrupts <-chan os.Signal) (*verification, error) {
	load := w.load
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
			// The alarms' ids are "<prefix>-N", the background's "bg-<prefix>-N": ofRun never
			// mixes them up, as an alarm prefix may not start with bg- (loadgen.Config.Prefix).
			res = &verification{received: ofRun(all, load.Prefix())}
			if w.bg != nil {
				res.background = len(ofRun(all, w.bg.Prefix()))
			}
			res.others = len(all) - len(res.received) - res.background
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

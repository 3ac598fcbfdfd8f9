// Package rastsim is the simulated legacy backend, the Go successor of the original's Kotlin
// "RAST simulator" (jtpgames/Simulators, ars.kt): it answers POST /<COMMAND> for every command
// of its request mapping with "Success" after the delay its model predicts, and counts what it
// received per Request-Id so that experiments can prove nothing was lost or doubled.
//
// The delay model (mascots2022, the original's default) is a linear regression over PR1, the
// requests in flight when a command arrived, PR3, the requests that finished since, and the
// command's request type; see Predict. Besides the shared admin endpoints (/healthz, /readyz,
// /metrics) the simulator serves its counts at GET /stats and every request id with the times
// it arrived at GET /stats/requests.
package rastsim

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lpsdev/lps/config"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/transport"
)

// DefaultListen is the original simulator's port.
const DefaultListen = ":1337"

// corrEpsilon ends the correction loop: a remaining sleep this short is not worth a timer (the
// original's 1E-4 s).
const corrEpsilon = 1e-4

// Config configures a Sim. Zero fields take the documented defaults.
type Config struct {
	// Server is where and how to listen; an empty Listen means DefaultListen (not
	// roles.DefaultListen: the original simulator listened on 1337).
	roles.Server
	// Model is the delay model: "" or ModelMascots2022 (the default, the original's -m 0), or
	// ModelNone, which answers at once. Names are case-insensitive.
	Model string
	// CorrMax is how many times a command's delay is re-predicted, after each sleep, with PR3
	// = the requests that finished meanwhile (the original's --corr_max). Zero keeps PR3 at 0.
	CorrMax int
	// MappingFile is a request mapping in the original's JSON format ({"CMD": type, ...});
	// "" means DefaultMapping, which knows only the alarm command.
	MappingFile string
	// Mapping, when set, is used instead of loading MappingFile (which must then be ""); for
	// callers that hold a mapping already, such as tests.
	Mapping *Mapping
	// Predictor, when set, replaces the model named by Model (which must then be ""): the seam
	// for other models and for tests. nil means the model Model names.
	Predictor Predictor
}

// Sim is a running simulated backend.
type Sim struct {
	svc     *roles.HTTPService
	log     *zap.Logger
	mapping *Mapping
	pred    Predictor // nil: ModelNone
	model   string
	corrMax int
	metrics *metrics
	ledger  ledger

	stopOnce sync.Once
	stopping chan struct{} // closed when Run's context ends: sleeping commands answer at once
}

// New validates cfg, loads the mapping and opens the listener.
func New(cfg Config) (*Sim, error) {
	if cfg.Listen == "" && cfg.Listener == nil {
		cfg.Listen = DefaultListen
	}
	cfg.SetDefaults()
	if err := cfg.Server.Validate(); err != nil {
		return nil, err
	}
	if cfg.CorrMax < 0 {
		return nil, config.Invalid("CorrMax", cfg.CorrMax, "must not be negative")
	}
	s := &Sim{log: cfg.Logger, corrMax: cfg.CorrMax, model: cfg.Model, stopping: make(chan struct{})}
	switch {
	case cfg.Predictor != nil && cfg.Model != "":
		return nil, fmt.Errorf("model %q and a Predictor are both set; set one", cfg.Model)
	case cfg.Predictor != nil:
		s.pred, s.model = cfg.Predictor, "custom"
	default:
		p, err := predictorFor(cfg.Model)
		if err != nil {
			return nil, config.Invalid("Model", cfg.Model, "%v", err)
		}
		s.pred = p
		if s.model == "" {
			s.model = ModelMascots2022
		}
	}
	if s.pred == nil && cfg.CorrMax > 0 {
		return nil, config.Invalid("CorrMax", cfg.CorrMax, "needs a delay model, but the model is %s", ModelNone)
	}

	switch {
	case cfg.Mapping != nil && cfg.MappingFile != "":
		return nil, fmt.Errorf("mapping file %q and a Mapping are both set; set one", cfg.MappingFile)
	case cfg.Mapping != nil:
		s.mapping = cfg.Mapping
	case cfg.MappingFile != "":
		m, err := loadMappingFile(cfg.MappingFile)
		if err != nil {
			return nil, config.Invalid("MappingFile", cfg.MappingFile, "%v", err)
		}
		s.mapping = m
	default:
		s.mapping = DefaultMapping()
	}

	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("registering metrics: %w", err)
	}
	s.metrics = m
	s.ledger.received = newIDCounts()
	s.ledger.byCommand = make(map[string]*CommandCounts)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", s.serveStats)
	mux.HandleFunc("GET /stats/requests", s.serveRequests)
	mux.HandleFunc("/", s.serveCommand) // commands are upper-case ID_* names, POST only
	svc, err := roles.NewHTTPService(cfg.Server, mux, nil)
	if err != nil {
		return nil, err
	}
	s.svc = svc
	return s, nil
}

func loadMappingFile(path string) (*Mapping, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening mapping: %w", err)
	}
	defer f.Close()
	m, err := LoadMapping(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// Addr is where the Sim listens.
func (s *Sim) Addr() net.Addr { return s.svc.Addr() }

// Run serves until ctx is done. Then commands still sleeping end their delay early and answer
// (they were received and counted, so answering keeps the ledger consistent with what their
// senders saw), and Run returns once every request finished.
func (s *Sim) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.stopOnce.Do(func() { close(s.stopping) }) })
	defer stop()
	s.log.Info("simulating the legacy backend", zap.String("model", s.model), zap.Int("corr_max", s.corrMax),
		zap.Int("commands", s.mapping.Len()))
	return s.svc.Run(ctx)
}

// serveCommand runs one command: look it up, count it, sleep as the model predicts, answer.
func (s *Sim) serveCommand(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	idx, ok := s.mapping.lookup(r.URL.Path)
	if !ok {
		s.metrics.unknown.Inc()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte("Command not found"))
		return
	}
	cmd := &s.mapping.entries[idx]
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		transport.WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s; use POST", r.Method, cmd.name))
		return
	}
	// Read the body, though the simulator ignores it: only once it is read does net/http watch
	// the connection, so that a client that goes away cancels the request's context and ends
	// its sleep.
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		transport.WriteErr(w, transport.BodyReadError(err))
		return
	}
	id := transport.RequestIDFrom(r.Context())

	a := s.arrive(id, cmd.name)
	s.logCommand("CMD-START ", id, cmd.name, zap.String("request_id", id), zap.Int("pr1", a.pr1))
	res := s.simulate(r.Context(), start, a, cmd.typ)
	s.finish()
	measured := time.Since(start)

	s.metrics.predicted.Observe(res.predicted)
	s.metrics.measured.Observe(measured.Seconds())
	if s.log.Level().Enabled(zapcore.InfoLevel) {
		fields := []zap.Field{
			zap.String("request_id", id),
			zap.Duration("pred_process_time", seconds(res.predicted)),
			zap.Duration("slept", seconds(res.slept)),
			zap.Duration("process_time", measured),
			zap.Int("pr1", a.pr1), zap.Int("pr3", res.pr3),
		}
		if res.aborted != "" {
			fields = append(fields, zap.String("aborted", res.aborted))
		}
		s.logCommand("CMD-ENDE  ", id, cmd.name, fields...)
	}

	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Process-Time", strconv.FormatFloat(measured.Seconds(), 'f', -1, 64))
	h.Set("X-Pred-Process-Time", strconv.FormatFloat(res.slept, 'f', -1, 64))
	w.WriteHeader(http.StatusOK)
	w.Write([]byte("Success"))
}

// logCommand writes the original's audit line "UID: <id>, CMD-START <CMD>" with fields (the
// original padded the marker to nine characters, hence the two spaces after CMD-ENDE). The
// message is only built when info is enabled; Check keeps the line cheap on this hot path.
func (s *Sim) logCommand(marker, id, cmd string, fields ...zap.Field) {
	if !s.log.Level().Enabled(zapcore.InfoLevel) {
		return // do not build the message
	}
	if ce := s.log.Check(zapcore.InfoLevel, "UID: "+id+", "+marker+cmd); ce != nil {
		ce.Write(fields...)
	}
}

// outcome is what simulate did, in seconds.
type outcome struct {
	predicted float64 // the largest (clamped) prediction, as the original logged it
	slept     float64 // the sleeps asked for: X-Pred-Process-Time
	pr3       int     // PR3 of the last prediction
	aborted   string  // why the sleep ended early: "client gone" or "shutdown"; "" if it did not
}

// simulate sleeps as the model predicts, as the original's simulateProcessingTimePlugin did:
// predict with PR3 = 0 at arrival and sleep what remains of the prediction; then, if that sleep
// happened, up to CorrMax times re-predict with PR3 = the requests finished since arrival and
// sleep what remains, stopping once nothing remains. The sleeps end early when the client goes
// away or the Sim shuts down; no lock is held while sleeping.
func (s *Sim) simulate(ctx context.Context, start time.Time, a arrival, typ int) outcome {
	var res outcome
	if s.pred == nil {
		return res
	}
	res.predicted = max(0, s.pred.Predict(a.pr1, 0, typ))
	remaining := res.predicted - time.Since(start).Seconds()
	if remaining <= 0 {
		return res
	}
	for i := 0; ; i++ {
		slept, why := s.sleep(ctx, remaining)
		res.slept += slept
		if why != "" {
			res.aborted = why
			return res
		}
		if i == s.corrMax {
			return res
		}
		res.pr3 = s.finishedSince(a)
		p := max(0, s.pred.Predict(a.pr1, res.pr3, typ))
		res.predicted = max(res.predicted, p)
		remaining = p - time.Since(start).Seconds()
		if remaining <= corrEpsilon {
			return res
		}
	}
}

// sleep waits d seconds or until the client goes away or the Sim stops. It returns the seconds
// it was asked to sleep, or when cut short those it slept and why.
func (s *Sim) sleep(ctx context.Context, d float64) (float64, string) {
	begin := time.Now()
	t := time.NewTimer(seconds(d))
	defer t.Stop()
	select {
	case <-t.C:
		return d, ""
	case <-ctx.Done():
		return time.Since(begin).Seconds(), "client gone"
	case <-s.stopping:
		return time.Since(begin).Seconds(), "shutdown"
	}
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

func (s *Sim) serveStats(w http.ResponseWriter, r *http.Request) {
	transport.WriteJSON(w, http.StatusOK, s.Counts())
}

// RequestsBody is the answer of GET /stats/requests.
type RequestsBody struct {
	// Requests maps every request id received to the number of times it arrived.
	Requests map[string]int `json:"requests"`
}

// serveRequests writes RequestsBody entry by entry from a copy of the ledger. An hour of
// alarms is millions of ids: a copy of the map and encoding/json's sorted keys and whole-body
// buffer made this answer the simulator's largest use of memory (more than 40 MB at 60,000 ids),
// where the copy is 4 bytes a load generator's id. The ids are in no particular order.
func (s *Sim) serveRequests(w http.ResponseWriter, r *http.Request) {
	snap := s.receivedSnapshot()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 32<<10)
	bw.WriteString(`{"requests":{`)
	snap.writeJSON(bw)
	bw.WriteString("}}\n")
	bw.Flush()
}

// metrics are the simulator's own Prometheus metrics; the HTTP server's come from transport.
type metrics struct {
	requests   *prometheus.CounterVec
	unknown    prometheus.Counter
	duplicates prometheus.Counter
	distinct   prometheus.Gauge
	inFlight   prometheus.Gauge
	predicted  prometheus.Histogram
	measured   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	buckets := []float64{.001, .0025, .005, .01, .02, .03, .04, .05, .075, .1, .25, .5, 1, 2.5, 5, 10}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lps_rastsim_requests_total",
			Help: "Commands received, by command.",
		}, []string{"command"}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lps_rastsim_unknown_commands_total",
			Help: "Requests for commands the mapping does not know (answered 404).",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lps_rastsim_duplicates_total",
			Help: "Commands whose Request-Id had been received before.",
		}),
		distinct: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lps_rastsim_distinct_requests",
			Help: "Distinct Request-Ids received.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lps_rastsim_in_flight",
			Help: "Commands being processed (what the next command sees as PR1).",
		}),
		predicted: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lps_rastsim_predicted_process_time_seconds",
			Help:    "Processing time the model predicted, clamped at 0.",
			Buckets: buckets,
		}),
		measured: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lps_rastsim_process_time_seconds",
			Help:    "Measured processing time of a command (X-Process-Time).",
			Buckets: buckets,
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.unknown, m.duplicates, m.distinct, m.inFlight, m.predicted, m.measured} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

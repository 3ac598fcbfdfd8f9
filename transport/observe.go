package transport

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Metrics instruments a role's HTTP server: requests by status code, method and protocol
// (so a run can prove a hop really spoke HTTP/2), their latency, and the requests in flight.
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inflight prometheus.Gauge
}

// NewMetrics registers the HTTP server metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lps_http_requests_total",
			Help: "HTTP requests served, by status code, method and protocol.",
		}, []string{"code", "method", "proto"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lps_http_request_duration_seconds",
			Help:    "Time to serve an HTTP request.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"code"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lps_http_requests_in_flight",
			Help: "HTTP requests being served.",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.inflight)
	return m
}

// Wrap instruments next; it also writes one access log line per request, carrying its
// Request-Id, when logger is enabled at info level.
func (m *Metrics) Wrap(next http.Handler, logger *zap.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.inflight.Inc()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		m.inflight.Dec()
		elapsed := time.Since(start)
		code := strconv.Itoa(rec.status)
		m.requests.WithLabelValues(code, r.Method, r.Proto).Inc()
		m.latency.WithLabelValues(code).Observe(elapsed.Seconds())
		if ce := logger.Check(zapcore.InfoLevel, "request"); ce != nil {
			ce.Write(zap.String("request_id", r.Header.Get(RequestIDHeader)), zap.String("method", r.Method),
				zap.String("path", r.URL.Path), zap.String("proto", r.Proto), zap.Int("status", rec.status),
				zap.Duration("duration", elapsed), zap.String("remote", r.RemoteAddr))
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Admin serves the endpoints every role has besides its API: /healthz (the process is alive),
// /readyz (its upstream or broker is usable) and /metrics (Prometheus).
type Admin struct {
	// Gatherer provides /metrics; nil means no metrics endpoint.
	Gatherer prometheus.Gatherer
	// Ready reports readiness; nil means always ready. A non-nil error answers 503 with it.
	Ready func(ctx context.Context) error
}

// Register adds the admin endpoints to mux.
func (a Admin) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if a.Ready != nil {
			if err := a.Ready(r.Context()); err != nil {
				WriteError(w, http.StatusServiceUnavailable, err.Error())
				return
			}
		}
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	if a.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(a.Gatherer, promhttp.HandlerOpts{}))
	}
}

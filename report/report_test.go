package report

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// t0 is when the synthetic experiments start.
var t0 = time.Date(2025, 3, 14, 10, 0, 0, 0, time.UTC)

// synthetic is a failover experiment as `lps experiment failover` would record it: a baseline
// and an LPS run of the given seconds, with the original's fault schedule (each service on the
// path stopped for uniform(26, 34) s + 3.5 s, 20 s apart), latencies totalling nLat, drawn
// from a seeded generator so every run of the test sees the same numbers.
func synthetic(seconds, nLat int) Experiment {
	rng := rand.New(rand.NewPCG(42, 1))
	e := Experiment{
		Kind: "failover", Started: t0, Seed: 42, TimeScale: 1, Target: "local",
		Faithful: true, Devices: 100, Background: 70,
	}
	services := map[string][]string{
		"baseline": {"ars-comp-1-1", "ars-comp-1-2", "ars-comp-1-3", "ars-comp-2-1", "backend"},
		"lps":      {"ars-comp-1-1", "ars-comp-1-2", "ars-comp-1-3", "proxy1-1", "proxy2-1", "ars-comp-2-1", "backend"},
	}
	start := t0
	for i, topo := range []string{"baseline", "lps"} {
		r := Run{Topology: topo, Start: start, End: start.Add(time.Duration(seconds) * time.Second)}
		// The schedule, planned and as done (a few hundred ms late, as a runner is).
		at := 30 * time.Second
		for j, svc := range services[topo] {
			down := time.Duration((26+8*rng.Float64()+3.5)*1000) * time.Millisecond
			f := Fault{
				Service: svc, PlannedStop: start.Add(at), PlannedStart: start.Add(at + down),
				Downtime: Ms(down),
			}
			// The LPS run's last fault never happened: the runner ran out of load.
			if !(topo == "lps" && j == len(services[topo])-1) {
				f.Stopped = f.PlannedStop.Add(time.Duration(100+rng.IntN(400)) * time.Millisecond)
				f.Started = f.PlannedStart.Add(time.Duration(100+rng.IntN(400)) * time.Millisecond)
			}
			r.Faults = append(r.Faults, f)
			at += down + 20*time.Second
		}
		down := func(t int) bool {
			for _, f := range r.Faults {
				if !f.Stopped.IsZero() && t >= int(f.Stopped.Sub(start).Seconds()) && t < int(f.Started.Sub(start).Seconds()) {
					return true
				}
			}
			return false
		}
		backlog := 0
		for t := range seconds {
			s := Second{T: t, Backlog: -1}
			switch {
			case topo == "baseline" && down(t):
				// Devices retry every second; a third of their tries reach a live instance.
				s.Acked = 30 + rng.IntN(10)
				s.Failed = 60 + rng.IntN(20)
				s.Received = s.Acked
				s.P50, s.P99, s.Max = Millis(900+rng.Float64()*300), Millis(8000+rng.Float64()*4000), Millis(20000+rng.Float64()*9000)
			case topo == "lps" && down(t):
				s.Acked = 95 + rng.IntN(10)
				s.Received = rng.IntN(5)
				backlog += s.Acked - s.Received
				s.P50, s.P99, s.Max = Millis(22+rng.Float64()*6), Millis(60+rng.Float64()*40), Millis(150+rng.Float64()*200)
			default:
				s.Acked = 95 + rng.IntN(10)
				s.Received = s.Acked
				if backlog > 0 {
					n := min(backlog, 150)
					s.Received += n
					backlog -= n
				}
				s.P50, s.P99, s.Max = Millis(18+rng.Float64()*6), Millis(45+rng.Float64()*30), Millis(90+rng.Float64()*150)
			}
			if topo == "lps" {
				s.Backlog = backlog
				// The broker's stats were unreachable for a while.
				if t >= 200 && t < 205 {
					s.Backlog = -1
				}
			}
			r.Sent += s.Acked
			r.Acked += s.Acked
			r.Received += s.Received
			r.Seconds = append(r.Seconds, s)
		}
		r.Lost, r.Duplicated, r.GivenUp = 2*i, 3*i, 1-i
		r.P50, r.P90, r.P99, r.Max = Millis(21.4+float64(i)), Millis(48.9+float64(i)), Millis(12345.6-float64(i)*12000), Millis(31234.5-float64(i)*30000)
		r.Lambda, r.Mu, r.Rho = 98.76+float64(i), 123.45, 0.8+float64(i)/100
		if topo == "lps" {
			r.Drain = 45600
			r.Consumers = map[string]int{"mqtt2http-1": r.Acked/3 + 17, "mqtt2http-2": r.Acked / 3, "mqtt2http-3": r.Acked/3 - 17}
		}
		for range nLat / 2 {
			// Mostly tens of milliseconds; the baseline's failovers add a tail of seconds.
			d := time.Duration(math.Exp(3+0.3*rng.NormFloat64()) * float64(time.Millisecond))
			if topo == "baseline" && rng.IntN(100) < 8 {
				d = time.Duration(rng.Float64() * 30 * float64(time.Second))
			}
			r.Latencies = append(r.Latencies, d)
		}
		e.Runs = append(e.Runs, r)
		start = r.End.Add(time.Minute)
	}
	e.Finished = start
	return e
}

// performance is a performance experiment: steps of 250, 500, … devices, one minute each,
// until the average passes 10 s.
func performance() Experiment {
	rng := rand.New(rand.NewPCG(7, 7))
	e := Experiment{Kind: "performance", Started: t0, Seed: 7, TimeScale: 1, Target: "local", Background: 70}
	start := t0
	for i, topo := range []string{"baseline", "lps"} {
		r := Run{Topology: topo, Start: start}
		for j := range 8 {
			devices := 250 * (j + 1)
			avg := 20 * math.Exp(float64(j)*(0.9-0.15*float64(i))) * (1 + 0.1*rng.Float64())
			s := Step{Devices: devices, Start: start.Add(time.Duration(j) * time.Minute), End: start.Add(time.Duration(j+1) * time.Minute),
				Acked: devices * 60, Avg: Millis(avg), Max: Millis(avg * (3 + rng.Float64()))}
			s.Stopped = avg > 10000 || float64(s.Max) > 30000
			r.Steps = append(r.Steps, s)
			for t := range 60 {
				r.Seconds = append(r.Seconds, Second{T: j*60 + t, Acked: devices, Received: devices, P50: Millis(avg), P99: Millis(avg * 2), Max: s.Max, Backlog: -1})
			}
			for range 200 {
				r.Latencies = append(r.Latencies, time.Duration(avg*(0.5+rng.Float64())*float64(time.Millisecond)))
			}
			if s.Stopped {
				break
			}
		}
		r.End = r.Steps[len(r.Steps)-1].End
		e.Runs = append(e.Runs, r)
		start = r.End.Add(time.Minute)
	}
	e.Finished = start
	return e
}

func writeTo(t testing.TB, e Experiment) (dir string, page string) {
	t.Helper()
	dir = t.TempDir()
	if err := Write(dir, e); err != nil {
		t.Fatalf("Write: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	return dir, string(b)
}

// element is what parsePage found of one element with an id.
type element struct {
	svg    bool   // an <svg> inside it
	text   string // its text, plots' labels included
	noData bool   // a class="nodata" paragraph inside it
}

// parsePage reads the page as strict XML (the template writes it well-formed, and so does
// vgsvg) and returns its elements by id; a duplicate id fails the test.
func parsePage(t *testing.T, page string) map[string]*element {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(page))
	d.Strict = true
	ids := map[string]*element{}
	var open [][]*element // per open element, the elements with an id that contain it
	var inside []*element
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			line, _ := d.InputPos()
			t.Fatalf("report.html is not well-formed at line %d: %v", line, err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			open = append(open, inside)
			for _, a := range tok.Attr {
				if a.Name.Local == "class" && a.Value == "nodata" {
					for _, el := range inside {
						el.noData = true
					}
				}
			}
			if tok.Name.Local == "svg" {
				for _, el := range inside {
					el.svg = true
				}
			}
			for _, a := range tok.Attr {
				if a.Name.Local == "id" && a.Name.Space == "" {
					if ids[a.Value] != nil {
						t.Errorf("id %q appears twice", a.Value)
					}
					el := &element{}
					ids[a.Value] = el
					inside = append(append([]*element(nil), inside...), el)
				}
			}
		case xml.EndElement:
			inside = open[len(open)-1]
			open = open[:len(open)-1]
		case xml.CharData:
			for _, el := range inside {
				el.text += string(tok)
			}
		}
	}
	return ids
}

var (
	failoverPlots    = []string{"latency-baseline", "latency-lps", "throughput-baseline", "throughput-lps", "backlog", "consumers", "cdf"}
	performancePlots = []string{"latency-baseline", "latency-lps", "throughput-baseline", "throughput-lps", "cdf", "steps"}
)

func TestWritePlots(t *testing.T) {
	for _, tc := range []struct {
		name  string
		e     Experiment
		plots []string
		// texts each plot must show: its axis labels with units.
		texts map[string][]string
	}{
		{"failover", synthetic(420, 20000), failoverPlots, map[string][]string{
			"latency-baseline":    {"Response time per second, baseline", "response time (ms, log scale)", "time since the run's start (s)", "p50", "p99", "max", "backend", "service down"},
			"latency-lps":         {"proxy1-1", "backend (planned)"},
			"throughput-baseline": {"alarms or tries per second", "acknowledged/s", "received/s", "failed tries/s"},
			"backlog":             {"queued messages"},
			"consumers":           {"mqtt2http-1", "mqtt2http-3", "alarms forwarded"},
			"cdf":                 {"response time (ms, log scale)", "fraction of alarms answered within", "baseline (10000 alarms)", "lps (10000 alarms)"},
		}},
		{"performance", performance(), performancePlots, map[string][]string{
			"steps": {"devices", "response time (ms, log scale)", "baseline average", "lps max"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, page := writeTo(t, tc.e)
			ids := parsePage(t, page)
			for _, id := range tc.plots {
				el := ids[id]
				switch {
				case el == nil:
					t.Errorf("no element with id %q", id)
				case !el.svg:
					t.Errorf("%s has no <svg>: %q", id, el.text)
				case el.noData:
					t.Errorf("%s says it has no data: %q", id, el.text)
				}
			}
			for id, want := range tc.texts {
				if ids[id] == nil {
					continue
				}
				for _, w := range want {
					if !strings.Contains(ids[id].text, w) {
						t.Errorf("%s does not show %q", id, w)
					}
				}
			}
		})
	}
}

// xmlnsAttr is a namespace declaration: its value is a name that happens to look like a URL,
// not something a browser fetches.
var xmlnsAttr = regexp.MustCompile(`\sxmlns(:[A-Za-z]+)?="[^"]*"`)

func TestPageFetchesNothing(t *testing.T) {
	_, page := writeTo(t, synthetic(420, 2000))
	if strings.Contains(strings.ToLower(page), "<script") {
		t.Error("the page has a <script>")
	}
	// Attributes that make a browser fetch: only fragments and data: URLs may be there.
	d := xml.NewDecoder(strings.NewReader(page))
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if s, ok := tok.(xml.StartElement); ok {
			for _, a := range s.Attr {
				if a.Name.Local == "src" || a.Name.Local == "href" || a.Name.Local == "srcset" {
					if !strings.HasPrefix(a.Value, "#") && !strings.HasPrefix(a.Value, "data:") {
						t.Errorf("<%s %s=%q> fetches", s.Name.Local, a.Name.Local, a.Value)
					}
				}
			}
		}
	}
	lower := strings.ToLower(page)
	for _, bad := range []string{"@import", "<link", "<iframe", "<object", "<embed"} {
		if strings.Contains(lower, bad) {
			t.Errorf("the page has %s", bad)
		}
	}
	for _, m := range regexp.MustCompile(`url\(\s*['"]?([^'")]*)`).FindAllStringSubmatch(lower, -1) {
		if !strings.HasPrefix(m[1], "data:") && !strings.HasPrefix(m[1], "#") {
			t.Errorf("the page has url(%s", m[1])
		}
	}
	// And no absolute URL anywhere but in namespace declarations.
	rest := xmlnsAttr.ReplaceAllString(page, "")
	for _, scheme := range []string{"http://", "https://", "//fonts."} {
		if i := strings.Index(rest, scheme); i >= 0 {
			t.Errorf("the page has %q: …%s…", scheme, rest[max(0, i-60):min(len(rest), i+60)])
		}
	}
	if !strings.Contains(page, `xmlns="http://www.w3.org/2000/svg"`) {
		t.Error("the test's xmlns exception matches nothing: has vgsvg changed?")
	}
}

func TestSummaryMarkdown(t *testing.T) {
	e := synthetic(420, 200)
	dir, _ := writeTo(t, e)
	b, err := os.ReadFile(filepath.Join(dir, "summary.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	bl, lps := e.Runs[0], e.Runs[1]
	for _, want := range []string{
		"|  | baseline | lps |",
		fmt.Sprintf("| sent | %d | %d |", bl.Sent, lps.Sent),
		fmt.Sprintf("| acked | %d | %d |", bl.Acked, lps.Acked),
		fmt.Sprintf("| received | %d | %d |", bl.Received, lps.Received),
		"| lost | 0 | 2 |",
		"| duplicated | 0 | 3 |",
		"| given up | 1 | 0 |",
		"| p50 (ms) | 21.4 | 22.4 |",
		"| p90 (ms) | 48.9 | 49.9 |",
		"| p99 (ms) | 12345.6 | 345.6 |",
		"| max (ms) | 31234.5 | 1234.5 |",
		"| λ (alarms/s) | 98.76 | 99.76 |",
		"| μ (alarms/s) | 123.45 | 123.45 |",
		"| ρ | 0.800 | 0.810 |",
		"| drain (s) | 0.0 | 45.6 |",
		"## Fault timeline",
		"| run | service | planned stop (s) | planned start (s) | stopped (s) | started (s) | drawn downtime (s) | actual downtime (s) |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary.md lacks %q", want)
		}
	}
	// Every fault is a row with its times relative to its run's start.
	for _, r := range e.Runs {
		for _, f := range r.Faults {
			row := fmt.Sprintf("| %s | %s | %.1f | %.1f |", r.Topology, f.Service,
				f.PlannedStop.Sub(r.Start).Seconds(), f.PlannedStart.Sub(r.Start).Seconds())
			if !strings.Contains(md, row) {
				t.Errorf("summary.md lacks the fault row %q", row)
			}
		}
	}
	if !strings.Contains(md, "| lps | backend | ") || !strings.Contains(md, " | - | - | ") {
		t.Error("the fault that did not happen should show - for its actual stop and start")
	}
}

func TestSummaryText(t *testing.T) {
	e := synthetic(420, 200)
	var b bytes.Buffer
	if err := Summary(&b, e); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	lines := strings.Split(out, "\n")
	// The summary table: from its header to the drain row, every line the same width, since
	// its last column is right-aligned.
	var table []string
	for _, l := range lines {
		if strings.HasSuffix(strings.TrimSpace(l), "lps") && strings.Contains(l, "baseline") || len(table) > 0 {
			table = append(table, l)
			if strings.HasPrefix(l, "drain") {
				break
			}
		}
	}
	if len(table) != 1+len(summaryRows()) {
		t.Fatalf("found %d lines of the summary table, want %d:\n%s", len(table), 1+len(summaryRows()), out)
	}
	for _, l := range table {
		if utf8.RuneCountInString(l) != utf8.RuneCountInString(table[0]) {
			t.Errorf("misaligned: %q is %d runes wide, the header %d", l, utf8.RuneCountInString(l), utf8.RuneCountInString(table[0]))
		}
	}
	if !regexp.MustCompile(`(?m)^ρ +0\.800 +0\.810$`).MatchString(out) {
		t.Errorf("no ρ row with both runs' values")
	}
	if !strings.Contains(out, "fault timeline") || !strings.Contains(out, "proxy2-1") {
		t.Error("the fault timeline is missing")
	}
}

func TestResultsRoundTrip(t *testing.T) {
	e := synthetic(420, 200)
	dir, _ := writeTo(t, e)
	got, err := ReadResults(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := e
	want.Runs = append([]Run(nil), e.Runs...)
	for i := range want.Runs {
		want.Runs[i].Latencies = nil
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := os.ReadFile(filepath.Join(dir, "results.json"))
		t.Errorf("results.json does not read back as written:\n%.2000s", g)
	}
}

// A run in which nothing was served has ρ = λ/0: results.json must still be written, and the
// tables must print.
func TestNonFiniteFigures(t *testing.T) {
	e := synthetic(60, 100)
	e.Runs[0].Mu, e.Runs[0].Rho = 0, math.Inf(1)
	e.Runs[1].Rho = math.NaN()
	e.Runs[1].P99 = Millis(math.NaN())
	dir, _ := writeTo(t, e)
	got, err := ReadResults(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Runs[0].Rho != 0 || got.Runs[1].Rho != 0 || got.Runs[1].P99 != 0 || got.Runs[0].Lambda != e.Runs[0].Lambda {
		t.Errorf("read back ρ %v and %v, p99 %v, λ %v", got.Runs[0].Rho, got.Runs[1].Rho, got.Runs[1].P99, got.Runs[0].Lambda)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "summary.md"))
	if !strings.Contains(string(md), "| ρ | inf | n/a |") {
		t.Errorf("summary.md:\n%s", md)
	}
}

func TestNoData(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    Experiment
		// ids that must be there, saying there is no data.
		empty []string
	}{
		{"no runs", Experiment{}, []string{"latency", "throughput", "backlog", "consumers", "cdf"}},
		{"runs without data", Experiment{Kind: "failover", Runs: []Run{{Topology: "baseline"}, {Topology: "lps"}}},
			[]string{"latency-baseline", "latency-lps", "throughput-baseline", "throughput-lps", "backlog", "consumers", "cdf"}},
		{"no latencies above 0", Experiment{Kind: "failover", Runs: []Run{{Topology: "lps",
			Seconds: []Second{{T: 0, Backlog: -1}, {T: 1, Backlog: -1}}, Latencies: []time.Duration{0, 0}}}},
			[]string{"latency-lps", "backlog", "consumers", "cdf"}},
		{"performance without steps", Experiment{Kind: "performance", Runs: []Run{{Topology: "lps"}}}, []string{"steps"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, page := writeTo(t, tc.e)
			ids := parsePage(t, page)
			for _, id := range tc.empty {
				el := ids[id]
				switch {
				case el == nil:
					t.Errorf("no element with id %q", id)
				case el.svg:
					t.Errorf("%s draws an empty plot", id)
				case !el.noData || !strings.Contains(strings.ToLower(el.text), "no "):
					t.Errorf("%s does not say there is no data: %q", id, el.text)
				}
			}
			if len(tc.e.Runs) == 0 && !strings.Contains(page, noRuns) {
				t.Error("the page does not say no runs were recorded")
			}
			var text bytes.Buffer
			if err := Summary(&text, tc.e); err != nil {
				t.Fatal(err)
			}
			if _, err := ReadResults(filepath.Join(dir, "results.json")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestWriteBadDirectory(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e := synthetic(30, 10)

	err := Write(filepath.Join(base, "missing"), e)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), filepath.Join(base, "missing")) {
		t.Errorf("missing directory: %v", err)
	}
	err = Write(file, e)
	if err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a file as the directory: %v", err)
	}
	err = Write(filepath.Join(file, "sub"), e)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(file, "sub")) {
		t.Errorf("a directory under a file: %v", err)
	}

	// Root writes into read-only directories; only another user can see this error.
	if os.Geteuid() == 0 {
		t.Log("running as root: skipping the read-only directory")
		return
	}
	ro := filepath.Join(base, "ro")
	if err := os.Mkdir(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	err = Write(ro, e)
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "report.html") || !strings.Contains(err.Error(), "results.json") {
		t.Errorf("read-only directory: %v", err)
	}
}

// A file that fails to write leaves nothing behind: no half file under its name, no temporary.
func TestWriteFileFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	err := writeFile(filepath.Join(dir, "report.html"), func(w io.Writer) error {
		io.WriteString(w, "<html>")
		return errors.New("boom")
	})
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("got %v", err)
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 0 {
		t.Errorf("left %v", left)
	}
}

func TestCDF(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 1000; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	c := cdf(lat)
	if len(c.x) != cdfPoints {
		t.Fatalf("%d points, want %d", len(c.x), cdfPoints)
	}
	if c.x[0] != 1 || c.y[0] != 0.001 || c.x[len(c.x)-1] != 1000 || c.y[len(c.y)-1] != 1 {
		t.Errorf("from (%v, %v) to (%v, %v), want (1, 0.001) to (1000, 1)", c.x[0], c.y[0], c.x[len(c.x)-1], c.y[len(c.y)-1])
	}
	for i := 1; i < len(c.x); i++ {
		if c.x[i] <= c.x[i-1] || c.y[i] < c.y[i-1] {
			t.Fatalf("not increasing at %d", i)
		}
	}
	// The median: half the alarms within 500 ms.
	for i := range c.x {
		if c.x[i] >= 500 {
			if math.Abs(c.y[i]-0.5) > 0.01 {
				t.Errorf("fraction within %.0f ms is %v", c.x[i], c.y[i])
			}
			break
		}
	}
}

func TestLatencyLinesDownsample(t *testing.T) {
	secs := make([]Second, 8000) // 10 per point
	for i := range secs {
		secs[i] = Second{T: i, Acked: 1, P50: Millis(i % 10), P99: 50, Max: 60}
	}
	secs[4321].Max = 30000 // a spike of one second
	secs[5000].Acked, secs[5000].Max = 0, 0
	p50, _, top := latencyLines(secs)
	if len(p50.x) != maxPoints {
		t.Fatalf("%d points, want %d", len(p50.x), maxPoints)
	}
	if p50.y[0] != 4.5 || p50.x[0] != 4.5 {
		t.Errorf("first point (%v, %v), want the median of 0..9 at 4.5 s", p50.x[0], p50.y[0])
	}
	if top.y[432] != 30000 {
		t.Errorf("the spike became %v", top.y[432])
	}
	acked, _, _ := rateLines(secs)
	if acked.y[500] != 0.9 {
		t.Errorf("the rate of the bucket missing an ack is %v, want 0.9", acked.y[500])
	}
}

// longRun is two hours of both topologies with 500,000 latencies.
func longRun() Experiment { return synthetic(7200, 500_000) }

// The page must stay small enough to mail and open quickly: every line is downsampled to
// maxPoints points and each CDF to cdfPoints.
func TestPageSizeTwoHours(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a two-hour experiment")
	}
	e := longRun()
	start := time.Now()
	dir, page := writeTo(t, e)
	took := time.Since(start)
	parsePage(t, page)
	for _, name := range []string{"report.html", "summary.md", "results.json"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes (%.2f MB)", name, st.Size(), float64(st.Size())/1e6)
	}
	t.Logf("Write took %v for 2 × 7,200 s and 500,000 latencies", took)
	if len(page) > 3_000_000 {
		t.Errorf("report.html is %d bytes, want under 3 MB", len(page))
	}
}

func BenchmarkWriteTwoHours(b *testing.B) {
	e := longRun()
	dir := b.TempDir()
	b.ResetTimer()
	for b.Loop() {
		if err := Write(dir, e); err != nil {
			b.Fatal(err)
		}
	}
	st, err := os.Stat(filepath.Join(dir, "report.html"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.Size()), "page-bytes")
}

// TestExampleReports writes the synthetic reports into $LPS_REPORT_DIR, for a person (or
// scripts/screenshot-report.sh) to look at; without it, it does nothing.
func TestExampleReports(t *testing.T) {
	dir := os.Getenv("LPS_REPORT_DIR")
	if dir == "" {
		t.Skip("set LPS_REPORT_DIR to write the example reports there")
	}
	for name, e := range map[string]Experiment{"failover": synthetic(420, 20000), "performance": performance(), "empty": {}, "two-hours": longRun()} {
		sub := filepath.Join(dir, name)
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := Write(sub, e); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", sub)
	}
}

// TestSummaryCPURows: CPU seconds per 1,000 alarms get a row per role, "-" where a topology has
// no such role, and a total; without CPU figures (the compose target) there are none.
func TestSummaryCPURows(t *testing.T) {
	e := synthetic(420, 200)
	var b bytes.Buffer
	if err := Summary(&b, e); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "CPU") {
		t.Errorf("CPU rows without CPU figures:\n%s", b.String())
	}
	e.Runs[0].CPU = map[string]float64{"comp1": 0.1, "comp2": 0.05, "rast-sim": 0.025}
	e.Runs[1].CPU = map[string]float64{"comp1": 0.1, "http2mqtt": 0.08, "broker": 0.05, "mqtt2http": 0.07, "comp2": 0.05, "rast-sim": 0.025}
	dir, _ := writeTo(t, e)
	md, err := os.ReadFile(filepath.Join(dir, "summary.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| CPU s/1,000 alarms, comp1 | 0.100 | 0.100 |",
		"| CPU s/1,000 alarms, broker | - | 0.050 |",
		"| CPU s/1,000 alarms, rast-sim | 0.025 | 0.025 |",
		"| CPU s/1,000 alarms, total | 0.175 | 0.375 |",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("summary.md lacks %q:\n%s", want, md)
		}
	}
	back, err := ReadResults(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Runs[1].CPU, e.Runs[1].CPU) {
		t.Errorf("results.json's CPU figures %v, want %v", back.Runs[1].CPU, e.Runs[1].CPU)
	}
}

// TestSummaryMemoryRows: resident memory gets an idle and a peak row per role, "-" where a
// topology has no such role; without figures (the compose target) there are none; results.json
// keeps them.
func TestSummaryMemoryRows(t *testing.T) {
	e := synthetic(420, 200)
	var b bytes.Buffer
	if err := Summary(&b, e); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "RSS") {
		t.Errorf("memory rows without memory figures:\n%s", b.String())
	}
	e.Runs[0].IdleRSS = map[string]float64{"comp1": 9.5, "comp2": 10, "rast-sim": 8.25}
	e.Runs[0].PeakRSS = map[string]float64{"comp1": 14, "comp2": 15, "rast-sim": 12}
	e.Runs[1].IdleRSS = map[string]float64{"comp1": 9.5, "http2mqtt": 11, "broker": 12, "mqtt2http": 11, "comp2": 10, "rast-sim": 8.25}
	e.Runs[1].PeakRSS = map[string]float64{"comp1": 14, "http2mqtt": 17, "broker": 42.06, "mqtt2http": 18, "comp2": 15, "rast-sim": 12}
	dir, _ := writeTo(t, e)
	md, err := os.ReadFile(filepath.Join(dir, "summary.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| RSS MB idle, comp1 | 9.5 | 9.5 |",
		"| RSS MB idle, broker | - | 12.0 |",
		"| RSS MB peak, broker | - | 42.1 |",
		"| RSS MB peak, rast-sim | 12.0 | 12.0 |",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("summary.md lacks %q:\n%s", want, md)
		}
	}
	back, err := ReadResults(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Runs[1].PeakRSS, e.Runs[1].PeakRSS) || !reflect.DeepEqual(back.Runs[0].IdleRSS, e.Runs[0].IdleRSS) {
		t.Errorf("results.json's memory figures %v/%v, want %v/%v", back.Runs[0].IdleRSS, back.Runs[1].PeakRSS, e.Runs[0].IdleRSS, e.Runs[1].PeakRSS)
	}
}

// TestSummaryLoad: the header says what load the alarms came from, in summary.md and on the
// page: the failover's devices, the performance steps of the closed model (devices) or of the
// open one (rates), and "-" for a run without either. A performance run with device steps once
// read "devices: 0 (open model)".
func TestSummaryLoad(t *testing.T) {
	open := Experiment{Kind: "performance", Runs: []Run{{Topology: "lps", Steps: []Step{{Rate: 1000}, {Rate: 2000}, {Rate: 2500.5}}}}}
	for _, tt := range []struct {
		name string
		e    Experiment
		want string
	}{
		{"failover", synthetic(420, 200), "load: 100 devices (closed model)"},
		{"performance, devices", performance(), "load: 250, 500, 750, 1000, 1250"},
		{"performance, rates", open, "load: 1000, 2000, 2500.5 alarms/s (open model, a step each)"},
		{"nothing ran", Experiment{Kind: "performance"}, "load: -"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir, page := writeTo(t, tt.e)
			b, err := os.ReadFile(filepath.Join(dir, "summary.md"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), "- "+tt.want) {
				t.Errorf("summary.md's header lacks %q:\n%s", tt.want, firstLines(string(b), 12))
			}
			if strings.Contains(string(b), "open model") != strings.Contains(tt.want, "open model") {
				t.Errorf("summary.md names the open model where the load was not, or the reverse:\n%s", firstLines(string(b), 12))
			}
			label, value, _ := strings.Cut(tt.want, ": ")
			if !strings.Contains(page, template.HTMLEscapeString(label)) || !strings.Contains(page, template.HTMLEscapeString(value)) {
				t.Errorf("report.html lacks the header fact %q", tt.want)
			}
		})
	}
}

// firstLines is the first n lines of s, for a failure message.
func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

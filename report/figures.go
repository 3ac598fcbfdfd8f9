package report

import (
	"fmt"
	"html/template"
	"image/color"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// section is one subject of the page (response time, throughput, …): a heading, a sentence on
// how to read its plots, and the plots; NoData says why there are none.
type section struct {
	ID, Title, HowTo string
	Figures          []figure
	NoData           string
}

// figure is one plot: its SVG, or a sentence saying why there is nothing to draw (an empty
// frame would look like a plot of zeros).
type figure struct {
	ID     string
	SVG    template.HTML
	NoData string
}

// sections are the page's plots, in the order a reader asks: how slow, how much got through,
// what queued, who did the work, the whole distribution, and for a performance experiment
// where it broke.
func sections(e Experiment) []section {
	h := howTo(e)
	ss := []section{
		perRun(e, "latency", "Response time over time", h.latency, latencyFigure),
		perRun(e, "throughput", "Throughput and failures over time", h.throughput, throughputFigure),
		one("backlog", "Broker backlog", h.backlog, backlogFigure(e)),
		one("consumers", "Alarms per mqtt2http instance", consumersHowTo, consumersFigure(e)),
		one("cdf", "Response time distribution", cdfHowTo, cdfFigure(e)),
	}
	if e.Kind == "performance" || slices.ContainsFunc(e.Runs, func(r Run) bool { return len(r.Steps) > 0 }) {
		ss = append(ss, one("steps", "Response time per load step", stepsHowTo, stepsFigure(e)))
	}
	return ss
}

// howTos are the sentences under the time-series plots' headings, which mention fault bands
// and downsampling only where the experiment has them.
type howTos struct{ latency, throughput, backlog string }

func howTo(e Experiment) howTos {
	faults := hasFaults(e)
	long := slices.ContainsFunc(e.Runs, func(r Run) bool { return len(r.Seconds) > maxPoints })
	when := func(yes bool, s string) string {
		if yes {
			return s
		}
		return ""
	}
	const downsampled = " On a run longer than 800 s each point stands for several seconds: "
	return howTos{
		latency: "One point per second of the run: the median (p50), the 99th percentile and the " +
			"slowest response among the alarms acknowledged in that second, timed from an alarm's " +
			"first try to its success." +
			when(faults, " Grey bands are services the fault schedule stopped, from the stop (solid "+
				"edge) to the start (dashed edge); a rise in or just after a band is what a device "+
				"waited through that failover.") +
			" A gap is a second in which no alarm was acknowledged." +
			when(long, downsampled+"the median of their p50s and the largest of their p99s and maxima."),
		throughput: "Acknowledged: alarms the load saw answered 2xx; received: alarms rast-sim got; " +
			"failed: tries that failed (each is retried a second later)." +
			when(faults, " While a service is down the baseline acknowledges less and fails more; "+
				"the LPS keeps acknowledging, and its received rate catches up once the path is back.") +
			when(long, downsampled+"their mean."),
		backlog: "Messages waiting in the broker at the end of each second: it climbs while the path " +
			"behind the broker is down or slower than the load, and falls back to zero as the LPS " +
			"drains. Seconds in which the depth was not known are gaps." +
			when(long, downsampled+"the largest depth among them."),
	}
}

const (
	consumersHowTo = "Alarms each mqtt2http instance forwarded to comp2, with its share: bars of " +
		"similar height mean the broker's shared subscription spread the work evenly."
	cdfHowTo = "For each response time on the (logarithmic) x axis, the fraction of acknowledged alarms " +
		"answered within it: the further left a curve, the faster; where it bends towards 1 shows " +
		"the slowest few percent. Drawn at 500 response times spread evenly on the axis."
	stepsHowTo = "Average and maximum response time of the alarms acknowledged in each load step; " +
		"a ring marks the step that ended a run (average over 10 s or maximum over 30 s)."
)

// perRun is a section with one plot per run.
func perRun(e Experiment, id, title, howTo string, build func(Run) (*chart, string)) section {
	s := section{ID: id, Title: title, HowTo: howTo}
	if len(e.Runs) == 0 {
		s.NoData = noRuns
		return s
	}
	seen := map[string]int{}
	for _, r := range e.Runs {
		fid := id + "-" + slug(r.Topology)
		// Two runs of one topology must not share an id.
		if seen[fid]++; seen[fid] > 1 {
			fid = fmt.Sprintf("%s-%d", fid, seen[fid])
		}
		c, why := build(r)
		if c != nil {
			c.p.X.Min = 0 // the run's start, which the fault table counts from
		}
		s.Figures = append(s.Figures, render(fid, c, why))
	}
	return s
}

// one is a section with one plot.
func one(id, title, howTo string, f figure) section {
	return section{ID: id + "-section", Title: title, HowTo: howTo, Figures: []figure{f}}
}

// render draws c, or says why there is nothing to draw.
func render(id string, c *chart, noData string) figure {
	f := figure{ID: id}
	if c == nil {
		f.NoData = noData
		return f
	}
	svg, err := c.svg()
	if err != nil {
		f.NoData = "This plot could not be drawn: " + err.Error()
		return f
	}
	f.SVG = svg
	return f
}

var notID = regexp.MustCompile(`[^a-z0-9-]+`)

// slug makes a topology name usable in an HTML id.
func slug(s string) string {
	s = strings.Trim(notID.ReplaceAllString(strings.ToLower(s), "-"), "-")
	if s == "" {
		return "run"
	}
	return s
}

// hasValue says whether any line has a point to draw.
func hasValue(lines ...xy) bool {
	for _, l := range lines {
		if slices.ContainsFunc(l.y, func(y float64) bool { return !math.IsNaN(y) }) {
			return true
		}
	}
	return false
}

const timeAxis = "time since the run's start (s)"

func latencyFigure(r Run) (*chart, string) {
	p50, p99, top := latencyLines(r.Seconds)
	if !hasValue(p50, p99, top) {
		return nil, fmt.Sprintf("No response times: the %s run acknowledged no alarm.", r.Topology)
	}
	c := newChart("Response time per second, "+r.Topology, timeAxis, "response time (ms)")
	c.setLogY(spansDecades(p50, p99, top))
	if c.logY {
		c.p.Y.Label.Text = "response time (ms, log scale)"
	}
	c.marks = marksOf(r)
	// The largest first, so the median is drawn on top; the legend then lists them top down.
	for _, l := range []struct {
		name string
		sty  draw.LineStyle
		pts  xy
	}{
		{"max", lineStyle(black, vg.Points(0.7), vg.Points(2), vg.Points(1.5)), top},
		{"p99", lineStyle(orange, vg.Points(1.3)), p99},
		{"p50", lineStyle(blue, vg.Points(1.3)), p50},
	} {
		if err := c.addLine(l.name, l.sty, l.pts, false); err != nil {
			return nil, err.Error()
		}
	}
	return c, ""
}

func throughputFigure(r Run) (*chart, string) {
	if len(r.Seconds) == 0 {
		return nil, fmt.Sprintf("No per-second data for the %s run.", r.Topology)
	}
	acked, received, failed := rateLines(r.Seconds)
	c := newChart("Throughput and failures per second, "+r.Topology, timeAxis, "alarms or tries per second")
	c.setLogY(false)
	c.marks = marksOf(r)
	for _, l := range []struct {
		name string
		sty  draw.LineStyle
		pts  xy
	}{
		// Where nothing is lost the two lines coincide: the wide one shows beneath the dashes.
		{"acknowledged/s", lineStyle(blue, vg.Points(2.4)), acked},
		{"received/s", lineStyle(green, vg.Points(1.1), vg.Points(4), vg.Points(2)), received},
		{"failed tries/s", lineStyle(vermillion, vg.Points(1)), failed},
	} {
		if err := c.addLine(l.name, l.sty, l.pts, false); err != nil {
			return nil, err.Error()
		}
	}
	return c, ""
}

// topologyStyle tells the runs apart on plots that show several: the baseline orange and
// solid, the LPS blue and dashed, anything else in the palette's other colours.
func topologyStyle(i int, topology string, width vg.Length) draw.LineStyle {
	switch topology {
	case "baseline":
		return lineStyle(orange, width)
	case "lps":
		return lineStyle(blue, width, vg.Points(5), vg.Points(2))
	}
	others := []color.Color{green, vermillion, skyBlue, black}
	return lineStyle(others[i%len(others)], width, vg.Points(2), vg.Points(2))
}

func backlogFigure(e Experiment) figure {
	c := newChart("Broker backlog", timeAxis, "queued messages")
	c.setLogY(false)
	c.p.X.Min = 0
	c.p.Y.Tick.Marker = linearTicks{integer: true}
	var drawn []Run
	for i, r := range e.Runs {
		line, known := backlogLine(r.Seconds)
		if !known {
			continue
		}
		sty := topologyStyle(i, r.Topology, vg.Points(1.3))
		sty.Dashes = nil // usually the only line: its colour names the run
		if err := c.addLine(r.Topology, sty, line, false); err != nil {
			return render("backlog", nil, err.Error())
		}
		drawn = append(drawn, r)
	}
	if len(drawn) == 0 {
		return render("backlog", nil, "No backlog: no run recorded the broker's queue depth (the baseline has no broker).")
	}
	if len(drawn) == 1 {
		// Two runs' faults happen at different times; marking both would mislabel each.
		c.marks = marksOf(drawn[0])
		c.p.Title.Text += ", " + drawn[0].Topology
	}
	return render("backlog", c, "")
}

func consumersFigure(e Experiment) figure {
	var runs []Run
	names := map[string]bool{}
	for _, r := range e.Runs {
		if len(r.Consumers) > 0 {
			runs = append(runs, r)
			for n := range r.Consumers {
				names[n] = true
			}
		}
	}
	if len(runs) == 0 {
		return render("consumers", nil, "No consumer counts: no run recorded what each mqtt2http instance forwarded (the baseline has none).")
	}
	order := make([]string, 0, len(names))
	for n := range names {
		order = append(order, n)
	}
	slices.Sort(order)

	c := newChart("Alarms forwarded per mqtt2http instance", "mqtt2http instance", "alarms forwarded")
	c.setLogY(false)
	c.p.Y.Tick.Marker = linearTicks{integer: true}
	// Bars share the data area's width between instances and, within one, between runs.
	slot := vg.Points(math.Min(60, 420/float64(len(order))))
	width := slot / vg.Length(len(runs))
	for i, r := range runs {
		vals := make(plotter.Values, len(order))
		total := 0
		for _, n := range r.Consumers {
			total += n
		}
		var labels plotter.XYLabels
		for j, n := range order {
			vals[j] = float64(r.Consumers[n])
			share := 0.0
			if total > 0 {
				share = 100 * float64(r.Consumers[n]) / float64(total)
			}
			labels.XYs = append(labels.XYs, plotter.XY{X: float64(j), Y: vals[j]})
			labels.Labels = append(labels.Labels, fmt.Sprintf("%d (%.0f%%)", r.Consumers[n], share))
		}
		bars, err := plotter.NewBarChart(vals, width)
		if err != nil {
			return render("consumers", nil, err.Error())
		}
		sty := topologyStyle(i, r.Topology, 0)
		bars.Color = sty.Color
		bars.LineStyle = lineStyle(black, vg.Points(0.5))
		bars.Offset = width*vg.Length(i) - slot/2 + width/2
		texts, err := plotter.NewLabels(labels)
		if err != nil {
			return render("consumers", nil, err.Error())
		}
		for k := range texts.TextStyle {
			texts.TextStyle[k].Font = sans(9)
			texts.TextStyle[k].XAlign = draw.XCenter
		}
		texts.Offset = vg.Point{X: bars.Offset, Y: vg.Points(3)}
		c.add(bars, texts)
		c.addLegend(r.Topology, bars)
	}
	c.p.NominalX(order...)
	// Half a slot of room on either side, or the outer bars would stand on the plot's edges.
	c.p.X.Min, c.p.X.Max = -0.5, float64(len(order))-0.5
	// Long instance names would run into each other under narrow bars: tilt them then.
	widest := vg.Length(0)
	for _, n := range order {
		widest = max(widest, c.p.X.Tick.Label.Width(n))
	}
	if widest > vg.Points(420/float64(len(order)))*0.9 {
		c.p.X.Tick.Label.Rotation = math.Pi / 6
		c.p.X.Tick.Label.XAlign = draw.XRight
		c.p.X.Tick.Label.YAlign = draw.YCenter
	}
	if len(runs) == 1 {
		c.p.Title.Text += ", " + runs[0].Topology
	}
	return render("consumers", c, "")
}

func cdfFigure(e Experiment) figure {
	c := newChart("Distribution of response times (CDF)", "response time (ms, log scale)", "fraction of alarms answered within")
	c.setLogX()
	c.p.Y.Min, c.p.Y.Max = 0, 1
	c.p.Y.Tick.Marker = plot.ConstantTicks{
		{Value: 0, Label: "0"}, {Value: 0.25, Label: "0.25"}, {Value: 0.5, Label: "0.5"},
		{Value: 0.75, Label: "0.75"}, {Value: 0.9, Label: "0.9"}, {Value: 1, Label: "1"},
	}
	drawn := 0
	for i, r := range e.Runs {
		// cdf leaves out 0 ms, which a log axis cannot show; all zeros leave nothing.
		line := cdf(r.Latencies)
		if len(line.x) == 0 {
			continue
		}
		name := fmt.Sprintf("%s (%d alarms)", r.Topology, len(r.Latencies))
		if err := c.addLine(name, topologyStyle(i, r.Topology, vg.Points(1.6)), line, false); err != nil {
			return render("cdf", nil, err.Error())
		}
		drawn++
	}
	if drawn == 0 {
		return render("cdf", nil, "No response times to draw: no run recorded latencies above 0 ms.")
	}
	return render("cdf", c, "")
}

func stepsFigure(e Experiment) figure {
	byDevices := false
	for _, r := range e.Runs {
		for _, s := range r.Steps {
			byDevices = byDevices || s.Devices > 0
		}
	}
	xLabel := "arrival rate (alarms/s)"
	if byDevices {
		xLabel = "devices"
	}
	type line struct {
		name   string
		sty    draw.LineStyle
		points xy
	}
	var (
		lines   []line
		stopped plotter.XYs // the steps that ended a run, ringed at their maximum
	)
	for i, r := range e.Runs {
		if len(r.Steps) == 0 {
			continue
		}
		var avg, top xy
		for _, s := range r.Steps {
			x := s.Rate
			if byDevices {
				x = float64(s.Devices)
			}
			avg.add(x, float64(s.Avg))
			top.add(x, float64(s.Max))
			if s.Stopped {
				stopped = append(stopped, plotter.XY{X: x, Y: float64(s.Max)})
			}
		}
		avgSty := topologyStyle(i, r.Topology, vg.Points(1.5))
		avgSty.Dashes = nil
		topSty := avgSty
		topSty.Width, topSty.Dashes = vg.Points(1), []vg.Length{vg.Points(4), vg.Points(2)}
		lines = append(lines, line{r.Topology + " average", avgSty, avg}, line{r.Topology + " max", topSty, top})
	}
	if len(lines) == 0 {
		return render("steps", nil, "No load steps were recorded.")
	}
	c := newChart("Response time per load step", xLabel, "response time (ms)")
	// A tick at every step the runs made, while they fit: the reader looks up "the 750 step".
	var steps plot.ConstantTicks
	for _, l := range lines {
		for _, x := range l.points.x {
			if !slices.ContainsFunc(steps, func(t plot.Tick) bool { return t.Value == x }) {
				steps = append(steps, plot.Tick{Value: x, Label: strconv.FormatFloat(x, 'f', -1, 64)})
			}
		}
	}
	if len(steps) <= 12 {
		c.p.X.Tick.Marker = steps
	}
	var all []xy
	for _, l := range lines {
		all = append(all, l.points)
	}
	c.setLogY(spansDecades(all...))
	if c.logY {
		c.p.Y.Label.Text = "response time (ms, log scale)"
	}
	for _, l := range lines {
		if err := c.addLine(l.name, l.sty, l.points, true); err != nil {
			return render("steps", nil, err.Error())
		}
	}
	if len(stopped) > 0 {
		rings, err := plotter.NewScatter(stopped)
		if err != nil {
			return render("steps", nil, err.Error())
		}
		rings.GlyphStyle = draw.GlyphStyle{Color: black, Radius: vg.Points(5), Shape: draw.RingGlyph{}}
		c.add(rings)
		c.addLegend("step that ended the run", rings)
	}
	return render("steps", c, "")
}

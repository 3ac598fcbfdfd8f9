package report

import (
	"bytes"
	"fmt"
	"html"
	"html/template"
	"image/color"
	"math"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// The page is about 900 CSS pixels wide. vgsvg's user unit is the point, 4/3 of a CSS pixel,
// so a 900-pixel plot is 675 points wide.
const (
	chartWidth  = vg.Length(675)
	chartHeight = vg.Length(285)
)

// Colours of the Okabe–Ito palette, chosen to stay apart for readers with the common forms
// of colour blindness. Lines that share a plot also differ in dash or width, so that they stay
// apart in grey print too.
var (
	blue       = color.RGBA{R: 0x00, G: 0x72, B: 0xB2, A: 0xFF}
	orange     = color.RGBA{R: 0xE6, G: 0x9F, B: 0x00, A: 0xFF}
	vermillion = color.RGBA{R: 0xD5, G: 0x5E, B: 0x00, A: 0xFF}
	green      = color.RGBA{R: 0x00, G: 0x9E, B: 0x73, A: 0xFF}
	skyBlue    = color.RGBA{R: 0x56, G: 0xB4, B: 0xE9, A: 0xFF}
	black      = color.RGBA{A: 0xFF}
	darkGrey   = color.RGBA{R: 0x55, G: 0x55, B: 0x55, A: 0xFF}
	// The band of a stopped service: faint, so the lines in it stay readable.
	bandGrey = color.NRGBA{R: 0x80, G: 0x80, B: 0x80, A: 0x30}
)

// sans is the plots' typeface. gonum/plot measures text with the Liberation fonts it ships;
// Liberation Sans has the metrics of Arial and Helvetica, which the page's CSS names as its
// fallbacks, so labels keep the room they were measured for on machines without Liberation.
func sans(size vg.Length) font.Font {
	return font.From(font.Font{Typeface: "Liberation", Variant: "Sans"}, size)
}

// chart is one plot being built: a gonum plot, its legend (drawn beside the data area, never
// over it) and the faults to mark.
type chart struct {
	p      *plot.Plot
	legend plot.Legend
	data   []plot.Plotter
	// names are the legend's entries, which plot.Legend keeps to itself.
	names  []string
	marks  []faultMark
	logY   bool
	height vg.Length
}

// newChart starts a plot with the page's fonts (the grid is added when it is drawn).
func newChart(title, xLabel, yLabel string) *chart {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font = sans(13)
	p.Title.Padding = vg.Points(6)
	p.X.Label.Text = xLabel
	p.Y.Label.Text = yLabel
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font = sans(11)
		a.Tick.Label.Font = sans(10)
		a.Tick.Marker = linearTicks{}
	}
	l := plot.NewLegend()
	l.TextStyle.Font = sans(10)
	l.Top, l.Left = true, true
	l.Padding = vg.Points(3)
	return &chart{p: p, legend: l, height: chartHeight}
}

// setLogY makes the y axis logarithmic; values at or below zero are then left out (a log
// axis cannot show them). Without it the y axis starts at zero.
func (c *chart) setLogY(log bool) {
	c.logY = log
	if log {
		c.p.Y.Scale = plot.LogScale{}
		c.p.Y.Tick.Marker = logTicks{}
		return
	}
	c.p.Y.Min = 0
}

// setLogX makes the x axis logarithmic.
func (c *chart) setLogX() {
	c.p.X.Scale = plot.LogScale{}
	c.p.X.Tick.Marker = logTicks{}
}

// spansDecades says whether the positive values of lines span two decades or more: then a
// linear axis would flatten all but the largest into its bottom pixels.
func spansDecades(lines ...xy) bool {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, l := range lines {
		for _, y := range l.y {
			if y > 0 && !math.IsInf(y, 0) {
				lo, hi = min(lo, y), max(hi, y)
			}
		}
	}
	return hi/lo >= 100
}

// lineStyle is how one line is drawn.
func lineStyle(c color.Color, width vg.Length, dashes ...vg.Length) draw.LineStyle {
	return draw.LineStyle{Color: c, Width: width, Dashes: dashes}
}

// addLine adds a line named in the legend. NaN values (and, on a log axis, values at or below
// zero) break it: a line drawn across a gap would show data that does not exist. A point with
// no neighbour is drawn as a dot; glyphs draws every point as one.
func (c *chart) addLine(name string, sty draw.LineStyle, pts xy, glyphs bool) error {
	var seg plotter.XYs
	flush := func() error {
		defer func() { seg = nil }()
		switch {
		case len(seg) == 0:
			return nil
		case len(seg) == 1 || glyphs:
			s, err := plotter.NewScatter(seg)
			if err != nil {
				return err
			}
			s.GlyphStyle = draw.GlyphStyle{Color: sty.Color, Radius: vg.Points(2), Shape: draw.CircleGlyph{}}
			c.data = append(c.data, s)
			if len(seg) == 1 {
				return nil
			}
		}
		l, err := plotter.NewLine(seg)
		if err != nil {
			return err
		}
		l.LineStyle = sty
		c.data = append(c.data, l)
		return nil
	}
	for i, y := range pts.y {
		if math.IsNaN(y) || math.IsInf(y, 0) || (c.logY && y <= 0) {
			if err := flush(); err != nil {
				return fmt.Errorf("adding %s: %w", name, err)
			}
			continue
		}
		seg = append(seg, plotter.XY{X: pts.x[i], Y: y})
	}
	if err := flush(); err != nil {
		return fmt.Errorf("adding %s: %w", name, err)
	}
	c.addLegend(name, &plotter.Line{LineStyle: sty})
	return nil
}

// addLegend adds a legend entry.
func (c *chart) addLegend(name string, thumbs ...plot.Thumbnailer) {
	c.legend.Add(name, thumbs...)
	c.names = append(c.names, name)
}

// add adds plotters that are neither lines nor fault bands (bars, labels).
func (c *chart) add(ps ...plot.Plotter) { c.data = append(c.data, ps...) }

// svg draws the chart and returns it as an <svg> element to inline in the page.
func (c *chart) svg() (out template.HTML, err error) {
	defer func() {
		// gonum/plot reports some inputs it cannot draw (a value at or below zero on a log
		// axis) by panicking; one plot that cannot be drawn must not cost the page the others.
		if v := recover(); v != nil {
			err = fmt.Errorf("drawing %q: %v", c.p.Title.Text, v)
		}
	}()
	grid := plotter.NewGrid()
	grid.Vertical = lineStyle(color.Gray{Y: 0xDD}, vg.Points(0.5))
	grid.Horizontal = grid.Vertical
	c.p.Add(grid)
	if len(c.marks) > 0 {
		// Before the data, so the lines are drawn over the bands.
		c.p.Add(faultBands(c.marks))
		c.addLegend("service down", faultBands(nil))
		for _, m := range c.marks {
			c.p.X.Min = min(c.p.X.Min, m.from)
			if !math.IsInf(m.to, 1) {
				c.p.X.Max = max(c.p.X.Max, m.to)
			}
		}
	}
	c.p.Add(c.data...)
	if c.logY && c.p.Y.Min >= c.p.Y.Max {
		// One value only: give the log axis a decade around it instead of gonum's ±1, which
		// could reach zero.
		c.p.Y.Min, c.p.Y.Max = c.p.Y.Min/3, c.p.Y.Max*3
	}

	// The axis labels are drawn here, not by gonum: it reserves room for them around the
	// arithmetic mean of the axis range, which on a log axis lies near the top (or right) end,
	// and then squeezes the data area to make room for a label that is not there.
	xLabel, yLabel := c.p.X.Label, c.p.Y.Label
	c.p.X.Label.Text, c.p.Y.Label.Text = "", ""
	left := axisLabelRoom(yLabel.TextStyle, yLabel.Text)
	bottom := axisLabelRoom(xLabel.TextStyle, xLabel.Text)
	plotArea := func(dc draw.Canvas) draw.Canvas { return draw.Crop(dc, left, -c.legendWidth(), bottom, 0) }

	// The fault labels' lanes are placed first, on a frame of the same width (only the x axis
	// matters to them), and the SVG grows by their height: the data area keeps its size
	// however many lanes the labels need.
	labels, lanes := c.placeLabels(plotArea(draw.Canvas{Rectangle: vg.Rectangle{Max: vg.Point{X: chartWidth, Y: c.height}}}))
	canvas := vgsvg.New(chartWidth, c.height+lanes)
	dc := draw.New(canvas)
	area := plotArea(dc)
	c.p.Draw(area)
	data := c.p.DataCanvas(area)
	c.drawLabels(data, labels)
	if yLabel.Text != "" {
		sty := yLabel.TextStyle
		sty.Rotation += math.Pi / 2
		sty.XAlign, sty.YAlign = draw.XCenter, draw.YBottom
		// Rotated a quarter turn, the text's bottom faces right: anchor it at the strip's right.
		dc.FillText(sty, vg.Point{X: dc.Min.X + yLabel.TextStyle.Height(yLabel.Text), Y: data.Center().Y}, yLabel.Text)
	}
	if xLabel.Text != "" {
		sty := xLabel.TextStyle
		sty.XAlign, sty.YAlign = draw.XCenter, draw.YBottom
		dc.FillText(sty, vg.Point{X: data.Center().X, Y: dc.Min.Y + sty.FontExtents().Descent}, xLabel.Text)
	}
	if c.hasLegend() {
		c.legend.Draw(draw.Canvas{Canvas: dc.Canvas, Rectangle: vg.Rectangle{
			Min: vg.Point{X: area.Max.X + vg.Points(12), Y: data.Min.Y},
			Max: vg.Point{X: dc.Max.X, Y: data.Max.Y},
		}})
	}

	var b bytes.Buffer
	if _, err := canvas.WriteTo(&b); err != nil {
		return "", fmt.Errorf("writing %q as SVG: %w", c.p.Title.Text, err)
	}
	return inline(b.Bytes(), c.p.Title.Text), nil
}

// axisLabelRoom is the room an axis label takes beside its axis: its height and a gap.
func axisLabelRoom(sty text.Style, label string) vg.Length {
	if label == "" {
		return 0
	}
	return sty.Height(label) + sty.FontExtents().Descent + vg.Points(3)
}

// legendWidth is the room the legend needs to the right of the plot: none when the plot has a
// single line, which its title and axis label already name.
func (c *chart) legendWidth() vg.Length {
	if !c.hasLegend() {
		return 0
	}
	var w vg.Length
	for _, name := range c.names {
		w = max(w, c.legend.TextStyle.Width(" "+name))
	}
	return w + c.legend.ThumbnailWidth + vg.Points(16)
}

// hasLegend is true where there is more than one thing to tell apart.
func (c *chart) hasLegend() bool { return len(c.names) > 1 }

// inline strips the XML prologue vgsvg writes (not allowed inside HTML) and labels the
// <svg> for screen readers.
func inline(svg []byte, label string) template.HTML {
	if i := bytes.Index(svg, []byte("<svg")); i > 0 {
		svg = svg[i:]
	}
	svg = bytes.Replace(svg, []byte("<svg"),
		[]byte(`<svg role="img" aria-label="`+html.EscapeString(label)+`"`), 1)
	// The content is gonum's drawing of our data, every text in it escaped by vgsvg.
	return template.HTML(svg)
}

// logTicks labels the powers of ten of a log axis and, when it spans three decades or fewer,
// also 2 and 5 times them: gonum's LogTicks labels powers of ten only, which leaves a narrow
// range (5 ms to 80 ms) with one label or none.
type logTicks struct{}

// Ticks implements plot.Ticker.
func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	if lo <= 0 || hi <= 0 {
		return nil
	}
	first, last := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	dense := last-first <= 3
	var ticks []plot.Tick
	for e := first; e <= last; e++ {
		for m := 1.0; m < 10; m++ {
			v := m * math.Pow(10, e)
			t := plot.Tick{Value: v}
			if m == 1 || dense && (m == 2 || m == 5) {
				t.Label = strconv.FormatFloat(v, 'f', -1, 64)
			}
			ticks = append(ticks, t)
		}
	}
	return inRange(ticks, lo, hi)
}

// linearTicks labels about ten round values (1, 2 or 5 times a power of ten apart) with
// unlabelled ticks between them: gonum's default labels three or four, too few to find a fault
// table's second on the time axis. Integer keeps fractional ticks off axes that count (alarms,
// queued messages), where a tick at 2.5 would be noise.
type linearTicks struct{ integer bool }

// Ticks implements plot.Ticker.
func (t linearTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(hi > lo) {
		return nil
	}
	raw := (hi - lo) / 10
	step := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*step >= raw {
			step *= m
			break
		}
	}
	if t.integer {
		step = max(step, 1)
	}
	minor := step / 2
	if t.integer && minor != math.Trunc(minor) {
		minor = step
	}
	var ticks []plot.Tick
	for i := math.Ceil(lo / minor); i*minor <= hi; i++ {
		v := i * minor
		tick := plot.Tick{Value: v}
		if r := math.Remainder(v, step); math.Abs(r) < step*1e-9 {
			tick.Label = strconv.FormatFloat(v, 'f', -1, 64)
		}
		ticks = append(ticks, tick)
	}
	return ticks
}

// inRange drops the ticks outside the axis: gonum pads the data area for every tick label it
// is given, drawn or not, so a label past the end would push the plot away from its title.
func inRange(ticks []plot.Tick, lo, hi float64) []plot.Tick {
	return slices.DeleteFunc(ticks, func(t plot.Tick) bool {
		return t.Value < lo*(1-1e-9) || t.Value > hi*(1+1e-9)
	})
}

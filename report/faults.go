package report

import (
	"math"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// faultMark is one stopped service on a plot's time axis, in seconds from the run's start.
type faultMark struct {
	label    string
	from, to float64
}

// marksOf are run's faults as the runner did them; a fault it did not do is drawn where it
// was planned, and says so. A service stopped and never started again is down to the end of
// the plot (to is +Inf).
func marksOf(r Run) []faultMark {
	var marks []faultMark
	for _, f := range r.Faults {
		m := faultMark{label: f.Service}
		switch {
		case f.Stopped.IsZero():
			m.label += " (planned)"
			m.from = f.PlannedStop.Sub(r.Start).Seconds()
			m.to = f.PlannedStart.Sub(r.Start).Seconds()
		case f.Started.IsZero():
			m.from, m.to = f.Stopped.Sub(r.Start).Seconds(), math.Inf(1)
		default:
			m.from, m.to = f.Stopped.Sub(r.Start).Seconds(), f.Started.Sub(r.Start).Seconds()
		}
		marks = append(marks, m)
	}
	return marks
}

// faultBands draws each stopped service as a grey band from its stop (solid edge) to its start
// (dashed edge) across the whole height of the data area.
type faultBands []faultMark

var (
	_ plot.Plotter     = faultBands(nil)
	_ plot.Thumbnailer = faultBands(nil)
)

// Plot implements plot.Plotter.
func (b faultBands) Plot(c draw.Canvas, p *plot.Plot) {
	x := func(v float64) vg.Length {
		if math.IsInf(v, 1) {
			return c.Max.X
		}
		return min(max(c.X(p.X.Norm(v)), c.Min.X), c.Max.X)
	}
	stop := lineStyle(darkGrey, vg.Points(0.8))
	start := lineStyle(darkGrey, vg.Points(0.8), vg.Points(3), vg.Points(2))
	for _, m := range b {
		x0, x1 := x(m.from), x(m.to)
		c.FillPolygon(bandGrey, []vg.Point{
			{X: x0, Y: c.Min.Y}, {X: x1, Y: c.Min.Y}, {X: x1, Y: c.Max.Y}, {X: x0, Y: c.Max.Y},
		})
		c.StrokeLine2(stop, x0, c.Min.Y, x0, c.Max.Y)
		if !math.IsInf(m.to, 1) {
			c.StrokeLine2(start, x1, c.Min.Y, x1, c.Max.Y)
		}
	}
}

// Thumbnail implements plot.Thumbnailer: the legend's sample of a band.
func (faultBands) Thumbnail(c *draw.Canvas) {
	c.FillPolygon(bandGrey, []vg.Point{
		{X: c.Min.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Min.Y},
		{X: c.Max.X, Y: c.Max.Y}, {X: c.Min.X, Y: c.Max.Y},
	})
	c.StrokeLine2(lineStyle(darkGrey, vg.Points(0.8)), c.Min.X, c.Min.Y, c.Min.X, c.Max.Y)
}

// faultLabel is a band's service name, placed in a lane above the data area.
type faultLabel struct {
	text string
	x    vg.Length
	lane int
}

func labelStyle() text.Style {
	return text.Style{
		Color:   darkGrey,
		Font:    sans(9),
		XAlign:  draw.XLeft,
		YAlign:  draw.YBottom,
		Handler: plot.DefaultTextHandler,
	}
}

// placeLabels puts each band's label above the data area, starting at the band's stop, in the
// lowest lane where it overlaps no other label. Faults 20 s apart on a long run would otherwise
// print their names over each other. It makes room for the lanes between the title and the
// data, so no label covers a line, and returns the height it took.
func (c *chart) placeLabels(area draw.Canvas) ([]faultLabel, vg.Length) {
	if len(c.marks) == 0 {
		return nil, 0
	}
	data := c.p.DataCanvas(area) // its x extent does not depend on the title's padding
	sty := labelStyle()
	marks := slices.Clone(c.marks)
	slices.SortStableFunc(marks, func(a, b faultMark) int {
		switch {
		case a.from < b.from:
			return -1
		case a.from > b.from:
			return 1
		}
		return 0
	})
	var (
		labels []faultLabel
		ends   []vg.Length // the right end of the last label in each lane
	)
	const gap = vg.Length(6)
	for _, m := range marks {
		w := sty.Width(m.label)
		x := min(max(data.X(c.p.X.Norm(m.from)), data.Min.X), data.Max.X)
		x = max(min(x+2, data.Max.X-w), data.Min.X)
		lane := slices.IndexFunc(ends, func(end vg.Length) bool { return end+gap <= x })
		if lane < 0 {
			lane = len(ends)
			ends = append(ends, 0)
		}
		ends[lane] = x + w
		labels = append(labels, faultLabel{text: m.label, x: x, lane: lane})
	}
	room := vg.Length(len(ends))*laneHeight() + vg.Points(2)
	c.p.Title.Padding += room
	return labels, room
}

func laneHeight() vg.Length {
	return labelStyle().FontExtents().Height + vg.Points(1)
}

// drawLabels draws the labels placeLabels placed, lane 0 just above the data area.
func (c *chart) drawLabels(data draw.Canvas, labels []faultLabel) {
	sty := labelStyle()
	for _, l := range labels {
		y := data.Max.Y + vg.Points(2) + vg.Length(l.lane)*laneHeight()
		data.FillText(sty, vg.Point{X: l.x, Y: y}, l.text)
	}
}

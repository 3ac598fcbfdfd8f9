package report

import (
	"fmt"
	"html/template"
	"io"
)

// page is what the template of report.html shows.
type page struct {
	Kind      string
	Facts     []fact
	HasRuns   bool
	Summary   [][]cell
	FaultNote string
	Faults    [][]cell
	Sections  []section
	NoRuns    string
	NoFaults  string
}

// cell is a table cell; Num right-aligns it (and Head makes it a header cell).
type cell struct {
	Text      string
	Num, Head bool
}

// cells lays t out for the page: the header row first.
func (t table) cells() [][]cell {
	out := [][]cell{{}}
	for i, h := range t.Header {
		out[0] = append(out[0], cell{Text: h, Num: t.numeric(i), Head: true})
	}
	for _, r := range t.Rows {
		var cs []cell
		for i, c := range r {
			// The first column of a row names it.
			cs = append(cs, cell{Text: c, Num: t.numeric(i), Head: i == 0})
		}
		out = append(out, cs)
	}
	return out
}

// writeHTML writes report.html.
func writeHTML(w io.Writer, e Experiment) error {
	p := page{
		Kind:     orDash(e.Kind),
		Facts:    headerFacts(e),
		HasRuns:  len(e.Runs) > 0,
		Summary:  summaryTable(e).cells(),
		Sections: sections(e),
		NoRuns:   noRuns,
		NoFaults: noFaults,
	}
	if hasFaults(e) {
		p.Faults = faultTable(e).cells()
		p.FaultNote = "Seconds from each run's start (" + runStarts(e) + "), the origin of the plots' time axes. " +
			"Drawn downtime is the schedule's; actual downtime is from the stop to the start as done."
	}
	tmpl, err := template.New("report").Parse(pageTemplate)
	if err != nil {
		return fmt.Errorf("parsing the page template: %w", err)
	}
	if err := tmpl.Execute(w, p); err != nil {
		return fmt.Errorf("writing the page: %w", err)
	}
	return nil
}

// pageTemplate is report.html. Everything is inline and nothing is fetched: the page must
// open the same from a mail attachment or on a laptop with no network, years later. It is also
// well-formed XML (every element closed, no named entities), which lets the tests parse it
// strictly.
const pageTemplate = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1"/>
<title>LPS experiment: {{.Kind}}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", Arial, sans-serif;
  color: #1a1a1a; background: #fff; max-width: 940px; margin: 0 auto; padding: 16px 20px 48px; line-height: 1.45; }
h1 { font-size: 1.6em; margin: 0.4em 0; }
h2 { font-size: 1.25em; margin: 1.8em 0 0.4em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 3px 9px; text-align: left; vertical-align: top; }
thead th { background: #f0f0f0; }
tbody th { font-weight: normal; background: #fafafa; }
td, tbody th { white-space: nowrap; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
table.facts th { width: 9em; }
.howto { color: #333; margin: 0.3em 0 0.6em; }
.note { color: #555; font-size: 0.9em; }
figure { margin: 0.8em 0 1.4em; }
figure svg { display: block; width: 900px; max-width: 100%; height: auto; }
/* The plots were measured in Liberation Sans, metric-compatible with Arial and Helvetica. */
figure svg text { font-family: "Liberation Sans", Arial, Helvetica, sans-serif !important; }
.nodata { border: 1px dashed #999; background: #f7f7f7; color: #444; padding: 14px 16px; margin: 0.6em 0; }
</style>
</head>
<body>
<h1>LPS experiment: {{.Kind}}</h1>
<table class="facts"><tbody>
{{- range .Facts}}
<tr><th>{{.Label}}</th><td>{{.Value}}</td></tr>
{{- end}}
</tbody></table>

<h2 id="summary">Summary</h2>
{{- if .HasRuns}}
<p class="howto">One column per topology. Lost: acknowledged to the load but never received by rast-sim; duplicated: received more than once; given up: never acknowledged by the load's deadline. λ is the arrival rate, μ the service rate while work was waiting, ρ = λ/μ; drain is how long the LPS needed after the load to deliver everything.</p>
{{template "table" .Summary}}
{{- else}}
<p class="nodata">{{.NoRuns}} There is no data to show.</p>
{{- end}}

<h2 id="faults">Fault timeline</h2>
{{- if .Faults}}
<p class="note">{{.FaultNote}}</p>
{{template "table" .Faults}}
{{- else}}
<p class="nodata">{{.NoFaults}}</p>
{{- end}}
{{range .Sections}}
<section id="{{.ID}}">
<h2>{{.Title}}</h2>
<p class="howto">How to read this: {{.HowTo}}</p>
{{- if .NoData}}
<p class="nodata">{{.NoData}} There is no data to show.</p>
{{- end}}
{{- range .Figures}}
<figure id="{{.ID}}">
{{- if .SVG}}
{{.SVG}}
{{- else}}
<p class="nodata">{{.NoData}}</p>
{{- end}}
</figure>
{{- end}}
</section>
{{- end}}
</body>
</html>
{{define "table"}}<table>
{{- range $i, $row := .}}
{{- if eq $i 0}}
<thead><tr>{{range $row}}<th{{if .Num}} class="num"{{end}}>{{.Text}}</th>{{end}}</tr></thead>
<tbody>
{{- else}}
<tr>{{range $row}}{{if .Head}}<th>{{.Text}}</th>{{else}}<td{{if .Num}} class="num"{{end}}>{{.Text}}</td>{{end}}{{end}}</tr>
{{- end}}
{{- end}}
</tbody></table>{{end}}
`

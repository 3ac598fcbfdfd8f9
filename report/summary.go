package report

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// row is one line of the summary table: its label, with the unit, and how a run's value is
// written. The Markdown file, the terminal and the page all print these rows.
type row struct {
	label string
	value func(Run) string
}

// summaryRows are the summary table's rows, in the order a reader checks a run: did every alarm
// arrive exactly once, how long did it take, how loaded was the path, how long did the LPS need
// to catch up.
func summaryRows() []row {
	return []row{
		{"sent", func(r Run) string { return strconv.Itoa(r.Sent) }},
		{"acked", func(r Run) string { return strconv.Itoa(r.Acked) }},
		{"received", func(r Run) string { return strconv.Itoa(r.Received) }},
		{"lost", func(r Run) string { return strconv.Itoa(r.Lost) }},
		{"duplicated", func(r Run) string { return strconv.Itoa(r.Duplicated) }},
		{"given up", func(r Run) string { return strconv.Itoa(r.GivenUp) }},
		{"p50 (ms)", func(r Run) string { return number(float64(r.P50), 1) }},
		{"p90 (ms)", func(r Run) string { return number(float64(r.P90), 1) }},
		{"p99 (ms)", func(r Run) string { return number(float64(r.P99), 1) }},
		{"max (ms)", func(r Run) string { return number(float64(r.Max), 1) }},
		{"λ (alarms/s)", func(r Run) string { return number(r.Lambda, 2) }},
		{"μ (alarms/s)", func(r Run) string { return number(r.Mu, 2) }},
		{"ρ", func(r Run) string { return number(r.Rho, 3) }},
		{"drain (s)", func(r Run) string { return number(float64(r.Drain)/1000, 1) }},
	}
}

// cpuRoles are the roles whose CPU time the summary shows, in the order of an alarm's path.
var cpuRoles = []string{"comp1", "http2mqtt", "broker", "mqtt2http", "comp2", "rast-sim"}

// cpuRows are the rows of CPU seconds per 1,000 alarms, per role and in total, when a run
// measured them; "-" for a role a topology does not have.
func cpuRows(e Experiment) []row {
	measured := false
	for _, r := range e.Runs {
		measured = measured || len(r.CPU) > 0
	}
	if !measured {
		return nil
	}
	var rows []row
	for _, role := range cpuRoles {
		rows = append(rows, row{"CPU s/1,000 alarms, " + role, func(r Run) string {
			v, ok := r.CPU[role]
			if !ok {
				return "-"
			}
			return number(v, 3)
		}})
	}
	return append(rows, row{"CPU s/1,000 alarms, total", func(r Run) string {
		if len(r.CPU) == 0 {
			return "-"
		}
		var sum float64
		for _, v := range r.CPU {
			sum += v
		}
		return number(sum, 3)
	}})
}

// memoryRows are the rows of each role's resident memory, idle and at its peak, when a run
// measured them; "-" for a role a topology does not have.
func memoryRows(e Experiment) []row {
	measured := false
	for _, r := range e.Runs {
		measured = measured || len(r.PeakRSS) > 0
	}
	if !measured {
		return nil
	}
	var rows []row
	for _, fig := range []struct {
		label string
		of    func(Run) map[string]float64
	}{
		{"idle", func(r Run) map[string]float64 { return r.IdleRSS }},
		{"peak", func(r Run) map[string]float64 { return r.PeakRSS }},
	} {
		for _, role := range cpuRoles {
			rows = append(rows, row{"RSS MB " + fig.label + ", " + role, func(r Run) string {
				v, ok := fig.of(r)[role]
				if !ok {
					return "-"
				}
				return number(v, 1)
			}})
		}
	}
	return rows
}

// number writes f with prec decimals. ρ = λ/μ is infinite or NaN when nothing was served, and
// the table must still print.
func number(f float64, prec int) string {
	switch {
	case math.IsNaN(f):
		return "n/a"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	return strconv.FormatFloat(f, 'f', prec, 64)
}

// summaryTable has one column per topology, in the order of e.Runs.
func summaryTable(e Experiment) table {
	t := table{Header: []string{""}, Numeric: []bool{false}}
	for _, r := range e.Runs {
		t.Header = append(t.Header, r.Topology)
		t.Numeric = append(t.Numeric, true)
	}
	for _, def := range append(append(summaryRows(), cpuRows(e)...), memoryRows(e)...) {
		cells := []string{def.label}
		for _, r := range e.Runs {
			cells = append(cells, def.value(r))
		}
		t.Rows = append(t.Rows, cells)
	}
	return t
}

// faultTable is the fault timeline: every stop and start, planned and as done, in seconds from
// its run's start, so that it can be laid beside the plots' x axes.
func faultTable(e Experiment) table {
	t := table{
		Header: []string{"run", "service", "planned stop (s)", "planned start (s)",
			"stopped (s)", "started (s)", "drawn downtime (s)", "actual downtime (s)"},
		Numeric: []bool{false, false, true, true, true, true, true, true},
	}
	for _, r := range e.Runs {
		for _, f := range r.Faults {
			actual := "-"
			if !f.Stopped.IsZero() && !f.Started.IsZero() {
				actual = number(f.Started.Sub(f.Stopped).Seconds(), 1)
			}
			t.Rows = append(t.Rows, []string{
				r.Topology, f.Service,
				relative(f.PlannedStop, r.Start), relative(f.PlannedStart, r.Start),
				relative(f.Stopped, r.Start), relative(f.Started, r.Start),
				number(float64(f.Downtime)/1000, 1), actual,
			})
		}
	}
	return t
}

// relative writes t as seconds from start, or "-" for a stop or start that did not happen.
func relative(t, start time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return number(t.Sub(start).Seconds(), 1)
}

// fact is one line of the experiment's header.
type fact struct{ Label, Value string }

// headerFacts are what a reader needs to repeat or compare the experiment.
func headerFacts(e Experiment) []fact {
	faithful := "no (the product's defaults)"
	if e.Faithful {
		faithful = "yes (the original's settings)"
	}
	finished := clock(e.Finished)
	if !e.Started.IsZero() && !e.Finished.IsZero() {
		finished += " (took " + e.Finished.Sub(e.Started).Round(time.Second).String() + ")"
	}
	return []fact{
		{"kind", orDash(e.Kind)},
		{"started", clock(e.Started)},
		{"finished", finished},
		{"seed", strconv.FormatUint(e.Seed, 10)},
		{"time scale", strconv.FormatFloat(e.TimeScale, 'g', -1, 64)},
		{"target", orDash(e.Target)},
		{"faithful", faithful},
		{"load", loadFact(e)},
		{"background", strconv.FormatFloat(e.Background, 'g', -1, 64) + " requests/s"},
	}
}

// loadFact says what load the alarms came from: the failover's devices, or the performance
// experiment's steps, devices of the closed model or rates of the open one, as its first run
// that has steps ran them (a step that ended the experiment ends the list).
func loadFact(e Experiment) string {
	if e.Devices > 0 {
		return strconv.Itoa(e.Devices) + " devices (closed model)"
	}
	for _, r := range e.Runs {
		if len(r.Steps) == 0 {
			continue
		}
		var each []string
		open := false
		for _, s := range r.Steps {
			if s.Rate > 0 {
				open = true
				each = append(each, number(s.Rate, -1))
			} else {
				each = append(each, strconv.Itoa(s.Devices))
			}
		}
		if open {
			return strings.Join(each, ", ") + " alarms/s (open model, a step each)"
		}
		return strings.Join(each, ", ") + " devices (closed model, a step each)"
	}
	return "-"
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format("2006-01-02 15:04:05 MST")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// runStarts names each run's start, the origin of its relative times.
func runStarts(e Experiment) string {
	s := ""
	for i, r := range e.Runs {
		if i > 0 {
			s += ", "
		}
		s += r.Topology + " " + clock(r.Start)
	}
	return s
}

// hasFaults says whether any run stopped a service.
func hasFaults(e Experiment) bool {
	for _, r := range e.Runs {
		if len(r.Faults) > 0 {
			return true
		}
	}
	return false
}

const (
	noRuns   = "No runs were recorded."
	noFaults = "No faults were injected."
)

// Summary writes the summary table and the fault timeline aligned for a terminal: what
// `lps experiment` prints when it ends.
func Summary(w io.Writer, e Experiment) error {
	if _, err := fmt.Fprintf(w, "%s experiment, started %s, seed %d\n\n", orDash(e.Kind), clock(e.Started), e.Seed); err != nil {
		return fmt.Errorf("writing summary: %w", err)
	}
	if len(e.Runs) == 0 {
		_, err := fmt.Fprintln(w, noRuns)
		return err
	}
	if err := summaryTable(e).text(w); err != nil {
		return err
	}
	if !hasFaults(e) {
		return nil
	}
	if _, err := fmt.Fprintf(w, "\nfault timeline, seconds from each run's start (%s)\n", runStarts(e)); err != nil {
		return fmt.Errorf("writing summary: %w", err)
	}
	return faultTable(e).text(w)
}

// writeMarkdown writes summary.md: the header, the summary table and the fault timeline.
func writeMarkdown(w io.Writer, e Experiment) error {
	p := func(format string, a ...any) error {
		_, err := fmt.Fprintf(w, format, a...)
		return err
	}
	if err := p("# LPS experiment: %s\n\n", orDash(e.Kind)); err != nil {
		return err
	}
	for _, f := range headerFacts(e) {
		if err := p("- %s: %s\n", f.Label, f.Value); err != nil {
			return err
		}
	}
	if err := p("\n## Summary\n\n"); err != nil {
		return err
	}
	if len(e.Runs) == 0 {
		return p("%s\n", noRuns)
	}
	if err := summaryTable(e).markdown(w); err != nil {
		return err
	}
	if err := p("\n## Fault timeline\n\n"); err != nil {
		return err
	}
	if !hasFaults(e) {
		return p("%s\n", noFaults)
	}
	if err := p("Seconds from each run's start (%s).\n\n", runStarts(e)); err != nil {
		return err
	}
	return faultTable(e).markdown(w)
}

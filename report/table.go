package report

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// table is a grid of cells with a header. The summary and the fault timeline are built once as
// tables and then rendered as Markdown, as aligned text and as HTML, so that the forms a reader
// may compare always show the same numbers.
type table struct {
	Header []string
	Rows   [][]string
	// Numeric marks the columns that hold numbers: right-aligned, so digits line up.
	Numeric []bool
}

// numeric says whether column i is right-aligned.
func (t table) numeric(i int) bool { return i < len(t.Numeric) && t.Numeric[i] }

// markdown writes t as a GitHub-flavoured Markdown table.
func (t table) markdown(w io.Writer) error {
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for _, c := range cells {
			// A bare | would end the cell early.
			b.WriteString(" " + strings.ReplaceAll(c, "|", `\|`) + " |")
		}
		b.WriteString("\n")
	}
	line(t.Header)
	b.WriteString("|")
	for i := range t.Header {
		if t.numeric(i) {
			b.WriteString("---:|")
		} else {
			b.WriteString("---|")
		}
	}
	b.WriteString("\n")
	for _, r := range t.Rows {
		line(r)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// text writes t with its columns padded to a common width, for a terminal. Widths count runes,
// not bytes: λ, μ and ρ are one column wide but two bytes long.
func (t table) text(w io.Writer) error {
	width := make([]int, len(t.Header))
	for _, r := range append([][]string{t.Header}, t.Rows...) {
		for i, c := range r {
			if i < len(width) {
				width[i] = max(width[i], utf8.RuneCountInString(c))
			}
		}
	}
	var b strings.Builder
	for _, r := range append([][]string{t.Header}, t.Rows...) {
		var line strings.Builder
		for i, c := range r {
			if i >= len(width) {
				break
			}
			if i > 0 {
				line.WriteString("  ")
			}
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if t.numeric(i) {
				line.WriteString(pad + c)
			} else {
				line.WriteString(c + pad)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("writing table: %w", err)
	}
	return nil
}

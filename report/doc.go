// Package report turns the results of one `lps experiment` into the files a researcher reads:
// report.html (one self-contained page: inline CSS and SVG plots drawn with gonum/plot, no
// script, nothing fetched from the network, so it opens the same from a mail attachment or an
// air-gapped laptop), summary.md (the summary and the fault timeline as Markdown tables) and
// results.json (the Experiment itself, for further analysis). The per-request CSV is the
// ledger's.
//
// Summary prints the same tables for a terminal; the Markdown, text and HTML forms are rendered
// from one set of row definitions, so they cannot disagree.
package report

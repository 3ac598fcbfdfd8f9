package report

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write writes report.html, summary.md and results.json into dir, which must exist: a
// misspelt directory is an error, not a new folder the researcher never looks in.
//
// Each file is written whole or not at all (written beside its name, then renamed), and a
// file that cannot be written does not stop the others: results.json comes first, as the data
// every other file can be made again from.
func Write(dir string, e Experiment) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("writing the report into %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("writing the report into %s: not a directory", dir)
	}
	var errs []error
	for _, f := range []struct {
		name  string
		write func(io.Writer, Experiment) error
	}{
		{"results.json", writeResults},
		{"summary.md", writeMarkdown},
		{"report.html", writeHTML},
	} {
		if err := writeFile(filepath.Join(dir, f.name), func(w io.Writer) error { return f.write(w, e) }); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// writeFile writes path through a temporary file in the same directory, renamed into place
// once complete, so that a failure leaves no half-written file behind.
func writeFile(path string, write func(io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	w := bufio.NewWriter(tmp)
	if err := write(w); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	// CreateTemp makes the file 0600; the report is for reading by others too.
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

package report

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
)

// writeResults writes e as indented JSON: results.json, for analysis scripts and for
// ReadResults.
func writeResults(w io.Writer, e Experiment) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(e); err != nil {
		return fmt.Errorf("encoding results as JSON: %w", err)
	}
	return nil
}

// ReadResults reads a results.json that Write wrote. Latencies are not in the file, so the
// Experiment comes back without them; a figure that was not finite (ρ when nothing was served)
// was written as null and reads back as 0.
func ReadResults(path string) (Experiment, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Experiment{}, fmt.Errorf("reading results: %w", err)
	}
	var e Experiment
	if err := json.Unmarshal(b, &e); err != nil {
		return Experiment{}, fmt.Errorf("reading results from %s: %w", path, err)
	}
	return e, nil
}

// finite is a float64 that JSON writes as null when it is NaN or infinite. encoding/json
// refuses those values, and an ρ = λ/μ with μ = 0 must not cost a two-hour experiment its
// results.json.
type finite float64

// MarshalJSON writes f as encoding/json writes a float64, or null.
func (f finite) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(f))
}

// MarshalJSON writes m as a number of milliseconds, or null when it is not finite.
func (m Millis) MarshalJSON() ([]byte, error) { return finite(m).MarshalJSON() }

// MarshalJSON writes r with its queueing figures as finite (null when not finite).
func (r Run) MarshalJSON() ([]byte, error) {
	// plain has Run's fields but not this method, so Marshal does not call it again; the outer
	// fields, being shallower, replace the embedded ones of the same JSON name.
	type plain Run
	return json.Marshal(struct {
		plain
		Lambda finite `json:"lambda"`
		Mu     finite `json:"mu"`
		Rho    finite `json:"rho"`
	}{plain(r), finite(r.Lambda), finite(r.Mu), finite(r.Rho)})
}

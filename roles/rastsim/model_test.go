package rastsim

import (
	"encoding/xml"
	"math"
	"os"
	"strconv"
	"testing"

	"github.com/lpsdev/lps/internal/testutil"
)

func TestPredict(t *testing.T) {
	formula := func(pr1, pr3, typ float64) float64 {
		return 0.034863623531346075 - 0.010397816715869023*pr1 + 0.06213722751379576*pr3 + 4.643355320081699e-5*typ
	}
	tests := []struct {
		name          string
		pr1, pr3, typ int
	}{
		{"alarm alone", 0, 0, 9},
		{"alarm, 1 in flight", 1, 0, 9},
		{"alarm, 2 in flight", 2, 0, 9},
		{"alarm, 3 in flight", 3, 0, 9},
		{"alarm, 4 in flight (negative)", 4, 0, 9},
		{"alarm, 2 finished since", 1, 2, 9},
		{"type 0", 0, 0, 0},
		{"last type of the prod mapping", 0, 0, 347},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Predict(tt.pr1, tt.pr3, tt.typ)
			want := formula(float64(tt.pr1), float64(tt.pr3), float64(tt.typ))
			if math.Abs(got-want) > 1e-15 {
				t.Errorf("Predict(%d, %d, %d) = %.17g, want %.17g", tt.pr1, tt.pr3, tt.typ, got, want)
			}
		})
	}
	if y := Predict(4, 0, 9); y >= 0 {
		t.Errorf("Predict(4, 0, 9) = %g, want a negative prediction (the simulator then does not sleep)", y)
	}
}

// TestCoefficientsMatchPMML checks the built-in coefficients against the original's model file.
func TestCoefficientsMatchPMML(t *testing.T) {
	path := testutil.SharedData(t, "gs_model_LR_03-11-2022.pmml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Table struct {
			Intercept  string `xml:"intercept,attr"`
			Predictors []struct {
				Name        string `xml:"name,attr"`
				Coefficient string `xml:"coefficient,attr"`
			} `xml:"NumericPredictor"`
		} `xml:"RegressionModel>RegressionTable"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	parse := func(s string) float64 {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("parsing coefficient %q: %v", s, err)
		}
		return f
	}
	got := map[string]float64{"intercept": parse(doc.Table.Intercept)}
	for _, p := range doc.Table.Predictors {
		got[p.Name] = parse(p.Coefficient)
	}
	want := map[string]float64{
		"intercept":    mascotsIntercept,
		"PR 1":         mascotsPR1,
		"PR 3":         mascotsPR3,
		"Request Type": mascotsRequestType,
	}
	if len(got) != len(want) {
		t.Errorf("the model file has the terms %v, want exactly %v", got, want)
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || g != w {
			t.Errorf("%s: model file says %v (present: %v), built in is %v", name, g, ok, w)
		}
	}
}

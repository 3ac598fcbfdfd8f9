package rastsim

import (
	"fmt"
	"strings"
)

// Models a Config can name.
const (
	// ModelMascots2022 is the original's default model (its `-m 0`, MASCOTS 2022): the linear
	// regression of gs_model_LR_03-11-2022.pmml, computed by Predict.
	ModelMascots2022 = "mascots2022"
	// ModelNone answers every command at once.
	ModelNone = "none"
)

// The coefficients of gs_model_LR_03-11-2022.pmml (a scikit-learn LinearRegression exported by
// JPMML-SkLearn), the only part of the model file the simulator needs. model_test.go checks them
// against the file when ../shared/data is present.
const (
	mascotsIntercept   = 0.034863623531346075
	mascotsPR1         = -0.010397816715869023
	mascotsPR3         = 0.06213722751379576
	mascotsRequestType = 4.643355320081699e-5
)

// Predict is the mascots2022 model: the predicted processing time in seconds of a command of
// request type reqType that arrived with pr1 other requests in flight and saw pr3 requests finish
// since. The result is not clamped; it is negative when many requests are in flight, and the
// simulator then does not sleep at all.
func Predict(pr1, pr3, reqType int) float64 {
	// The explicit conversions keep the compiler from fusing multiply-adds, so the result is the
	// same on every architecture (and equal to the PMML evaluation order).
	y := mascotsIntercept
	y += float64(mascotsPR1 * float64(pr1))
	y += float64(mascotsPR3 * float64(pr3))
	y += float64(mascotsRequestType * float64(reqType))
	return y
}

// Predictor predicts a command's processing time in seconds, unclamped, from the requests in
// flight when it arrived (pr1), the requests finished since (pr3) and its request type from the
// mapping. It is called concurrently and must not block.
type Predictor interface {
	Predict(pr1, pr3, reqType int) float64
}

// PredictorFunc adapts a function to a Predictor.
type PredictorFunc func(pr1, pr3, reqType int) float64

// Predict calls f.
func (f PredictorFunc) Predict(pr1, pr3, reqType int) float64 { return f(pr1, pr3, reqType) }

var _ Predictor = PredictorFunc(nil)

// predictorFor returns the Predictor of a model name; nil means ModelNone.
func predictorFor(model string) (Predictor, error) {
	switch strings.ToLower(model) {
	case "", ModelMascots2022:
		return PredictorFunc(Predict), nil
	case ModelNone:
		return nil, nil
	default:
		return nil, fmt.Errorf("unknown model %q; use %s or %s", model, ModelMascots2022, ModelNone)
	}
}

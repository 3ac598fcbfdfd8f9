package mqttconn

import (
	"math"
	"math/rand/v2"
	"time"
)

// Backoff computes exponentially growing delays with jitter: attempt n (from 1) waits a random
// duration between half and all of min(Max, Base·2^(n-1)). Half the delay is fixed so that a
// run of failures can never collapse into a hot loop (full jitter may draw ~0 many times in a
// row); the random half spreads out clients that failed at the same moment.
type Backoff struct {
	Base, Max time.Duration
}

// Delay returns the delay before attempt n; n < 1 means no delay.
func (b Backoff) Delay(n int) time.Duration {
	if n < 1 || b.Base <= 0 {
		return 0
	}
	d := b.Base
	for i := 1; i < n && (b.Max <= 0 || d < b.Max) && d < math.MaxInt64/2; i++ {
		d *= 2
	}
	if b.Max > 0 && d > b.Max {
		d = b.Max
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

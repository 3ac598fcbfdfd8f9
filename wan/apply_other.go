//go:build !linux

package wan

import (
	"context"
	"fmt"
	"runtime"

	"go.uber.org/zap"
)

// Apply shapes traffic only on Linux; elsewhere a profile that shapes
// anything fails with ErrUnsupported.
func Apply(_ context.Context, _ string, p Profile, _ *zap.Logger) (undo func() error, err error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("applying wan profile %s: %w", p.Name, err)
	}
	if p.IsZero() {
		return func() error { return nil }, nil
	}
	return nil, fmt.Errorf("applying wan profile %s: %w: traffic control on %s", p.Name, ErrUnsupported, runtime.GOOS)
}

// Describe works only on Linux.
func Describe(string) (string, error) {
	return "", fmt.Errorf("describing wan shaping: %w: traffic control on %s", ErrUnsupported, runtime.GOOS)
}

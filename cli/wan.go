package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/wan"
)

// wanTimeout bounds setting up the shaping; netlink answers in microseconds unless something is
// badly wrong.
const wanTimeout = 30 * time.Second

// addWANFlag adds --wan-profile (env LPS_WAN_PROFILE), which every role applies at start, to fs.
func addWANFlag(fs *pflag.FlagSet, a *app) {
	fs.StringVar(&a.wanProfile, "wan-profile", "", "shape this process's network interface (the default route's) like a WAN link: "+
		"a profile ("+strings.Join(wan.BuiltinNames(), ", ")+") or key=value pairs, e.g. corporate-wan,delay=80ms; "+
		"needs NET_ADMIN (empty: off)")
}

// applyWAN shapes the default route's interface as --wan-profile says and returns undo, which
// removes the shaping when the role stops. An empty profile does nothing and needs no privilege.
func (a *app) applyWAN(logger *zap.Logger) (undo func(), err error) {
	return applyWANProfile(context.Background(), a.wanProfile, wanEnv{apply: wan.Apply, euid: os.Geteuid()}, logger)
}

// wanEnv is what applyWANProfile needs from the system; tests give their own.
type wanEnv struct {
	// apply is wan.Apply.
	apply func(ctx context.Context, ifname string, p wan.Profile, logger *zap.Logger) (func() error, error)
	// euid is the process's effective user id, for the hint when shaping is not permitted.
	euid int
}

// applyWANProfile parses spec and applies it to the default route's interface. When the kernel
// lacks netem (delay, jitter and loss), it warns and applies the profile's rate limits alone, as
// the original's tc script did on hosts without netem. Errors are one line and say what to
// change.
func applyWANProfile(ctx context.Context, spec string, env wanEnv, logger *zap.Logger) (func(), error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return func() {}, nil
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	p, err := wan.ParseProfile(spec)
	if err != nil {
		return nil, &ConfigError{fmt.Errorf("invalid --wan-profile: %w", err)}
	}
	ctx, cancel := context.WithTimeout(ctx, wanTimeout)
	defer cancel()

	undo, err := env.apply(ctx, "", p, logger)
	if rateOnly := p.RateOnly(); err != nil && errors.Is(err, wan.ErrUnsupported) && rateOnly != p {
		// Apply is all or nothing, so the interface is as it was; try without netem. If that
		// fails too, the first error tells what the whole profile needs.
		var rerr error
		if undo, rerr = env.apply(ctx, "", rateOnly, logger); rerr == nil {
			logger.Named("wan").Warn("this kernel cannot delay or drop packets (no netem): "+
				"applied the wan profile's rate limits only, as the original's tc script did",
				zap.String("profile", p.Name), zap.Stringer("applied", rateOnly), zap.Stringer("wanted", p),
				zap.NamedError("netem_error", err))
			err = nil
		}
	}
	if err != nil {
		return nil, wanError(err, env.euid)
	}
	// Apply's undo logs what it could not remove; the process is stopping, so there is nothing
	// more to do with the error.
	return func() { _ = undo() }, nil
}

// wanError turns Apply's error into the one line a role stops with.
func wanError(err error, euid int) error {
	switch {
	case errors.Is(err, wan.ErrNotPermitted):
		if euid != 0 {
			// Docker puts cap_add capabilities into the bounding set only; a process running as
			// another user than root has none of them after exec (no ambient capabilities).
			return &ConfigError{fmt.Errorf("--wan-profile: %w; this process runs as uid %d, and Docker "+
				"gives added capabilities to root only: also run the service as user \"0\"", err, euid)}
		}
		return &ConfigError{fmt.Errorf("--wan-profile: %w", err)}
	case errors.Is(err, wan.ErrUnsupported):
		return &ConfigError{fmt.Errorf("--wan-profile: %w", err)}
	default:
		return fmt.Errorf("--wan-profile: %w", err)
	}
}

package wan

import (
	"errors"
	"fmt"
	"syscall"
)

// ErrNotPermitted is wrapped by Apply's error when the kernel refused a change
// for lack of CAP_NET_ADMIN in the interface's network namespace.
var ErrNotPermitted = errors.New("not permitted: shaping traffic needs CAP_NET_ADMIN " +
	"(compose: cap_add: [NET_ADMIN]; docker run: --cap-add NET_ADMIN)")

// ErrUnsupported is wrapped by Apply's error when the kernel lacks a part the
// profile needs (the netem or tbf qdisc, ifb devices, the u32 filter or the
// mirred action), or when the platform is not Linux. The message names the
// part.
var ErrUnsupported = errors.New("not supported by this kernel")

// ErrBusy is wrapped by Apply's error when the interface already carries a
// root qdisc or an ingress qdisc that lps did not add; Apply does not replace
// someone else's shaping.
var ErrBusy = errors.New("interface already has traffic control lps did not add")

// classify turns the error of one netlink step into one a caller can branch
// on: EPERM and EACCES become ErrNotPermitted; ENOENT and EOPNOTSUPP while
// adding something (the kernel's answers to an unknown qdisc, filter, action
// or link kind) become ErrUnsupported with missing named. The result always
// wraps err and says what was being done.
func classify(doing, missing string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%s: %w: %w", doing, ErrNotPermitted, err)
	case missing != "" && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EOPNOTSUPP)):
		return fmt.Errorf("%s: %w: %s is missing: %w", doing, ErrUnsupported, missing, err)
	default:
		return fmt.Errorf("%s: %w", doing, err)
	}
}

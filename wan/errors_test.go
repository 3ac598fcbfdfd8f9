package wan

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name            string
		missing         string
		err             error
		wantPermission  bool
		wantUnsupported bool
		wantText        []string
	}{
		{
			name: "EPERM", err: syscall.EPERM, missing: "netem",
			wantPermission: true, wantText: []string{"adding x", "CAP_NET_ADMIN", "cap_add: [NET_ADMIN]", "operation not permitted"},
		},
		{
			// netlink wraps the errno with the kernel's extended ack message.
			name: "EPERM with message", err: fmt.Errorf("%w: %s", syscall.EPERM, "some kernel text"),
			wantPermission: true, wantText: []string{"NET_ADMIN", "some kernel text"},
		},
		{name: "EACCES", err: syscall.EACCES, wantPermission: true},
		{
			name: "ENOENT while adding", err: syscall.ENOENT, missing: "the netem qdisc",
			wantUnsupported: true, wantText: []string{"adding x", "not supported", "the netem qdisc is missing"},
		},
		{name: "EOPNOTSUPP while adding", err: syscall.EOPNOTSUPP, missing: "ifb devices", wantUnsupported: true},
		{name: "ENOENT otherwise", err: syscall.ENOENT, wantText: []string{"adding x: no such file"}},
		{name: "EBUSY", err: syscall.EBUSY, missing: "netem", wantText: []string{"adding x: device or resource busy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classify("adding x", tt.missing, tt.err)
			if !errors.Is(got, tt.err) {
				t.Errorf("%v does not wrap %v", got, tt.err)
			}
			if errors.Is(got, ErrNotPermitted) != tt.wantPermission {
				t.Errorf("errors.Is(%v, ErrNotPermitted) = %v", got, !tt.wantPermission)
			}
			if errors.Is(got, ErrUnsupported) != tt.wantUnsupported {
				t.Errorf("errors.Is(%v, ErrUnsupported) = %v", got, !tt.wantUnsupported)
			}
			for _, w := range tt.wantText {
				if !strings.Contains(got.Error(), w) {
					t.Errorf("%q does not mention %q", got, w)
				}
			}
		})
	}
	if classify("x", "", nil) != nil {
		t.Error("classify(nil) != nil")
	}
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lpsdev/lps/wan"
)

// fakeApply records the profiles it was asked for and answers with the next error of errs.
type fakeApply struct {
	errs    []error
	applied []wan.Profile
	undone  int
}

func (f *fakeApply) apply(_ context.Context, ifname string, p wan.Profile, _ *zap.Logger) (func() error, error) {
	if ifname != "" {
		return nil, fmt.Errorf("want the default route's interface, got %q", ifname)
	}
	f.applied = append(f.applied, p)
	var err error
	if len(f.errs) > 0 {
		err, f.errs = f.errs[0], f.errs[1:]
	}
	if err != nil {
		return nil, err
	}
	return func() error { f.undone++; return nil }, nil
}

// The errors wan.Apply answers with, shaped as it shapes them.
var (
	errNoNetem = fmt.Errorf("applying wan profile corporate-wan: adding netem qdisc on eth0: %w: the netem qdisc is missing: %w",
		wan.ErrUnsupported, syscall.ENOENT)
	errNoIFB = fmt.Errorf("applying wan profile corporate-wan: adding ifb link: %w: ifb devices are missing: %w",
		wan.ErrUnsupported, syscall.EOPNOTSUPP)
	errNoCap = fmt.Errorf("applying wan profile corporate-wan: adding netem qdisc on eth0: %w: %w",
		wan.ErrNotPermitted, syscall.EPERM)
)

func TestApplyWANProfile(t *testing.T) {
	corporate, _ := wan.Builtin("corporate-wan")
	tests := []struct {
		name      string
		spec      string
		euid      int
		errs      []error
		wantApply []wan.Profile // profiles asked for, in order
		wantErr   []string      // substrings of the error; nil: success
		wantExit  int
		wantWarn  string // substring of a warning that must be logged
	}{
		{name: "empty is off", spec: "  "},
		{name: "lan shapes nothing", spec: "lan", wantApply: []wan.Profile{{Name: "lan"}}},
		{name: "builtin", spec: "corporate-wan", wantApply: []wan.Profile{corporate}},
		{
			name: "no netem falls back to the rates", spec: "corporate-wan", errs: []error{errNoNetem},
			wantApply: []wan.Profile{corporate, corporate.RateOnly()},
			wantWarn:  "no netem",
		},
		{
			name: "no ifb either", spec: "corporate-wan", errs: []error{errNoNetem, errNoIFB},
			wantApply: []wan.Profile{corporate, corporate.RateOnly()},
			wantErr:   []string{"--wan-profile", "netem"}, wantExit: 2,
		},
		{
			name: "rate only profile is not retried", spec: "rate-out=5mbit", errs: []error{errNoIFB},
			wantApply: []wan.Profile{{Name: "custom", EgressRate: 5e6}},
			wantErr:   []string{"--wan-profile", "ifb"}, wantExit: 2,
		},
		{
			name: "no NET_ADMIN as root", spec: "corporate-wan", errs: []error{errNoCap},
			wantApply: []wan.Profile{corporate},
			wantErr:   []string{"--wan-profile", "CAP_NET_ADMIN", "cap_add: [NET_ADMIN]"}, wantExit: 2,
		},
		{
			name: "no NET_ADMIN as another user", spec: "corporate-wan", euid: 65532, errs: []error{errNoCap},
			wantApply: []wan.Profile{corporate},
			wantErr:   []string{"cap_add: [NET_ADMIN]", "uid 65532", `user "0"`}, wantExit: 2,
		},
		{
			name: "other failure", spec: "corporate-wan", errs: []error{errors.New("netlink timed out")},
			wantApply: []wan.Profile{corporate},
			wantErr:   []string{"--wan-profile", "netlink timed out"}, wantExit: 1,
		},
		{name: "unknown profile", spec: "dialup", wantErr: []string{"invalid --wan-profile", `"dialup"`, "corporate-wan"}, wantExit: 2},
		{name: "bad value", spec: "delay=30", wantErr: []string{"invalid --wan-profile", "delay"}, wantExit: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeApply{errs: tt.errs}
			core, logs := observer.New(zapcore.WarnLevel)
			undo, err := applyWANProfile(context.Background(), tt.spec, wanEnv{apply: f.apply, euid: tt.euid}, zap.New(core))
			if fmt.Sprint(f.applied) != fmt.Sprint(tt.wantApply) {
				t.Errorf("applied %v, want %v", f.applied, tt.wantApply)
			}
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("no error, want one with %q", tt.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error has more than one line: %q", err)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				if got := ExitCode(err); got != tt.wantExit {
					t.Errorf("exit code %d, want %d (error %q)", got, tt.wantExit, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("applyWANProfile: %v", err)
			}
			undo()
			if f.undone != min(len(f.applied), 1) {
				t.Errorf("undo removed %d shapings, want %d", f.undone, min(len(f.applied), 1))
			}
			warned := false
			for _, e := range logs.All() {
				warned = warned || (tt.wantWarn != "" && strings.Contains(e.Message, tt.wantWarn))
			}
			if tt.wantWarn != "" && !warned {
				t.Errorf("no warning with %q; logged %v", tt.wantWarn, logs.All())
			}
			if tt.wantWarn == "" && logs.Len() > 0 {
				t.Errorf("unexpected warnings %v", logs.All())
			}
		})
	}
}

// --wan-profile reads LPS_WAN_PROFILE like every flag, and a command line value wins.
func TestWANFlag(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{name: "default off", want: ""},
		{name: "flag", args: []string{"--wan-profile", "adsl"}, want: "adsl"},
		{name: "env", env: map[string]string{"LPS_WAN_PROFILE": "corporate-wan,delay=80ms"}, want: "corporate-wan,delay=80ms"},
		{name: "flag wins", args: []string{"--wan-profile=lan"}, env: map[string]string{"LPS_WAN_PROFILE": "adsl"}, want: "lan"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := &app{}
			cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
			addWANFlag(cmd.Flags(), a)
			describeEnv(cmd.Flags())
			if u := cmd.Flags().Lookup("wan-profile").Usage; !strings.Contains(u, "LPS_WAN_PROFILE") || !strings.Contains(u, "NET_ADMIN") {
				t.Errorf("usage %q names neither its env nor NET_ADMIN", u)
			}
			cmd.PreRunE = func(cmd *cobra.Command, _ []string) error { return applyEnv(cmd, env(tt.env)) }
			cmd.SetArgs(tt.args)
			if err := cmd.Execute(); err != nil {
				t.Fatal(err)
			}
			if a.wanProfile != tt.want {
				t.Errorf("wanProfile = %q, want %q", a.wanProfile, tt.want)
			}
		})
	}
}

// A role's start applies the profile for real: in a network namespace of its own, whose default
// route leaves by "eth0" (a veth), as a container's does. On a kernel without netem the rates
// are applied alone, with a warning; undo removes everything.
func TestApplyWANInANetworkNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: creating a network namespace needs root")
	}
	type result struct {
		shaped, after string
		warnings      []string
		err           error
	}
	done := make(chan result, 1)
	go func() {
		// The thread enters the new namespace and never leaves; never unlocking it makes Go
		// discard it when this goroutine returns, and the namespace goes with its last handle.
		runtime.LockOSThread()
		var r result
		defer func() { done <- r }()
		ns, err := netns.New()
		if err != nil {
			r.err = fmt.Errorf("skip: cannot create a network namespace: %w", err)
			return
		}
		defer ns.Close()
		if err := defaultRouteVia("eth0"); err != nil {
			r.err = fmt.Errorf("skip: cannot build the namespace's network: %w", err)
			return
		}
		core, logs := observer.New(zapcore.WarnLevel)
		undo, err := applyWANProfile(context.Background(), "corporate-wan", wanEnv{apply: wan.Apply, euid: 0}, zap.New(core))
		if err != nil {
			r.err = err
			return
		}
		r.shaped, r.err = wan.Describe("eth0")
		undo()
		if r.err == nil {
			r.after, r.err = wan.Describe("eth0")
		}
		for _, e := range logs.All() {
			r.warnings = append(r.warnings, e.Message)
		}
	}()
	r := <-done
	if r.err != nil && strings.HasPrefix(r.err.Error(), "skip: ") {
		t.Skip(r.err)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Logf("shaped:\n%s", r.shaped)
	for _, w := range []string{"tbf 4c50: root rate 5mbit", "ifb-lps", "rate 100mbit"} {
		if !strings.Contains(r.shaped, w) {
			t.Errorf("shaping lacks %q:\n%s", w, r.shaped)
		}
	}
	netem := strings.Contains(r.shaped, "netem")
	warned := strings.Contains(strings.Join(r.warnings, "\n"), "no netem")
	if netem == warned {
		t.Errorf("netem applied: %v, warned about its absence: %v (warnings %q)", netem, warned, r.warnings)
	}
	if strings.Contains(r.after, "4c50:") || strings.Contains(r.after, "ifb-lps") {
		t.Errorf("undo left shaping behind:\n%s", r.after)
	}
}

// defaultRouteVia adds a veth pair, name and its peer, both up, with an address on name and the
// default route through it, in the calling thread's network namespace.
func defaultRouteVia(name string) error {
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "-peer"}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("adding veth pair %s: %w", name, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	peer, err := netlink.LinkByName(veth.PeerName)
	if err != nil {
		return err
	}
	addr, err := netlink.ParseAddr("169.254.78.1/30")
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("adding an address to %s: %w", name, err)
	}
	for _, l := range []netlink.Link{peer, link} {
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("setting %s up: %w", l.Attrs().Name, err)
		}
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP("169.254.78.2")}
	if err := netlink.RouteAdd(route); err != nil {
		return fmt.Errorf("adding the default route: %w", err)
	}
	return nil
}

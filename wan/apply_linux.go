//go:build linux

package wan

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

const (
	// lpsMajor is the qdisc handle major of every root qdisc Apply adds
	// ("tc qdisc show" prints it as 4c50:, "LP" in ASCII). It tells shaping
	// left by an earlier lps process in the same namespace (a crash skips
	// undo) from someone else's, which Apply refuses to touch.
	lpsMajor = 0x4c50
	// ingressMajor is the fixed handle major of the ingress qdisc.
	ingressMajor = 0xffff

	// netemLimit is netem's queue in packets. Its default of 1000 holds
	// 30 ms of traffic only up to about 400 mbit/s of full-size frames;
	// an unlimited-rate profile with a delay must not drop for that.
	netemLimit = 10000
	// burstTime sizes tbf's bucket: the original's script computed
	// burst = rate × 30 ms.
	burstTime = 30 * time.Millisecond
	// queueTime sizes tbf's queue: 100 ms at the shaped rate absorbs a TCP
	// window at the profiles' rates without adding seconds of bufferbloat.
	queueTime = 100 * time.Millisecond

	// netlinkTimeout bounds each netlink request; the kernel answers in
	// microseconds unless something is badly wrong.
	netlinkTimeout = 5 * time.Second
)

// Apply shapes the traffic of interface ifname ("" = the interface of the
// default route, eth0 in a container) in the calling thread's network
// namespace as p says, and returns undo, which removes what Apply added
// (idempotent, safe to call from any goroutine; its error lists what could
// not be removed). A profile that shapes nothing changes nothing.
//
// Apply is all or nothing: when a step fails it removes what it had added
// and returns an error that says which step failed and wraps
// [ErrNotPermitted] (no CAP_NET_ADMIN), [ErrUnsupported] (the kernel lacks
// netem, tbf, ifb, u32 or mirred) or [ErrBusy] (the interface carries
// traffic control lps did not add). Shaping left behind by an earlier lps
// process that did not get to undo is replaced, with a warning.
//
// The package comment shows the qdiscs it builds.
func Apply(ctx context.Context, ifname string, p Profile, logger *zap.Logger) (undo func() error, err error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	logger = logger.Named("wan")
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("applying wan profile %s: %w", p.Name, err)
	}
	if p.IsZero() {
		logger.Info("wan profile shapes nothing", zap.String("profile", p.Name))
		return func() error { return nil }, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("applying wan profile %s: %w", p.Name, err)
	}
	// tbf and netem take times in the kernel's scheduler ticks, which
	// netlink converts with /proc/net/psched; without it every delay and
	// burst would silently become 0.
	if netlink.TickInUsec() == 0 {
		return nil, fmt.Errorf("applying wan profile %s: reading /proc/net/psched failed (is /proc mounted?)", p.Name)
	}

	h, err := handleHere()
	if err != nil {
		return nil, fmt.Errorf("applying wan profile %s: %w", p.Name, err)
	}
	link, err := resolveLink(h, ifname)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("applying wan profile %s: %w", p.Name, err)
	}
	s := &shaper{h: h, link: link, name: link.Attrs().Name, logger: logger.With(zap.String("interface", link.Attrs().Name))}
	if err := s.apply(ctx, p); err != nil {
		if rerr := s.remove(); rerr != nil {
			s.logger.Error("removing partial wan shaping", zap.Error(rerr))
		}
		h.Close()
		return nil, fmt.Errorf("applying wan profile %s: %w", p.Name, err)
	}
	s.logger.Info("wan profile applied",
		zap.String("profile", p.Name), zap.Stringer("spec", p), zap.String("ifb", s.ifbName))

	var once sync.Once
	var undoErr error
	return func() error {
		once.Do(func() {
			undoErr = s.remove()
			h.Close()
			if undoErr != nil {
				s.logger.Error("removing wan shaping", zap.Error(undoErr))
				return
			}
			s.logger.Info("wan profile removed", zap.String("profile", p.Name))
		})
		return undoErr
	}, nil
}

// handleHere opens netlink sockets in the calling thread's network namespace
// and keeps them there, so that undo works on the same namespace whichever
// thread calls it later.
func handleHere() (*netlink.Handle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// A netlink socket belongs to the network namespace of the thread that opens it.
	// NewHandleAt would setns(2) even into the current namespace, which needs CAP_SYS_ADMIN: in
	// a container with only NET_ADMIN, Apply could not shape at all.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening netlink socket: %w", err)
	}
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		h.Close()
		return nil, fmt.Errorf("setting netlink timeout: %w", err)
	}
	return h, nil
}

// resolveLink finds the interface by name or, for "", the one the default
// route leaves by (IPv4 first, then IPv6; the lowest metric wins).
func resolveLink(h *netlink.Handle, ifname string) (netlink.Link, error) {
	if ifname != "" {
		link, err := h.LinkByName(ifname)
		if err != nil {
			return nil, fmt.Errorf("finding interface %q: %w", ifname, err)
		}
		return link, nil
	}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		var routes []netlink.Route
		err := retryDump(func() (err error) { routes, err = h.RouteList(nil, family); return err })
		if err != nil {
			return nil, fmt.Errorf("listing routes to find the default interface: %w", err)
		}
		best := -1
		for i, r := range routes {
			if r.LinkIndex <= 0 || (r.Dst != nil && !isDefault(r.Dst)) {
				continue
			}
			if best < 0 || r.Priority < routes[best].Priority {
				best = i
			}
		}
		if best >= 0 {
			link, err := h.LinkByIndex(routes[best].LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("finding the default route's interface: %w", err)
			}
			return link, nil
		}
	}
	return nil, errors.New("finding the default interface: no default route; name the interface")
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

// retryDump repeats a netlink dump the kernel interrupted because the table
// changed under it.
func retryDump(f func() error) error {
	var err error
	for range 3 {
		if err = f(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
	}
	return err
}

// shaper applies one profile to one interface and remembers what it added.
type shaper struct {
	h      *netlink.Handle
	link   netlink.Link
	name   string
	logger *zap.Logger

	ifbName string
	undo    []func() error // in the order added; removed in reverse
}

func (s *shaper) apply(ctx context.Context, p Profile) error {
	idx := s.link.Attrs().Index
	ifbName := ifbNameFor(idx)
	needEgress := p.EgressRate > 0 || p.needsNetem()
	needIngress := p.IngressRate > 0

	root, ingress, err := s.rootAndIngress(s.link)
	if err != nil {
		return err
	}
	if root != nil && major(root.Attrs().Handle) == lpsMajor {
		s.logger.Warn("removing wan shaping left by an earlier lps process", zap.String("qdisc", describeQdisc(root)))
		if err := ignoreGone(s.h.QdiscDel(root)); err != nil {
			return classify("removing stale root qdisc on "+s.name, "", err)
		}
		root = nil
	}
	if stale, err := s.h.LinkByName(ifbName); err == nil {
		s.logger.Warn("removing ingress shaping left by an earlier lps process", zap.String("ifb", ifbName))
		if ingress != nil {
			if err := ignoreGone(s.h.QdiscDel(ingress)); err != nil {
				return classify("removing stale ingress qdisc on "+s.name, "", err)
			}
			ingress = nil
		}
		if err := ignoreGone(s.h.LinkDel(stale)); err != nil {
			return classify("removing stale ifb device "+ifbName, "", err)
		}
	}
	// A root qdisc with handle 0: is the kernel's default (noqueue,
	// pfifo_fast, mq, fq_codel); anything else was put there on purpose.
	if needEgress && root != nil && major(root.Attrs().Handle) != 0 {
		return fmt.Errorf("adding egress shaping on %s: %w: %s", s.name, ErrBusy, describeQdisc(root))
	}
	if needIngress && ingress != nil {
		return fmt.Errorf("adding ingress shaping on %s: %w: %s", s.name, ErrBusy, describeQdisc(ingress))
	}

	if needEgress {
		if err := s.addEgress(ctx, p); err != nil {
			return err
		}
	}
	if needIngress {
		if err := s.addIngress(ctx, p, ifbName); err != nil {
			return err
		}
	}
	return nil
}

// addEgress adds the qdiscs of egressQdiscs; removing the root removes its
// child with it.
func (s *shaper) addEgress(ctx context.Context, p Profile) error {
	for i, q := range egressQdiscs(s.link.Attrs().Index, s.link.Attrs().MTU, p) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.h.QdiscAdd(q); err != nil {
			return classify("adding "+q.Type()+" qdisc on "+s.name, missingQdisc(q.Type()), err)
		}
		if i == 0 {
			s.pushUndo(func() error { return s.h.QdiscDel(q) })
		}
	}
	return nil
}

// missingQdisc says what a kernel that refuses a qdisc kind lacks.
func missingQdisc(kind string) string {
	switch kind {
	case "netem":
		return "the netem qdisc (CONFIG_NET_SCH_NETEM; modprobe sch_netem on the host, " +
			"or leave delay, jitter and loss out of the profile)"
	case "tbf":
		return "the tbf qdisc (CONFIG_NET_SCH_TBF; modprobe sch_tbf on the host)"
	}
	return "the " + kind + " qdisc"
}

// egressQdiscs returns the egress qdiscs for p, root first: netem (delay,
// jitter, loss) as the root with a tbf (rate) as its only child, the way
// tc-netem(8) suggests combining them, or either of them alone. Their
// netlink requests match, byte for byte in the options, what iproute2's
// "tc qdisc add dev eth0 root handle 4c50: netem limit 10000 delay 30ms 3ms
// loss 0.01%" and "tc qdisc add dev eth0 parent 4c50:1 handle 4c51: tbf
// rate 5mbit burst 18750b limit 81250" send.
func egressQdiscs(linkIndex, mtu int, p Profile) []netlink.Qdisc {
	var qs []netlink.Qdisc
	tbfParent, tbfHandle := uint32(netlink.HANDLE_ROOT), netlink.MakeHandle(lpsMajor, 0)
	if p.needsNetem() {
		qs = append(qs, netlink.NewNetem(netlink.QdiscAttrs{
			LinkIndex: linkIndex,
			Handle:    netlink.MakeHandle(lpsMajor, 0),
			Parent:    netlink.HANDLE_ROOT,
		}, netlink.NetemQdiscAttrs{
			Latency: uint32(p.Delay / time.Microsecond),
			Jitter:  uint32(p.Jitter / time.Microsecond),
			Loss:    float32(p.LossPercent),
			Limit:   netemLimit,
		}))
		tbfParent, tbfHandle = netlink.MakeHandle(lpsMajor, 1), netlink.MakeHandle(lpsMajor+1, 0)
	}
	if p.EgressRate > 0 {
		qs = append(qs, newTbf(linkIndex, tbfParent, tbfHandle, p.EgressRate, mtu))
	}
	return qs
}

// addIngress redirects everything the interface receives to a new ifb
// device whose root tbf holds it to the ingress rate. The tbf is in place
// before the redirect, so no packet passes unshaped.
func (s *shaper) addIngress(ctx context.Context, p Profile, ifbName string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ifbName
	if err := s.h.LinkAdd(&netlink.Ifb{LinkAttrs: attrs}); err != nil {
		return classify("creating ifb device "+ifbName, "ifb devices (CONFIG_IFB; modprobe ifb on the host)", err)
	}
	ifb, err := s.h.LinkByName(ifbName)
	if err != nil {
		return classify("finding new ifb device "+ifbName, "", err)
	}
	s.ifbName = ifbName
	s.pushUndo(func() error { return s.h.LinkDel(ifb) })
	if err := s.h.LinkSetUp(ifb); err != nil {
		return classify("setting ifb device "+ifbName+" up", "", err)
	}
	q := newTbf(ifb.Attrs().Index, netlink.HANDLE_ROOT, netlink.MakeHandle(lpsMajor, 0), p.IngressRate, s.link.Attrs().MTU)
	if err := s.h.QdiscAdd(q); err != nil {
		return classify("adding tbf qdisc on "+ifbName, missingQdisc("tbf"), err)
	}

	if err := ctx.Err(); err != nil {
		return err
	}
	ingress := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: s.link.Attrs().Index,
		Handle:    netlink.MakeHandle(ingressMajor, 0),
		Parent:    netlink.HANDLE_INGRESS,
	}}
	if err := s.h.QdiscAdd(ingress); err != nil {
		return classify("adding ingress qdisc on "+s.name, "the ingress qdisc (CONFIG_NET_SCH_INGRESS)", err)
	}
	s.pushUndo(func() error { return s.h.QdiscDel(ingress) })
	filter := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: s.link.Attrs().Index,
			Parent:    netlink.MakeHandle(ingressMajor, 0),
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		// A nil selector is u32's "match u32 0 0": every packet.
		Actions: []netlink.Action{netlink.NewMirredAction(ifb.Attrs().Index)},
	}
	if err := s.h.FilterAdd(filter); err != nil {
		return classify("adding redirect filter on "+s.name, "the u32 filter or the mirred action "+
			"(CONFIG_NET_CLS_U32, CONFIG_NET_ACT_MIRRED; modprobe cls_u32 act_mirred on the host)", err)
	}
	return nil
}

// newTbf builds a tbf qdisc for a rate in bits per second, with a bucket of
// burstTime at that rate (but room for two full frames) and a queue of
// queueTime beyond the bucket.
func newTbf(linkIndex int, parent, handle uint32, bitsPerSec uint64, mtu int) *netlink.Tbf {
	rate := bitsPerSec / 8 // tbf counts bytes
	burst := uint64(float64(rate) * burstTime.Seconds())
	if mtu <= 0 {
		mtu = 1500
	}
	if minBurst := 2 * uint64(mtu+14); burst < minBurst {
		burst = minBurst
	}
	limit := burst + uint64(float64(rate)*queueTime.Seconds())
	return &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: linkIndex, Handle: handle, Parent: parent},
		Rate:       rate,
		Buffer:     netlink.Xmittime(rate, uint32(min(burst, math.MaxUint32))),
		Limit:      uint32(min(limit, math.MaxUint32)),
	}
}

func (s *shaper) pushUndo(f func() error) { s.undo = append(s.undo, f) }

// remove undoes what apply added, newest first, ignoring what is already
// gone (the interface may have disappeared with its container).
func (s *shaper) remove() error {
	var errs []error
	for i := len(s.undo) - 1; i >= 0; i-- {
		if err := ignoreGone(s.undo[i]()); err != nil {
			errs = append(errs, classify("removing wan shaping from "+s.name, "", err))
		}
	}
	s.undo = nil
	return errors.Join(errs...)
}

// ignoreGone drops the errors the kernel gives for deleting a qdisc or link
// that is no longer there (or, for a qdisc, no longer the one we added).
func ignoreGone(err error) error {
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.EINVAL) {
		return nil
	}
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	return err
}

func (s *shaper) rootAndIngress(link netlink.Link) (root, ingress netlink.Qdisc, err error) {
	var qdiscs []netlink.Qdisc
	if err := retryDump(func() (err error) { qdiscs, err = s.h.QdiscList(link); return err }); err != nil {
		return nil, nil, classify("listing qdiscs of "+link.Attrs().Name, "", err)
	}
	for _, q := range qdiscs {
		switch q.Attrs().Parent {
		case netlink.HANDLE_ROOT:
			root = q
		case netlink.HANDLE_INGRESS:
			ingress = q
		}
	}
	return root, ingress, nil
}

// ifbNameFor names the ifb device that shapes the ingress of the interface
// with that index (at most 15 bytes, the kernel's limit).
func ifbNameFor(index int) string { return fmt.Sprintf("ifb-lps%d", index) }

func major(handle uint32) uint16 {
	maj, _ := netlink.MajorMinor(handle)
	return maj
}

// Describe lists the qdiscs and ingress filters of interface ifname ("" =
// the default route's) in the calling thread's network namespace, and those
// of the ifb device Apply uses for its ingress, one per line in the manner
// of "tc qdisc show" and "tc filter show", for logs and tests.
func Describe(ifname string) (string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return "", fmt.Errorf("describing wan shaping: opening netlink socket: %w", err)
	}
	defer h.Close()
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		return "", fmt.Errorf("describing wan shaping: %w", err)
	}
	link, err := resolveLink(h, ifname)
	if err != nil {
		return "", fmt.Errorf("describing wan shaping: %w", err)
	}
	var b strings.Builder
	if err := describeLink(&b, h, link, ""); err != nil {
		return "", fmt.Errorf("describing wan shaping: %w", err)
	}
	if ifb, err := h.LinkByName(ifbNameFor(link.Attrs().Index)); err == nil {
		if err := describeLink(&b, h, ifb, " (ingress of "+link.Attrs().Name+")"); err != nil {
			return "", fmt.Errorf("describing wan shaping: %w", err)
		}
	}
	return b.String(), nil
}

func describeLink(b *strings.Builder, h *netlink.Handle, link netlink.Link, note string) error {
	var qdiscs []netlink.Qdisc
	if err := retryDump(func() (err error) { qdiscs, err = h.QdiscList(link); return err }); err != nil {
		return fmt.Errorf("listing qdiscs of %s: %w", link.Attrs().Name, err)
	}
	// Root first, then children by handle, the ingress qdisc last.
	rank := func(q netlink.Qdisc) int {
		switch q.Attrs().Parent {
		case netlink.HANDLE_ROOT:
			return 0
		case netlink.HANDLE_INGRESS:
			return 2
		}
		return 1
	}
	sort.SliceStable(qdiscs, func(i, j int) bool {
		ri, rj := rank(qdiscs[i]), rank(qdiscs[j])
		if ri != rj {
			return ri < rj
		}
		return qdiscs[i].Attrs().Handle < qdiscs[j].Attrs().Handle
	})
	fmt.Fprintf(b, "dev %s%s\n", link.Attrs().Name, note)
	hasIngress := false
	for _, q := range qdiscs {
		fmt.Fprintf(b, "  %s\n", describeQdisc(q))
		hasIngress = hasIngress || q.Attrs().Parent == netlink.HANDLE_INGRESS
	}
	if !hasIngress {
		return nil
	}
	var filters []netlink.Filter
	err := retryDump(func() (err error) {
		filters, err = h.FilterList(link, netlink.MakeHandle(ingressMajor, 0))
		return err
	})
	if err != nil {
		return fmt.Errorf("listing ingress filters of %s: %w", link.Attrs().Name, err)
	}
	for _, f := range filters {
		fmt.Fprintf(b, "  %s\n", describeFilter(h, f))
	}
	return nil
}

func describeQdisc(q netlink.Qdisc) string {
	a := q.Attrs()
	s := "qdisc " + q.Type() + " " + handleString(a.Handle) + " "
	switch a.Parent {
	case netlink.HANDLE_ROOT:
		s += "root"
	default:
		s += "parent " + handleString(a.Parent)
	}
	switch q := q.(type) {
	case *netlink.Netem:
		tick := netlink.TickInUsec()
		us := func(ticks uint32) time.Duration {
			if tick == 0 {
				return 0
			}
			return time.Duration(math.Round(float64(ticks)/tick)) * time.Microsecond
		}
		s += fmt.Sprintf(" limit %d delay %v", q.Limit, us(q.Latency))
		if q.Jitter != 0 {
			s += fmt.Sprintf(" jitter %v", us(q.Jitter))
		}
		if q.Loss != 0 {
			s += fmt.Sprintf(" loss %.4g%%", float64(q.Loss)/math.MaxUint32*100)
		}
	case *netlink.Tbf:
		s += fmt.Sprintf(" rate %s burst %db limit %db",
			FormatRate(q.Rate*8), netlink.Xmitsize(q.Rate, q.Buffer), q.Limit)
	}
	return s
}

func describeFilter(h *netlink.Handle, f netlink.Filter) string {
	a := f.Attrs()
	s := fmt.Sprintf("filter %s parent %s prio %d protocol %s", f.Type(), handleString(a.Parent), a.Priority, protoString(a.Protocol))
	u, ok := f.(*netlink.U32)
	if !ok {
		return s
	}
	s += " fh " + u32HandleString(a.Handle)
	for _, act := range u.Actions {
		m, ok := act.(*netlink.MirredAction)
		if !ok {
			s += " action " + act.Type()
			continue
		}
		dev := fmt.Sprintf("if%d", m.Ifindex)
		if l, err := h.LinkByIndex(m.Ifindex); err == nil {
			dev = l.Attrs().Name
		}
		dir := "egress redirect"
		switch m.MirredAction {
		case netlink.TCA_EGRESS_MIRROR:
			dir = "egress mirror"
		case netlink.TCA_INGRESS_REDIR:
			dir = "ingress redirect"
		case netlink.TCA_INGRESS_MIRROR:
			dir = "ingress mirror"
		}
		s += " action mirred " + dir + " dev " + dev
	}
	return s
}

// handleString prints a qdisc handle as tc does: "4c50:", "4c50:1".
func handleString(handle uint32) string {
	maj, mnr := netlink.MajorMinor(handle)
	if mnr == 0 {
		return fmt.Sprintf("%x:", maj)
	}
	return fmt.Sprintf("%x:%x", maj, mnr)
}

// u32HandleString prints a u32 filter handle as tc does: "800::800" for
// hash table 800, bucket 0, node 800.
func u32HandleString(h uint32) string {
	part := func(v uint32) string {
		if v == 0 {
			return ""
		}
		return fmt.Sprintf("%x", v)
	}
	return part(h>>20) + ":" + part((h>>12)&0xff) + ":" + part(h&0xfff)
}

func protoString(p uint16) string {
	switch p {
	case unix.ETH_P_ALL:
		return "all"
	case unix.ETH_P_IP:
		return "ip"
	case unix.ETH_P_IPV6:
		return "ipv6"
	}
	return fmt.Sprintf("0x%04x", p)
}

// Package wan shapes the traffic of the process's own network interface the
// way the original Legacy Proxy System did with tc(8): a rate limit in each
// direction, and a delay with jitter and a loss rate on what is sent.
//
// The original installed iproute2 in every container and ran a script
// (python/start_python_app_with_tc.sh) that added a tbf qdisc for the upload
// rate with a netem qdisc below it for delay, jitter and loss. An lps image is
// FROM scratch and has no tc, so [Apply] sets up the same qdiscs itself over
// rtnetlink. That needs CAP_NET_ADMIN in the container's network namespace
// (compose: cap_add: [NET_ADMIN]); without it Apply fails with an error
// wrapping [ErrNotPermitted] that says so.
//
// What Apply builds on the interface (eth0 in a container):
//
//	egress:  root netem (delay, jitter, loss)  ─ child tbf (rate-out)
//	         or, without delay, jitter and loss, a root tbf alone
//	ingress: ingress qdisc ─ u32 match-all filter ─ mirred redirect
//	         ─ ifb device "ifb-lps<index>" ─ root tbf (rate-in)
//
// Incoming traffic is shaped, not policed. A policer (tc's "police" action,
// which the original's script had commented out) drops whatever exceeds the
// rate at once, so TCP sees bursts of loss instead of a slower link; an IFB
// device turns the incoming packets into outgoing ones of a device of their
// own, where a tbf queues them like the egress side. It also needs fewer
// kernel parts: act_police and cls_matchall are missing from some kernels
// that have ifb, u32 and mirred.
//
// Delay, jitter and loss apply to egress only, as in the original, so each
// shaped endpoint adds its delay once to every round trip. Jitter is uniform
// in [delay-jitter, delay+jitter] (the original asked netem for a normal
// distribution, which needs a table tc reads from /usr/lib/tc; a scratch
// image has none), and netem may reorder packets whose delays cross.
//
// Some kernels lack netem (Docker Desktop's VM in the original's notes,
// minimal VM kernels). Apply then fails with an error wrapping
// [ErrUnsupported] and leaves the interface as it was; a caller that wants
// the original's behaviour, which shaped the rate and skipped netem, retries
// with [Profile.RateOnly].
package wan

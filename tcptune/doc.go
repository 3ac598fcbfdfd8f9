// Package tcptune makes the TCP listeners of every lps role and watches the
// kernel settings that decide whether those listeners can keep up.
//
// The original Legacy Proxy System saw requests arrive at its first proxy
// about 15 seconds after the load tester sent them. The proxies themselves
// answered in 40 ms; the time was lost in the kernel. Their listen queues
// overflowed, and with net.ipv4.tcp_abort_on_overflow=0 the kernel drops the
// handshake silently instead of refusing it, so clients only notice by
// retransmitting their SYN after an exponentially growing timeout (3 s, 6 s,
// 12 s on the kernels of the time). The fix was a listen backlog of 8192 and
// a handful of sysctls.
//
// Go's net.Listen always passes net.core.somaxconn as the backlog, so an
// explicit backlog needs its own listen path: [Listen]. [ReadSettings],
// [Settings.Warnings] and [Report] tell the operator at start-up whether the
// kernel would still cap or silently drop; [Apply] writes sysctls where the
// process is permitted to (typically only inside its own network namespace);
// [ReadCounters] and [NewCollector] expose the kernel's ListenOverflows and
// ListenDrops counters, which are the direct evidence that the queue did
// overflow.
package tcptune

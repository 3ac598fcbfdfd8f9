package tcptune

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Counters are the kernel's counts of connections that a full listen queue
// turned away, since boot (or since the network namespace was created).
//
// They come from /proc/net/netstat, which is per network namespace: inside a
// container they count only the container's own listeners, which is what a
// role wants to know about itself but says nothing about the host's.
type Counters struct {
	// ListenOverflows counts SYNs and completed handshakes that found the
	// accept queue full (TcpExt ListenOverflows). With
	// tcp_abort_on_overflow=0 each one is a client left waiting for a
	// retransmission.
	ListenOverflows uint64
	// ListenDrops counts every SYN or handshake a listener dropped,
	// overflows included (TcpExt ListenDrops).
	ListenDrops uint64
}

// ReadCounters reads the counters from <procRoot>/net/netstat, procRoot ""
// meaning "/proc". That file holds pairs of lines, a header naming the fields
// and a line of values, each starting with its group ("TcpExt:").
func ReadCounters(procRoot string) (Counters, error) {
	path := filepath.Join(procRootOrDefault(procRoot), "net", "netstat")
	b, err := os.ReadFile(path)
	if err != nil {
		return Counters{}, fmt.Errorf("reading listen counters: %w", err)
	}
	c, err := parseNetstat(b)
	if err != nil {
		return Counters{}, fmt.Errorf("parsing %s: %w", path, err)
	}
	return c, nil
}

func parseNetstat(b []byte) (Counters, error) {
	var header []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	// TcpExt lines run to a few kilobytes and grow with each kernel.
	sc.Buffer(make([]byte, 0, 16<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "TcpExt:" {
			continue
		}
		if header == nil {
			header = fields[1:]
			continue
		}
		values := fields[1:]
		if len(values) != len(header) {
			return Counters{}, fmt.Errorf("TcpExt has %d names but %d values", len(header), len(values))
		}
		var c Counters
		found := 0
		for i, name := range header {
			var dst *uint64
			switch name {
			case "ListenOverflows":
				dst = &c.ListenOverflows
			case "ListenDrops":
				dst = &c.ListenDrops
			default:
				continue
			}
			v, err := strconv.ParseUint(values[i], 10, 64)
			if err != nil {
				return Counters{}, fmt.Errorf("TcpExt %s: %w", name, err)
			}
			*dst = v
			found++
		}
		if found != 2 {
			return Counters{}, errors.New("TcpExt lacks ListenOverflows or ListenDrops")
		}
		return c, nil
	}
	if err := sc.Err(); err != nil {
		return Counters{}, err
	}
	if header != nil {
		return Counters{}, errors.New("TcpExt header without a line of values")
	}
	return Counters{}, errors.New("no TcpExt lines")
}

// NewCollector returns a Prometheus collector that reads the Counters from
// procRoot ("" meaning "/proc") at every scrape and exports them as
// lps_tcp_listen_overflows_total and lps_tcp_listen_drops_total. When the
// file cannot be read it exports neither, so one missing file does not fail
// the whole scrape, and counts the failure in
// lps_tcp_netstat_read_errors_total instead.
func NewCollector(procRoot string) prometheus.Collector {
	return &netstatCollector{
		procRoot: procRoot,
		overflows: prometheus.NewDesc("lps_tcp_listen_overflows_total",
			"Connections the kernel turned away because a listen queue was full (TcpExt ListenOverflows of this network namespace).", nil, nil),
		drops: prometheus.NewDesc("lps_tcp_listen_drops_total",
			"SYNs and handshakes dropped by listeners for any reason, overflows included (TcpExt ListenDrops of this network namespace).", nil, nil),
		readErrors: prometheus.NewDesc("lps_tcp_netstat_read_errors_total",
			"Scrapes at which the kernel's listen counters could not be read.", nil, nil),
	}
}

var _ prometheus.Collector = (*netstatCollector)(nil)

type netstatCollector struct {
	procRoot                     string
	overflows, drops, readErrors *prometheus.Desc
	failed                       atomic.Uint64
}

func (c *netstatCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.overflows
	ch <- c.drops
	ch <- c.readErrors
}

func (c *netstatCollector) Collect(ch chan<- prometheus.Metric) {
	counters, err := ReadCounters(c.procRoot)
	if err != nil {
		c.failed.Add(1)
	} else {
		ch <- prometheus.MustNewConstMetric(c.overflows, prometheus.CounterValue, float64(counters.ListenOverflows))
		ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(counters.ListenDrops))
	}
	ch <- prometheus.MustNewConstMetric(c.readErrors, prometheus.CounterValue, float64(c.failed.Load()))
}

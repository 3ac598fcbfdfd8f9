package tcptune

import (
	"errors"
	"io/fs"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// realisticNetstat is /proc/net/netstat of a 6.x kernel whose listener
// overflowed: TcpExt, IpExt and MPTcpExt pairs with over a hundred fields.
func realisticNetstat(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/netstat")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestReadCounters(t *testing.T) {
	const minimal = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPTimeouts\nTcpExt: 1 7 9 3\n"
	tests := []struct {
		name     string
		netstat  string // "" means no file at all
		want     Counters
		wantErr  string
		wantNoEx bool
	}{
		{name: "realistic", netstat: realisticNetstat(t), want: Counters{ListenOverflows: 1532, ListenDrops: 1547}},
		{name: "minimal", netstat: minimal, want: Counters{ListenOverflows: 7, ListenDrops: 9}},
		{name: "other groups first", netstat: "IpExt: InNoRoutes\nIpExt: 4\n" + minimal, want: Counters{ListenOverflows: 7, ListenDrops: 9}},
		{name: "counters beyond 32 bits", netstat: "TcpExt: ListenDrops ListenOverflows\nTcpExt: 18446744073709551615 4294967296\n", want: Counters{ListenOverflows: 1 << 32, ListenDrops: 1<<64 - 1}},
		{name: "no file", wantErr: "reading listen counters", wantNoEx: true},
		{name: "empty file", netstat: " ", wantErr: "no TcpExt lines"},
		{name: "no TcpExt", netstat: "IpExt: InNoRoutes\nIpExt: 4\n", wantErr: "no TcpExt lines"},
		{name: "header without values", netstat: "TcpExt: ListenOverflows ListenDrops\n", wantErr: "without a line of values"},
		{name: "fewer values than names", netstat: "TcpExt: ListenOverflows ListenDrops\nTcpExt: 7\n", wantErr: "2 names but 1 values"},
		{name: "value not a number", netstat: "TcpExt: ListenOverflows ListenDrops\nTcpExt: seven 9\n", wantErr: "TcpExt ListenOverflows"},
		{name: "negative value", netstat: "TcpExt: ListenOverflows ListenDrops\nTcpExt: -1 9\n", wantErr: "TcpExt ListenOverflows"},
		{name: "field missing", netstat: "TcpExt: ListenOverflows TCPTimeouts\nTcpExt: 7 9\n", wantErr: "lacks ListenOverflows or ListenDrops"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{}
			if tt.netstat != "" {
				files["net/netstat"] = tt.netstat
			}
			got, err := ReadCounters(fakeProc(t, files))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				if tt.wantNoEx && !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("error %v: want a not-exist error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("counters %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReadCountersFromRealProc(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux has /proc/net/netstat")
	}
	if _, err := os.Stat("/proc/net/netstat"); err != nil {
		t.Skipf("no /proc/net/netstat: %v", err)
	}
	c, err := ReadCounters("")
	if err != nil {
		t.Fatal(err)
	}
	// ListenDrops counts every drop, overflows included, and the
	// counters only grow; a second read cannot be smaller.
	if c.ListenDrops < c.ListenOverflows {
		t.Errorf("ListenDrops %d < ListenOverflows %d", c.ListenDrops, c.ListenOverflows)
	}
	again, err := ReadCounters("")
	if err != nil {
		t.Fatal(err)
	}
	if again.ListenOverflows < c.ListenOverflows || again.ListenDrops < c.ListenDrops {
		t.Errorf("counters went backwards: %+v then %+v", c, again)
	}
}

func TestCollector(t *testing.T) {
	const help = `
# HELP lps_tcp_listen_drops_total SYNs and handshakes dropped by listeners for any reason, overflows included (TcpExt ListenDrops of this network namespace).
# TYPE lps_tcp_listen_drops_total counter
# HELP lps_tcp_listen_overflows_total Connections the kernel turned away because a listen queue was full (TcpExt ListenOverflows of this network namespace).
# TYPE lps_tcp_listen_overflows_total counter
# HELP lps_tcp_netstat_read_errors_total Scrapes at which the kernel's listen counters could not be read.
# TYPE lps_tcp_netstat_read_errors_total counter
`
	tests := []struct {
		name    string
		files   map[string]string
		scrapes int
		want    string // samples, after the HELP and TYPE lines
	}{
		{
			name:    "realistic netstat",
			files:   map[string]string{"net/netstat": realisticNetstat(t)},
			scrapes: 1,
			want: `
lps_tcp_listen_drops_total 1547
lps_tcp_listen_overflows_total 1532
lps_tcp_netstat_read_errors_total 0
`,
		},
		{
			name:    "unreadable netstat is counted, not fatal",
			files:   map[string]string{"net/netstat": "garbage\n"},
			scrapes: 2,
			want: `
lps_tcp_netstat_read_errors_total 2
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCollector(fakeProc(t, tt.files))
			reg := prometheus.NewPedanticRegistry()
			if err := reg.Register(c); err != nil {
				t.Fatalf("registering: %v", err)
			}
			for range tt.scrapes - 1 {
				if _, err := reg.Gather(); err != nil {
					t.Fatalf("gathering: %v", err)
				}
			}
			err := testutil.GatherAndCompare(reg, strings.NewReader(help+tt.want),
				"lps_tcp_listen_overflows_total", "lps_tcp_listen_drops_total", "lps_tcp_netstat_read_errors_total")
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCollectorLint(t *testing.T) {
	problems, err := testutil.CollectAndLint(NewCollector(fakeProc(t, map[string]string{"net/netstat": realisticNetstat(t)})))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// The counters are read at scrape time, not when the collector is made.
func TestCollectorReadsAtScrape(t *testing.T) {
	root := fakeProc(t, map[string]string{"net/netstat": "TcpExt: ListenOverflows ListenDrops\nTcpExt: 1 1\n"})
	c := NewCollector(root)
	if got := testutil.CollectAndCount(c, "lps_tcp_listen_overflows_total"); got != 1 {
		t.Fatalf("got %d overflow samples", got)
	}
	if err := os.WriteFile(root+"/net/netstat", []byte("TcpExt: ListenOverflows ListenDrops\nTcpExt: 5 6\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP lps_tcp_listen_overflows_total Connections the kernel turned away because a listen queue was full (TcpExt ListenOverflows of this network namespace).
# TYPE lps_tcp_listen_overflows_total counter
lps_tcp_listen_overflows_total 5
`), "lps_tcp_listen_overflows_total")
	if err != nil {
		t.Fatal(err)
	}
}

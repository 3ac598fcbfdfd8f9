package e2e

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/loadgen"
)

// lines collects a stream's lines as they come.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (ls *lines) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		ls.mu.Lock()
		ls.l = append(ls.l, sc.Text())
		ls.mu.Unlock()
	}
}

func (ls *lines) all() []string {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return append([]string(nil), ls.l...)
}

// TestUpConsoleStaysReadableUnderLoad: `lps up` under 300 alarms/s writes its status line and
// nothing per alarm: the console gets less than a line a second besides the status. Its
// --cpuprofile, written when SIGTERM stopped it, carries the services' labels.
func TestUpConsoleStaysReadableUnderLoad(t *testing.T) {
	prof := filepath.Join(t.TempDir(), "up.prof")
	cmd := exec.Command(lpsBin, "up", "--topology", "lps", "--model", "none", "--ephemeral-ports", "--status-every", "1s", "--log-format", "json", "--cpuprofile", prof)
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out, errs lines
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); out.read(stdout) }()
	go func() { defer readers.Done(); errs.read(stderr) }()
	exited := make(chan error, 1)
	go func() { readers.Wait(); exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
	})

	var comp1 []string
	comp1Line := regexp.MustCompile(`^ars-comp-1-\d\s+comp1\s+(http://\S+)`)
	testutil.Eventually(t, 60*time.Second, func() error {
		o := out.all()
		if !strings.Contains(strings.Join(o, "\n"), "Ctrl-C stops.") {
			return io.ErrNoProgress
		}
		comp1 = nil
		for _, l := range o {
			if m := comp1Line.FindStringSubmatch(l); m != nil {
				comp1 = append(comp1, m[1]+alarm.DevicePath)
			}
		}
		return nil
	})
	if len(comp1) != 3 {
		t.Fatalf("comp1 URLs from the table: %v\n%s", comp1, strings.Join(out.all(), "\n"))
	}
	before := len(errs.all())

	const rate, seconds = 300, 5
	load, err := loadgen.New(loadgen.Config{URLs: comp1, Rate: rate, Duration: seconds * time.Second, Prefix: "console"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := load.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if st := load.Stats(); st.Acked < rate*seconds*9/10 {
		t.Fatalf("only %d alarms acked", st.Acked)
	}
	after := errs.all()[before:]
	if len(after) >= seconds {
		t.Errorf("%d console lines during %d s at %d alarms/s, want fewer than one a second:\n%s", len(after), seconds, rate, strings.Join(after, "\n"))
	}
	status := 0
	for _, l := range out.all() {
		if strings.Contains(l, "  accepted ") {
			status++
		}
	}
	if status == 0 || status > seconds+3 {
		t.Errorf("%d status lines for %d s at one a second", status, seconds)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("lps up after SIGTERM: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("lps up did not stop within 60 s of SIGTERM")
	}
	checkProfileLabels(t, prof, services(out.all()))
}

// services reads lps up's table: service name → role.
func services(out []string) map[string]string {
	row := regexp.MustCompile(`^(\S+)\s+(rast-sim|comp1|comp2|http2mqtt|mqtt2http|broker)\s`)
	m := map[string]string{}
	for _, l := range out {
		if r := row.FindStringSubmatch(l); r != nil {
			m[r[1]] = r[2]
		}
	}
	return m
}

// checkProfileLabels: the CPU profile at path has samples of every role of the table, and
// every sample labelled with a service carries that service's role. Which instance of a role
// gets sampled in a few seconds is chance (at 100 samples per CPU second, a lightly used one
// may get none), so the instances are checked for consistency, the roles for presence.
func checkProfileLabels(t *testing.T, path string, table map[string]string) {
	t.Helper()
	if len(table) != 14 {
		t.Fatalf("lps up's table has %d services, want 14: %v", len(table), table)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		t.Fatalf("--cpuprofile wrote no profile: %v", err)
	}
	perRole := map[string]int64{}
	var labelled, total int64
	for _, s := range p.Sample {
		total++
		role, service := s.Label["role"], s.Label["service"]
		if len(role) == 0 && len(service) == 0 {
			continue
		}
		labelled++
		if len(role) != 1 || len(service) != 1 {
			t.Fatalf("a sample has role %q and service %q, want one of each", role, service)
		}
		want, ok := table[service[0]]
		if !ok {
			t.Fatalf("a sample's service %q is not in lps up's table", service[0])
		}
		if role[0] != want {
			t.Fatalf("a sample of %s is labelled role %q, the table says %q", service[0], role[0], want)
		}
		perRole[role[0]]++
	}
	t.Logf("%d of %d samples labelled; per role: %v", labelled, total, perRole)
	for _, role := range table {
		if perRole[role] == 0 {
			t.Errorf("the profile of lps up under load has no sample of role %q", role)
		}
	}
}

// A role whose log file cannot be opened serves, and says so once.
func TestUnwritableLogFileWarnsAndServes(t *testing.T) {
	notADir := t.TempDir() + "/file"
	if err := writeFile(notADir); err != nil {
		t.Fatal(err)
	}
	p := start(t, nil, "rast-sim", "--listen", "127.0.0.1:0", "--log-file", notADir)
	addr := listenAddr(t, p)
	ready(t, "http://"+addr+"/readyz")
	if _, ok := p.field("cannot write the log file; logging to stderr only", "error"); !ok {
		t.Errorf("no warning about the log file; log:\n%s", p.log())
	}
	resp, err := http.Post("http://"+addr+"/ID_REQ_KC_STORE7D3BPACKET", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("rast-sim answered %d", resp.StatusCode)
	}
}

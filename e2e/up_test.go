package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
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
	f, err := os.Open(prof)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("--cpuprofile wrote no profile: %v", err)
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	// Service names are in the profile only as label values: no function is called that.
	for _, label := range []string{"role", "service", "proxy1-1", "proxy2-3", "ars-comp-2-1", "broker"} {
		if !bytes.Contains(body, []byte(label)) {
			t.Errorf("the profile of lps up under load lacks the label string %q", label)
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

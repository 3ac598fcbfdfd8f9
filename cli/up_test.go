package cli

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lpsdev/lps/internal/testutil"
)

// syncBuffer is a bytes.Buffer that a command writes from several goroutines while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// freePortRun returns the first of n consecutive loopback ports that were free a moment ago.
// They are taken below 32768, out of the kernel's range of ephemeral ports (32768-60999 unless
// net.ipv4.ip_local_port_range says otherwise), so that no listener on port 0 of another test
// running meanwhile can take them before lps up does.
func freePortRun(t *testing.T, n int) int {
	t.Helper()
	for range 200 {
		first := 20000 + rand.IntN(12000-n)
		ok := true
		for p := first; ok && p < first+n; p++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return first
		}
	}
	t.Fatalf("no %d consecutive free ports below 32768", n)
	return 0
}

// hold keeps a loopback port taken until the test ends, as a second lps up would.
func hold(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// upPorts are the fixed-port flags of `lps up`, every port free.
func upPorts(t *testing.T) (args []string, comp1, sim, broker, admin int) {
	comp1, sim, broker, admin = freePortRun(t, 3), freePortRun(t, 1), freePortRun(t, 1), freePortRun(t, 1)
	return []string{"--comp1-port", strconv.Itoa(comp1), "--rast-sim-port", strconv.Itoa(sim),
		"--broker-port", strconv.Itoa(broker), "--broker-admin-port", strconv.Itoa(admin)}, comp1, sim, broker, admin
}

// A port another program holds: one line naming the service's address, the cause and the flag
// that moves it, exit 1 (it used to panic).
func TestUpPortTakenIsOneLine(t *testing.T) {
	for _, tc := range []struct {
		name, flag string
	}{
		{"rast-sim", "--rast-sim-port"},
		{"broker admin", "--broker-admin-port"},
		{"comp1", "--comp1-port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, _, _, _, _ := upPorts(t)
			taken := hold(t)
			for i := range args {
				if args[i] == tc.flag {
					args[i+1] = strconv.Itoa(taken)
				}
			}
			var out, errOut bytes.Buffer
			root := NewRoot(Options{Stdout: &out, Stderr: &errOut, LookupEnv: env(nil)})
			code := Execute(root, append([]string{"up", "--topology", "lps", "--model", "none", "--log-level", "error"}, args...))
			msg := strings.TrimSpace(errOut.String())
			addr := "127.0.0.1:" + strconv.Itoa(taken)
			if code != 1 || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, addr) || !strings.Contains(msg, "in use") || !strings.Contains(msg, tc.flag) {
				t.Errorf("exit %d, stderr %q: want exit 1 and one line with %s, the cause and %s", code, msg, addr, tc.flag)
			}
		})
	}
}

// `lps up` prints the table once, when every role is ready, with the fixed ports and the
// commands to try; then a status line when alarms came.
func TestUpPrintsWhereEverythingIs(t *testing.T) {
	args, comp1, sim, broker, admin := upPorts(t)
	var out, errOut syncBuffer
	root := NewRoot(Options{Stdout: &out, Stderr: &errOut, LookupEnv: env(nil)})
	root.SetArgs(append([]string{"up", "--topology", "lps", "--model", "none", "--log-level", "error", "--status-every", "50ms"}, args...))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(70 * time.Second):
			t.Error("lps up did not stop")
		}
	})
	testutil.Eventually(t, 60*time.Second, func() error {
		select {
		case err := <-done:
			done <- err // for the cleanup
			t.Fatalf("lps up ended before it was ready: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
		default:
		}
		if !strings.Contains(out.String(), "Ctrl-C stops.") {
			return fmt.Errorf("no table yet; stderr:\n%s", errOut.String())
		}
		return nil
	})
	table := out.String()
	for _, want := range []string{
		fmt.Sprintf("ars-comp-3    rast-sim   http://127.0.0.1:%d", sim),
		fmt.Sprintf("broker        broker     mqtt://127.0.0.1:%d (admin http://127.0.0.1:%d)", broker, admin),
		fmt.Sprintf("ars-comp-1-1  comp1      http://127.0.0.1:%d", comp1),
		fmt.Sprintf("ars-comp-1-3  comp1      http://127.0.0.1:%d", comp1+2),
		"-H 'Content-Type: application/json'",
		fmt.Sprintf("--verify http://127.0.0.1:%d", sim),
	} {
		if !strings.Contains(table, want) {
			t.Errorf("the table lacks %q:\n%s", want, table)
		}
	}
	if n := strings.Count(table, "SERVICE"); n != 1 {
		t.Errorf("the table was printed %d times", n)
	}

	body := `{"phone":"0151","branch":"2001","headnumber":"8023","triggertime":"2026-01-01T00:00:00Z"}`
	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/api/v1/simple", comp1), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("alarm: %d", resp.StatusCode)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(out.String(), "accepted 1  delivered 1  backlog 0  refused 0") {
			return fmt.Errorf("no status line for the alarm:\n%s", out.String())
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("lps up stopped with %v", err)
	}
	done <- nil // for the cleanup
}

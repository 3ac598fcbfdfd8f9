// Package e2e tests the built lps binary as a real process: exit codes, signals, and whatever
// only shows when a process starts and stops.
package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lpsdev/lps/internal/testutil"
)

// lpsBin is the binary built once for the package's tests.
var lpsBin string

func TestMain(m *testing.M) { testutil.MainWithLPS(m, &lpsBin, "") }

// proc is a running lps process whose JSON log lines are parsed as they come.
type proc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []map[string]any
	raw   []string
	done  chan error
}

// start runs lps with args and env, logging JSON to stderr, and stops it (SIGKILL) when the
// test ends if it is still running.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(lpsBin, append(args, "--log-format", "json")...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			json.Unmarshal(sc.Bytes(), &m)
			p.mu.Lock()
			p.lines = append(p.lines, m)
			p.raw = append(p.raw, sc.Text())
			p.mu.Unlock()
		}
	}()
	go func() {
		<-scanDone
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
		}
	})
	return p
}

// field returns the value of key in the first log line with message msg.
func (p *proc) field(msg, key string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if l["msg"] == msg {
			v, ok := l[key].(string)
			return v, ok
		}
	}
	return "", false
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.raw, "\n")
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(timeout):
		t.Fatalf("lps did not exit within %s; log:\n%s", timeout, p.log())
		return -1
	}
}

// writeFile makes an empty file at path.
func writeFile(path string) error { return os.WriteFile(path, nil, 0o644) }

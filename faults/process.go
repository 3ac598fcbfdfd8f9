package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Errors of a Process.
var (
	// ErrRunning is returned by Start when the process is running.
	ErrRunning = errors.New("process is running")
	// ErrExited is returned by WaitReady when the process exited before it was ready.
	ErrExited = errors.New("process exited")
)

// killWait bounds the wait for a process to go after SIGKILL.
const killWait = 10 * time.Second

// maxFirstMessages bounds the log messages a run remembers (see Process.Field).
const maxFirstMessages = 512

// Pin makes later starts of a process listen where its first start did: once the first run
// logged Msg with an address in field Key, the value of Flag in the arguments becomes that
// address. So a role started with "--listen 127.0.0.1:0" gets a free port from the kernel
// (no race with other programs picking ports) and keeps it across restarts.
type Pin struct {
	// Flag is the flag whose value is replaced ("--listen").
	Flag string
	// Msg is the log message that carries the address ("listening").
	Msg string
	// Key is its field; "" means "addr".
	Key string
}

// ProcessConfig configures a Process.
type ProcessConfig struct {
	// Name names the process in errors and logs.
	Name string
	// Path is the binary; Args its arguments (without the program name).
	Path string
	Args []string
	// Env is the environment; nil means this process's environment without the variables the
	// lps roles read (LPS_* and the original services' names), so that a developer's shell
	// cannot change a test's topology.
	Env []string
	// LogPath is where the process's standard output and error go, appended across runs; ""
	// discards them. Lines are read as they come (see Field and OnLine).
	LogPath string
	// Pins pin listen addresses after the first run (see Pin).
	Pins []Pin
	// Ready tells whether the process is ready, once its pins are resolved; nil means ready
	// once started. HTTPReady and TCPReady make the common ones.
	Ready func(ctx context.Context, p *Process) error
	// OnLine, when set, is called with each line of output and the number of the run (1 for
	// the first start) that wrote it, from the goroutine that reads that run's output.
	OnLine func(run int, line []byte)
}

// Process is a child process that a fault test starts, kills and starts again. It runs in its
// own process group, so that a signal reaches whatever it spawned and a test's Ctrl-C does not
// reach it. All methods are safe for concurrent use.
type Process struct {
	cfg ProcessConfig

	mu      sync.Mutex
	args    []string
	pinned  bool
	run     int
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current run exited and its output was read
	exitErr error
	first   map[string]map[string]any // first log line of each message in the current run
	ended   time.Duration             // CPU time of the runs that ended
}

// NewProcess returns a process that is not started yet.
func NewProcess(cfg ProcessConfig) *Process {
	if cfg.Env == nil {
		cfg.Env = cleanEnv()
	}
	return &Process{cfg: cfg, args: append([]string(nil), cfg.Args...)}
}

// cleanEnv is os.Environ without the variables that configure lps roles.
func cleanEnv() []string {
	original := map[string]bool{
		"TARGET_URL": true, "HTTP_HOST": true, "HTTP_PORT": true, "SERVICE_NAME": true, "MQTT_BROKER": true,
		"MQTT_HOST": true, "MQTT_PORT": true, "MQTT_TOPIC": true, "MQTT_QOS": true, "USE_HTTP_2": true,
		"SKIP_DNS_CACHE": true, "MQTT_USERNAME": true, "MQTT_PASSWORD": true,
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "LPS_") || original[k] {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Name is the process's name.
func (p *Process) Name() string { return p.cfg.Name }

// Args are the arguments of the next start (with pinned addresses once resolved).
func (p *Process) Args() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.args...)
}

// Arg returns the value of flag in the arguments ("--listen value" or "--listen=value").
func (p *Process) Arg(flag string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, _ := argValue(p.args, flag)
	return v
}

func argValue(args []string, flag string) (string, int) {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1], i + 1
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v, i
		}
	}
	return "", -1
}

// Run is the number of the current (or last) run: 0 before the first start.
func (p *Process) Run() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.run
}

// Running reports whether the process was started and has not exited.
func (p *Process) Running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Pid is the process id of the current run, 0 when not running.
func (p *Process) Pid() int {
	if !p.Running() {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// userHZ is the unit of the CPU times in /proc/PID/stat: USER_HZ, 100 on every Linux ABI.
const userHZ = 100

// CPU is the CPU time (user and system) the process used over all its runs: the ended runs'
// from the kernel's accounting at their exit, the current run's from /proc/PID/stat so far.
func (p *Process) CPU() time.Duration {
	p.mu.Lock()
	total := p.ended
	p.mu.Unlock()
	pid := p.Pid()
	if pid == 0 {
		return total
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return total // it ended just now: its time is in ended once Wait returned
	}
	// The command name (field 2) is in parentheses and may hold spaces; utime and stime are
	// fields 14 and 15, the 12th and 13th after it.
	s := string(data)
	i := strings.LastIndex(s, ") ")
	if i < 0 {
		return total
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return total
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return total
	}
	return total + time.Duration(utime+stime)*time.Second/userHZ
}

// Memory is a process's resident memory, in bytes, from /proc/PID/status.
type Memory struct {
	RSS  int64 // VmRSS: resident now
	Peak int64 // VmHWM: the most it was resident since it started
}

// Memory reads the current run's resident memory; ok is false when the process is not
// running or /proc does not say.
func (p *Process) Memory() (m Memory, ok bool) {
	pid := p.Pid()
	if pid == 0 {
		return Memory{}, false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, false
	}
	return parseStatusMemory(string(data))
}

// parseStatusMemory reads VmRSS and VmHWM ("VmRSS:	  12345 kB") from a /proc/PID/status.
func parseStatusMemory(status string) (m Memory, ok bool) {
	var rss, hwm bool
	for line := range strings.Lines(status) {
		name, rest, found := strings.Cut(line, ":")
		if !found || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return Memory{}, false
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return Memory{}, false
		}
		if name == "VmRSS" {
			m.RSS, rss = kb*1024, true
		} else {
			m.Peak, hwm = kb*1024, true
		}
	}
	return m, rss && hwm
}

// Start starts the process (again) with its arguments. It does not wait for readiness; see
// WaitReady and StartReady.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("starting %s: %w", p.cfg.Name, ErrRunning)
		}
	}
	var logFile io.Writer = io.Discard
	var closeLog func()
	if p.cfg.LogPath != "" {
		f, err := os.OpenFile(p.cfg.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("opening the log of %s: %w", p.cfg.Name, err)
		}
		logFile, closeLog = f, func() { f.Close() }
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		if closeLog != nil {
			closeLog()
		}
		return fmt.Errorf("starting %s: %w", p.cfg.Name, err)
	}
	cmd := exec.Command(p.cfg.Path, p.args...)
	cmd.Env = p.cfg.Env
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	run := p.run + 1
	fmt.Fprintf(logFile, "=== %s run %d at %s: %s %s\n", p.cfg.Name, run, time.Now().UTC().Format(time.RFC3339Nano),
		p.cfg.Path, strings.Join(p.args, " "))
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		if closeLog != nil {
			closeLog()
		}
		return fmt.Errorf("starting %s: %w", p.cfg.Name, err)
	}
	pw.Close() // the child has its copy; EOF comes when the child's copies close
	p.run, p.cmd, p.exitErr = run, cmd, nil
	p.first = make(map[string]map[string]any)
	done := make(chan struct{})
	p.done = done

	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer pr.Close()
		p.read(run, pr, logFile)
	}()
	go func() {
		err := cmd.Wait()
		<-readDone
		if closeLog != nil {
			closeLog()
		}
		p.mu.Lock()
		p.exitErr = err
		if st := cmd.ProcessState; st != nil {
			p.ended += st.UserTime() + st.SystemTime()
		}
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// read copies a run's output to the log, remembers the first line of each JSON log message,
// and hands every line to OnLine.
func (p *Process) read(run int, r io.Reader, log io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		log.Write(line)
		log.Write([]byte{'\n'})
		if p.cfg.OnLine != nil {
			p.cfg.OnLine(run, line)
		}
		if len(line) == 0 || line[0] != '{' || bytes.Contains(line, []byte(`"msg":"UID: `)) {
			continue // not JSON, or one of rast-sim's per-request audit lines
		}
		var m map[string]any
		if json.Unmarshal(line, &m) != nil {
			continue
		}
		msg, _ := m["msg"].(string)
		p.mu.Lock()
		if p.run == run && len(p.first) < maxFirstMessages {
			if _, seen := p.first[msg]; !seen {
				p.first[msg] = m
			}
		}
		p.mu.Unlock()
	}
	io.Copy(io.Discard, r) // a line over the buffer: drain, so the child never blocks on us
}

// Field returns the string value of key in the first JSON log line of the current run whose
// message is msg.
func (p *Process) Field(msg, key string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.first[msg][key].(string)
	return v, ok
}

// resolvePins applies the pins from the current run's log; it reports whether all are
// resolved.
func (p *Process) resolvePins() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pinned || len(p.cfg.Pins) == 0 {
		p.pinned = true
		return true
	}
	values := make([]string, len(p.cfg.Pins))
	for i, pin := range p.cfg.Pins {
		key := pin.Key
		if key == "" {
			key = "addr"
		}
		v, ok := p.first[pin.Msg][key].(string)
		if !ok {
			return false
		}
		values[i] = v
	}
	for i, pin := range p.cfg.Pins {
		if _, at := argValue(p.args, pin.Flag); at >= 0 {
			if strings.HasPrefix(p.args[at], pin.Flag+"=") {
				p.args[at] = pin.Flag + "=" + values[i]
			} else {
				p.args[at] = values[i]
			}
		}
	}
	p.pinned = true
	return true
}

// listening reports whether the current run logged every pin's message: that it bound its
// listeners itself. A restarted process's pinned port can have been taken meanwhile by another
// program, even another lps that answers /readyz; without this, Ready would ask that one.
func (p *Process) listening() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pin := range p.cfg.Pins {
		if _, ok := p.first[pin.Msg]; !ok {
			return false
		}
	}
	return true
}

// exited returns the current run's done channel (nil before the first start).
func (p *Process) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// WaitReady polls until the process's pins are resolved and Ready says it is ready, the
// process exits (ErrExited, with the end of its log) or ctx ends.
func (p *Process) WaitReady(ctx context.Context) error {
	done := p.exited()
	if done == nil {
		return fmt.Errorf("%s was never started", p.cfg.Name)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		select {
		case <-done:
			return fmt.Errorf("%s: %w before it was ready (%v); log: %s", p.cfg.Name, ErrExited, p.ExitErr(), p.LogTail(1500))
		default:
		}
		if !p.resolvePins() || !p.listening() {
			last = errors.New("its listen address is not logged yet")
		} else if p.cfg.Ready == nil {
			return nil
		} else if last = p.cfg.Ready(ctx, p); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to be ready: %w (last: %v)", p.cfg.Name, ctx.Err(), last)
		case <-done:
		case <-tick.C:
		}
	}
}

// StartReady starts the process and waits until it is ready.
func (p *Process) StartReady(ctx context.Context) error {
	if err := p.Start(); err != nil {
		return err
	}
	return p.WaitReady(ctx)
}

// ExitErr is how the last run ended (nil while running or after a clean exit).
func (p *Process) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// signal sends sig to the process group of the current run.
func (p *Process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return fmt.Errorf("%s was never started", p.cfg.Name)
	}
	err := syscall.Kill(-cmd.Process.Pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil // gone already
	}
	return err
}

// Term stops the process gracefully (SIGTERM, as `docker stop`) and waits for it to exit;
// when ctx ends first it is killed. A process that is not running is left alone.
func (p *Process) Term(ctx context.Context) error {
	done := p.exited()
	if done == nil || !p.Running() {
		return nil
	}
	if err := p.signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stopping %s: %w", p.cfg.Name, err)
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		p.Kill()
		return fmt.Errorf("%s did not stop after SIGTERM: %w; killed", p.cfg.Name, ctx.Err())
	}
}

// Kill kills the process group at once (SIGKILL, as kill -9) and waits for it to exit.
func (p *Process) Kill() error {
	done := p.exited()
	if done == nil || !p.Running() {
		return nil
	}
	if err := p.signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing %s: %w", p.cfg.Name, err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("%s did not exit within %s of SIGKILL", p.cfg.Name, killWait)
	}
}

// Dump makes a Go process write every goroutine's stack to its log and exit (SIGQUIT), and
// waits for it: how a hung role shows where it hangs. Only for processes of the lps binary.
func (p *Process) Dump() error {
	done := p.exited()
	if done == nil || !p.Running() {
		return nil
	}
	if err := p.signal(syscall.SIGQUIT); err != nil {
		return fmt.Errorf("dumping %s: %w", p.cfg.Name, err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(killWait):
		p.Kill()
		return fmt.Errorf("%s did not exit within %s of SIGQUIT; killed", p.cfg.Name, killWait)
	}
}

// LogTail returns up to n bytes of the end of the process's log file.
func (p *Process) LogTail(n int) string {
	if p.cfg.LogPath == "" {
		return "(no log)"
	}
	b, err := os.ReadFile(p.cfg.LogPath)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// HTTPReady is a Ready check: GET http://<value of flag>/<path> answers 200.
func HTTPReady(flag, path string) func(ctx context.Context, p *Process) error {
	client := &http.Client{Timeout: 2 * time.Second}
	return func(ctx context.Context, p *Process) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Arg(flag)+path, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s answered %d", req.URL, resp.StatusCode)
		}
		return nil
	}
}

// TCPReady is a Ready check: addr accepts a connection.
func TCPReady(addr string) func(ctx context.Context, p *Process) error {
	return func(ctx context.Context, p *Process) error {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

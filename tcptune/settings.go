package tcptune

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"go.uber.org/zap"
)

// Sysctl keys of the settings that decide whether a listener keeps up, as
// sysctl(8) and a compose file's sysctls section name them.
const (
	// KeySoMaxConn caps every listen backlog.
	KeySoMaxConn = "net.core.somaxconn"
	// KeyTCPMaxSynBacklog bounds the queue of half-open connections.
	KeyTCPMaxSynBacklog = "net.ipv4.tcp_max_syn_backlog"
	// KeyTCPAbortOnOverflow chooses between dropping (0) and resetting (1)
	// a connection the full accept queue cannot take.
	KeyTCPAbortOnOverflow = "net.ipv4.tcp_abort_on_overflow"
	// KeyIPLocalPortRange is the range of ephemeral ports for outgoing
	// connections, which bounds how many a client role can keep open.
	KeyIPLocalPortRange = "net.ipv4.ip_local_port_range"
	// KeyTCPFinTimeout is how long an orphaned connection stays in FIN-WAIT-2.
	KeyTCPFinTimeout = "net.ipv4.tcp_fin_timeout"
)

// settingKeys lists what ReadSettings reads, in the order it reports them.
var settingKeys = []string{KeySoMaxConn, KeyTCPMaxSynBacklog, KeyTCPAbortOnOverflow, KeyIPLocalPortRange, KeyTCPFinTimeout}

var (
	// ErrUnknownKey means a sysctl key names no setting of this kernel (or
	// of the given proc tree).
	ErrUnknownKey = errors.New("unknown sysctl key")
	// ErrNotPermitted means the process may not change a setting: /proc/sys
	// is mounted read-only, as in an unprivileged container, or the
	// process lacks the capability.
	ErrNotPermitted = errors.New("not permitted")
)

// Settings are the kernel's TCP settings that matter to lps listeners and
// clients. They are the values of the network namespace that read them, so
// inside a container they are the container's, not the host's.
type Settings struct {
	// SoMaxConn is net.core.somaxconn.
	SoMaxConn int
	// TCPMaxSynBacklog is net.ipv4.tcp_max_syn_backlog.
	TCPMaxSynBacklog int
	// TCPAbortOnOverflow is net.ipv4.tcp_abort_on_overflow.
	TCPAbortOnOverflow int
	// TCPFinTimeout is net.ipv4.tcp_fin_timeout in seconds.
	TCPFinTimeout int
	// LocalPortRange is net.ipv4.ip_local_port_range: first and last port.
	LocalPortRange [2]int
	// Unreadable holds, by sysctl key, why a setting could not be read.
	// The field of such a setting is zero and means nothing.
	Unreadable map[string]error
}

// Known reports whether the setting with the sysctl key was read. Settings
// not made by ReadSettings have no Unreadable map and so know every key.
func (s Settings) Known(key string) bool {
	_, bad := s.Unreadable[key]
	return !bad
}

// EffectiveBacklog is the backlog the kernel grants a listener that asks for
// backlog (0 meaning DefaultBacklog): it is capped at somaxconn.
func (s Settings) EffectiveBacklog(backlog int) int {
	if backlog <= 0 {
		backlog = DefaultBacklog
	}
	if s.Known(KeySoMaxConn) && s.SoMaxConn < backlog {
		return max(s.SoMaxConn, 0)
	}
	return backlog
}

// ReadSettings reads the settings from procRoot, "" meaning "/proc". A
// setting that cannot be read (missing file, unexpected content) is listed
// in Settings.Unreadable and is not an error; the error is non-nil only when
// none could be read, which is the case on every system but Linux.
func ReadSettings(procRoot string) (Settings, error) {
	sysDir := filepath.Join(procRootOrDefault(procRoot), "sys")
	s := Settings{Unreadable: map[string]error{}}
	ints := map[string]*int{
		KeySoMaxConn:          &s.SoMaxConn,
		KeyTCPMaxSynBacklog:   &s.TCPMaxSynBacklog,
		KeyTCPAbortOnOverflow: &s.TCPAbortOnOverflow,
		KeyTCPFinTimeout:      &s.TCPFinTimeout,
	}
	for _, key := range settingKeys {
		n := 1
		if key == KeyIPLocalPortRange {
			n = 2
		}
		vals, err := readSysctlInts(sysDir, key, n)
		if err != nil {
			s.Unreadable[key] = err
			continue
		}
		if key == KeyIPLocalPortRange {
			s.LocalPortRange = [2]int{vals[0], vals[1]}
		} else {
			*ints[key] = vals[0]
		}
	}
	if len(s.Unreadable) == len(settingKeys) {
		errs := make([]error, 0, len(settingKeys))
		for _, key := range settingKeys {
			errs = append(errs, s.Unreadable[key])
		}
		return s, fmt.Errorf("reading kernel settings under %s: %w", sysDir, errors.Join(errs...))
	}
	return s, nil
}

func readSysctlInts(sysDir, key string, n int) ([]int, error) {
	path, err := sysctlPath(sysDir, key)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	fields := strings.Fields(string(b))
	if len(fields) != n {
		return nil, fmt.Errorf("parsing %s: want %d numbers, got %q", path, n, strings.TrimSpace(string(b)))
	}
	vals := make([]int, n)
	for i, f := range fields {
		if vals[i], err = strconv.Atoi(f); err != nil {
			return nil, fmt.Errorf("parsing %s: %w", path, err)
		}
	}
	return vals, nil
}

// Warnings returns, as sentences for a person, what in s endangers a
// listener that asks for backlog (0 meaning DefaultBacklog). Nil means
// nothing does, or nothing could be judged: a warning needs the settings it
// is about to have been read.
func (s Settings) Warnings(backlog int) []string {
	if backlog <= 0 {
		backlog = DefaultBacklog
	}
	var warnings []string
	if s.Known(KeySoMaxConn) && s.SoMaxConn < backlog {
		warnings = append(warnings, fmt.Sprintf(
			"%s=%d caps the requested listen backlog of %d at %d; raise it to at least %d (in a container, through its sysctls) to get the whole queue",
			KeySoMaxConn, s.SoMaxConn, backlog, s.SoMaxConn, backlog))
	}

	// This is the combination behind the original system's 15-second
	// stalls: a queue that can fill, and a kernel that then drops
	// handshakes without telling the client, which waits for its SYN
	// retransmission timer (seconds, doubling each time) before it retries.
	var short []string
	if s.Known(KeySoMaxConn) && s.SoMaxConn < backlog {
		short = append(short, fmt.Sprintf("%s=%d", KeySoMaxConn, s.SoMaxConn))
	}
	if s.Known(KeyTCPMaxSynBacklog) && s.TCPMaxSynBacklog < backlog {
		short = append(short, fmt.Sprintf("%s=%d", KeyTCPMaxSynBacklog, s.TCPMaxSynBacklog))
	}
	if s.Known(KeyTCPAbortOnOverflow) && s.TCPAbortOnOverflow == 0 && len(short) > 0 {
		warnings = append(warnings, fmt.Sprintf(
			"%s=0 while the listen queue can fill (%s below the backlog of %d): a full queue then drops connection attempts silently and clients stall for seconds until they retransmit (the original system's 15-second delays); set %s=1 so they are refused at once, and raise the limits",
			KeyTCPAbortOnOverflow, strings.Join(short, ", "), backlog, KeyTCPAbortOnOverflow))
	}
	return warnings
}

// Report reads the settings from procRoot ("" meaning "/proc"), logs them at
// info in one line, logs each of their Warnings for backlog at warn, and
// returns them. A nil logger logs nothing.
func Report(logger *zap.Logger, procRoot string, backlog int) Settings {
	if logger == nil {
		logger = zap.NewNop()
	}
	if backlog <= 0 {
		backlog = DefaultBacklog
	}
	s, err := ReadSettings(procRoot)
	if err != nil {
		// Only Linux has these settings; elsewhere their absence is normal.
		level := zap.DebugLevel
		if runtime.GOOS == "linux" {
			level = zap.WarnLevel
		}
		if ce := logger.Check(level, "cannot read kernel tcp settings"); ce != nil {
			ce.Write(zap.Error(err))
		}
		return s
	}

	fields := []zap.Field{zap.Int("backlog", backlog), zap.Int("effective_backlog", s.EffectiveBacklog(backlog))}
	addInt := func(key, name string, v int) {
		if s.Known(key) {
			fields = append(fields, zap.Int(name, v))
		}
	}
	addInt(KeySoMaxConn, "somaxconn", s.SoMaxConn)
	addInt(KeyTCPMaxSynBacklog, "tcp_max_syn_backlog", s.TCPMaxSynBacklog)
	addInt(KeyTCPAbortOnOverflow, "tcp_abort_on_overflow", s.TCPAbortOnOverflow)
	if s.Known(KeyIPLocalPortRange) {
		fields = append(fields, zap.Ints("ip_local_port_range", s.LocalPortRange[:]))
	}
	addInt(KeyTCPFinTimeout, "tcp_fin_timeout", s.TCPFinTimeout)
	if len(s.Unreadable) > 0 {
		unreadable := make([]string, 0, len(s.Unreadable))
		for key := range s.Unreadable {
			unreadable = append(unreadable, key)
		}
		slices.Sort(unreadable)
		fields = append(fields, zap.Strings("unreadable", unreadable))
	}
	logger.Info("kernel tcp settings", fields...)

	for _, w := range s.Warnings(backlog) {
		logger.Warn(w, zap.Int("backlog", backlog))
	}
	return s
}

// Apply writes sysctls under procRoot ("" meaning "/proc"), keyed as sysctl(8)
// names them ("net.ipv4.tcp_abort_on_overflow"; a key with slashes is taken
// as a path below sys, for names that contain dots). A setting that already
// has the value is left alone, so Apply succeeds on a read-only /proc/sys
// when the container was started with the right sysctls. Every key is
// attempted; the error joins one error per failed key, each naming it and
// wrapping ErrUnknownKey or ErrNotPermitted where that is the cause.
//
// In a container only the settings of its own network namespace (net.ipv4.*
// and net.core.somaxconn among them) can be written, and only by a
// privileged container; the others set them through the runtime's sysctls
// option, which is what the compose files do.
func Apply(procRoot string, values map[string]string) error {
	sysDir := filepath.Join(procRootOrDefault(procRoot), "sys")
	keys := make([]string, 0, len(values))
	for key := range values {
		keys = append(keys, key)
	}
	slices.Sort(keys)

	var errs []error
	for _, key := range keys {
		if err := applyOne(sysDir, key, values[key]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func applyOne(sysDir, key, value string) error {
	path, err := sysctlPath(sysDir, key)
	if err != nil {
		return fmt.Errorf("setting %q: %w", key, err)
	}
	if strings.ContainsAny(value, "\n\x00") || strings.TrimSpace(value) == "" {
		return fmt.Errorf("setting %s: invalid value %q", key, value)
	}
	if cur, err := os.ReadFile(path); err == nil && slices.Equal(strings.Fields(string(cur)), strings.Fields(value)) {
		return nil
	}

	// No O_CREATE: a key the kernel does not know must not become a file.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return sysctlError(key, err)
	}
	_, err = f.WriteString(value + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("setting %s to %q: the kernel rejects the value: %w", key, value, err)
		}
		return sysctlError(key, err)
	}
	return nil
}

// sysctlError names the key and classifies err so callers can tell a typo
// from a container that may not change the setting.
func sysctlError(key string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("setting %s: %w: %w", key, ErrUnknownKey, err)
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		return fmt.Errorf("setting %s: %w (read-only /proc/sys or missing capability): %w", key, ErrNotPermitted, err)
	}
	return fmt.Errorf("setting %s: %w", key, err)
}

// sysctlPath maps a sysctl key to its file below sysDir the way sysctl(8)
// does: dots separate the levels unless the key uses slashes. It refuses
// keys that would leave sysDir.
func sysctlPath(sysDir, key string) (string, error) {
	sep := "."
	if strings.Contains(key, "/") {
		sep = "/"
	}
	parts := strings.Split(key, sep)
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || strings.ContainsRune(p, 0) {
			return "", fmt.Errorf("%w (malformed)", ErrUnknownKey)
		}
	}
	return filepath.Join(append([]string{sysDir}, parts...)...), nil
}

func procRootOrDefault(procRoot string) string {
	if procRoot == "" {
		return "/proc"
	}
	return procRoot
}

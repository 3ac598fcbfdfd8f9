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
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// sysctls turns sysctl keys and values into the files of a fake proc tree.
func sysctls(kv ...string) map[string]string {
	files := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		files["sys/"+strings.ReplaceAll(kv[i], ".", "/")] = kv[i+1] + "\n"
	}
	return files
}

// The tree the original system needed: every queue at least 2048 deep and
// refusals instead of silent drops.
var safeTree = sysctls(
	KeySoMaxConn, "8192",
	KeyTCPMaxSynBacklog, "8192",
	KeyTCPAbortOnOverflow, "1",
	KeyIPLocalPortRange, "1024\t61000",
	KeyTCPFinTimeout, "30",
)

// The tree of the original's 15-second stalls: old kernel defaults.
var stallTree = sysctls(
	KeySoMaxConn, "128",
	KeyTCPMaxSynBacklog, "128",
	KeyTCPAbortOnOverflow, "0",
	KeyIPLocalPortRange, "32768\t60999",
	KeyTCPFinTimeout, "60",
)

func TestReadSettings(t *testing.T) {
	tests := []struct {
		name           string
		files          map[string]string
		want           Settings // Unreadable is checked through wantUnreadable
		wantUnreadable []string
		wantErr        bool
	}{
		{
			name:  "all present",
			files: safeTree,
			want:  Settings{SoMaxConn: 8192, TCPMaxSynBacklog: 8192, TCPAbortOnOverflow: 1, TCPFinTimeout: 30, LocalPortRange: [2]int{1024, 61000}},
		},
		{
			name:           "missing files are reported",
			files:          sysctls(KeySoMaxConn, "4096"),
			want:           Settings{SoMaxConn: 4096},
			wantUnreadable: []string{KeyIPLocalPortRange, KeyTCPAbortOnOverflow, KeyTCPFinTimeout, KeyTCPMaxSynBacklog},
		},
		{
			name: "unexpected content is reported",
			files: sysctls(
				KeySoMaxConn, "lots",
				KeyTCPMaxSynBacklog, "2048",
				KeyTCPAbortOnOverflow, "1",
				KeyIPLocalPortRange, "1024",
				KeyTCPFinTimeout, "30 30",
			),
			want:           Settings{TCPMaxSynBacklog: 2048, TCPAbortOnOverflow: 1},
			wantUnreadable: []string{KeyIPLocalPortRange, KeySoMaxConn, KeyTCPFinTimeout},
		},
		{
			name:           "nothing readable is an error",
			files:          map[string]string{},
			wantUnreadable: settingKeys,
			wantErr:        true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadSettings(fakeProc(t, tt.files))
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error: %v", err, tt.wantErr)
			}
			var unreadable []string
			for key, kerr := range got.Unreadable {
				if kerr == nil {
					t.Errorf("Unreadable[%s] is a nil error", key)
				}
				if got.Known(key) {
					t.Errorf("Known(%s) with an error: %v", key, kerr)
				}
				unreadable = append(unreadable, key)
			}
			slices.Sort(unreadable)
			want := slices.Sorted(slices.Values(tt.wantUnreadable))
			if !slices.Equal(unreadable, want) {
				t.Errorf("unreadable %v, want %v", unreadable, want)
			}
			got.Unreadable = nil
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("settings %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReadSettingsMissingFileIsNotExist(t *testing.T) {
	s, err := ReadSettings(fakeProc(t, sysctls(KeySoMaxConn, "4096")))
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(s.Unreadable[KeyTCPAbortOnOverflow], fs.ErrNotExist) {
		t.Fatalf("Unreadable[%s] = %v, want a not-exist error", KeyTCPAbortOnOverflow, s.Unreadable[KeyTCPAbortOnOverflow])
	}
}

func TestReadSettingsFromRealProc(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux has /proc/sys")
	}
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		t.Skipf("somaxconn not readable: %v", err)
	}
	want, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ReadSettings("")
	if err != nil {
		t.Fatal(err)
	}
	if s.SoMaxConn != want || !s.Known(KeySoMaxConn) {
		t.Fatalf("SoMaxConn %d (known %v), /proc says %d", s.SoMaxConn, s.Known(KeySoMaxConn), want)
	}
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		backlog int
		want    []string // each warning must contain its entry, in order
	}{
		{name: "safe combination", files: safeTree, backlog: DefaultBacklog},
		{name: "safe with default backlog", files: safeTree, backlog: 0},
		{
			name: "abort off but queue cannot fill",
			files: sysctls(
				KeySoMaxConn, "8192", KeyTCPMaxSynBacklog, "8192", KeyTCPAbortOnOverflow, "0"),
			backlog: DefaultBacklog,
		},
		{
			name:    "the original's stall",
			files:   stallTree,
			backlog: DefaultBacklog,
			want: []string{
				"net.core.somaxconn=128 caps the requested listen backlog of 8192 at 128",
				"net.ipv4.tcp_abort_on_overflow=0 while the listen queue can fill (net.core.somaxconn=128, net.ipv4.tcp_max_syn_backlog=128 below the backlog of 8192)",
			},
		},
		{
			name:    "default backlog means 8192",
			files:   stallTree,
			backlog: 0,
			want:    []string{"caps the requested listen backlog of 8192", "tcp_abort_on_overflow=0"},
		},
		{
			name:    "small backlog fits the small queues",
			files:   stallTree,
			backlog: 100,
		},
		{
			name: "only the SYN backlog is short",
			files: sysctls(
				KeySoMaxConn, "65535", KeyTCPMaxSynBacklog, "2048", KeyTCPAbortOnOverflow, "0"),
			backlog: DefaultBacklog,
			want:    []string{"net.ipv4.tcp_max_syn_backlog=2048 below the backlog of 8192"},
		},
		{
			name: "compose settings on a modern kernel: capped but refused at once",
			files: sysctls(
				KeySoMaxConn, "4096", KeyTCPMaxSynBacklog, "2048", KeyTCPAbortOnOverflow, "1"),
			backlog: DefaultBacklog,
			want:    []string{"net.core.somaxconn=4096 caps the requested listen backlog of 8192 at 4096"},
		},
		{
			name:    "abort setting unreadable: only the cap is judged",
			files:   sysctls(KeySoMaxConn, "128", KeyTCPMaxSynBacklog, "128"),
			backlog: DefaultBacklog,
			want:    []string{"caps the requested listen backlog"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ReadSettings(fakeProc(t, tt.files))
			if err != nil {
				t.Fatal(err)
			}
			got := s.Warnings(tt.backlog)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d warnings, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("warning %d:\n  %s\ndoes not contain\n  %s", i, got[i], w)
				}
			}
		})
	}
}

func TestEffectiveBacklog(t *testing.T) {
	tests := []struct {
		name    string
		s       Settings
		backlog int
		want    int
	}{
		{"below somaxconn", Settings{SoMaxConn: 4096}, 37, 37},
		{"capped", Settings{SoMaxConn: 4096}, DefaultBacklog, 4096},
		{"zero is the default", Settings{SoMaxConn: 65535}, 0, DefaultBacklog},
		{"somaxconn unknown", Settings{Unreadable: map[string]error{KeySoMaxConn: fs.ErrNotExist}}, 100, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.EffectiveBacklog(tt.backlog); got != tt.want {
				t.Fatalf("EffectiveBacklog(%d) = %d, want %d", tt.backlog, got, tt.want)
			}
		})
	}
}

func TestReport(t *testing.T) {
	tests := []struct {
		name       string
		files      map[string]string
		wantInfo   map[string]any // fields of the one info line
		wantWarns  int
		wantFailed bool // the settings could not be read at all
	}{
		{
			name:  "safe",
			files: safeTree,
			wantInfo: map[string]any{
				"backlog": int64(8192), "effective_backlog": int64(8192), "somaxconn": int64(8192),
				"tcp_max_syn_backlog": int64(8192), "tcp_abort_on_overflow": int64(1), "tcp_fin_timeout": int64(30),
				"ip_local_port_range": []any{int64(1024), int64(61000)},
			},
		},
		{
			name:  "stall",
			files: stallTree,
			wantInfo: map[string]any{
				"backlog": int64(8192), "effective_backlog": int64(128), "somaxconn": int64(128), "tcp_abort_on_overflow": int64(0),
			},
			wantWarns: 2,
		},
		{
			name:     "partly readable",
			files:    sysctls(KeyTCPAbortOnOverflow, "1"),
			wantInfo: map[string]any{"tcp_abort_on_overflow": int64(1), "unreadable": []any{KeySoMaxConn, KeyIPLocalPortRange, KeyTCPFinTimeout, KeyTCPMaxSynBacklog}},
		},
		{
			name:       "nothing readable",
			files:      map[string]string{},
			wantFailed: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			s := Report(zap.New(core), fakeProc(t, tt.files), 0)

			if tt.wantFailed {
				if len(s.Unreadable) != len(settingKeys) {
					t.Errorf("returned settings know %v", s)
				}
				failed := logs.FilterMessage("cannot read kernel tcp settings").AllUntimed()
				if len(failed) != 1 || logs.Len() != 1 {
					t.Fatalf("want one line saying the settings cannot be read, got %v", logs.AllUntimed())
				}
				return
			}

			infos := logs.FilterLevelExact(zapcore.InfoLevel).AllUntimed()
			if len(infos) != 1 || infos[0].Message != "kernel tcp settings" {
				t.Fatalf("want one info line, got %v", infos)
			}
			fields := infos[0].ContextMap()
			for k, want := range tt.wantInfo {
				if fmt.Sprint(fields[k]) != fmt.Sprint(want) {
					t.Errorf("field %s = %v, want %v", k, fields[k], want)
				}
			}
			if _, ok := tt.wantInfo["unreadable"]; !ok {
				if _, ok := fields["unreadable"]; ok {
					t.Errorf("unexpected unreadable field %v", fields["unreadable"])
				}
			}
			warns := logs.FilterLevelExact(zapcore.WarnLevel).AllUntimed()
			if len(warns) != tt.wantWarns {
				t.Errorf("got %d warn lines, want %d: %v", len(warns), tt.wantWarns, warns)
			}
			if got := s.Warnings(0); len(got) != tt.wantWarns {
				t.Errorf("returned settings give %d warnings, logged %d", len(got), len(warns))
			}
		})
	}
}

func TestReportNilLogger(t *testing.T) {
	s := Report(nil, fakeProc(t, stallTree), 0)
	if s.SoMaxConn != 128 {
		t.Fatalf("settings %+v", s)
	}
}

func TestApply(t *testing.T) {
	tests := []struct {
		name      string
		values    map[string]string
		wantFiles map[string]string // file below the proc root -> content after Apply
		wantErrIs error
		wantText  []string // the error must mention each
	}{
		{
			name:      "writes a setting",
			values:    map[string]string{KeyTCPAbortOnOverflow: "1"},
			wantFiles: map[string]string{"sys/net/ipv4/tcp_abort_on_overflow": "1\n"},
		},
		{
			name:      "several settings, one with a space",
			values:    map[string]string{KeyIPLocalPortRange: "1024 61000", KeyTCPFinTimeout: "30", KeyTCPMaxSynBacklog: "2048"},
			wantFiles: map[string]string{"sys/net/ipv4/ip_local_port_range": "1024 61000\n", "sys/net/ipv4/tcp_fin_timeout": "30\n", "sys/net/ipv4/tcp_max_syn_backlog": "2048\n"},
		},
		{
			name:      "slash form",
			values:    map[string]string{"net/core/somaxconn": "8192"},
			wantFiles: map[string]string{"sys/net/core/somaxconn": "8192\n"},
		},
		{
			name:      "same value is not rewritten",
			values:    map[string]string{KeyIPLocalPortRange: "32768 60999"},
			wantFiles: map[string]string{"sys/net/ipv4/ip_local_port_range": "32768\t60999\n"},
		},
		{
			name:      "unknown key",
			values:    map[string]string{"net.ipv4.tcp_no_such_thing": "1"},
			wantErrIs: ErrUnknownKey,
			wantText:  []string{"net.ipv4.tcp_no_such_thing"},
			wantFiles: map[string]string{"sys/net/ipv4/tcp_no_such_thing": ""},
		},
		{
			name:      "key naming a directory",
			values:    map[string]string{"net.ipv4": "1"},
			wantErrIs: ErrUnknownKey,
			wantText:  []string{"net.ipv4"},
		},
		{
			name:      "key leaving the tree",
			values:    map[string]string{"../../etc/passwd": "x"},
			wantErrIs: ErrUnknownKey,
			wantText:  []string{"../../etc/passwd"},
		},
		{
			name:      "empty level",
			values:    map[string]string{"net..somaxconn": "1"},
			wantErrIs: ErrUnknownKey,
			wantText:  []string{"net..somaxconn"},
		},
		{
			name:     "value with a newline",
			values:   map[string]string{KeyTCPFinTimeout: "30\n60"},
			wantText: []string{KeyTCPFinTimeout, "invalid value"},
		},
		{
			name:      "good keys are applied despite a bad one",
			values:    map[string]string{KeyTCPAbortOnOverflow: "1", "net.ipv4.nope": "1"},
			wantErrIs: ErrUnknownKey,
			wantText:  []string{"net.ipv4.nope"},
			wantFiles: map[string]string{"sys/net/ipv4/tcp_abort_on_overflow": "1\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := fakeProc(t, stallTree)
			err := Apply(root, tt.values)
			if tt.wantErrIs == nil && tt.wantText == nil {
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
			} else {
				if err == nil {
					t.Fatal("Apply succeeded, want an error")
				}
				if tt.wantErrIs != nil && !errors.Is(err, tt.wantErrIs) {
					t.Errorf("error %v: want errors.Is(%v)", err, tt.wantErrIs)
				}
				for _, text := range tt.wantText {
					if !strings.Contains(err.Error(), text) {
						t.Errorf("error %q does not mention %q", err, text)
					}
				}
			}
			for rel, want := range tt.wantFiles {
				b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
				if want == "" {
					if !errors.Is(err, fs.ErrNotExist) {
						t.Errorf("%s exists (%q), Apply must not create files", rel, b)
					}
					continue
				}
				if err != nil || string(b) != want {
					t.Errorf("%s = %q (%v), want %q", rel, b, err, want)
				}
			}
		})
	}
}

func TestApplyNotPermitted(t *testing.T) {
	root := fakeProc(t, stallTree)
	path := filepath.Join(root, "sys/net/ipv4/tcp_abort_on_overflow")
	if err := os.Chmod(path, 0o444); err != nil {
		t.Fatal(err)
	}
	if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
		f.Close()
		t.Skip("this user may write read-only files (root); see TestSysctlError")
	}
	err := Apply(root, map[string]string{KeyTCPAbortOnOverflow: "1"})
	if !errors.Is(err, ErrNotPermitted) || !strings.Contains(err.Error(), KeyTCPAbortOnOverflow) {
		t.Fatalf("error %v: want ErrNotPermitted naming %s", err, KeyTCPAbortOnOverflow)
	}
}

// Root ignores file modes, so the causes Apply meets on a real /proc/sys are
// checked here directly.
func TestSysctlError(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		want  error // nil: neither sentinel
		never error
	}{
		{"read-only /proc/sys", &fs.PathError{Op: "open", Path: "/proc/sys/x", Err: syscall.EROFS}, ErrNotPermitted, ErrUnknownKey},
		{"missing capability", &fs.PathError{Op: "write", Path: "/proc/sys/x", Err: syscall.EPERM}, ErrNotPermitted, ErrUnknownKey},
		{"file mode", &fs.PathError{Op: "open", Path: "/proc/sys/x", Err: syscall.EACCES}, ErrNotPermitted, ErrUnknownKey},
		{"no such key", &fs.PathError{Op: "open", Path: "/proc/sys/x", Err: syscall.ENOENT}, ErrUnknownKey, ErrNotPermitted},
		{"other", &fs.PathError{Op: "write", Path: "/proc/sys/x", Err: syscall.EIO}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := sysctlError("net.x.y", tt.err)
			if !strings.Contains(err.Error(), "net.x.y") || !errors.Is(err, tt.err.(*fs.PathError).Err) {
				t.Errorf("error %v does not name the key or wrap the cause", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v: want errors.Is(%v)", err, tt.want)
			}
			if tt.want == nil && (errors.Is(err, ErrNotPermitted) || errors.Is(err, ErrUnknownKey)) {
				t.Errorf("error %v classified as a sentinel", err)
			}
			if tt.never != nil && errors.Is(err, tt.never) {
				t.Errorf("error %v also is %v", err, tt.never)
			}
		})
	}
}

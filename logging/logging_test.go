package logging

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestFileGetsServiceNamedLog(t *testing.T) {
	dir := t.TempDir()
	logger, closeLog, err := New(Config{Format: FormatJSON, FileDir: filepath.Join(dir, "logs"), ServiceName: "ars-comp-1-1"})
	if err != nil {
		t.Fatal(err)
	}
	logger.Info("request", zap.String("request_id", "r-1"))
	logger.Debug("hidden at info")
	closeLog()
	data, err := os.ReadFile(filepath.Join(dir, "logs", "ars-comp-1-1.log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 1 {
		t.Fatalf("want 1 line, got %q", data)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	if m["msg"] != "request" || m["request_id"] != "r-1" || m["service"] != "ars-comp-1-1" {
		t.Errorf("line %v lacks msg, request_id or service", m)
	}
}

func TestConfigErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"format", Config{Format: "xml"}, "log format"},
		{"level", Config{Level: "loud"}, "log level"},
		{"no service name", Config{FileDir: t.TempDir()}, "service name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one about %q", err, tc.want)
			}
		})
	}
}

// A log file that cannot be written is a warning on stderr, not a stop: the role serves on.
func TestUnwritableFileWarnsAndRunsOn(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	logger, closeLog, err := New(Config{Format: FormatJSON, FileDir: file, ServiceName: "x"})
	if err != nil {
		t.Fatalf("New with a log dir that is a file: %v, want a logger", err)
	}
	defer closeLog()
	logger.Info("still logging") // to stderr
}

func TestFileIsReadableByEveryone(t *testing.T) {
	dir := t.TempDir()
	logger, closeLog, err := New(Config{Format: FormatJSON, FileDir: dir, ServiceName: "broker"})
	if err != nil {
		t.Fatal(err)
	}
	logger.Info("x")
	closeLog()
	fi, err := os.Stat(filepath.Join(dir, "broker.log"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("log file mode %v, want 0644", fi.Mode().Perm())
	}
}

// QuietRequests keeps the per-request lines off the console, not out of the file.
func TestQuietRequests(t *testing.T) {
	c := quietCore{zapcore.NewNopCore()}
	for _, tc := range []struct {
		level  zapcore.Level
		fields []zapcore.Field
		drop   bool
	}{
		{zapcore.InfoLevel, []zapcore.Field{zap.String("request_id", "r")}, true},
		{zapcore.InfoLevel, []zapcore.Field{zap.String("addr", "a")}, false},
		{zapcore.WarnLevel, []zapcore.Field{zap.String("request_id", "r")}, false},
	} {
		w := &countingCore{Core: zapcore.NewNopCore()}
		c.Core = w
		c.Write(zapcore.Entry{Level: tc.level}, tc.fields)
		if (w.n == 0) != tc.drop {
			t.Errorf("level %v fields %v: written %d, want dropped %v", tc.level, tc.fields, w.n, tc.drop)
		}
	}
}

type countingCore struct {
	zapcore.Core
	n int
}

func (c *countingCore) Write(zapcore.Entry, []zapcore.Field) error { c.n++; return nil }

// TestServiceNameCannotLeaveTheLogDir: a service name is a file name inside FileDir; one that
// would put the file elsewhere (or hide it) is refused and no file is written outside.
func TestServiceNameCannotLeaveTheLogDir(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "logs")
	for _, tc := range []struct{ name, want string }{
		{"x/../../escape", `service name "x/../../escape" holds '/' at byte 1`},
		{"../escape", "must not start with '.'"},
		{"/abs", "holds '/' at byte 0"},
		{".hidden", "must not start with '.'"},
		{"..", "must not start with '.'"},
		{`a\b`, `holds '\\' at byte 1`},
		{"a\x00b", `holds '\x00' at byte 1`},
		{"ünïcode", "at byte 0"},
		{strings.Repeat("x", MaxServiceNameLen+1), "longer than 128"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := New(Config{FileDir: dir, ServiceName: tc.name})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(parent, "escape.log")); err == nil {
		t.Error("a log file was written outside the log dir")
	}
	for _, ok := range []string{"proxy2-1", "ars-comp-2-1", "a.b_c", "X9", strings.Repeat("x", MaxServiceNameLen)} {
		if err := CheckServiceName(ok); err != nil {
			t.Errorf("CheckServiceName(%q): %v", ok, err)
		}
	}
}

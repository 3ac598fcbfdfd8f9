package logging

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
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
		{"dir is a file", Config{FileDir: file, ServiceName: "x"}, "log directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one about %q", err, tc.want)
			}
		})
	}
}

// Package logging builds the zap logger every lps role writes with: human-readable on a
// terminal, JSON when asked or when the output is not a terminal, and optionally a rotated
// file <dir>/<service-name>.log, the way the original experiments collected their logs.
package logging

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"gopkg.in/natefinch/lumberjack.v2"
)

// Formats accepted by Config.Format.
const (
	FormatAuto    = "auto" // console on a terminal, JSON otherwise
	FormatConsole = "console"
	FormatJSON    = "json"
)

// Config says where and how a role logs. The zero value logs at info level to stderr in the
// auto format.
type Config struct {
	// Format is FormatAuto (""), FormatConsole or FormatJSON.
	Format string
	// Level is a zap level name ("debug", "info", "warn", "error"); "" means info.
	Level string
	// FileDir, when set, also writes every line to FileDir/<ServiceName>.log, rotated by size.
	FileDir string
	// ServiceName names the log file; required with FileDir.
	ServiceName string
	// MaxSizeMB and MaxBackups control rotation; zero means 100 MB and 5 files.
	MaxSizeMB, MaxBackups int
}

// New returns the logger for cfg and a function that flushes and closes its outputs.
func New(cfg Config) (*zap.Logger, func(), error) {
	level := zapcore.InfoLevel
	if cfg.Level != "" {
		if err := level.Set(cfg.Level); err != nil {
			return nil, nil, fmt.Errorf("parsing log level: %w", err)
		}
	}
	format := cfg.Format
	switch format {
	case "", FormatAuto:
		format = FormatJSON
		if isTerminal(os.Stderr) {
			format = FormatConsole
		}
	case FormatConsole, FormatJSON:
	default:
		return nil, nil, fmt.Errorf("unknown log format %q (want auto, console or json)", cfg.Format)
	}

	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if format == FormatConsole {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	cores := []zapcore.Core{zapcore.NewCore(enc, zapcore.Lock(os.Stderr), level)}

	closeFile := func() {}
	if cfg.FileDir != "" {
		if cfg.ServiceName == "" {
			return nil, nil, errors.New("opening log file: a service name is needed to name it")
		}
		if err := os.MkdirAll(cfg.FileDir, 0o755); err != nil {
			return nil, nil, fmt.Errorf("creating log directory: %w", err)
		}
		lj := &lumberjack.Logger{
			Filename:   filepath.Join(cfg.FileDir, cfg.ServiceName+".log"),
			MaxSize:    orDefault(cfg.MaxSizeMB, 100),
			MaxBackups: orDefault(cfg.MaxBackups, 5),
		}
		// Probe the file now, so a read-only directory fails the start, not the first line.
		if _, err := lj.Write(nil); err != nil {
			return nil, nil, fmt.Errorf("opening log file: %w", err)
		}
		// Files are read by analysis scripts, so they get the same encoding as the terminal
		// would; JSON is what the analysis prefers, console what the original wrote.
		cores = append(cores, zapcore.NewCore(enc.Clone(), zapcore.AddSync(lj), level))
		closeFile = func() { lj.Close() }
	}
	logger := zap.New(zapcore.NewTee(cores...))
	if cfg.ServiceName != "" {
		logger = logger.With(zap.String("service", cfg.ServiceName))
	}
	return logger, func() { logger.Sync(); closeFile() }, nil
}

func orDefault(v, d int) int {
	if v == 0 {
		return d
	}
	return v
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

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
	// ServiceName names the log file; required with FileDir, and then it must pass
	// CheckServiceName.
	ServiceName string
	// MaxSizeMB and MaxBackups control rotation; zero means 100 MB and 5 files.
	MaxSizeMB, MaxBackups int
	// QuietRequests keeps the lines about one request (those with a request_id field, below
	// warn) off the console unless it is at debug level, so that a console under load shows
	// starts, readiness, warnings and status; the log file still gets every line.
	QuietRequests bool
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
	var console zapcore.Core = zapcore.NewCore(enc, zapcore.Lock(os.Stderr), level)
	if cfg.QuietRequests && level > zapcore.DebugLevel {
		console = quietCore{console}
	}
	cores := []zapcore.Core{console}

	closeFile := func() {}
	var fileErr error
	if cfg.FileDir != "" {
		if cfg.ServiceName == "" {
			return nil, nil, errors.New("opening log file: a service name is needed to name it")
		}
		if err := CheckServiceName(cfg.ServiceName); err != nil {
			return nil, nil, fmt.Errorf("opening log file: service name %q %w", cfg.ServiceName, err)
		}
		lj, err := openFile(cfg)
		if err != nil {
			// The file is a copy for later analysis; stderr has every line too. A role that
			// cannot write it must not stop serving (a container whose logs/ folder its user
			// cannot write would restart forever): it says so once and runs on.
			fileErr = err
		} else {
			// Files are read by analysis scripts, so they get the same encoding as the
			// terminal would; JSON is what the analysis prefers, console what the original
			// wrote.
			cores = append(cores, zapcore.NewCore(enc.Clone(), zapcore.AddSync(lj), level))
			closeFile = func() { lj.Close() }
		}
	}
	logger := zap.New(zapcore.NewTee(cores...))
	if cfg.ServiceName != "" {
		logger = logger.With(zap.String("service", cfg.ServiceName))
	}
	if fileErr != nil {
		logger.Warn("cannot write the log file; logging to stderr only", zap.Error(fileErr))
	}
	return logger, func() { logger.Sync(); closeFile() }, nil
}

// openFile opens <FileDir>/<ServiceName>.log for appending, rotated by size. The file is
// readable by everyone (0644): the host user who collects the logs of a container is not the
// container's user. lumberjack creates new files 0600, but keeps the mode of the file it
// rotates, so the file is made here first.
func openFile(cfg Config) (*lumberjack.Logger, error) {
	if err := os.MkdirAll(cfg.FileDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating log directory: %w", err)
	}
	name := filepath.Join(cfg.FileDir, cfg.ServiceName+".log")
	f, err := os.OpenFile(name, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log file: %w", err)
	}
	f.Close()
	return &lumberjack.Logger{
		Filename:   name,
		MaxSize:    orDefault(cfg.MaxSizeMB, 100),
		MaxBackups: orDefault(cfg.MaxBackups, 5),
	}, nil
}

// quietCore drops the lines about one request below warn level: those with a request_id
// field (see Config.QuietRequests).
type quietCore struct{ zapcore.Core }

func (c quietCore) With(fields []zapcore.Field) zapcore.Core { return quietCore{c.Core.With(fields)} }

func (c quietCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c quietCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	if ent.Level < zapcore.WarnLevel {
		for _, f := range fields {
			if f.Key == "request_id" {
				return nil
			}
		}
	}
	return c.Core.Write(ent, fields)
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

package broker

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// slogHandler is a slog.Handler writing to a zap.Logger, so that mochi's
// log lines (it logs through log/slog) join the broker's zap output under
// their own logger name. go.uber.org/zap/exp/zapslog does the same, but it
// is a separate module; this handler is the few lines mochi needs.
type slogHandler struct {
	log    *zap.Logger
	fields []zap.Field
	prefix string // open groups, "a.b."
}

var _ slog.Handler = slogHandler{}

func newSlogLogger(log *zap.Logger) *slog.Logger { return slog.New(slogHandler{log: log}) }

func zapLevel(l slog.Level) zapcore.Level {
	switch {
	case l < slog.LevelInfo:
		return zapcore.DebugLevel
	case l < slog.LevelWarn:
		return zapcore.InfoLevel
	case l < slog.LevelError:
		return zapcore.WarnLevel
	}
	return zapcore.ErrorLevel
}

// Enabled reports whether the zap logger writes the level.
func (h slogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.log.Core().Enabled(zapLevel(l))
}

// Handle writes a record.
func (h slogHandler) Handle(_ context.Context, r slog.Record) error {
	ce := h.log.Check(zapLevel(r.Level), r.Message)
	if ce == nil {
		return nil
	}
	fields := slices.Clip(h.fields)
	r.Attrs(func(a slog.Attr) bool {
		fields = appendAttr(fields, h.prefix, a)
		return true
	})
	ce.Write(fields...)
	return nil
}

// WithAttrs returns a handler that adds as to every record.
func (h slogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	fields := slices.Clip(h.fields)
	for _, a := range as {
		fields = appendAttr(fields, h.prefix, a)
	}
	h.fields = fields
	return h
}

// WithGroup returns a handler that qualifies keys with name.
func (h slogHandler) WithGroup(name string) slog.Handler {
	if name != "" {
		h.prefix += name + "."
	}
	return h
}

func appendAttr(fields []zap.Field, prefix string, a slog.Attr) []zap.Field {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return fields
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, ga := range a.Value.Group() {
			fields = appendAttr(fields, p, ga)
		}
		return fields
	}
	key := prefix + a.Key
	switch v := a.Value.Any().(type) {
	case error:
		return append(fields, zap.NamedError(key, v))
	case packets.Packet:
		// mochi logs whole packets; a summary keeps payloads out of logs.
		return append(fields, zap.String(key, fmt.Sprintf("%s id=%d topic=%q",
			packets.PacketNames[v.FixedHeader.Type], v.PacketID, v.TopicName)))
	default:
		return append(fields, zap.Any(key, v))
	}
}

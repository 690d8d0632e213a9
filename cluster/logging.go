package cluster

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// newHCLogger routes hashicorp/raft's hclog output into slog. Raft is chatty
// at info level (every heartbeat failure, every pipeline start), so only
// warnings and errors pass by default; the slog handler filters further.
func newHCLogger(l *slog.Logger, name string) hclog.Logger {
	il := hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:   name,
		Level:  hclog.Warn,
		Output: io.Discard,
	})
	il.RegisterSink(hclogSink{l: l.With("sub", name)})
	return il
}

type hclogSink struct{ l *slog.Logger }

func (s hclogSink) Accept(name string, level hclog.Level, msg string, args ...interface{}) {
	var lv slog.Level
	switch {
	case level >= hclog.Error:
		lv = slog.LevelError
	case level == hclog.Warn:
		lv = slog.LevelWarn
	case level == hclog.Info:
		lv = slog.LevelInfo
	default:
		lv = slog.LevelDebug
	}
	s.l.Log(context.Background(), lv, msg, args...)
}

// newStdLogger adapts memberlist's *log.Logger ("[WARN] memberlist: ...")
// to slog, mapping the bracketed level prefix.
func newStdLogger(l *slog.Logger, name string) *log.Logger {
	return log.New(stdWriter{l: l.With("sub", name)}, "", 0)
}

type stdWriter struct{ l *slog.Logger }

func (w stdWriter) Write(p []byte) (int, error) {
	msg := bytes.TrimSpace(p)
	lv := slog.LevelInfo
	for _, m := range []struct {
		prefix string
		level  slog.Level
	}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}, {"[ERROR]", slog.LevelError}} {
		if bytes.HasPrefix(msg, []byte(m.prefix)) {
			lv = m.level
			msg = bytes.TrimSpace(msg[len(m.prefix):])
			break
		}
	}
	// Memberlist logs a line per probe/push-pull at debug; keep them at debug.
	w.l.Log(context.Background(), lv, string(msg))
	return len(p), nil
}

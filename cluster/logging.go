package cluster

import (
	"context"
	"io"
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

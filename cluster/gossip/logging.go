package gossip

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

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
	// A restarted member refutes the suspicion its stop raised: routine.
	if lv == slog.LevelWarn && bytes.Contains(msg, []byte("Refuting a ")) {
		lv = slog.LevelInfo
	}
	// Memberlist logs a line per probe/push-pull at debug; keep them at debug.
	w.l.Log(context.Background(), lv, string(msg))
	return len(p), nil
}

package node

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"time"
)

// progressLoop prints the original dc_server's activity line: once a second when the
// session count changed, and whenever the operation count crosses a multiple of
// -progress. Operations are the requests answered by this node.
func (n *Node) progressLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastOps, lastSessions int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ops := n.operations()
		sessions := int64(n.store.Stats().Sessions)
		crossed := n.cfg.Progress > 0 && ops/int64(n.cfg.Progress) != lastOps/int64(n.cfg.Progress)
		if sessions == lastSessions && !crossed {
			continue
		}
		logProgress(n.log, ops, ops-lastOps, sessions, sessions-lastSessions)
		lastOps, lastSessions = ops, sessions
	}
}

// logProgress logs the activity line: the original's text as the message, for the
// scripts that scraped it, and the same counters as fields (the node's logger adds
// node=) for everything else.
func logProgress(log *slog.Logger, ops, dOps, sessions, dSessions int64) {
	log.Info(progressLine(ops, dOps, sessions, dSessions),
		"operations", ops, "operations_delta", dOps, "sessions", sessions, "sessions_delta", dSessions)
}

// progressLine formats the counters the way the original server did, so scripts that
// scraped its stderr keep working.
func progressLine(ops, dOps, sessions, dSessions int64) string {
	sign := "="
	switch {
	case dSessions > 0:
		sign = "+"
	case dSessions < 0:
		sign, dSessions = "-", -dSessions
	}
	return fmt.Sprintf("Info, total operations = %7d  (+ %5d), total sessions = %5d  (%s%3d)", ops, dOps, sessions, sign, dSessions)
}

// operations sums the answered requests of every protocol.
func (n *Node) operations() int64 {
	return n.metrics.ops.Load()
}

// slogErrorLog routes net/http's internal errors (bad TLS handshakes, header
// timeouts) into the node's structured log.
func slogErrorLog(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelWarn)
}

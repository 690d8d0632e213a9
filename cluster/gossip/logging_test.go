package gossip

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// Memberlist's bracketed levels map onto slog's, except a restarted member's
// routine refutation, which is no warning.
func TestStdLoggerLevels(t *testing.T) {
	var buf bytes.Buffer
	l := newStdLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), "memberlist")
	for _, line := range []string{
		"[DEBUG] memberlist: Stream connection from=127.0.0.1:1",
		"[INFO] memberlist: Suspect n2 has failed, no acks received",
		"[WARN] memberlist: Refuting a suspect message (from: n1)",
		"[WARN] memberlist: Was able to connect to n2 over TCP but UDP probes failed",
		"[ERR] memberlist: Failed to send gossip to 127.0.0.1:1: boom",
	} {
		l.Print(line)
	}
	want := []string{"level=DEBUG", "level=INFO", "level=INFO", "level=WARN", "level=ERROR"}
	got := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(got), len(want), buf.String())
	}
	for i, w := range want {
		if !strings.Contains(got[i], w) || strings.Contains(got[i], "[") {
			t.Errorf("line %d: %s; want %s without the bracketed prefix", i, got[i], w)
		}
	}
}

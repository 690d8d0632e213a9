package main

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/internal/syncbuf"
)

// TestSIGHUPWithoutCertificatesKeepsRunning: the packaged unit's ExecReload
// sends SIGHUP, whose default action ends a Go process. A node with no TLS
// certificates must log that there is nothing to reload and keep running (this
// test process would die otherwise).
func TestSIGHUPWithoutCertificatesKeepsRunning(t *testing.T) {
	var buf syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reloadOnHUP(ctx, nil, slog.New(slog.NewTextHandler(&buf, nil)))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(buf.String(), "nothing to reload") {
		if time.Now().After(deadline) {
			t.Fatalf("no log line for SIGHUP within 5 s; log: %q", buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

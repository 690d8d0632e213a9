package sessiond

import (
	"bytes"
	"strings"
	"testing"

	"github.com/distcache-replicated/distcache/protocol/internal/frontendtest"
)

// TestWriteFloodDoesNotFloodTheLog floods NEW datagrams at a server whose writes
// are stuck: most are dropped, yet the log gets about one line per second for them
// (UDP needs no handshake and its source can be forged, so every datagram would
// otherwise cost a line).
func TestWriteFloodDoesNotFloodTheLog(t *testing.T) {
	logs, log := frontendtest.LogBuffer()
	bc := blockingCache{memCache: newMemCache(), release: make(chan struct{})}
	s := &Server{Cache: bc, Workers: 1, QueueLen: 1, Logger: log}
	srv := startServer(t, s)
	defer close(bc.release)
	id := bytes.Repeat([]byte{7}, 32)
	for range 200 {
		send(t, srv, append(header(0x00, 300, id), 0x30))
	}
	frontendtest.WaitFor(t, "100 dropped NEWs", func() bool { return s.Stats().Dropped >= 100 })
	lines := strings.Count(logs.String(), "write queue full")
	if lines == 0 || lines > 3 {
		t.Fatalf("%d log lines for %d dropped datagrams, want 1 to 3:\n%s", lines, s.Stats().Dropped, logs)
	}
}

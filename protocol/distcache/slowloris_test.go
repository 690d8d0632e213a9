package distcache

import (
	"testing"
	"time"
)

// TestSlowlorisDribbleClosed sends a message one byte at a time, each byte well
// within ReadTimeout of the previous one but the whole message slower than it: the
// read timeout bounds the whole message, not the gap between two reads, so the
// connection is closed about ReadTimeout after the message started.
func TestSlowlorisDribbleClosed(t *testing.T) {
	const rto = 300 * time.Millisecond
	ts := startServer(t, "tcp", NewCacheHandler(newMapCache()), func(s *Server) { s.ReadTimeout = rto })
	nc := rawDial(t, ts.addr)
	msg := unhex(t, validHAVE)
	start := time.Now()
	closedAt := make(chan time.Duration, 1)
	go func() {
		expectClosed(t, nc)
		closedAt <- time.Since(start)
	}()
	for i := 0; i < len(msg)-1; i++ {
		if _, err := nc.Write(msg[i : i+1]); err != nil {
			break // closed under us: the point of the test
		}
		select {
		case d := <-closedAt:
			closedAt <- d
			i = len(msg)
		case <-time.After(rto / 4):
		}
	}
	d := <-closedAt
	if d < rto || d > 3*rto {
		t.Fatalf("dribbling peer closed after %v, want about %v", d, rto)
	}
	if ts.logs.find("stalled mid-message") == "" {
		t.Fatal("stall not logged")
	}
}

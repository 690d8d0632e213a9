package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// fakeClient records how it is used; the key set decides hits.
type fakeClient struct {
	f      *fakeServer
	closed atomic.Bool
}

type fakeServer struct {
	mu       sync.Mutex
	dials    int
	inFlight map[*fakeClient]int // concurrent calls per connection, now
	maxDepth int                 // most concurrent calls seen on one connection
	failNext atomic.Int64        // calls left to fail
}

func (f *fakeServer) dial() (client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dials++
	return &fakeClient{f: f}, nil
}

func (c *fakeClient) call(hit bool) (bool, error) {
	f := c.f
	f.mu.Lock()
	f.inFlight[c]++
	f.maxDepth = max(f.maxDepth, f.inFlight[c])
	f.mu.Unlock()
	time.Sleep(200 * time.Microsecond) // a server's answer takes time
	f.mu.Lock()
	f.inFlight[c]--
	f.mu.Unlock()
	if c.closed.Load() {
		return false, errors.New("use of closed connection")
	}
	if f.failNext.Add(-1) >= 0 {
		return false, errors.New("injected failure")
	}
	return hit, nil
}

func (c *fakeClient) get(key []byte) (bool, error) { return c.call(len(key)%2 == 0) }
func (c *fakeClient) set(key, val []byte) error    { _, err := c.call(true); return err }
func (c *fakeClient) close() error                 { c.closed.Store(true); return nil }

func newFake() *fakeServer { return &fakeServer{inFlight: map[*fakeClient]int{}} }

// TestDepthSharesConnections: -conns 4 -depth 8 uses 4 connections with up to
// 8 requests in flight on each, and counts every operation once.
func TestDepthSharesConnections(t *testing.T) {
	f := newFake()
	key := func(i int) []byte { return fmt.Appendf(nil, "k%d", i) }
	r := run(f.dial, 4, 8, 1000, key, []byte("v"), "get", 300*time.Millisecond, 0)
	if f.dials != 4 {
		t.Errorf("%d dials for 4 connections", f.dials)
	}
	if f.maxDepth < 2 || f.maxDepth > 8 {
		t.Errorf("at most %d requests in flight on one connection; want 2..8", f.maxDepth)
	}
	if r.Ops == 0 || r.Errors != 0 || r.Hits == 0 || r.Hits == r.Ops {
		t.Errorf("ops %d errors %d hits %d: want ops, no errors, some hits and some misses", r.Ops, r.Errors, r.Hits)
	}
	if r.P50ms <= 0 || r.P99ms < r.P50ms || r.MaxMs < r.P99ms {
		t.Errorf("latencies p50 %v p99 %v max %v are not ordered", r.P50ms, r.P99ms, r.MaxMs)
	}
}

// TestErrorRedials: a failed request drops its connection; the next one dials
// again, and errors are counted with the first message kept.
func TestErrorRedials(t *testing.T) {
	f := newFake()
	f.failNext.Store(3)
	key := func(i int) []byte { return fmt.Appendf(nil, "k%d", i) }
	r := run(f.dial, 1, 1, 10, key, []byte("v"), "add", 200*time.Millisecond, 0)
	if r.Errors != 3 || r.FirstErr != "injected failure" {
		t.Fatalf("errors %d (%q); want 3 injected failures", r.Errors, r.FirstErr)
	}
	if f.dials != 4 {
		t.Fatalf("%d dials; want 4 (one, then one after each of 3 failures)", f.dials)
	}
	if r.Ops == 0 || r.Hits != r.Ops {
		t.Fatalf("ops %d hits %d: every successful add counts as a hit", r.Ops, r.Hits)
	}
}

// TestRatePacing: -rate paces the total, not each connection.
func TestRatePacing(t *testing.T) {
	f := newFake()
	key := func(i int) []byte { return fmt.Appendf(nil, "k%d", i) }
	r := run(f.dial, 4, 1, 100, key, []byte("v"), "get", time.Second, 200)
	if r.Ops < 100 || r.Ops > 260 { // paced per connection would be 800, unpaced thousands
		t.Fatalf("%d ops in 1 s at -rate 200", r.Ops)
	}
}

// TestAgainstRealServer: the distcache client path against a real protocol
// server: prefill then GET, every key a hit.
func TestAgainstRealServer(t *testing.T) {
	store := map[string][]byte{}
	var mu sync.Mutex
	srv := &distcache.Server{Handler: distcache.HandlerFunc(func(_ context.Context, m *distcache.Message) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		switch m.Op {
		case distcache.OpAdd:
			a, err := distcache.ParseAddRequest(m.Payload)
			if err != nil {
				return nil, err
			}
			store[string(a.ID)] = append([]byte(nil), a.Data...)
			return distcache.StatusOK.Payload(), nil
		case distcache.OpGet:
			if v, ok := store[string(m.Payload)]; ok {
				return v, nil
			}
		}
		return distcache.StatusNotOK.Payload(), nil
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := "IP:" + ln.Addr().String()
	dial := func() (client, error) { return dialProto("distcache", addr, 5*time.Second) }
	key := func(i int) []byte { return fmt.Appendf(nil, "loadgen-%024d", i) }
	if err := fill(dial, 4, 100, key, []byte("value")); err != nil {
		t.Fatal(err)
	}
	r := run(dial, 2, 4, 100, key, []byte("value"), "get", 200*time.Millisecond, 0)
	if r.Ops == 0 || r.Errors != 0 || r.Hits != r.Ops {
		t.Fatalf("ops %d errors %d (%s) hits %d; want every GET a hit", r.Ops, r.Errors, r.FirstErr, r.Hits)
	}
}

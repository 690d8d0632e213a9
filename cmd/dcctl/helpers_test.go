package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol"
)

// mapCache is a map-backed protocol.Cache with the spec's store semantics
// (duplicate ADD answers exists, expired entries are absent, timeout 0 is invisible).
type mapCache struct {
	mu      sync.Mutex
	entries map[string]mapEntry
	// corrupt, when set, flips a byte of every GET answer (to test verification).
	corrupt bool
}

type mapEntry struct {
	data   []byte
	expiry time.Time
}

func newMapCache() *mapCache { return &mapCache{entries: map[string]mapEntry{}} }

func (c *mapCache) live(id []byte) (mapEntry, bool) {
	e, ok := c.entries[string(id)]
	if ok && !time.Now().Before(e.expiry) {
		delete(c.entries, string(id))
		return e, false
	}
	return e, ok
}

func (c *mapCache) Add(_ context.Context, id, data []byte, ttl time.Duration) (protocol.Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.live(id); ok {
		return protocol.StatusAddExists, nil
	}
	c.entries[string(id)] = mapEntry{data: append([]byte(nil), data...), expiry: time.Now().Add(ttl)}
	return protocol.StatusOK, nil
}

func (c *mapCache) Get(_ context.Context, id []byte) ([]byte, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.live(id)
	if !ok {
		return nil, false, nil
	}
	d := append([]byte(nil), e.data...)
	if c.corrupt {
		d[len(d)-1] ^= 0xff
	}
	return d, true, nil
}

func (c *mapCache) Remove(_ context.Context, id []byte) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.live(id)
	delete(c.entries, string(id))
	return ok, nil
}

func (c *mapCache) Have(_ context.Context, id []byte) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.live(id)
	return ok, nil
}

func (c *mapCache) Take(_ context.Context, id []byte) ([]byte, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.live(id)
	delete(c.entries, string(id))
	return e.data, ok, nil
}

func (c *mapCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// testServer is an in-process distcache server on a real socket.
type testServer struct {
	addr  string
	cache *mapCache
	srv   *protocol.Server
	done  chan struct{}
}

// startServer serves a fresh mapCache on TCP loopback ("tcp") or a unix socket
// ("unix") and stops it at the end of the test.
func startServer(t *testing.T, network string) *testServer {
	t.Helper()
	var addr string
	if network == "unix" {
		addr = "UNIX:" + filepath.Join(t.TempDir(), "dc.sock")
	} else {
		addr = "IP:127.0.0.1:0"
	}
	ln, err := protocol.Listen(addr, protocol.ListenOptions{})
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	if network != "unix" {
		addr = fmt.Sprintf("IP:127.0.0.1:%d", ln.Addr().(*net.TCPAddr).Port)
	}
	ts := &testServer{addr: addr, cache: newMapCache(), done: make(chan struct{})}
	ts.srv = &protocol.Server{Handler: protocol.NewCacheHandler(ts.cache), Logger: discardLogger()}
	go func() {
		defer close(ts.done)
		ts.srv.Serve(ln)
	}()
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) stop() {
	ts.srv.Close()
	<-ts.done
}

// deadAddr returns a TCP address nobody listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return fmt.Sprintf("IP:127.0.0.1:%d", port)
}

// cliResult is what one dcctl invocation produced.
type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs dcctl in-process with the given environment.
func runCLI(t *testing.T, env map[string]string, args ...string) cliResult {
	t.Helper()
	return runCLICtx(context.Background(), t, env, args...)
}

func runCLICtx(ctx context.Context, t *testing.T, env map[string]string, args ...string) cliResult {
	t.Helper()
	var out, errOut syncBuffer
	a := &app{stdout: &out, stderr: &errOut, getenv: func(k string) string { return env[k] }}
	code := a.run(ctx, args)
	return cliResult{code: code, stdout: out.String(), stderr: errOut.String()}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writers of proxy and snoop.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond until it is true or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

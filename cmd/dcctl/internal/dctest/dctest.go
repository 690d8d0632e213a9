package dctest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// MapCache is a map-backed distcache.Cache: duplicate ADD answers exists, expired
// entries are absent (timeout 0 is never visible).
type MapCache struct {
	mu      sync.Mutex
	entries map[string]entry
	corrupt bool
}

type entry struct {
	data   []byte
	expiry time.Time
}

// NewMapCache returns an empty cache.
func NewMapCache() *MapCache { return &MapCache{entries: map[string]entry{}} }

// SetCorrupt makes every later GET answer differ in its last byte, so tests can
// check that verification notices.
func (c *MapCache) SetCorrupt(on bool) {
	c.mu.Lock()
	c.corrupt = on
	c.mu.Unlock()
}

func (c *MapCache) live(id []byte) (entry, bool) {
	e, ok := c.entries[string(id)]
	if ok && !time.Now().Before(e.expiry) {
		delete(c.entries, string(id))
		return e, false
	}
	return e, ok
}

// Add implements distcache.Cache.
func (c *MapCache) Add(_ context.Context, id, data []byte, ttl time.Duration) (distcache.Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.live(id); ok {
		return distcache.StatusAddExists, nil
	}
	c.entries[string(id)] = entry{data: append([]byte(nil), data...), expiry: time.Now().Add(ttl)}
	return distcache.StatusOK, nil
}

// Get implements distcache.Cache.
func (c *MapCache) Get(_ context.Context, id []byte) ([]byte, bool, error) {
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

// Remove implements distcache.Cache.
func (c *MapCache) Remove(_ context.Context, id []byte) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.live(id)
	delete(c.entries, string(id))
	return ok, nil
}

// Have implements distcache.Cache.
func (c *MapCache) Have(_ context.Context, id []byte) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.live(id)
	return ok, nil
}

// Take implements distcache.Cache.
func (c *MapCache) Take(_ context.Context, id []byte) ([]byte, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.live(id)
	delete(c.entries, string(id))
	return e.data, ok, nil
}

// Len returns the number of stored entries (expired ones included until touched).
func (c *MapCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Lookup returns the stored data for id, ignoring expiry.
func (c *MapCache) Lookup(id []byte) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[string(id)]
	return e.data, ok
}

// Server is an in-process distcache server on a real socket.
type Server struct {
	Addr  string // original syntax: IP:127.0.0.1:PORT or UNIX:/path
	Cache *MapCache
	srv   *distcache.Server
	done  chan struct{}
	once  sync.Once
}

// StartServer serves a fresh MapCache, or h when non-nil, on TCP loopback
// (network "tcp") or a unix socket ("unix"); it is stopped when the test ends.
func StartServer(t testing.TB, network string, h distcache.Handler) *Server {
	t.Helper()
	var addr string
	if network == "unix" {
		addr = "UNIX:" + filepath.Join(t.TempDir(), "dc.sock")
	} else {
		addr = "IP:127.0.0.1:0"
	}
	ln, err := distcache.Listen(addr, distcache.ListenOptions{})
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	if network != "unix" {
		addr = fmt.Sprintf("IP:127.0.0.1:%d", ln.Addr().(*net.TCPAddr).Port)
	}
	s := &Server{Addr: addr, Cache: NewMapCache(), done: make(chan struct{})}
	if h == nil {
		h = distcache.NewCacheHandler(s.Cache)
	}
	s.srv = &distcache.Server{Handler: h, Logger: slog.New(slog.DiscardHandler)}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	t.Cleanup(s.Stop)
	return s
}

// Stop closes the listener and every connection at once (a crashed server, as
// far as clients can tell) and waits for Serve to return. It is idempotent.
func (s *Server) Stop() {
	s.once.Do(func() {
		s.srv.Close()
		<-s.done
	})
}

// DeadAddr returns a loopback TCP address in the original syntax that nobody
// listens on.
func DeadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return fmt.Sprintf("IP:127.0.0.1:%d", port)
}

// WaitFor polls cond every few milliseconds until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

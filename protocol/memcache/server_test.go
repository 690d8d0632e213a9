package memcache

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// memCache is an in-memory Cache with expiry, standing in for the replicated
// store (which this package may not import).
type memCache struct {
	mu      sync.Mutex
	now     func() time.Time
	entries map[string]entry
	lastTTL time.Duration
}

type entry struct {
	value   []byte
	flags   uint32
	expires time.Time
}

func newMemCache() *memCache {
	return &memCache{now: time.Now, entries: make(map[string]entry)}
}

func (m *memCache) live(key []byte) (entry, bool) {
	e, ok := m.entries[string(key)]
	if !ok || !m.now().Before(e.expires) {
		return entry{}, false
	}
	return e, true
}

func (m *memCache) Get(_ context.Context, key []byte) ([]byte, uint32, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.live(key)
	return e.value, e.flags, ok, nil
}

func (m *memCache) put(key, value []byte, flags uint32, ttl time.Duration) {
	if ttl <= 0 {
		panic("Cache got a non-positive ttl")
	}
	exp := time.Unix(1<<40, 0)
	if ttl != NoExpiry {
		exp = m.now().Add(ttl)
	}
	m.lastTTL = ttl
	m.entries[string(key)] = entry{value: bytes.Clone(value), flags: flags, expires: exp}
}

func (m *memCache) Set(_ context.Context, key, value []byte, flags uint32, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.put(key, value, flags, ttl)
	return nil
}

func (m *memCache) Add(_ context.Context, key, value []byte, flags uint32, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.live(key); ok {
		return false, nil
	}
	m.put(key, value, flags, ttl)
	return true, nil
}

func (m *memCache) Delete(_ context.Context, key []byte) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.live(key)
	delete(m.entries, string(key))
	return ok, nil
}

func (m *memCache) Stats() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return map[string]string{"curr_items": fmt.Sprint(len(m.entries))}
}

// failingCache fails every call with err, or blocks until ctx ends when err is nil.
type failingCache struct{ err error }

func (f failingCache) wait(ctx context.Context) error {
	if f.err != nil {
		return f.err
	}
	<-ctx.Done()
	return ctx.Err()
}
func (f failingCache) Get(ctx context.Context, _ []byte) ([]byte, uint32, bool, error) {
	return nil, 0, false, f.wait(ctx)
}
func (f failingCache) Set(ctx context.Context, _, _ []byte, _ uint32, _ time.Duration) error {
	return f.wait(ctx)
}
func (f failingCache) Add(ctx context.Context, _, _ []byte, _ uint32, _ time.Duration) (bool, error) {
	return false, f.wait(ctx)
}
func (f failingCache) Delete(ctx context.Context, _ []byte) (bool, error) {
	return false, f.wait(ctx)
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startServer serves s on a loopback listener and shuts it down at cleanup.
func startServer(t *testing.T, s *Server) string {
	t.Helper()
	return startServerB(t, s)
}

func startServerB(t testing.TB, s *Server) string {
	t.Helper()
	if s.Logger == nil {
		s.Logger = testLogger(t)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-errc; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ln.Addr().String()
}

type client struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	nc := dialB(t, addr)
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func dialB(t testing.TB, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// expect reads exactly len(want) bytes and compares them.
func (c *client) expect(want string) {
	c.t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c.br, got); err != nil {
		c.t.Fatalf("reading %q: got %q, %v", want, got, err)
	}
	if string(got) != want {
		c.t.Fatalf("got %q, want %q", got, want)
	}
}

// expectClosed asserts that the server closes the connection.
func (c *client) expectClosed() {
	c.t.Helper()
	b, err := c.br.ReadByte()
	if err == nil {
		c.t.Fatalf("expected close, read %q", b)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		c.t.Fatalf("expected close, got %v", err)
	}
}

func TestApacheByteSequences(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache()})
	c := dial(t, addr)
	key := "mod_ssl-sess:" + strings.Repeat("0123456789abcdef", 4)
	if len(key) != 77 {
		t.Fatalf("key length %d", len(key))
	}
	der := bytes.Repeat([]byte{0x30, 0x82, 0x00, 0xb1}, 45)
	der = append(der, 0x04)

	c.send("version\r\n")
	c.expect("VERSION " + DefaultVersion + "\r\n")
	c.send("get " + key + "\r\n")
	c.expect("END\r\n")
	c.send(fmt.Sprintf("set %s 0 299 %d \r\n%s\r\n", key, len(der), der))
	c.expect("STORED\r\n")
	c.send("get " + key + "\r\n")
	c.expect(fmt.Sprintf("VALUE %s 0 %d\r\n%s\r\nEND\r\n", key, len(der), der))
	c.send("delete " + key + " 0\r\n")
	c.expect("DELETED\r\n")
	c.send("delete " + key + " 0\r\n")
	c.expect("NOT_FOUND\r\n")
	c.send("get " + key + "\r\n")
	c.expect("END\r\n")
	c.send("quit\r\n")
	c.expectClosed()
}

func TestCommands(t *testing.T) {
	mc := newMemCache()
	now := time.Unix(1_700_000_000, 0)
	mc.now = func() time.Time { return now }
	addr := startServer(t, &Server{Cache: mc, Now: mc.now})
	c := dial(t, addr)

	steps := []struct{ send, want string }{
		{"set a 42 0 3\r\nabc\r\n", "STORED\r\n"},
		{"add a 1 0 1\r\nx\r\n", "NOT_STORED\r\n"},
		{"add b 7 100 2\nxy\r\n", "STORED\r\n"},
		{"get a b c\r\n", "VALUE a 42 3\r\nabc\r\nVALUE b 7 2\r\nxy\r\nEND\r\n"},
		{"set a 0 0 0 noreply\r\n\r\n", ""},
		{"get a\r\n", "VALUE a 0 0\r\n\r\nEND\r\n"},
		{"delete b noreply\r\n", ""},
		{"get b\r\n", "END\r\n"},
		{"set neg 0 -1 1\r\nz\r\n", "STORED\r\n"},
		{"get neg\r\n", "END\r\n"},
		{"set a 0 -1 1\r\nz\r\n", "STORED\r\n"}, // expired replacement removes a
		{"get a\r\n", "END\r\n"},
		{"add a 0 -1 1\r\nz\r\n", "STORED\r\n"},
		{"get a\r\n", "END\r\n"},
		{fmt.Sprintf("set past 0 %d 1\r\nz\r\n", now.Unix()-10), "STORED\r\n"},
		{"get past\r\n", "END\r\n"},
		{"verbosity 1\r\n", "OK\r\n"},
		{"flush_all\r\n", "ERROR\r\n"},
		{"\r\n", "ERROR\r\n"},
		{"GET a\r\n", "ERROR\r\n"},
		{"get\r\n", "ERROR\r\n"},
		{"set x 0 0\r\n", "ERROR\r\n"},
		{"set x abc 0 1\r\nz\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"set " + strings.Repeat("k", 251) + " 0 0 1\r\nz\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"get " + strings.Repeat("k", 251) + "\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"get a\x01b\r\n", "END\r\n"}, // memcached accepts control bytes in keys (memaslap sends them)
		{"delete a 5\r\n", "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"},
		{"stats items\r\n", "END\r\n"},
	}
	for _, st := range steps {
		c.send(st.send)
		if st.want != "" {
			c.expect(st.want)
		}
	}

	// TTL conventions seen by the Cache.
	c.send("set t0 0 0 1\r\nz\r\n")
	c.expect("STORED\r\n")
	if mc.lastTTL != NoExpiry {
		t.Errorf("exptime 0: ttl %v, want NoExpiry", mc.lastTTL)
	}
	c.send("set t1 0 299 1\r\nz\r\n")
	c.expect("STORED\r\n")
	if mc.lastTTL != 299*time.Second {
		t.Errorf("exptime 299: ttl %v", mc.lastTTL)
	}
	c.send(fmt.Sprintf("set t2 0 %d 1\r\nz\r\n", now.Unix()+3600))
	c.expect("STORED\r\n")
	if mc.lastTTL != time.Hour {
		t.Errorf("absolute exptime: ttl %v, want 1h", mc.lastTTL)
	}

	c.send("stats\r\n")
	var stats []string
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "END\r\n" {
			break
		}
		stats = append(stats, line)
	}
	all := strings.Join(stats, "")
	for _, want := range []string{"STAT version " + DefaultVersion + "\r\n", "STAT curr_items ", "STAT cmd_get ", "STAT curr_connections 1\r\n"} {
		if !strings.Contains(all, want) {
			t.Errorf("stats lacks %q:\n%s", want, all)
		}
	}
}

func TestPipelinedAnswersInOrder(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache()})
	c := dial(t, addr)
	var req, want strings.Builder
	for i := range 200 {
		v := fmt.Sprint("value-", i)
		fmt.Fprintf(&req, "set k%d %d 0 %d\r\n%s\r\nget k%d nokey\r\n", i, i, len(v), v, i)
		fmt.Fprintf(&want, "STORED\r\nVALUE k%d %d %d\r\n%s\r\nEND\r\n", i, i, len(v), v)
	}
	req.WriteString("delete k0\r\n")
	want.WriteString("DELETED\r\n")
	go c.send(req.String()) // the server answers while we still write
	c.expect(want.String())
}

func TestOversizedValueIsSwallowed(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache(), MaxValueSize: 100})
	c := dial(t, addr)
	c.send("set big 0 0 101\r\n" + strings.Repeat("x", 101) + "\r\nset small 0 0 1\r\ns\r\n")
	c.expect("SERVER_ERROR object too large for cache\r\nSTORED\r\n")
	c.send("set huge 0 0 2000000\r\n")
	c.expect("SERVER_ERROR object too large for cache\r\n")
	c.expectClosed()
}

func TestBrokenStreamsCloseOnlyThatConnection(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache(), MaxLineLength: 100})
	good := dial(t, addr)
	cases := map[string]struct{ send, want string }{
		"bad data chunk": {"set a 0 0 1\r\nzzz\r\n", "CLIENT_ERROR bad data chunk\r\n"},
		"bad byte count": {"set a 0 0 -1\r\n", "CLIENT_ERROR bad command line format\r\n"},
		"long line":      {strings.Repeat("g", 5000) + "\r\n", "CLIENT_ERROR line too long\r\n"},
		"long line fits": {"get " + strings.Repeat("k", 120) + "\r\n", "CLIENT_ERROR line too long\r\n"},
		"binary garbage": {"\x80\x00\x00\x05\r\n", "ERROR\r\n"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := dial(t, addr)
			c.send(tc.send)
			c.expect(tc.want)
			if name != "binary garbage" {
				c.expectClosed()
			}
			good.send("set ok 0 0 2\r\nok\r\n")
			good.expect("STORED\r\n")
		})
	}
}

func TestBackendFailuresAnswerServerError(t *testing.T) {
	addr := startServer(t, &Server{Cache: failingCache{err: errors.New("no quorum\r\nbad")}})
	c := dial(t, addr)
	c.send("get a\r\nset a 0 0 1\r\nz\r\ndelete a\r\nadd a 0 0 1\r\nz\r\nset a 0 0 1 noreply\r\nz\r\nversion\r\n")
	c.expect("SERVER_ERROR no quorum  bad\r\n" +
		"SERVER_ERROR no quorum  bad\r\n" +
		"SERVER_ERROR no quorum  bad\r\n" +
		"SERVER_ERROR no quorum  bad\r\n" +
		"VERSION " + DefaultVersion + "\r\n")

	blocking := startServer(t, &Server{Cache: failingCache{}, RequestTimeout: 50 * time.Millisecond})
	b := dial(t, blocking)
	start := time.Now()
	b.send("get a\r\nset a 0 0 1\r\nz\r\n")
	b.expect("SERVER_ERROR timeout\r\nSERVER_ERROR timeout\r\n")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("timeouts took %v", d)
	}
}

func TestStalledPartialRequestIsClosed(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache(), ReadTimeout: 200 * time.Millisecond})
	idle := dial(t, addr)    // idle connections are kept (IdleTimeout 0)
	stalled := dial(t, addr) // slowloris: a request that never completes
	stalled.send("set a 0 0 10\r\nabc")
	good := dial(t, addr)

	closed := make(chan struct{})
	go func() {
		defer close(closed)
		stalled.br.ReadByte() // returns once the server closes
	}()
	deadline := time.After(5 * time.Second)
	for i := 0; ; i++ {
		good.send("set ok 0 0 2\r\nok\r\nget ok\r\n")
		good.expect("STORED\r\nVALUE ok 0 2\r\nok\r\nEND\r\n")
		select {
		case <-closed:
			idle.send("version\r\n")
			idle.expect("VERSION " + DefaultVersion + "\r\n")
			return
		case <-deadline:
			t.Fatal("stalled connection was not closed")
		default:
		}
	}
}

func TestIdleTimeout(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache(), IdleTimeout: 100 * time.Millisecond})
	c := dial(t, addr)
	c.send("version\r\n")
	c.expect("VERSION " + DefaultVersion + "\r\n")
	c.expectClosed()
}

func TestMaxConns(t *testing.T) {
	s := &Server{Cache: newMemCache(), MaxConns: 1}
	addr := startServer(t, s)
	first := dial(t, addr)
	first.send("version\r\n")
	first.expect("VERSION " + DefaultVersion + "\r\n")
	if n := s.ActiveConns(); n != 1 {
		t.Errorf("ActiveConns = %d, want 1", n)
	}
	second := dial(t, addr)
	second.expect("SERVER_ERROR too many open connections\r\n")
	second.expectClosed()
	first.send("quit\r\n")
	first.expectClosed()
	deadline := time.Now().Add(5 * time.Second)
	for s.ActiveConns() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("connection count did not drop")
		}
		time.Sleep(time.Millisecond)
	}
	third := dial(t, addr)
	third.send("version\r\n")
	third.expect("VERSION " + DefaultVersion + "\r\n")
}

func TestShutdownClosesIdleConnections(t *testing.T) {
	s := &Server{Cache: newMemCache(), Logger: testLogger(t)}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	c := dial(t, ln.Addr().String())
	c.send("version\r\n")
	c.expect("VERSION " + DefaultVersion + "\r\n")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-errc; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	c.expectClosed()
}

func TestParseNumbers(t *testing.T) {
	for _, tc := range []struct {
		in    string
		limit uint64
		want  uint64
		ok    bool
	}{
		{"0", 10, 0, true}, {"10", 10, 10, true}, {"11", 10, 0, false},
		{"", 10, 0, false}, {"1a", 100, 0, false}, {"4294967295", 1<<32 - 1, 1<<32 - 1, true},
		{"4294967296", 1<<32 - 1, 0, false}, {"18446744073709551616", 1<<64 - 1, 0, false},
	} {
		got, ok := parseUint([]byte(tc.in), tc.limit)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseUint(%q, %d) = %d, %v; want %d, %v", tc.in, tc.limit, got, ok, tc.want, tc.ok)
		}
	}
	if n, ok := parseInt([]byte("-12")); n != -12 || !ok {
		t.Errorf("parseInt(-12) = %d, %v", n, ok)
	}
	if _, ok := parseInt([]byte("-")); ok {
		t.Error("parseInt(-) succeeded")
	}
}

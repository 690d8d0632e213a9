package resp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// memCache is an in-memory Cache with expiry, standing in for the replicated
// store (which this package may not import).
type memCache struct {
	mu      sync.Mutex
	entries map[string]entry
	lastTTL time.Duration
}

type entry struct {
	value   []byte
	expires time.Time
}

func newMemCache() *memCache { return &memCache{entries: make(map[string]entry)} }

func (m *memCache) live(key []byte) bool {
	e, ok := m.entries[string(key)]
	return ok && time.Now().Before(e.expires)
}

func (m *memCache) Get(_ context.Context, key []byte) ([]byte, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.live(key) {
		return nil, false, nil
	}
	return m.entries[string(key)].value, true, nil
}

func (m *memCache) put(key, value []byte, ttl time.Duration) {
	if ttl <= 0 {
		panic("Cache got a non-positive ttl")
	}
	exp := time.Unix(1<<40, 0)
	if ttl != NoExpiry {
		exp = time.Now().Add(ttl)
	}
	m.lastTTL = ttl
	m.entries[string(key)] = entry{value: bytes.Clone(value), expires: exp}
}

func (m *memCache) Set(_ context.Context, key, value []byte, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.put(key, value, ttl)
	return nil
}

func (m *memCache) Add(_ context.Context, key, value []byte, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.live(key) {
		return false, nil
	}
	m.put(key, value, ttl)
	return true, nil
}

func (m *memCache) Delete(_ context.Context, key []byte) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ok := m.live(key)
	delete(m.entries, string(key))
	return ok, nil
}

func (m *memCache) Stats() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return map[string]string{"entries": fmt.Sprint(len(m.entries))}
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
func (f failingCache) Get(ctx context.Context, _ []byte) ([]byte, bool, error) {
	return nil, false, f.wait(ctx)
}
func (f failingCache) Set(ctx context.Context, _, _ []byte, _ time.Duration) error {
	return f.wait(ctx)
}
func (f failingCache) Add(ctx context.Context, _, _ []byte, _ time.Duration) (bool, error) {
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
func startServer(t testing.TB, s *Server) string {
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

func dialB(t testing.TB, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	nc := dialB(t, addr)
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

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

func (c *client) expectClosed() {
	c.t.Helper()
	b, err := c.br.ReadByte()
	if err == nil {
		c.t.Fatalf("expected close, read %q", b)
	}
	if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		c.t.Fatalf("expected close, got %v", err)
	}
}

// cmd encodes a command as apr_redis and client libraries do.
func cmd(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

func bulk(s string) string { return fmt.Sprintf("$%d\r\n%s\r\n", len(s), s) }

func TestApacheByteSequences(t *testing.T) {
	mc := newMemCache()
	addr := startServer(t, &Server{Cache: mc})
	c := dial(t, addr)
	key := "mod_ssl-sess:" + strings.Repeat("0123456789abcdef", 4)
	der := string(bytes.Repeat([]byte{0x30, 0x82, 0x00, 0xb1, 0x0d, 0x0a}, 30)) // CRLF inside values is fine

	c.send(cmd("PING"))
	c.expect("+PONG\r\n")
	c.send(cmd("GET", key))
	c.expect("$-1\r\n")
	c.send(cmd("SETEX", key, "299", der))
	c.expect("+OK\r\n")
	if mc.lastTTL != 299*time.Second {
		t.Errorf("SETEX ttl %v", mc.lastTTL)
	}
	c.send(cmd("GET", key))
	c.expect(bulk(der))
	c.send(cmd("DEL", key))
	c.expect(":1\r\n")
	c.send(cmd("DEL", key))
	c.expect(":0\r\n")
	c.send(cmd("INFO"))
	line, err := c.br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "$") {
		t.Fatalf("INFO header %q, %v", line, err)
	}
	var n int
	fmt.Sscanf(line, "$%d\r\n", &n)
	body := make([]byte, n+2)
	if _, err := io.ReadFull(c.br, body); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# Server\r\n", "redis_version:" + DefaultVersion + "\r\n", "connected_clients:1\r\n", "entries:0\r\n"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("INFO lacks %q:\n%s", want, body)
		}
	}
	c.send(cmd("QUIT"))
	c.expect("+OK\r\n")
	c.expectClosed()
}

func TestCommands(t *testing.T) {
	mc := newMemCache()
	addr := startServer(t, &Server{Cache: mc})
	c := dial(t, addr)
	steps := []struct{ send, want string }{
		{"PING\r\n", "+PONG\r\n"},
		{"ping hello\r\n", bulk("hello")},
		{"\r\n", ""}, // blank inline lines are ignored
		{cmd("set", "a", "1"), "+OK\r\n"},
		{cmd("SET", "a", "2", "NX"), "$-1\r\n"},
		{cmd("SET", "b", "2", "nx", "ex", "100"), "+OK\r\n"},
		{cmd("SET", "c", "3", "PX", "1500"), "+OK\r\n"},
		{cmd("SET", "c", "3", "EX", "0"), "-ERR invalid expire time in 'set' command\r\n"},
		{cmd("SET", "c", "3", "EX", "x"), "-ERR value is not an integer or out of range\r\n"},
		{cmd("SET", "c", "3", "EX"), "-ERR syntax error\r\n"},
		{cmd("SET", "c", "3", "XX"), "-ERR syntax error\r\n"},
		{cmd("SETEX", "c", "-5", "v"), "-ERR invalid expire time in 'setex' command\r\n"},
		{cmd("PSETEX", "d", "2500", "v"), "+OK\r\n"},
		{cmd("SETNX", "d", "v"), ":0\r\n"},
		{cmd("SETNX", "e", "v"), ":1\r\n"},
		{cmd("EXISTS", "a", "b", "zz"), ":2\r\n"},
		{cmd("DEL", "a", "b", "zz"), ":2\r\n"},
		{"GET a\r\n", "$-1\r\n"},
		{cmd("GET"), "-ERR wrong number of arguments for 'get' command\r\n"},
		{cmd("GET", "a", "b"), "-ERR wrong number of arguments for 'get' command\r\n"},
		{cmd("SELECT", "0"), "+OK\r\n"},
		{cmd("SELECT", "1"), "-ERR DB index is out of range\r\n"},
		{cmd("COMMAND", "DOCS"), "*0\r\n"},
		{cmd("CLIENT", "SETNAME", "x"), "+OK\r\n"},
		{cmd("client", "setinfo", "lib-name", "redis-py"), "+OK\r\n"},
		{cmd("CLIENT", "KILL"), "-ERR unknown subcommand 'KILL'\r\n"},
		{cmd("HELLO", "3"), "-ERR unknown command 'HELLO'\r\n"},
		{cmd("FLUSHALL"), "-ERR unknown command 'FLUSHALL'\r\n"},
		{cmd("x\r\ny"), "-ERR unknown command 'x??y'\r\n"},
		{cmd("ECHO", "hi"), bulk("hi")},
		{"*0\r\n", ""},
		{cmd("GET", "e"), bulk("v")},
	}
	for _, st := range steps {
		c.send(st.send)
		if st.want != "" {
			c.expect(st.want)
		}
	}
	c.send(cmd("SET", "f", "v"))
	c.expect("+OK\r\n")
	if mc.lastTTL != NoExpiry {
		t.Errorf("SET without EX: ttl %v, want NoExpiry", mc.lastTTL)
	}
	c.send(cmd("SET", "f", "v", "PX", "1500"))
	c.expect("+OK\r\n")
	if mc.lastTTL != 1500*time.Millisecond {
		t.Errorf("PX 1500: ttl %v", mc.lastTTL)
	}
}

func TestPipelinedAnswersInOrder(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache()})
	c := dial(t, addr)
	var req, want strings.Builder
	for i := range 200 {
		k, v := fmt.Sprint("k", i), fmt.Sprint("value-", i)
		req.WriteString(cmd("SETEX", k, "300", v) + cmd("GET", k) + cmd("GET", "nokey"))
		want.WriteString("+OK\r\n" + bulk(v) + "$-1\r\n")
	}
	req.WriteString("PING\r\n")
	want.WriteString("+PONG\r\n")
	go c.send(req.String())
	c.expect(want.String())
}

func TestOversizedValueIsSwallowed(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache(), MaxValueSize: 100})
	c := dial(t, addr)
	c.send(cmd("SETEX", "big", "10", strings.Repeat("x", 101)) + cmd("SETEX", "small", "10", "s"))
	c.expect("-ERR value too large for cache\r\n+OK\r\n")
	c.send("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n")
	c.expect("-ERR Protocol error: invalid bulk length\r\n")
	c.expectClosed()
}

func TestBrokenStreamsCloseOnlyThatConnection(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache(), MaxLineLength: 100, MaxArgs: 4})
	good := dial(t, addr)
	cases := map[string]struct{ send, want string }{
		"bad multibulk":  {"*x\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
		"too many args":  {"*5\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
		"missing dollar": {"*1\r\n+PING\r\n", "-ERR Protocol error: expected '$'\r\n"},
		"negative bulk":  {"*1\r\n$-1\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		"bad bulk end":   {"*1\r\n$4\r\nPINGxx", "-ERR Protocol error: bulk string not terminated by CRLF\r\n"},
		"long line":      {strings.Repeat("P", 5000) + "\r\n", "-ERR Protocol error: too big request\r\n"},
		"long inline":    {"GET " + strings.Repeat("k", 120) + "\r\n", "-ERR Protocol error: too big request\r\n"},
		"inline args":    {"a b c d e\r\n", "-ERR Protocol error: too many arguments\r\n"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := dial(t, addr)
			c.send(tc.send)
			c.expect(tc.want)
			c.expectClosed()
			good.send(cmd("SETEX", "ok", "10", "ok") + cmd("GET", "ok"))
			good.expect("+OK\r\n" + bulk("ok"))
		})
	}
}

func TestBackendFailuresAnswerError(t *testing.T) {
	addr := startServer(t, &Server{Cache: failingCache{err: errors.New("no quorum\r\n")}})
	c := dial(t, addr)
	c.send(cmd("GET", "a") + cmd("SETEX", "a", "1", "v") + cmd("SET", "a", "v", "NX") + cmd("DEL", "a") + cmd("EXISTS", "a") + "PING\r\n")
	c.expect(strings.Repeat("-ERR no quorum  \r\n", 5) + "+PONG\r\n")

	blocking := startServer(t, &Server{Cache: failingCache{}, RequestTimeout: 50 * time.Millisecond})
	b := dial(t, blocking)
	b.send(cmd("GET", "a") + cmd("SETEX", "a", "1", "v"))
	b.expect("-ERR timeout\r\n-ERR timeout\r\n")
}

func TestStalledPartialRequestIsClosed(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache(), ReadTimeout: 200 * time.Millisecond})
	idle := dial(t, addr)
	stalled := dial(t, addr)
	stalled.send("*3\r\n$5\r\nSETEX\r\n$1\r\nk")
	good := dial(t, addr)
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		stalled.br.ReadByte()
	}()
	deadline := time.After(5 * time.Second)
	for {
		good.send(cmd("SETEX", "ok", "10", "ok") + cmd("GET", "ok"))
		good.expect("+OK\r\n" + bulk("ok"))
		select {
		case <-closed:
			idle.send("PING\r\n")
			idle.expect("+PONG\r\n")
			return
		case <-deadline:
			t.Fatal("stalled connection was not closed")
		default:
		}
	}
}

func TestMaxConnsAndShutdown(t *testing.T) {
	s := &Server{Cache: newMemCache(), MaxConns: 1, Logger: testLogger(t)}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	first := dial(t, ln.Addr().String())
	first.send("PING\r\n")
	first.expect("+PONG\r\n")
	if n := s.ActiveConns(); n != 1 {
		t.Errorf("ActiveConns = %d, want 1", n)
	}
	second := dial(t, ln.Addr().String())
	second.expect("-ERR max number of clients reached\r\n")
	second.expectClosed()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-errc; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	first.expectClosed()
}

func TestRedisCLI(t *testing.T) {
	path, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Skip("redis-cli not installed")
	}
	addr := startServer(t, &Server{Cache: newMemCache()})
	host, port, _ := net.SplitHostPort(addr)
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, path, append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := run("PING"); got != "PONG" {
		t.Errorf("PING: %q", got)
	}
	if got := run("SETEX", "mod_ssl-sess:ab", "299", "value"); got != "OK" {
		t.Errorf("SETEX: %q", got)
	}
	if got := run("GET", "mod_ssl-sess:ab"); got != "value" {
		t.Errorf("GET: %q", got)
	}
	if got := run("DEL", "mod_ssl-sess:ab", "other"); got != "1" {
		t.Errorf("DEL: %q", got)
	}
	if got := run("INFO", "server"); !strings.Contains(got, "redis_version:"+DefaultVersion) {
		t.Errorf("INFO: %q", got)
	}
}

package resp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol/internal/frontendtest"
)

// memCache adapts the shared in-memory test store to RESP's Cache.
type memCache struct{ *frontendtest.Store }

func newMemCache() *memCache { return &memCache{frontendtest.NewStore()} }

func (m *memCache) Get(_ context.Context, key []byte) ([]byte, bool, error) {
	v, _, ok := m.Store.Get(key)
	return v, ok, nil
}

func (m *memCache) Set(_ context.Context, key, value []byte, ttl time.Duration) error {
	m.Store.Set(key, value, 0, ttl)
	return nil
}

func (m *memCache) Add(_ context.Context, key, value []byte, ttl time.Duration) (bool, error) {
	return m.Store.Add(key, value, 0, ttl), nil
}

func (m *memCache) Delete(_ context.Context, key []byte) (bool, error) {
	return m.Store.Delete(key), nil
}

// quickCache also answers reads at once, as the node's Cache does.
type quickCache struct{ *memCache }

func (q quickCache) GetNow(key []byte) ([]byte, bool, bool) {
	v, _, ok := q.Store.GetNow(key)
	return v, ok, true
}

// cacheFor is the Cache a shared test's Setup asks for.
func cacheFor(s frontendtest.Setup) Cache {
	if s.Quick {
		return quickCache{&memCache{s.Store}}
	}
	return &memCache{s.Store}
}

func (m *memCache) Stats() map[string]string {
	return map[string]string{"entries": fmt.Sprint(m.Len())}
}

// failingCache fails every call (see frontendtest.Failing).
type failingCache struct{ frontendtest.Failing }

func (f failingCache) Get(ctx context.Context, _ []byte) ([]byte, bool, error) {
	return nil, false, f.Wait(ctx)
}
func (f failingCache) Set(ctx context.Context, _, _ []byte, _ time.Duration) error {
	return f.Wait(ctx)
}
func (f failingCache) Add(ctx context.Context, _, _ []byte, _ time.Duration) (bool, error) {
	return false, f.Wait(ctx)
}
func (f failingCache) Delete(ctx context.Context, _ []byte) (bool, error) {
	return false, f.Wait(ctx)
}

// startServer serves s on a loopback listener and shuts it down at cleanup.
func startServer(t testing.TB, s *Server) string {
	t.Helper()
	if s.Logger == nil {
		s.Logger = frontendtest.Logger(t)
	}
	return frontendtest.Start(t, s, ErrServerClosed)
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
	c := frontendtest.Dial(t, addr)
	key := "mod_ssl-sess:" + strings.Repeat("0123456789abcdef", 4)
	der := string(bytes.Repeat([]byte{0x30, 0x82, 0x00, 0xb1, 0x0d, 0x0a}, 30)) // CRLF inside values is fine

	c.Send(cmd("PING"))
	c.Expect("+PONG\r\n")
	c.Send(cmd("GET", key))
	c.Expect("$-1\r\n")
	c.Send(cmd("SETEX", key, "299", der))
	c.Expect("+OK\r\n")
	if mc.LastTTL() != 299*time.Second {
		t.Errorf("SETEX ttl %v", mc.LastTTL())
	}
	c.Send(cmd("GET", key))
	c.Expect(bulk(der))
	c.Send(cmd("DEL", key))
	c.Expect(":1\r\n")
	c.Send(cmd("DEL", key))
	c.Expect(":0\r\n")
	c.Send(cmd("INFO"))
	line, err := c.BR.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "$") {
		t.Fatalf("INFO header %q, %v", line, err)
	}
	var n int
	fmt.Sscanf(line, "$%d\r\n", &n)
	body := make([]byte, n+2)
	if _, err := io.ReadFull(c.BR, body); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# Server\r\n", "redis_version:" + DefaultVersion + "\r\n", "connected_clients:1\r\n", "entries:0\r\n"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("INFO lacks %q:\n%s", want, body)
		}
	}
	c.Send(cmd("QUIT"))
	c.Expect("+OK\r\n")
	c.ExpectClosed()
}

func TestCommands(t *testing.T) {
	mc := newMemCache()
	addr := startServer(t, &Server{Cache: mc})
	c := frontendtest.Dial(t, addr)
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
		c.Send(st.send)
		if st.want != "" {
			c.Expect(st.want)
		}
	}
	c.Send(cmd("SET", "f", "v"))
	c.Expect("+OK\r\n")
	if mc.LastTTL() != NoExpiry {
		t.Errorf("SET without EX: ttl %v, want NoExpiry", mc.LastTTL())
	}
	c.Send(cmd("SET", "f", "v", "PX", "1500"))
	c.Expect("+OK\r\n")
	if mc.LastTTL() != 1500*time.Millisecond {
		t.Errorf("PX 1500: ttl %v", mc.LastTTL())
	}
}

func TestPipelinedAnswersInOrder(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache()})
	c := frontendtest.Dial(t, addr)
	var req, want strings.Builder
	for i := range 200 {
		k, v := fmt.Sprint("k", i), fmt.Sprint("value-", i)
		req.WriteString(cmd("SETEX", k, "300", v) + cmd("GET", k) + cmd("GET", "nokey"))
		want.WriteString("+OK\r\n" + bulk(v) + "$-1\r\n")
	}
	req.WriteString("PING\r\n")
	want.WriteString("+PONG\r\n")
	go c.Send(req.String())
	c.Expect(want.String())
}

func TestOversizedValueIsSwallowed(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache(), MaxValueSize: 100})
	c := frontendtest.Dial(t, addr)
	c.Send(cmd("SETEX", "big", "10", strings.Repeat("x", 101)) + cmd("SETEX", "small", "10", "s"))
	c.Expect("-ERR value too large for cache\r\n+OK\r\n")
	c.Send("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n")
	c.Expect("-ERR Protocol error: invalid bulk length\r\n")
	c.ExpectClosed()
}

func TestBrokenStreamsCloseOnlyThatConnection(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache(), MaxLineLength: 100, MaxArgs: 4})
	good := frontendtest.Dial(t, addr)
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
			c := frontendtest.Dial(t, addr)
			c.Send(tc.send)
			c.Expect(tc.want)
			c.ExpectClosed()
			good.Send(cmd("SETEX", "ok", "10", "ok") + cmd("GET", "ok"))
			good.Expect("+OK\r\n" + bulk("ok"))
		})
	}
}

func TestBackendFailuresAnswerError(t *testing.T) {
	addr := startServer(t, &Server{Cache: failingCache{frontendtest.Failing{Err: errors.New("no quorum\r\n")}}})
	c := frontendtest.Dial(t, addr)
	c.Send(cmd("GET", "a") + cmd("SETEX", "a", "1", "v") + cmd("SET", "a", "v", "NX") + cmd("DEL", "a") + cmd("EXISTS", "a") + "PING\r\n")
	c.Expect(strings.Repeat("-ERR no quorum  \r\n", 5) + "+PONG\r\n")

	blocking := startServer(t, &Server{Cache: failingCache{}, RequestTimeout: 50 * time.Millisecond})
	b := frontendtest.Dial(t, blocking)
	b.Send(cmd("GET", "a") + cmd("SETEX", "a", "1", "v"))
	b.Expect("-ERR timeout\r\n-ERR timeout\r\n")
}

func TestStalledPartialRequestIsClosed(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache(), ReadTimeout: 200 * time.Millisecond})
	idle := frontendtest.Dial(t, addr)
	stalled := frontendtest.Dial(t, addr)
	stalled.Send("*3\r\n$5\r\nSETEX\r\n$1\r\nk")
	good := frontendtest.Dial(t, addr)
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		stalled.BR.ReadByte()
	}()
	deadline := time.After(5 * time.Second)
	for {
		good.Send(cmd("SETEX", "ok", "10", "ok") + cmd("GET", "ok"))
		good.Expect("+OK\r\n" + bulk("ok"))
		select {
		case <-closed:
			idle.Send("PING\r\n")
			idle.Expect("+PONG\r\n")
			return
		case <-deadline:
			t.Fatal("stalled connection was not closed")
		default:
		}
	}
}

func TestMaxConnsAndShutdown(t *testing.T) {
	s := &Server{Cache: newMemCache(), MaxConns: 1, Logger: frontendtest.Logger(t)}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	first := frontendtest.Dial(t, ln.Addr().String())
	first.Send("PING\r\n")
	first.Expect("+PONG\r\n")
	if n := s.ActiveConns(); n != 1 {
		t.Errorf("ActiveConns = %d, want 1", n)
	}
	second := frontendtest.Dial(t, ln.Addr().String())
	second.Expect("-ERR max number of clients reached\r\n")
	second.ExpectClosed()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-errc; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	first.ExpectClosed()
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

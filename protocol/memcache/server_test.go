package memcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol/internal/frontendtest"
)

// memCache adapts the shared in-memory test store to memcache's Cache.
type memCache struct{ *frontendtest.Store }

func newMemCache() *memCache { return &memCache{frontendtest.NewStore()} }

func (m *memCache) Get(_ context.Context, key []byte) ([]byte, uint32, bool, error) {
	v, flags, ok := m.Store.Get(key)
	return v, flags, ok, nil
}

func (m *memCache) Set(_ context.Context, key, value []byte, flags uint32, ttl time.Duration) error {
	m.Store.Set(key, value, flags, ttl)
	return nil
}

func (m *memCache) Add(_ context.Context, key, value []byte, flags uint32, ttl time.Duration) (bool, error) {
	return m.Store.Add(key, value, flags, ttl), nil
}

func (m *memCache) Delete(_ context.Context, key []byte) (bool, error) {
	return m.Store.Delete(key), nil
}

// quickCache also answers reads at once, as the node's Cache does.
type quickCache struct{ *memCache }

func (q quickCache) GetNow(key []byte) ([]byte, uint32, bool, bool) {
	v, flags, ok := q.Store.GetNow(key)
	return v, flags, ok, true
}

// cacheFor is the Cache a shared test's Setup asks for.
func cacheFor(s frontendtest.Setup) Cache {
	if s.Quick {
		return quickCache{&memCache{s.Store}}
	}
	return &memCache{s.Store}
}

func (m *memCache) Stats() map[string]string {
	return map[string]string{"curr_items": fmt.Sprint(m.Len())}
}

// failingCache fails every call (see frontendtest.Failing).
type failingCache struct{ frontendtest.Failing }

func (f failingCache) Get(ctx context.Context, _ []byte) ([]byte, uint32, bool, error) {
	return nil, 0, false, f.Wait(ctx)
}
func (f failingCache) Set(ctx context.Context, _, _ []byte, _ uint32, _ time.Duration) error {
	return f.Wait(ctx)
}
func (f failingCache) Add(ctx context.Context, _, _ []byte, _ uint32, _ time.Duration) (bool, error) {
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

func TestApacheByteSequences(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache()})
	c := frontendtest.Dial(t, addr)
	key := "mod_ssl-sess:" + strings.Repeat("0123456789abcdef", 4)
	if len(key) != 77 {
		t.Fatalf("key length %d", len(key))
	}
	der := bytes.Repeat([]byte{0x30, 0x82, 0x00, 0xb1}, 45)
	der = append(der, 0x04)

	c.Send("version\r\n")
	c.Expect("VERSION " + DefaultVersion + "\r\n")
	c.Send("get " + key + "\r\n")
	c.Expect("END\r\n")
	c.Send(fmt.Sprintf("set %s 0 299 %d \r\n%s\r\n", key, len(der), der))
	c.Expect("STORED\r\n")
	c.Send("get " + key + "\r\n")
	c.Expect(fmt.Sprintf("VALUE %s 0 %d\r\n%s\r\nEND\r\n", key, len(der), der))
	c.Send("delete " + key + " 0\r\n")
	c.Expect("DELETED\r\n")
	c.Send("delete " + key + " 0\r\n")
	c.Expect("NOT_FOUND\r\n")
	c.Send("get " + key + "\r\n")
	c.Expect("END\r\n")
	c.Send("quit\r\n")
	c.ExpectClosed()
}

func TestCommands(t *testing.T) {
	mc := newMemCache()
	now := time.Unix(1_700_000_000, 0)
	mc.Now = func() time.Time { return now }
	addr := startServer(t, &Server{Cache: mc, Now: mc.Now})
	c := frontendtest.Dial(t, addr)

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
		c.Send(st.send)
		if st.want != "" {
			c.Expect(st.want)
		}
	}

	// TTL conventions seen by the Cache.
	c.Send("set t0 0 0 1\r\nz\r\n")
	c.Expect("STORED\r\n")
	if mc.LastTTL() != NoExpiry {
		t.Errorf("exptime 0: ttl %v, want NoExpiry", mc.LastTTL())
	}
	c.Send("set t1 0 299 1\r\nz\r\n")
	c.Expect("STORED\r\n")
	if mc.LastTTL() != 299*time.Second {
		t.Errorf("exptime 299: ttl %v", mc.LastTTL())
	}
	c.Send(fmt.Sprintf("set t2 0 %d 1\r\nz\r\n", now.Unix()+3600))
	c.Expect("STORED\r\n")
	if mc.LastTTL() != time.Hour {
		t.Errorf("absolute exptime: ttl %v, want 1h", mc.LastTTL())
	}

	c.Send("stats\r\n")
	var stats []string
	for {
		line, err := c.BR.ReadString('\n')
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
	c := frontendtest.Dial(t, addr)
	var req, want strings.Builder
	for i := range 200 {
		v := fmt.Sprint("value-", i)
		fmt.Fprintf(&req, "set k%d %d 0 %d\r\n%s\r\nget k%d nokey\r\n", i, i, len(v), v, i)
		fmt.Fprintf(&want, "STORED\r\nVALUE k%d %d %d\r\n%s\r\nEND\r\n", i, i, len(v), v)
	}
	req.WriteString("delete k0\r\n")
	want.WriteString("DELETED\r\n")
	go c.Send(req.String()) // the server answers while we still write
	c.Expect(want.String())
}

// TestMultiGetOneWrite: a get of many keys is answered in one write.
func TestMultiGetOneWrite(t *testing.T) {
	store := frontendtest.NewStore()
	ln := frontendtest.Listen(t)
	c := frontendtest.Dial(t, frontendtest.Serve(t, &Server{Cache: quickCache{&memCache{store}}, Logger: frontendtest.Logger(t)},
		ln, ErrServerClosed))
	var req, want strings.Builder
	req.WriteString("get")
	for i := range 100 {
		v := fmt.Sprint("value-", i)
		if i%10 != 9 { // every tenth key is a miss
			store.Set(fmt.Appendf(nil, "k%d", i), []byte(v), 0, time.Hour)
			fmt.Fprintf(&want, "VALUE k%d 0 %d\r\n%s\r\n", i, len(v), v)
		}
		fmt.Fprintf(&req, " k%d", i)
	}
	req.WriteString("\r\n")
	want.WriteString("END\r\n")
	c.Send(req.String())
	c.Expect(want.String())
	if w := ln.Writes.Load(); w != 1 {
		t.Fatalf("a get of 100 keys took %d writes; want 1", w)
	}
	if q := store.QuickReads(); q != 100 {
		t.Fatalf("%d of 100 keys read at once", q)
	}
}

func TestOversizedValueIsSwallowed(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache(), MaxValueSize: 100})
	c := frontendtest.Dial(t, addr)
	c.Send("set big 0 0 101\r\n" + strings.Repeat("x", 101) + "\r\nset small 0 0 1\r\ns\r\n")
	c.Expect("SERVER_ERROR object too large for cache\r\nSTORED\r\n")
	c.Send("set huge 0 0 2000000\r\n")
	c.Expect("SERVER_ERROR object too large for cache\r\n")
	c.ExpectClosed()
}

func TestBrokenStreamsCloseOnlyThatConnection(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache(), MaxLineLength: 100})
	good := frontendtest.Dial(t, addr)
	cases := map[string]struct{ send, want string }{
		"bad data chunk": {"set a 0 0 1\r\nzzz\r\n", "CLIENT_ERROR bad data chunk\r\n"},
		"bad byte count": {"set a 0 0 -1\r\n", "CLIENT_ERROR bad command line format\r\n"},
		"long line":      {strings.Repeat("g", 5000) + "\r\n", "CLIENT_ERROR line too long\r\n"},
		"long line fits": {"get " + strings.Repeat("k", 120) + "\r\n", "CLIENT_ERROR line too long\r\n"},
		"binary garbage": {"\x80\x00\x00\x05\r\n", "ERROR\r\n"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := frontendtest.Dial(t, addr)
			c.Send(tc.send)
			c.Expect(tc.want)
			if name != "binary garbage" {
				c.ExpectClosed()
			}
			good.Send("set ok 0 0 2\r\nok\r\n")
			good.Expect("STORED\r\n")
		})
	}
}

func TestBackendFailuresAnswerServerError(t *testing.T) {
	addr := startServer(t, &Server{Cache: failingCache{frontendtest.Failing{Err: errors.New("no quorum\r\nbad")}}})
	c := frontendtest.Dial(t, addr)
	c.Send("get a\r\nset a 0 0 1\r\nz\r\ndelete a\r\nadd a 0 0 1\r\nz\r\nset a 0 0 1 noreply\r\nz\r\nversion\r\n")
	c.Expect("SERVER_ERROR no quorum  bad\r\n" +
		"SERVER_ERROR no quorum  bad\r\n" +
		"SERVER_ERROR no quorum  bad\r\n" +
		"SERVER_ERROR no quorum  bad\r\n" +
		"VERSION " + DefaultVersion + "\r\n")

	blocking := startServer(t, &Server{Cache: failingCache{}, RequestTimeout: 50 * time.Millisecond})
	b := frontendtest.Dial(t, blocking)
	start := time.Now()
	b.Send("get a\r\nset a 0 0 1\r\nz\r\n")
	b.Expect("SERVER_ERROR timeout\r\nSERVER_ERROR timeout\r\n")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("timeouts took %v", d)
	}
}

func TestStalledPartialRequestIsClosed(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache(), ReadTimeout: 200 * time.Millisecond})
	idle := frontendtest.Dial(t, addr)    // idle connections are kept (IdleTimeout 0)
	stalled := frontendtest.Dial(t, addr) // slowloris: a request that never completes
	stalled.Send("set a 0 0 10\r\nabc")
	good := frontendtest.Dial(t, addr)

	closed := make(chan struct{})
	go func() {
		defer close(closed)
		stalled.BR.ReadByte() // returns once the server closes
	}()
	deadline := time.After(5 * time.Second)
	for i := 0; ; i++ {
		good.Send("set ok 0 0 2\r\nok\r\nget ok\r\n")
		good.Expect("STORED\r\nVALUE ok 0 2\r\nok\r\nEND\r\n")
		select {
		case <-closed:
			idle.Send("version\r\n")
			idle.Expect("VERSION " + DefaultVersion + "\r\n")
			return
		case <-deadline:
			t.Fatal("stalled connection was not closed")
		default:
		}
	}
}

func TestIdleTimeout(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache(), IdleTimeout: 100 * time.Millisecond})
	c := frontendtest.Dial(t, addr)
	c.Send("version\r\n")
	c.Expect("VERSION " + DefaultVersion + "\r\n")
	c.ExpectClosed()
}

func TestMaxConns(t *testing.T) {
	s := &Server{Cache: newMemCache(), MaxConns: 1}
	addr := startServer(t, s)
	first := frontendtest.Dial(t, addr)
	first.Send("version\r\n")
	first.Expect("VERSION " + DefaultVersion + "\r\n")
	if n := s.ActiveConns(); n != 1 {
		t.Errorf("ActiveConns = %d, want 1", n)
	}
	second := frontendtest.Dial(t, addr)
	second.Expect("SERVER_ERROR too many open connections\r\n")
	second.ExpectClosed()
	first.Send("quit\r\n")
	first.ExpectClosed()
	deadline := time.Now().Add(5 * time.Second)
	for s.ActiveConns() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("connection count did not drop")
		}
		time.Sleep(time.Millisecond)
	}
	third := frontendtest.Dial(t, addr)
	third.Send("version\r\n")
	third.Expect("VERSION " + DefaultVersion + "\r\n")
}

func TestShutdownClosesIdleConnections(t *testing.T) {
	s := &Server{Cache: newMemCache(), Logger: frontendtest.Logger(t)}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	c := frontendtest.Dial(t, ln.Addr().String())
	c.Send("version\r\n")
	c.Expect("VERSION " + DefaultVersion + "\r\n")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-errc; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	c.ExpectClosed()
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

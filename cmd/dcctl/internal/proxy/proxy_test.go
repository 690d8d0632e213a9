package proxy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/cmd/dcctl/internal/dctest"
	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// startProxy runs a Proxy for servers behind a distcache.Server on a unix socket and
// returns the local address; everything stops at the end of the test.
func startProxy(t *testing.T, cfg Config) (*Proxy, string) {
	t.Helper()
	if cfg.Dial == nil {
		cfg.Dial = distcache.DialConn
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr := "UNIX:" + filepath.Join(t.TempDir(), "scache")
	ln, err := distcache.Listen(addr, distcache.ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &distcache.Server{Handler: p, Logger: cfg.Logger}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.Run(ctx) }()
	go func() { defer wg.Done(); srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		cancel()
		wg.Wait()
	})
	return p, addr
}

// localConn is a raw connection to the proxy that sends frames with chosen uids.
type localConn struct {
	t    *testing.T
	conn net.Conn
	dec  *distcache.Decoder
}

func dialLocal(t *testing.T, addr string) *localConn {
	t.Helper()
	c, err := distcache.DialConn(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &localConn{t: t, conn: c, dec: distcache.NewDecoder(c, distcache.Responses)}
}

func (l *localConn) send(uid uint32, op distcache.Op, payload []byte) {
	l.t.Helper()
	b, err := distcache.AppendMessage(nil, &distcache.Message{UID: uid, Op: op, Payload: payload})
	if err != nil {
		l.t.Fatal(err)
	}
	if _, err := l.conn.Write(b); err != nil {
		l.t.Fatal(err)
	}
}

func (l *localConn) recv(within time.Duration) distcache.Message {
	l.t.Helper()
	l.conn.SetReadDeadline(time.Now().Add(within))
	var m distcache.Message
	if err := l.dec.Decode(&m); err != nil {
		l.t.Fatalf("no answer from proxy within %v: %v", within, err)
	}
	return m
}

func (l *localConn) roundTrip(uid uint32, op distcache.Op, payload []byte, within time.Duration) distcache.Message {
	l.t.Helper()
	l.send(uid, op, payload)
	m := l.recv(within)
	if m.UID != uid || m.Op != op || !m.Response {
		l.t.Fatalf("answer uid %#x op %v response %v, want uid %#x op %v", m.UID, m.Op, m.Response, uid, op)
	}
	return m
}

func addPayload(id, data string) []byte {
	return distcache.AppendAddPayload(nil, 60000, []byte(id), []byte(data))
}

// recorder wraps a handler and records the uids the upstream server saw.
type recorder struct {
	next distcache.Handler
	mu   sync.Mutex
	uids []uint32
}

func (r *recorder) ServeDistcache(ctx context.Context, m *distcache.Message) ([]byte, error) {
	r.mu.Lock()
	r.uids = append(r.uids, m.UID)
	r.mu.Unlock()
	return r.next.ServeDistcache(ctx, m)
}

func TestForwardsAndRewritesUIDs(t *testing.T) {
	cache := dctest.NewMapCache()
	rec := &recorder{next: distcache.NewCacheHandler(cache)}
	up := dctest.StartServer(t, "tcp", rec)
	p, addr := startProxy(t, Config{Servers: []string{up.Addr}})
	dctest.WaitFor(t, 5*time.Second, "upstream connection", func() bool { return p.Upstream() == up.Addr })

	a, b := dialLocal(t, addr), dialLocal(t, addr)
	if m := a.roundTrip(0xdeadbeef, distcache.OpAdd, addPayload("abc", "hello"), 5*time.Second); !bytes.Equal(m.Payload, []byte{0}) {
		t.Fatalf("ADD answer %x", m.Payload)
	}
	if m := b.roundTrip(7, distcache.OpHave, []byte("abc"), 5*time.Second); !bytes.Equal(m.Payload, []byte{0}) {
		t.Fatalf("HAVE answer %x", m.Payload)
	}
	// Multi-frame payloads pass verbatim both ways.
	big := bytes.Repeat([]byte("0123456789"), 1000)
	if m := a.roundTrip(7, distcache.OpAdd, addPayload("big", string(big)), 5*time.Second); !bytes.Equal(m.Payload, []byte{0}) {
		t.Fatalf("big ADD answer %x", m.Payload)
	}
	if m := b.roundTrip(0xffffffff, distcache.OpGet, []byte("big"), 5*time.Second); !bytes.Equal(m.Payload, big) {
		t.Fatalf("big GET answer of %d bytes", len(m.Payload))
	}
	if m := a.roundTrip(1, distcache.OpGet, []byte("nope"), 5*time.Second); !bytes.Equal(m.Payload, []byte{1}) {
		t.Fatalf("GET miss answer %x", m.Payload)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if fmt.Sprint(rec.uids) != "[1 2 3 4 5]" {
		t.Fatalf("upstream saw uids %v, want the proxy's own counter 1..5", rec.uids)
	}
}

func TestManyLocalClientsShareOneUpstream(t *testing.T) {
	var conns atomic.Int32
	up := dctest.StartServer(t, "unix", nil)
	p, addr := startProxy(t, Config{Servers: []string{up.Addr}, Dial: func(ctx context.Context, a string) (net.Conn, error) {
		conns.Add(1)
		return distcache.DialConn(ctx, a)
	}})
	dctest.WaitFor(t, 5*time.Second, "upstream connection", func() bool { return p.Upstream() == up.Addr })
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				// A new local connection per operation, as applications do.
				c, err := distcache.Dial(context.Background(), addr, distcache.WithRequestTimeout(5*time.Second))
				if err != nil {
					errs <- err
					return
				}
				id := []byte(fmt.Sprintf("g%d-i%d", g, i))
				data := bytes.Repeat(id, 3)
				if err := c.Add(context.Background(), id, data, time.Minute); err != nil {
					errs <- fmt.Errorf("add %s: %w", id, err)
				} else if got, err := c.Get(context.Background(), id); err != nil || !bytes.Equal(got, data) {
					errs <- fmt.Errorf("get %s: %q, %v", id, got, err)
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if up.Cache.Len() != 32*20 {
		t.Errorf("upstream holds %d sessions, want %d", up.Cache.Len(), 32*20)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("proxy opened %d upstream connections, want 1", n)
	}
}

func TestNoUpstreamAnswersEmptyAtOnce(t *testing.T) {
	_, addr := startProxy(t, Config{Servers: []string{dctest.DeadAddr(t)}, Timeout: 10 * time.Second, Retry: time.Hour})
	l := dialLocal(t, addr)
	for _, op := range []distcache.Op{distcache.OpGet, distcache.OpAdd} {
		start := time.Now()
		m := l.roundTrip(0x2a, op, addPayload("abc", "hello"), 2*time.Second)
		if len(m.Payload) != 0 {
			t.Fatalf("%v without upstream: payload %x, want empty", op, m.Payload)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("%v without upstream took %v", op, d)
		}
	}
}

// scripted is an upstream that decodes requests and answers as told.
type scripted struct {
	ln     net.Listener
	addr   string
	answer func(m *distcache.Message) (payload []byte, delay time.Duration, ok bool)
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startScripted(t *testing.T, answer func(m *distcache.Message) ([]byte, time.Duration, bool)) *scripted {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{ln: ln, addr: fmt.Sprintf("IP:127.0.0.1:%d", ln.Addr().(*net.TCPAddr).Port), answer: answer}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(s.stop)
	return s
}

func (s *scripted) serve(c net.Conn) {
	var wmu sync.Mutex
	var wg sync.WaitGroup
	defer wg.Wait()
	dec := distcache.NewDecoder(c, distcache.Requests)
	for {
		var m distcache.Message
		if err := dec.Decode(&m); err != nil {
			return
		}
		payload, delay, ok := s.answer(&m)
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(delay) // the scripted server's own slowness, not test synchronisation
			b, _ := distcache.AppendMessage(nil, &distcache.Message{UID: m.UID, Op: m.Op, Response: true, Payload: payload})
			wmu.Lock()
			c.Write(b)
			wmu.Unlock()
		}()
	}
}

// stop closes the listener and every connection (the server dies).
func (s *scripted) stop() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func TestOutstandingRequestGetsDisconnectedWhenUpstreamDies(t *testing.T) {
	got := make(chan struct{}, 1)
	silent := startScripted(t, func(m *distcache.Message) ([]byte, time.Duration, bool) {
		got <- struct{}{}
		return nil, 0, false // never answer
	})
	p, addr := startProxy(t, Config{Servers: []string{silent.addr}, Timeout: 10 * time.Second, Retry: time.Hour})
	dctest.WaitFor(t, 5*time.Second, "upstream connection", func() bool { return p.Upstream() != "" })
	l := dialLocal(t, addr)
	l.send(0x4d, distcache.OpHave, []byte("abc"))
	<-got // the request is outstanding upstream
	start := time.Now()
	silent.stop()
	m := l.recv(5 * time.Second)
	if m.UID != 0x4d || m.Op != distcache.OpHave || !bytes.Equal(m.Payload, []byte{0x02}) {
		t.Fatalf("answer %+v, want uid 0x4d HAVE payload 02", m)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("DISCONNECTED took %v (should not wait for the deadline)", d)
	}
}

func TestFailsOverWhenServerDies(t *testing.T) {
	s1 := dctest.StartServer(t, "tcp", nil)
	s2 := dctest.StartServer(t, "unix", nil)
	p, addr := startProxy(t, Config{Servers: []string{s1.Addr, s2.Addr}, Timeout: time.Second, Retry: 50 * time.Millisecond})
	dctest.WaitFor(t, 5*time.Second, "upstream connection", func() bool { return p.Upstream() == s1.Addr })
	l := dialLocal(t, addr)
	if m := l.roundTrip(1, distcache.OpAdd, addPayload("one", "first-server"), 5*time.Second); !bytes.Equal(m.Payload, []byte{0}) {
		t.Fatalf("ADD via s1: %x", m.Payload)
	}
	if _, ok := s1.Cache.Lookup([]byte("one")); !ok {
		t.Fatal("ADD did not reach s1")
	}

	s1.Stop()
	// Until the proxy notices, answers are "no upstream" (empty) or DISCONNECTED;
	// every request is answered promptly, never hangs.
	deadline := time.Now().Add(5 * time.Second)
	for {
		start := time.Now()
		m := l.roundTrip(2, distcache.OpHave, []byte("x"), 3*time.Second)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("request during failover took %v", d)
		}
		if bytes.Equal(m.Payload, []byte{1}) {
			break // answered by s2: "not there"
		}
		if len(m.Payload) > 1 || len(m.Payload) == 1 && m.Payload[0] != 0x02 {
			t.Fatalf("unexpected answer during failover: %x", m.Payload)
		}
		if time.Now().After(deadline) {
			t.Fatal("proxy did not fail over to the second server")
		}
	}
	if p.Upstream() != s2.Addr {
		t.Fatalf("upstream is %q, want %q", p.Upstream(), s2.Addr)
	}
	for i := uint32(0); i < 20; i++ {
		id := fmt.Sprintf("after-%d", i)
		if m := l.roundTrip(100+i, distcache.OpAdd, addPayload(id, "second-server"), 5*time.Second); !bytes.Equal(m.Payload, []byte{0}) {
			t.Fatalf("ADD %s via s2: %x", id, m.Payload)
		}
		if _, ok := s2.Cache.Lookup([]byte(id)); !ok {
			t.Fatalf("%s did not reach s2", id)
		}
	}
}

func TestStuckServerTimesOutAndFailsOver(t *testing.T) {
	stuck := startScripted(t, func(*distcache.Message) ([]byte, time.Duration, bool) { return nil, 0, false })
	good := dctest.StartServer(t, "tcp", nil)
	p, addr := startProxy(t, Config{Servers: []string{stuck.addr, good.Addr}, Timeout: 150 * time.Millisecond, Retry: 50 * time.Millisecond})
	dctest.WaitFor(t, 5*time.Second, "upstream connection", func() bool { return p.Upstream() == stuck.addr })
	l := dialLocal(t, addr)
	start := time.Now()
	m := l.roundTrip(9, distcache.OpGet, []byte("abc"), 3*time.Second)
	if !bytes.Equal(m.Payload, []byte{0x02}) {
		t.Fatalf("stuck upstream: answer %x, want 02", m.Payload)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
		t.Fatalf("deadline answer after %v, want about 150ms", d)
	}
	dctest.WaitFor(t, 5*time.Second, "failover from the stuck server", func() bool { return p.Upstream() == good.Addr })
	if m := l.roundTrip(10, distcache.OpAdd, addPayload("k", "value"), 3*time.Second); !bytes.Equal(m.Payload, []byte{0}) {
		t.Fatalf("ADD after failover: %x", m.Payload)
	}
}

func TestLateAndUnknownAnswersAreDropped(t *testing.T) {
	up := startScripted(t, func(m *distcache.Message) ([]byte, time.Duration, bool) {
		switch string(m.Payload) {
		case "slow":
			return []byte{0}, 400 * time.Millisecond, true
		case "leave":
			return []byte{0}, 200 * time.Millisecond, true
		}
		return []byte{1}, 0, true
	})
	p, addr := startProxy(t, Config{Servers: []string{up.addr}, Timeout: 150 * time.Millisecond})
	dctest.WaitFor(t, 5*time.Second, "upstream connection", func() bool { return p.Upstream() != "" })

	slow, fast := dialLocal(t, addr), dialLocal(t, addr)
	slow.send(1, distcache.OpHave, []byte("slow"))
	// While the slow request waits, other answers keep arriving, so the upstream is
	// slow on one request, not stuck: the slow one gets 02, the connection stays.
	stop := time.Now().Add(250 * time.Millisecond)
	for time.Now().Before(stop) {
		if m := fast.roundTrip(2, distcache.OpHave, []byte("x"), 2*time.Second); !bytes.Equal(m.Payload, []byte{1}) {
			t.Fatalf("fast answer %x", m.Payload)
		}
	}
	if m := slow.recv(2 * time.Second); !bytes.Equal(m.Payload, []byte{0x02}) || m.UID != 1 {
		t.Fatalf("slow request: %+v, want 02", m)
	}

	// A local client that leaves while its request is outstanding.
	gone := dialLocal(t, addr)
	gone.send(3, distcache.OpHave, []byte("leave"))
	gone.conn.Close()

	// An answer nobody asked for.
	up.mu.Lock()
	conn := up.conns[0]
	up.mu.Unlock()
	b, _ := distcache.AppendMessage(nil, &distcache.Message{UID: 0x7fffffff, Op: distcache.OpGet, Response: true, Payload: []byte{1}})
	conn.Write(b)

	// The late answers (at 400 ms and 200 ms) arrive and are dropped; the same
	// upstream connection keeps serving.
	upstreamBefore := p.Upstream()
	deadline := time.Now().Add(600 * time.Millisecond)
	for time.Now().Before(deadline) {
		if m := fast.roundTrip(4, distcache.OpHave, []byte("x"), 2*time.Second); !bytes.Equal(m.Payload, []byte{1}) {
			t.Fatalf("answer after late/unknown answers: %x", m.Payload)
		}
	}
	up.mu.Lock()
	n := len(up.conns)
	up.mu.Unlock()
	if n != 1 || p.Upstream() != upstreamBefore {
		t.Fatalf("upstream reconnected (%d connections): late answers must not break it", n)
	}
}

func TestNewChecksConfig(t *testing.T) {
	if _, err := New(Config{Dial: distcache.DialConn}); err == nil {
		t.Error("no servers accepted")
	}
	if _, err := New(Config{Servers: []string{"IP:127.0.0.1:1"}}); err == nil {
		t.Error("no dial function accepted")
	}
	p, err := New(Config{Servers: []string{"IP:127.0.0.1:1"}, Dial: distcache.DialConn})
	if err != nil || p.cfg.Timeout != DefaultTimeout || p.cfg.MaxInFlight != DefaultMaxInFlight {
		t.Errorf("defaults not applied: %+v, %v", p, err)
	}

}

// A request that arrives while the proxy is failing over waits for the next
// server instead of failing: a failover costs only the requests in flight.
func TestRequestDuringFailoverWaitsForNextServer(t *testing.T) {
	s1 := dctest.StartServer(t, "tcp", nil)
	s2 := dctest.StartServer(t, "unix", nil)
	// The second server accepts only once released, so the request below surely
	// arrives while the proxy is still connecting to it.
	release := make(chan struct{})
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		if addr == s2.Addr {
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return distcache.DialConn(ctx, addr)
	}
	p, addr := startProxy(t, Config{Servers: []string{s1.Addr, s2.Addr}, Timeout: 5 * time.Second,
		DialTimeout: 5 * time.Second, Retry: time.Hour, Dial: dial})
	dctest.WaitFor(t, 5*time.Second, "upstream connection", func() bool { return p.Upstream() == s1.Addr })
	l := dialLocal(t, addr)
	s1.Stop()
	dctest.WaitFor(t, 5*time.Second, "the proxy notices the loss", func() bool { return p.Upstream() != s1.Addr })
	// Sent before the second server can be reached: the old proxy answered it at
	// once with the empty "no upstream" answer.
	l.send(7, distcache.OpAdd, addPayload("during", "failover"))
	close(release)
	if m := l.recv(10 * time.Second); m.UID != 7 || !bytes.Equal(m.Payload, []byte{0}) {
		t.Fatalf("ADD during failover: uid %d answer %x, want 00 from the second server", m.UID, m.Payload)
	}
	if _, ok := s2.Cache.Lookup([]byte("during")); !ok {
		t.Fatal("the ADD did not reach the second server")
	}
}

package distcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// mapCache implements the spec's store semantics (§4, §5.2 without capacity):
// duplicates answer 0x65, an entry is live strictly before its expiry, so a
// timeout of 0 is never visible.
type mapCache struct {
	mu sync.Mutex
	m  map[string]mapEntry
}

type mapEntry struct {
	data   []byte
	expiry time.Time
}

func newMapCache() *mapCache { return &mapCache{m: make(map[string]mapEntry)} }

func (c *mapCache) live(id []byte) (mapEntry, bool) {
	e, ok := c.m[string(id)]
	if ok && !time.Now().Before(e.expiry) {
		delete(c.m, string(id))
		return mapEntry{}, false
	}
	return e, ok
}

func (c *mapCache) Add(_ context.Context, id, data []byte, timeout time.Duration) (Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.live(id); ok {
		return StatusAddExists, nil
	}
	c.m[string(id)] = mapEntry{data: bytes.Clone(data), expiry: time.Now().Add(timeout)}
	return StatusOK, nil
}

func (c *mapCache) Get(_ context.Context, id []byte) ([]byte, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.live(id)
	return e.data, ok, nil
}

func (c *mapCache) Take(_ context.Context, id []byte) ([]byte, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.live(id)
	delete(c.m, string(id))
	return e.data, ok, nil
}

func (c *mapCache) Remove(_ context.Context, id []byte) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.live(id)
	delete(c.m, string(id))
	return ok, nil
}

func (c *mapCache) Have(_ context.Context, id []byte) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.live(id)
	return ok, nil
}

// logSink records log lines so tests can assert that a drop was logged.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, string(p))
	return len(p), nil
}

func (s *logSink) find(substr string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}

type testServer struct {
	srv  *Server
	addr string // distcache address syntax
	logs *logSink
	ln   *trackingListener
}

// trackingListener remembers the connections it accepted, so a test can break
// them from the server's side.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, nc)
		l.mu.Unlock()
	}
	return nc, err
}

// breakConns closes every connection accepted so far.
func (l *trackingListener) breakConns() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, nc := range l.conns {
		nc.Close()
	}
}

// startServer serves h on a fresh TCP or unix listener until the test ends.
func startServer(t testing.TB, network string, h Handler, tweak func(*Server)) *testServer {
	t.Helper()
	logs := &logSink{}
	srv := &Server{Handler: h, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if tweak != nil {
		tweak(srv)
	}
	var addr string
	if network == "unix" {
		addr = "UNIX:" + filepath.Join(t.TempDir(), "dc.sock")
	} else {
		addr = "IP:127.0.0.1:0"
	}
	ln, err := Listen(addr, ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if network != "unix" {
		addr = fmt.Sprintf("IP:127.0.0.1:%d", ln.Addr().(*net.TCPAddr).Port)
	}
	tl := &trackingListener{Listener: ln}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(tl) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return &testServer{srv: srv, addr: addr, logs: logs, ln: tl}
}

func rawDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := DialConn(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

func readN(t *testing.T, nc net.Conn, n int) []byte {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(nc, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

// expectClosed asserts that the server closes nc without sending anything.
func expectClosed(t *testing.T, nc net.Conn) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(nc)
	var ne net.Error
	if len(b) != 0 || (err != nil && errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("expected close without answer, got %x, %v", b, err)
	}
}

func TestGoldenSessionOverSockets(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			ts := startServer(t, network, NewCacheHandler(newMapCache()), nil)
			nc := rawDial(t, ts.addr)
			for _, step := range goldenSession {
				if _, err := nc.Write(unhex(t, step.req)); err != nil {
					t.Fatal(err)
				}
				want := unhex(t, step.resp)
				if got := readN(t, nc, len(want)); !bytes.Equal(got, want) {
					t.Fatalf("%s:\n got %x\nwant %x", step.name, got, want)
				}
			}
		})
	}
}

// TestGoldenPipelinedOneByte sends the whole golden session at once, one byte
// per write, and expects the whole answer stream in order.
func TestGoldenPipelinedOneByte(t *testing.T) {
	ts := startServer(t, "tcp", NewCacheHandler(newMapCache()), nil)
	nc := rawDial(t, ts.addr)
	var req, want []byte
	for _, s := range goldenSession {
		req = append(req, unhex(t, s.req)...)
		want = append(want, unhex(t, s.resp)...)
	}
	go func() {
		for i := range req {
			if _, err := nc.Write(req[i : i+1]); err != nil {
				return
			}
		}
	}()
	if got := readN(t, nc, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("answer stream differs:\n got %x\nwant %x", got, want)
	}
}

func TestCloseCases(t *testing.T) {
	ts := startServer(t, "tcp", NewCacheHandler(newMapCache()), nil)
	for _, c := range closeCases {
		t.Run(c.name, func(t *testing.T) {
			nc := rawDial(t, ts.addr)
			nc.Write(append(unhex(t, c.frames), unhex(t, validHAVE)...)) // may fail once the server closes
			expectClosed(t, nc)
		})
	}
	// The server is still serving, and each drop was logged.
	nc := rawDial(t, ts.addr)
	nc.Write(unhex(t, "0011ffff 00 00000005 00 03 01 0003 616263"))
	if got, want := readN(t, nc, 15), unhex(t, "00110000 01 00000005 00 03 01 0001 01"); !bytes.Equal(got, want) {
		t.Fatalf("patch level: got %x want %x", got, want)
	}
	for _, substr := range []string{"unsupported protocol level", "frame data length 2049 exceeds limit 2048", "ADD payload shorter than 8 bytes", "continuation frame with a different request_uid"} {
		if ts.logs.find(substr) == "" {
			t.Errorf("no log line containing %q", substr)
		}
	}
}

func TestLargestMessage(t *testing.T) {
	ts := startServer(t, "unix", NewCacheHandler(newMapCache()), nil)
	nc := rawDial(t, ts.addr)
	id := []byte("big4")
	data := bytes.Repeat([]byte{0x5a}, MaxPayload-8-len(id))
	add, _ := AppendMessage(nil, &Message{UID: 1, Op: OpAdd, Payload: AppendAddPayload(nil, 60000, id, data)})
	if (len(add)-MaxPayload)/HeaderSize != 16 {
		t.Fatalf("ADD is %d bytes", len(add))
	}
	get, _ := AppendMessage(nil, &Message{UID: 2, Op: OpGet, Payload: id})
	nc.Write(append(add, get...))
	if got := readN(t, nc, 15); !bytes.Equal(got, unhex(t, "00110000 01 00000001 00 00 01 0001 00")) {
		t.Fatalf("ADD answer %x", got)
	}
	resp := readN(t, nc, EncodedLen(len(data)))
	msgs, err := decodeAll(t, bytes.NewReader(resp), Responses)
	if err != nil || len(msgs) != 1 || !bytes.Equal(msgs[0].Payload, data) || len(resp)-len(data) != 16*HeaderSize {
		t.Fatalf("GET answer: %v, %d msgs", err, len(msgs))
	}

	// One byte more: 17 frames, closed without answer.
	nc2 := rawDial(t, ts.addr)
	add, _ = AppendMessage(nil, &Message{UID: 3, Op: OpAdd, Payload: AppendAddPayload(nil, 60000, id, append(data, 0))})
	if _, err := AppendMessage(nil, &Message{Payload: make([]byte, MaxPayload+1)}); err == nil {
		t.Fatal("encoder accepted 32769 bytes")
	}
	_ = add // the encoder refuses; build the 17-frame message by hand
	payload := AppendAddPayload(nil, 60000, id, append(data, 0))
	var wire []byte
	for i := 0; i < len(payload); i += MaxFrameData {
		end := min(i+MaxFrameData, len(payload))
		complete := byte(0)
		if end == len(payload) {
			complete = 1
		}
		wire = append(wire, 0x00, 0x11, 0, 0, 0, 0, 0, 0, 3, 0, 0, complete, byte((end-i)>>8), byte(end-i))
		wire = append(wire, payload[i:end]...)
	}
	go nc2.Write(wire)
	expectClosed(t, nc2)
	if l := ts.logs.find("frames per message 17 exceeds limit 16"); l == "" {
		t.Error("17-frame message not logged")
	}
}

func TestHalfCloseAnswered(t *testing.T) {
	ts := startServer(t, "tcp", NewCacheHandler(newMapCache()), nil)
	nc := rawDial(t, ts.addr)
	var req, want []byte
	for _, s := range goldenSession[:5] {
		req = append(req, unhex(t, s.req)...)
		want = append(want, unhex(t, s.resp)...)
	}
	nc.Write(req)
	if err := nc.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(nc)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after half-close got %x (%v), want %x", got, err, want)
	}
}

// TestBackpressure pipelines 10,000 GETs with 1000-byte answers (10 MB, far
// more than socket buffers hold) and reads nothing until the server has had to
// stop reading; every answer must then arrive, in order.
// The quick variant answers on the reading goroutine and holds answers back
// for coalescing: it must still free pipeline slots instead of deadlocking.
func TestBackpressure(t *testing.T) {
	data := bytes.Repeat([]byte("d"), 1000)
	t.Run("goroutines", func(t *testing.T) {
		testBackpressure(t, data, HandlerFunc(func(_ context.Context, req *Message) ([]byte, error) { return data, nil }))
	})
	t.Run("quick", func(t *testing.T) {
		cache := &quickMapCache{mapCache: newMapCache()}
		cache.Add(context.Background(), []byte("id"), data, time.Hour)
		testBackpressure(t, data, NewCacheHandler(cache))
	})
}

func testBackpressure(t *testing.T, data []byte, h Handler) {
	ts := startServer(t, "tcp", h, func(s *Server) { s.MaxPipeline = 8 })
	nc := rawDial(t, ts.addr)
	const n = 10000
	var req []byte
	for i := range n {
		req, _ = AppendMessage(req, &Message{UID: uint32(i), Op: OpGet, Payload: []byte("id")})
	}
	wrote := make(chan error, 1)
	go func() { _, err := nc.Write(req); wrote <- err }()
	deadline := time.Now().Add(10 * time.Second)
	for ts.srv.BackpressureEvents() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("server never stopped reading")
		}
		time.Sleep(time.Millisecond)
	}
	dec := NewDecoder(nc, Responses)
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i := range n {
		var m Message
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if m.UID != uint32(i) || !bytes.Equal(m.Payload, data) {
			t.Fatalf("answer %d has uid %d", i, m.UID)
		}
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

func TestStalledPeerClosed(t *testing.T) {
	ts := startServer(t, "tcp", NewCacheHandler(newMapCache()), func(s *Server) { s.ReadTimeout = 200 * time.Millisecond })
	stalled := rawDial(t, ts.addr)
	stalled.Write(unhex(t, validHAVE)[:9])

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := Dial(ctx, ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	closed := make(chan struct{})
	go func() { expectClosed(t, stalled); close(closed) }()
	for i := 0; ; i++ {
		if _, err := cl.Have(ctx, []byte("abc")); err != nil {
			t.Fatalf("healthy client failed: %v", err)
		}
		select {
		case <-closed:
			if ts.logs.find("stalled mid-message") == "" {
				t.Fatal("stall not logged")
			}
			if _, err := cl.Have(ctx, []byte("abc")); err != nil {
				t.Fatalf("healthy client failed after the drop: %v", err)
			}
			return
		case <-ctx.Done():
			t.Fatal("stalled peer never closed")
		default:
		}
	}
}

func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, "unix", NewCacheHandler(newMapCache()), func(s *Server) { s.IdleTimeout = 100 * time.Millisecond })
	nc := rawDial(t, ts.addr)
	expectClosed(t, nc)
	if ts.logs.find("idle timeout") == "" {
		t.Fatal("idle close not logged")
	}
}

func TestHandlerErrorClosesAfterEarlierAnswers(t *testing.T) {
	h := HandlerFunc(func(_ context.Context, req *Message) ([]byte, error) {
		if req.UID == 2 {
			return nil, errors.New("refused")
		}
		return StatusOK.Payload(), nil
	})
	ts := startServer(t, "tcp", h, nil)
	nc := rawDial(t, ts.addr)
	var req []byte
	for uid := uint32(1); uid <= 3; uid++ {
		req, _ = AppendMessage(req, &Message{UID: uid, Op: OpHave, Payload: []byte("x")})
	}
	nc.Write(req)
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, _ := io.ReadAll(nc)
	if want := unhex(t, "00110000 01 00000001 00 03 01 0001 00"); !bytes.Equal(got, want) {
		t.Fatalf("got %x want %x", got, want)
	}
	if ts.logs.find("refused") == "" {
		t.Fatal("handler error not logged")
	}
}

func TestMaxConns(t *testing.T) {
	ts := startServer(t, "tcp", NewCacheHandler(newMapCache()), func(s *Server) { s.MaxConns = 1 })
	first := rawDial(t, ts.addr)
	first.Write(unhex(t, validHAVE))
	readN(t, first, 15)
	second := rawDial(t, ts.addr)
	expectClosed(t, second)
	if ts.logs.find("too many connections") == "" {
		t.Fatal("rejection not logged")
	}
}

func TestShutdownAnswersInFlight(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	h := HandlerFunc(func(ctx context.Context, req *Message) ([]byte, error) {
		started <- struct{}{}
		<-release
		return StatusOK.Payload(), nil
	})
	logs := &logSink{}
	srv := &Server{Handler: h, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	ln, err := Listen("IP:127.0.0.1:0", ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	nc := rawDial(t, fmt.Sprintf("IP:127.0.0.1:%d", ln.Addr().(*net.TCPAddr).Port))
	nc.Write(unhex(t, validHAVE))
	<-started
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	close(release)
	if got := readN(t, nc, 15); !bytes.Equal(got, unhex(t, "00110000 01 00000005 00 03 01 0001 00")) {
		t.Fatalf("in-flight answer %x", got)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatal(err)
	}
	expectClosed(t, nc)
	if srv.ActiveConns() != 0 {
		t.Fatal("connections left after Shutdown")
	}
}

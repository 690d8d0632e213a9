package frontendtest

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/internal/syncbuf"
)

// Logger writes every line, debug included, to the test's log.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// LogBuffer returns a logger whose lines a test can search, so that it can
// assert that a dropped connection was explained.
func LogBuffer() (*syncbuf.Buffer, *slog.Logger) {
	logs := &syncbuf.Buffer{}
	return logs, slog.New(slog.NewTextHandler(logs, nil))
}

// StreamServer is a front-end's server over stream listeners.
type StreamServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// PacketServer is a front-end's server over a datagram socket.
type PacketServer interface {
	Serve(net.PacketConn) error
	Shutdown(context.Context) error
}

// Start serves s on a loopback TCP listener and returns its address. At
// cleanup it shuts s down and checks that Serve returned closed (the
// front-end's ErrServerClosed).
func Start(t testing.TB, s StreamServer, closed error) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return Serve(t, s, ln, closed)
}

// Serve is Start on a listener of the test's own (see Listen); nil means a
// fresh loopback one.
func Serve(t testing.TB, s StreamServer, ln net.Listener, closed error) string {
	t.Helper()
	if ln == nil {
		return Start(t, s, closed)
	}
	serveUntilCleanup(t, func() error { return s.Serve(ln) }, s.Shutdown, closed)
	return ln.Addr().String()
}

// StartPacket is Start for a datagram server on a loopback UDP socket.
func StartPacket(t testing.TB, s PacketServer, closed error) net.Addr {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveUntilCleanup(t, func() error { return s.Serve(pc) }, s.Shutdown, closed)
	return pc.LocalAddr()
}

func serveUntilCleanup(t testing.TB, serve func() error, shutdown func(context.Context) error, closed error) {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-errc; !errors.Is(err, closed) {
			t.Errorf("Serve returned %v, want %v", err, closed)
		}
	})
}

// DialConn connects to addr over loopback TCP; the connection is closed at
// cleanup.
func DialConn(t testing.TB, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// Client talks a line protocol to a server under test; every call fails the
// test on a mismatch, and every read gives up after ten seconds.
type Client struct {
	t  testing.TB
	NC net.Conn
	BR *bufio.Reader
}

// Dial connects a Client to addr.
func Dial(t testing.TB, addr string) *Client {
	t.Helper()
	nc := DialConn(t, addr)
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &Client{t: t, NC: nc, BR: bufio.NewReader(nc)}
}

// Send writes s.
func (c *Client) Send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.NC, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// Expect reads exactly len(want) bytes and compares them.
func (c *Client) Expect(want string) {
	c.t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c.BR, got); err != nil {
		c.t.Fatalf("reading %q: got %q, %v", want, got, err)
	}
	if string(got) != want {
		c.t.Fatalf("got %q, want %q", got, want)
	}
}

// ExpectClosed asserts that the server closes the connection without sending
// anything more.
func (c *Client) ExpectClosed() {
	c.t.Helper()
	b, err := c.BR.ReadByte()
	if err == nil {
		c.t.Fatalf("expected close, read %q", b)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		c.t.Fatalf("expected close, got %v", err)
	}
}

// LoopReader replays the same request bytes forever, so a benchmark measures
// parsing and answering without the network.
type LoopReader struct {
	Data []byte
	off  int
}

func (r *LoopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], r.Data[r.off:])
		n += k
		r.off = (r.off + k) % len(r.Data)
	}
	return n, nil
}

// StingyReader returns its bytes, then fails as a stalled socket would.
type StingyReader struct{ Data []byte }

func (r *StingyReader) Read(p []byte) (int, error) {
	if len(r.Data) == 0 {
		return 0, io.ErrNoProgress
	}
	n := copy(p, r.Data)
	r.Data = r.Data[n:]
	return n, nil
}

// BenchmarkRoundTrip sends req to addr and reads an answer of answerLen bytes,
// once per iteration: one request/answer round trip over loopback.
func BenchmarkRoundTrip(b *testing.B, addr string, req []byte, answerLen int) {
	nc := DialConn(b, addr)
	buf := make([]byte, answerLen)
	b.ReportAllocs()
	for b.Loop() {
		nc.Write(req)
		if _, err := io.ReadFull(nc, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// WaitFor polls cond until it holds, for at most ten seconds, instead of
// sleeping for a guessed time.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

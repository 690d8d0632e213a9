package connset

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/internal/syncbuf"
	"github.com/distcache-replicated/distcache/protocol/internal/reqctx"

	"github.com/distcache-replicated/distcache/protocol/internal/frontendtest"
)

// lineConn echoes lines until its peer closes, it is woken during a shutdown,
// or it is closed.
type lineConn struct {
	set *Set[*lineConn]
	nc  net.Conn
}

func (c *lineConn) Serve() {
	defer c.set.Done(c)
	defer c.nc.Close()
	r := bufio.NewReader(c.nc)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(c.nc, "echo "+line); err != nil || c.set.Closing() {
			return
		}
	}
}

func (c *lineConn) Wake()  { c.nc.SetReadDeadline(time.Unix(1, 0)) }
func (c *lineConn) Close() { c.nc.Close() }

type syncBuf = syncbuf.Buffer

// errClosed stands for a front-end's ErrServerClosed.
var errClosed = errors.New("test: server closed")

type fixture struct {
	set    *Set[*lineConn]
	addr   string
	logs   *syncBuf
	served chan error
}

func start(t *testing.T, maxConns int) *fixture {
	t.Helper()
	f := &fixture{logs: &syncBuf{}, served: make(chan error, 1)}
	f.set = New[*lineConn](Config{Name: "test", Log: slog.New(slog.NewTextHandler(f.logs, nil)), Closed: errClosed,
		MaxConns: maxConns, Refuse: func(nc net.Conn) { io.WriteString(nc, "BUSY\n") }})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	go func() {
		f.served <- f.set.Serve(ln, func(nc net.Conn) *lineConn { return &lineConn{set: f.set, nc: nc} })
	}()
	t.Cleanup(func() { f.set.Close() })
	return f
}

func (f *fixture) dial(t *testing.T) (net.Conn, *bufio.Reader) {
	t.Helper()
	nc, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return nc, bufio.NewReader(nc)
}

func roundTrip(t *testing.T, nc net.Conn, r *bufio.Reader, msg string) string {
	t.Helper()
	if _, err := io.WriteString(nc, msg+"\n"); err != nil {
		t.Fatal(err)
	}
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading answer to %q: %v", msg, err)
	}
	return strings.TrimSuffix(line, "\n")
}

// TestCapRefusesAndCounts: past maxConns a connection gets the protocol's refusal
// and is closed; counters add up; a burst of refusals logs one line.
func TestCapRefusesAndCounts(t *testing.T) {
	f := start(t, 2)
	for i := range 2 {
		nc, r := f.dial(t)
		if got := roundTrip(t, nc, r, "hello"); got != "echo hello" {
			t.Fatalf("connection %d: %q", i+1, got)
		}
	}
	for i := range 5 {
		_, r := f.dial(t)
		b, err := io.ReadAll(r)
		if err != nil || string(b) != "BUSY\n" {
			t.Fatalf("refused connection %d got %q, %v; want BUSY then close", i+1, b, err)
		}
	}
	if a, tot, rej := f.set.Active(), f.set.Total(), f.set.Rejected(); a != 2 || tot != 7 || rej != 5 {
		t.Fatalf("active %d total %d rejected %d; want 2, 7, 5", a, tot, rej)
	}
	if n := strings.Count(f.logs.String(), "too many connections"); n != 1 {
		t.Fatalf("%d refusal log lines for a burst of 5; want 1:\n%s", n, f.logs)
	}
}

// TestShutdownWakesIdleAndWaits: Shutdown closes idle connections, waits for
// them, cancels the base context, and Serve returns the front-end's ErrServerClosed.
func TestShutdownWakesIdleAndWaits(t *testing.T) {
	f := start(t, 10)
	nc, r := f.dial(t)
	roundTrip(t, nc, r, "x")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.set.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if a := f.set.Active(); a != 0 {
		t.Fatalf("%d connections active after Shutdown", a)
	}
	select {
	case <-f.set.Context().Done():
	default:
		t.Fatal("base context not canceled after Shutdown")
	}
	if err := <-f.served; !errors.Is(err, errClosed) {
		t.Fatalf("Serve returned %v; want the front-end's ErrServerClosed", err)
	}
	if _, err := io.ReadAll(r); err != nil {
		t.Fatalf("idle connection not closed cleanly: %v", err)
	}
}

// TestShutdownDeadlineClosesStragglers: a connection that never ends is closed
// when Shutdown's context ends, and Shutdown reports the context's error.
func TestShutdownDeadlineClosesStragglers(t *testing.T) {
	stuck := &stuckConn{release: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	set := New[*stuckConn](Config{Name: "stuck", Log: discard, Closed: errClosed, MaxConns: 10})
	t.Cleanup(func() { set.Close() })
	stuck.set = set
	go set.Serve(ln, func(nc net.Conn) *stuckConn { stuck.nc = nc; return stuck })
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	frontendtest.WaitFor(t, "the connection to be tracked", func() bool { return set.Active() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := set.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stuck connection returned %v; want DeadlineExceeded", err)
	}
	if set.Active() != 0 {
		t.Fatal("stuck connection still active after Shutdown gave up")
	}
}

// stuckConn ignores Wake: only Close ends it.
type stuckConn struct {
	set     *Set[*stuckConn]
	nc      net.Conn
	release chan struct{}
}

func (c *stuckConn) Serve() {
	defer c.set.Done(c)
	<-c.release
}
func (c *stuckConn) Wake() {}
func (c *stuckConn) Close() {
	c.nc.Close()
	select {
	case <-c.release:
	default:
		close(c.release)
	}
}

// flakyListener fails its first Accept calls with err, then accepts.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
	err   error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, l.err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// TestAcceptBacksOffOnTransientErrors: running out of file descriptors pauses
// the accept loop with a log line and does not end it; any other accept error
// ends Serve with that error.
func TestAcceptBacksOffOnTransientErrors(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		logs := &syncBuf{}
		set := New[*lineConn](Config{Name: "test", Log: slog.New(slog.NewTextHandler(logs, nil)), Closed: errClosed})
		t.Cleanup(func() { set.Close() })
		fl := &flakyListener{Listener: ln, fails: 3, err: &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept", errno)}}
		go set.Serve(fl, func(nc net.Conn) *lineConn { return &lineConn{set: set, nc: nc} })
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		if got := roundTrip(t, nc, bufio.NewReader(nc), "hi"); got != "echo hi" {
			t.Fatalf("%v: answer %q after accept errors", errno, got)
		}
		if n := strings.Count(logs.String(), "accept failed; retrying"); n != 3 {
			t.Fatalf("%v: %d retry log lines for 3 failed accepts; want 3:\n%s", errno, n, logs)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	set := New[*lineConn](Config{Name: "test", Log: discard, Closed: errClosed})
	t.Cleanup(func() { set.Close() })
	fatal := errors.New("listener broken")
	if err := set.Serve(&flakyListener{Listener: ln, fails: 1, err: fatal}, nil); !errors.Is(err, fatal) {
		t.Fatalf("Serve after a permanent accept error returned %v; want it wrapped", err)
	}
}

// echoLine is a line-protocol connection driven by Line and ServeStream, as
// memcache's and RESP's are.
type echoLine struct {
	Line
	set *Set[*echoLine]
}

func (c *echoLine) Serve() {
	c.Line.Serve("echo", c.set.Closing, func() error {
		line, err := c.BR.ReadSlice('\n')
		if err != nil {
			return err
		}
		c.BW.WriteString("echo ")
		c.BW.Write(line)
		return nil
	}, io.EOF, errors.New("malformed"), func() { c.set.Done(c) })
}

// TestShutdownDuringTraffic: Shutdown wakes each connection once, without
// polling, so a connection that is between two requests when it is woken must
// still notice. Every connection ends and Shutdown returns well before its
// deadline, and every request that got an answer got the right one.
func TestShutdownDuringTraffic(t *testing.T) {
	for round := range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		discard := slog.New(slog.NewTextHandler(io.Discard, nil))
		var set *Set[*echoLine]
		set = New[*echoLine](Config{Name: "echo", Log: discard, Closed: errClosed})
		go set.Serve(ln, func(nc net.Conn) *echoLine {
			return &echoLine{Line: NewLine(nc, 64, discard, reqctx.New(context.Background(), time.Second),
				time.Second, 0, time.Second), set: set}
		})
		var clients sync.WaitGroup
		for i := range 4 {
			nc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			clients.Add(1)
			go func() {
				defer clients.Done()
				nc.SetDeadline(time.Now().Add(20 * time.Second))
				r := bufio.NewReader(nc)
				for j := 0; ; j++ {
					msg := fmt.Sprintf("%d-%d\n", i, j)
					if _, err := io.WriteString(nc, msg); err != nil {
						return
					}
					got, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if got != "echo "+msg {
						t.Errorf("answer %q to %q", got, msg)
						return
					}
				}
			}()
		}
		frontendtest.WaitFor(t, "the clients to connect", func() bool { return set.Active() == 4 })
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		if err := set.Shutdown(ctx); err != nil {
			t.Fatalf("round %d: Shutdown: %v (a connection missed its wake-up)", round, err)
		}
		cancel()
		clients.Wait()
	}
}

package connset

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrClosed is returned once Shutdown or Close has been called; each front-end
// wraps it in its own ErrServerClosed.
var ErrClosed = errors.New("server closed")

// Group is the lifecycle of one server: the listeners and sockets it serves,
// the goroutines Shutdown waits for, and the base context of its backend
// calls. The zero value is not ready: use NewGroup.
type Group struct {
	name   string // log prefix: "distcache", "memcache", "resp", "sessiond"
	log    func() *slog.Logger
	cancel context.CancelFunc // cancels the server's base context

	mu      sync.Mutex
	sockets map[io.Closer]struct{}
	closing atomic.Bool   // read on every request; closed mirrors it for waiting
	closed  chan struct{} // closed when Shutdown or Close begins
	wg      sync.WaitGroup
}

// NewGroup returns a Group whose log lines start with name. cancel cancels the
// server's base context; it is called once everything has ended after
// Shutdown, or at once by Close.
func NewGroup(name string, log func() *slog.Logger, cancel context.CancelFunc) *Group {
	return &Group{name: name, log: log, cancel: cancel, sockets: make(map[io.Closer]struct{}), closed: make(chan struct{})}
}

// Closing reports whether Shutdown or Close has begun.
func (g *Group) Closing() bool { return g.closing.Load() }

// Open registers a listener or packet socket that Shutdown and Close close, and
// counts its serving loop as running until release is called. Once Shutdown or
// Close has begun it closes sock and returns ErrClosed.
func (g *Group) Open(sock io.Closer) (release func(), err error) {
	if !g.enter(func() { g.sockets[sock] = struct{}{} }) {
		sock.Close()
		return nil, ErrClosed
	}
	return func() {
		g.mu.Lock()
		delete(g.sockets, sock)
		g.mu.Unlock()
		sock.Close()
		g.wg.Done()
	}, nil
}

// enter counts one more thing Shutdown waits for and runs add under the lock,
// unless Shutdown or Close has begun. A connection or socket is therefore
// either refused or seen by the wake and close that follow the closing flag.
func (g *Group) enter(add func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing.Load() {
		return false
	}
	add()
	g.wg.Add(1)
	return true
}

// begin marks the Group closing and closes its sockets; f runs under the same
// lock, after the flag is set.
func (g *Group) begin(f func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closing.Swap(true) {
		close(g.closed)
	}
	for sock := range g.sockets {
		sock.Close()
	}
	if f != nil {
		f()
	}
}

// Shutdown stops accepting and reading, calls wake (which tells every
// connection to stop reading new requests once it has answered what it
// received) and waits for every serving loop and connection to end. When ctx
// ends first it closes everything as Close does with abort, waits, and returns
// ctx's error.
func (g *Group) Shutdown(ctx context.Context, wake, abort func()) error {
	g.begin(wake)
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		g.cancel()
		return nil
	case <-ctx.Done():
		g.Close(abort)
		<-done
		return ctx.Err()
	}
}

// Close closes every socket, calls abort (which closes every connection) and
// cancels the base context, so in-flight backend calls end too.
func (g *Group) Close(abort func()) {
	g.begin(abort)
	g.cancel()
}

// Backoff paces a serving loop through a run of transient errors. The zero
// value is ready; Reset it after a success.
type Backoff struct{ delay time.Duration }

// Reset ends a run of errors.
func (b *Backoff) Reset() { b.delay = 0 }

// Pause logs err and waits before the loop retries: 5 ms after the first
// error of a run, doubling up to a second. It returns early when Shutdown or
// Close begins.
func (g *Group) Pause(b *Backoff, what string, err error, attrs ...any) {
	b.delay = min(max(2*b.delay, 5*time.Millisecond), time.Second)
	g.log().Warn(g.name+": "+what+" failed; retrying", append(attrs, "err", err, "delay", b.delay)...)
	t := time.NewTimer(b.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-g.closed:
	}
}

// Transient reports whether an accept error passes: a timeout, a connection
// aborted before it was accepted, or running out of file descriptors (EMFILE,
// ENFILE) or kernel memory, which end as connections close. Any other error
// ends the accept loop.
func Transient(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}

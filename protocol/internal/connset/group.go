package connset

import (
	"cmp"
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

// Group is the lifecycle of one server: the listeners and sockets it serves,
// the goroutines Shutdown waits for, and the base context of its backend
// calls. The zero value is not ready: use NewGroup.
type Group struct {
	name      string // log prefix: "distcache", "memcache", "resp", "sessiond"
	log       *slog.Logger
	errClosed error // the front-end's ErrServerClosed
	ctx       context.Context
	cancel    context.CancelFunc
	started   time.Time

	mu      sync.Mutex
	sockets map[io.Closer]struct{}
	closing atomic.Bool   // read on every request; stop mirrors it for waiting
	stop    chan struct{} // closed when Shutdown or Close begins
	wg      sync.WaitGroup
}

// NewGroup returns a Group whose log lines start with name and go to log (nil:
// slog.Default()). closed is the front-end's ErrServerClosed, returned once
// Shutdown or Close has begun.
func NewGroup(name string, log *slog.Logger, closed error) *Group {
	ctx, cancel := context.WithCancel(context.Background())
	return &Group{
		name: name, log: cmp.Or(log, slog.Default()), errClosed: closed, ctx: ctx, cancel: cancel, started: time.Now(),
		sockets: make(map[io.Closer]struct{}), stop: make(chan struct{}),
	}
}

// Context is the parent of every backend call's context: Close cancels it at
// once, Shutdown once everything has ended.
func (g *Group) Context() context.Context { return g.ctx }

// Started is when the server was set up, for uptime figures.
func (g *Group) Started() time.Time { return g.started }

// Log is the server's logger.
func (g *Group) Log() *slog.Logger { return g.log }

// Default is the rule of every front-end's numeric settings: zero (or a
// negative value) means def.
func Default[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Closing reports whether Shutdown or Close has begun.
func (g *Group) Closing() bool { return g.closing.Load() }

// Open registers a listener or packet socket that Shutdown and Close close, and
// counts its serving loop as running until release is called. Once Shutdown or
// Close has begun it closes sock and returns the front-end's ErrServerClosed.
func (g *Group) Open(sock io.Closer) (release func(), err error) {
	if !g.enter(func() { g.sockets[sock] = struct{}{} }) {
		sock.Close()
		return nil, g.errClosed
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
		close(g.stop)
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
	g.log.Warn(g.name+": "+what+" failed; retrying", append(attrs, "err", err, "delay", b.delay)...)
	t := time.NewTimer(b.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-g.stop:
	}
}

// transient reports whether an accept error passes: a timeout, a connection
// aborted before it was accepted, or running out of file descriptors (EMFILE,
// ENFILE) or kernel memory, which end as connections close. Any other error
// ends the accept loop.
func transient(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}

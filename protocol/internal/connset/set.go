package connset

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/distcache-replicated/distcache/internal/loglimit"
)

// Conn is one tracked connection.
type Conn interface {
	comparable
	// Serve handles the connection until it ends, then calls Set.Done.
	Serve()
	// Wake tells a connection that the server is shutting down: it stops
	// reading new requests, answers those it has received and ends. Wake is
	// called after Closing reports true, so a connection that arms its read
	// deadline and then checks Closing cannot miss it.
	Wake()
	// Close closes the connection at once.
	Close()
}

// Set is a Group that accepts connections: the one accept loop of the stream
// front-ends, with the connection cap and its refusal. The zero value is not
// ready: use New.
type Set[C Conn] struct {
	*Group
	maxConns int
	refuse   func(net.Conn) // writes the protocol's "too many connections" answer

	conns    map[C]struct{} // guarded by Group.mu
	active   atomic.Int64
	total    atomic.Uint64
	rejected atomic.Uint64
	refusals loglimit.Limiter // refusal log lines, at most one a second
}

// Config is what a front-end tells its Set.
type Config struct {
	Name     string       // log prefix: "distcache", "memcache", "resp"
	Log      *slog.Logger // nil: slog.Default()
	Closed   error        // the front-end's ErrServerClosed
	MaxConns int          // <= 0: no cap
	// Refuse, if not nil, answers a connection over MaxConns before it is
	// closed (the protocol's "too many connections").
	Refuse func(net.Conn)
}

// New returns a Set.
func New[C Conn](cfg Config) *Set[C] {
	return &Set[C]{Group: NewGroup(cfg.Name, cfg.Log, cfg.Closed), maxConns: cfg.MaxConns, refuse: cfg.Refuse, conns: make(map[C]struct{})}
}

// Active is the number of open connections.
func (s *Set[C]) Active() int { return int(s.active.Load()) }

// Total is the number of connections accepted since start, refused ones included.
func (s *Set[C]) Total() uint64 { return s.total.Load() }

// Rejected is the number of connections refused for the connection cap.
func (s *Set[C]) Rejected() uint64 { return s.rejected.Load() }

// Serve accepts connections on ln, wraps each with newConn and serves it on its
// own goroutine until Shutdown or Close (then the front-end's ErrServerClosed)
// or an accept error that is not transient. It closes ln on return.
func (s *Set[C]) Serve(ln net.Listener, newConn func(net.Conn) C) error {
	release, err := s.Open(ln)
	if err != nil {
		return err
	}
	defer release()
	var backoff Backoff
	for {
		nc, err := ln.Accept()
		if err != nil {
			switch {
			case s.Closing():
				return s.errClosed
			case transient(err):
				s.Pause(&backoff, "accept", err, "listener", ln.Addr().String())
				continue
			}
			return fmt.Errorf("%s: accept on %s: %w", s.name, ln.Addr(), err)
		}
		backoff.Reset()
		s.total.Add(1)
		if s.maxConns > 0 && s.active.Load() >= int64(s.maxConns) {
			s.refuseConn(nc)
			continue
		}
		c := newConn(nc)
		if !s.enter(func() { s.conns[c] = struct{}{} }) {
			nc.Close()
			return s.errClosed
		}
		s.active.Add(1)
		go c.Serve()
	}
}

// refuseConn turns away a connection over the cap. The log line comes before
// the close, so it exists once the peer sees EOF, and at most once a second,
// so a connection flood is not a log flood.
func (s *Set[C]) refuseConn(nc net.Conn) {
	s.rejected.Add(1)
	if ok, suppressed := s.refusals.Allow(time.Now()); ok {
		s.log.Warn(s.name+": too many connections; refusing", "remote", Remote(nc),
			"max_conns", s.maxConns, "suppressed_since_last", suppressed)
	}
	if s.refuse != nil {
		nc.SetWriteDeadline(time.Now().Add(time.Second))
		s.refuse(nc)
	}
	nc.Close()
}

// Done is called by a connection when it has ended.
func (s *Set[C]) Done(c C) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.active.Add(-1)
	s.wg.Done()
}

// Shutdown stops accepting, wakes every connection so that it answers what it
// has received and ends, and waits for all of them. When ctx ends first, the
// remaining connections are closed and ctx's error is returned.
func (s *Set[C]) Shutdown(ctx context.Context) error {
	return s.Group.Shutdown(ctx, s.each(C.Wake), s.each(C.Close))
}

// Close closes the listeners and every connection immediately and cancels the
// server's base context (and so in-flight backend calls). It returns nil, as
// the front-ends' Close does.
func (s *Set[C]) Close() error {
	s.Group.Close(s.each(C.Close))
	return nil
}

// each returns a function that applies f to every connection; it runs under
// Group.mu.
func (s *Set[C]) each(f func(C)) func() {
	return func() {
		for c := range s.conns {
			f(c)
		}
	}
}

// Remote names a connection's peer for log lines: its address, or for a unix
// socket (whose peers have none) the socket's path.
func Remote(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	if a := nc.LocalAddr(); a != nil {
		return "unix:" + a.String()
	}
	return "?"
}

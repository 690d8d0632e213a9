// Package connset is the connection bookkeeping that the line-protocol front-ends
// (memcache, RESP) share: the accept loop with back-off and a connection cap, the
// set of live listeners and connections, and graceful and immediate shutdown. Each
// front-end keeps only what differs: how it refuses a connection and how a
// connection serves.
package connset

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distcache-replicated/distcache/protocol/internal/loglimit"
)

// ErrClosed is returned by Serve once Shutdown or Close has been called; each
// front-end wraps it in its own ErrServerClosed.
var ErrClosed = errors.New("server closed")

// Conn is one tracked connection.
type Conn interface {
	comparable
	// Serve handles the connection until it ends, then calls Set.Done.
	Serve()
	// Wake interrupts a connection blocked waiting for its next request, so that it
	// notices a shutdown; one busy with a request notices after answering.
	Wake()
	// Close closes the connection at once.
	Close()
}

// Set tracks the listeners and connections of one server. The zero value is not
// ready: use New.
type Set[C Conn] struct {
	name     string // log prefix: "memcache", "resp"
	maxConns int
	refuse   func(net.Conn) // writes the protocol's "too many connections" answer
	log      func() *slog.Logger
	cancel   context.CancelFunc // cancels the server's base context on shutdown

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[C]struct{}
	closing   atomic.Bool
	wg        sync.WaitGroup

	active   atomic.Int64
	total    atomic.Uint64
	rejected atomic.Uint64
	refusals loglimit.Limiter // refusal log lines, at most one a second
}

// New returns a Set. refuse answers a connection over maxConns before it is
// closed; cancel is called once every connection has ended (or on Close).
func New[C Conn](name string, maxConns int, refuse func(net.Conn), log func() *slog.Logger, cancel context.CancelFunc) *Set[C] {
	return &Set[C]{
		name: name, maxConns: maxConns, refuse: refuse, log: log, cancel: cancel,
		listeners: make(map[net.Listener]struct{}), conns: make(map[C]struct{}),
	}
}

// Closing reports whether Shutdown or Close has begun.
func (s *Set[C]) Closing() bool { return s.closing.Load() }

// Active is the number of open connections.
func (s *Set[C]) Active() int64 { return s.active.Load() }

// Total is the number of connections accepted since start, refused ones included.
func (s *Set[C]) Total() uint64 { return s.total.Load() }

// Rejected is the number of connections refused for the connection cap.
func (s *Set[C]) Rejected() uint64 { return s.rejected.Load() }

// Serve accepts connections on ln, wraps each with newConn and serves it on its own
// goroutine until Shutdown or Close (then ErrClosed). It closes ln on return.
func (s *Set[C]) Serve(ln net.Listener, newConn func(net.Conn) C) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log().Warn(s.name+": accept failed; retrying", "err", err, "delay", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("%s: accept: %w", s.name, err)
		}
		backoff = 0
		s.total.Add(1)
		if s.active.Load() >= int64(s.maxConns) {
			s.rejected.Add(1)
			if ok, suppressed := s.refusals.Allow(time.Now()); ok {
				s.log().Warn(s.name+": too many connections; refusing", "remote", nc.RemoteAddr().String(),
					"max_conns", s.maxConns, "suppressed_since_last", suppressed)
			}
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			s.refuse(nc)
			nc.Close()
			continue
		}
		c := newConn(nc)
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			nc.Close()
			return ErrClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.active.Add(1)
		go c.Serve()
	}
}

// Done is called by a connection when it has ended.
func (s *Set[C]) Done(c C) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.active.Add(-1)
	s.wg.Done()
}

// isTemporary reports accept errors worth retrying (fd exhaustion and the like).
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// Shutdown stops accepting, lets every connection finish the request it is
// processing, closes idle connections and waits for all of them. When ctx ends
// first, the remaining connections are closed and ctx's error is returned.
func (s *Set[C]) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		for c := range s.conns {
			c.Wake()
		}
		s.mu.Unlock()
		select {
		case <-done:
			s.cancel()
			return nil
		case <-ctx.Done():
			s.Close()
			<-done
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close closes the listeners and every connection immediately and cancels the
// server's base context (and so in-flight backend calls).
func (s *Set[C]) Close() {
	s.mu.Lock()
	s.closing.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
}

package reqctx

import (
	"context"
	"sync"
	"time"
)

// Context is the context handed to the Cache for each request of one
// connection. It is re-armed per request instead of being created with
// context.WithTimeout, so that the GET hot path performs no allocation of its
// own: a connection owns exactly one Context, one timer and one
// context.AfterFunc registration on the server's base context.
//
// It is valid only for the duration of the Cache call it was passed to, the
// same rule net/http applies to a request's context after the handler returns.
type Context struct {
	parent     context.Context
	timeout    time.Duration
	timer      *time.Timer
	stopParent func() bool

	mu       sync.Mutex
	armed    bool
	deadline time.Time
	done     chan struct{}
	err      error
}

var _ context.Context = (*Context)(nil)

// New returns the context of one connection: parent is the server's base context
// (cancelled on shutdown), timeout the deadline of each backend call.
func New(parent context.Context, timeout time.Duration) *Context {
	c := &Context{parent: parent, timeout: timeout, done: make(chan struct{})}
	c.timer = time.AfterFunc(timeout, c.expire)
	c.timer.Stop()
	c.stopParent = context.AfterFunc(parent, c.cancelFromParent)
	return c
}

// Begin arms the deadline for one backend call and returns the context to
// pass to it. Every Begin must be followed by End.
func (c *Context) Begin() context.Context {
	now := time.Now()
	c.mu.Lock()
	if c.err != nil && c.parent.Err() == nil {
		// The previous request timed out: its done channel is closed for good.
		c.done = make(chan struct{})
		c.err = nil
	}
	c.armed = true
	c.deadline = now.Add(c.timeout)
	c.mu.Unlock()
	c.timer.Reset(c.timeout)
	return c
}

// End disarms the deadline once the backend call has returned.
func (c *Context) End() {
	c.timer.Stop()
	c.mu.Lock()
	c.armed = false
	c.mu.Unlock()
}

// Release frees the timer and the parent registration when the connection closes.
func (c *Context) Release() {
	c.timer.Stop()
	c.stopParent()
}

func (c *Context) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	// A late firing of a previous request's timer finds the deadline moved on.
	if !c.armed || c.err != nil || time.Now().Before(c.deadline) {
		return
	}
	c.err = context.DeadlineExceeded
	close(c.done)
}

func (c *Context) cancelFromParent() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = c.parent.Err()
		close(c.done)
	}
}

// Deadline reports the current request's deadline.
func (c *Context) Deadline() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deadline, c.armed
}

// Done is closed when the current request's deadline passes or the server shuts down.
func (c *Context) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

// Err reports why Done was closed.
func (c *Context) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Value delegates to the server's base context.
func (c *Context) Value(key any) any { return c.parent.Value(key) }

package distcache

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClientClosed is returned by operations on a closed Client.
var ErrClientClosed = errors.New("distcache: client closed")

// ErrConnectionLost wraps the transport error of a request whose connection
// broke before its answer arrived. The request may or may not have executed.
var ErrConnectionLost = errors.New("distcache: connection lost")

// minGetLen is the shortest GET/TAKE answer that is session data (spec §4.3,
// §6): shorter answers are status bytes. The C library reads every one of them
// as a miss; this Client reads only NOTOK (0x01) as a miss and the rest as
// ErrUnavailable (see getResult).
const minGetLen = 5

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithRequestTimeout bounds every request whose context has no deadline
// (spec §10.5: the C library could hang an application forever). Zero, the
// default, means requests wait as long as their context allows.
func WithRequestTimeout(d time.Duration) ClientOption {
	return func(c *Client) { c.timeout = d }
}

// WithTLS makes the Client speak TLS, for listeners a node serves with
// -client-tls-cert. cfg.ServerName defaults to the address's host.
func WithTLS(cfg *tls.Config) ClientOption {
	return func(c *Client) { c.tls = cfg }
}

// Client is a distcache client that keeps one persistent connection and
// pipelines requests from any number of goroutines over it, matching answers
// to requests by request_uid. After the connection breaks, the next request
// dials a new one. It is safe for concurrent use.
type Client struct {
	addr    Address
	timeout time.Duration
	tls     *tls.Config
	uid     atomic.Uint32

	mu     sync.Mutex // guards cc and closed; held while dialling
	cc     *clientConn
	closed bool
}

// Dial parses addr (IP:host:port or UNIX:/path), connects, and returns a
// Client using that connection.
func Dial(ctx context.Context, addr string, opts ...ClientOption) (*Client, error) {
	a, err := ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	c := &Client{addr: a}
	for _, o := range opts {
		o(c)
	}
	if _, _, err := c.conn(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Close closes the connection; requests in flight fail with ErrClientClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.cc != nil {
		c.cc.fail(ErrClientClosed)
		c.cc = nil
	}
	return nil
}

// conn returns a healthy connection, dialling one if needed; fresh reports
// whether it was dialled by this call.
func (c *Client) conn(ctx context.Context) (cc *clientConn, fresh bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, false, ErrClientClosed
	}
	if c.cc != nil && !c.cc.isBroken() {
		return c.cc, false, nil
	}
	nc, err := c.addr.dial(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("distcache: dial %s: %w", c.addr, err)
	}
	if c.tls != nil {
		cfg := c.tls.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = c.addr.Host
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, false, fmt.Errorf("distcache: TLS handshake with %s: %w", c.addr, err)
		}
		nc = tc
	}
	c.cc = newClientConn(nc)
	return c.cc, true, nil
}

// Do sends a request with a raw payload and returns the raw answer payload.
// GET and HAVE, which have no side effects, are retried once on a freshly
// dialled connection if a reused connection turns out to be broken (e.g. the
// server restarted); other operations are never resent.
func (c *Client) Do(ctx context.Context, op Op, payload []byte) ([]byte, error) {
	if !op.valid() {
		return nil, &FrameError{Field: "operation", Value: uint32(op), Err: ErrBadOp}
	}
	if len(payload) > MaxPayload {
		return nil, &LimitError{Limit: "message payload size", Value: int64(len(payload)), Max: MaxPayload}
	}
	if c.timeout > 0 {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, c.timeout)
			defer cancel()
		}
	}
	for attempt := 0; ; attempt++ {
		cc, fresh, err := c.conn(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := cc.roundTrip(ctx, c.uid.Add(1), op, payload)
		if err == nil || ctx.Err() != nil || !errors.Is(err, ErrConnectionLost) {
			return resp, err
		}
		if fresh || attempt > 0 || (op != OpGet && op != OpHave) {
			return nil, err
		}
	}
}

// Add stores data under id for ttl (sent in whole milliseconds). It returns
// nil on success, ErrExists if the id is already stored, and a *StatusError
// for other answers (e.g. StatusAddIDRange for an id of 0 or > 64 bytes).
func (c *Client) Add(ctx context.Context, id, data []byte, ttl time.Duration) error {
	ms := ttl.Milliseconds()
	if ms < 0 || ms > 1<<32-1 {
		return &LimitError{Limit: "ADD timeout_ms", Value: ms, Max: MaxTimeoutMS}
	}
	if n := addHeaderSize + len(id) + len(data); n > MaxPayload {
		// The C library refuses these locally too (spec §6).
		return &LimitError{Limit: "ADD payload size", Value: int64(n), Max: MaxPayload}
	}
	payload := AppendAddPayload(make([]byte, 0, addHeaderSize+len(id)+len(data)), uint32(ms), id, data)
	resp, err := c.Do(ctx, OpAdd, payload)
	if err != nil {
		return err
	}
	return statusResult(OpAdd, resp)
}

// Get returns the session data stored under id; ErrNotFound if the server
// answered NOTOK (0x01), an error wrapping ErrUnavailable if it answered that
// it cannot serve now (0x02 DISCONNECTED, or any other answer shorter than 5
// bytes). As in the C library, an answer shorter than 5 bytes is never session
// data, so sessions of 1–4 bytes are never returned.
func (c *Client) Get(ctx context.Context, id []byte) ([]byte, error) {
	return c.get(ctx, OpGet, id)
}

// Take returns the session stored under id and removes it atomically (the
// TAKE extension; only servers built on this package understand it). It is
// answered like Get: ErrNotFound means the session was not there (a ticket
// already used), ErrUnavailable that the server could not tell, in which case
// the session may or may not have been removed. A C server closes the
// connection instead.
func (c *Client) Take(ctx context.Context, id []byte) ([]byte, error) {
	return c.get(ctx, OpTake, id)
}

func (c *Client) get(ctx context.Context, op Op, id []byte) ([]byte, error) {
	resp, err := c.Do(ctx, op, id)
	if err != nil {
		return nil, err
	}
	return getResult(op, resp)
}

// getResult classifies a GET/TAKE answer. Only NOTOK is a miss; libdistcache
// reads every answer shorter than minGetLen as one, which would turn a node's
// "no leader" into "session gone".
func getResult(op Op, resp []byte) ([]byte, error) {
	switch {
	case len(resp) >= minGetLen:
		return resp, nil
	case len(resp) == 0:
		return nil, ErrEmptyResponse
	case len(resp) == 1 && Status(resp[0]) == StatusNotOK:
		return nil, ErrNotFound
	case len(resp) == 1:
		return nil, &StatusError{Op: op, Status: Status(resp[0]), Err: ErrUnavailable}
	}
	// Never session data, never NOTOK; its bytes are not logged (they might be a
	// short session's data stored by a client that ignored the rule).
	return nil, fmt.Errorf("%w: %v answered %d bytes, neither data nor a status", ErrUnavailable, op, len(resp))
}

// Remove deletes the session stored under id; ErrNotFound if there was none,
// an error wrapping ErrUnavailable if the node could not tell.
func (c *Client) Remove(ctx context.Context, id []byte) error {
	resp, err := c.Do(ctx, OpRemove, id)
	if err != nil {
		return err
	}
	if len(resp) == 1 && Status(resp[0]) == StatusNotOK {
		return ErrNotFound
	}
	return statusResult(OpRemove, resp)
}

// Have reports whether an unexpired session is stored under id: true for OK,
// false for NOTOK, and an error wrapping ErrUnavailable for any other answer
// (the node could not tell).
func (c *Client) Have(ctx context.Context, id []byte) (bool, error) {
	resp, err := c.Do(ctx, OpHave, id)
	if err != nil {
		return false, err
	}
	if len(resp) == 1 && Status(resp[0]) == StatusNotOK {
		return false, nil
	}
	if err := statusResult(OpHave, resp); err != nil {
		return false, err
	}
	return true, nil
}

// statusResult maps a one-byte answer: OK → nil, anything else → *StatusError.
// A status that is no answer to the operation (DISCONNECTED for any, any
// code but OK and NOTOK for REMOVE and HAVE) and an answer of the wrong size
// wrap ErrUnavailable; ADD's validation codes (ErrExists, …) do not.
func statusResult(op Op, resp []byte) error {
	switch {
	case len(resp) == 0:
		return ErrEmptyResponse
	case len(resp) != 1:
		return fmt.Errorf("%w: %v answered %d bytes, not a status", ErrUnavailable, op, len(resp))
	case Status(resp[0]) == StatusOK:
		return nil
	}
	se := &StatusError{Op: op, Status: Status(resp[0])}
	if se.Status == StatusDisconnected || op != OpAdd {
		se.Err = ErrUnavailable
	}
	return se
}

// clientConn is one connection of a Client: writers serialise on wmu, one
// reader goroutine delivers answers to the waiting requests by uid.
type clientConn struct {
	nc   net.Conn
	done chan struct{} // closed when broken

	wmu  sync.Mutex
	wbuf []byte

	mu      sync.Mutex
	pending map[uint32]chan Message
	err     error
}

func newClientConn(nc net.Conn) *clientConn {
	cc := &clientConn{nc: nc, done: make(chan struct{}), pending: make(map[uint32]chan Message)}
	go cc.readLoop()
	return cc
}

func (cc *clientConn) isBroken() bool {
	select {
	case <-cc.done:
		return true
	default:
		return false
	}
}

// fail breaks the connection once; waiting requests see err.
func (cc *clientConn) fail(err error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.err != nil {
		return
	}
	cc.err = err
	close(cc.done)
	cc.nc.Close()
}

func (cc *clientConn) readLoop() {
	dec := NewDecoder(cc.nc, Responses)
	for {
		var m Message
		if err := dec.Decode(&m); err != nil {
			cc.fail(fmt.Errorf("%w: %w", ErrConnectionLost, err))
			return
		}
		cc.mu.Lock()
		ch, ok := cc.pending[m.UID]
		delete(cc.pending, m.UID)
		cc.mu.Unlock()
		if ok {
			ch <- m // buffered; never blocks
		}
		// else: the late answer of an abandoned request; drop it (spec §10.4).
	}
}

var replyPool = sync.Pool{New: func() any { return make(chan Message, 1) }}

func (cc *clientConn) roundTrip(ctx context.Context, uid uint32, op Op, payload []byte) ([]byte, error) {
	ch := replyPool.Get().(chan Message)
	cc.mu.Lock()
	if cc.err != nil {
		err := cc.err
		cc.mu.Unlock()
		replyPool.Put(ch)
		return nil, err
	}
	cc.pending[uid] = ch
	cc.mu.Unlock()

	cc.wmu.Lock()
	buf, _ := AppendMessage(cc.wbuf[:0], &Message{UID: uid, Op: op, Payload: payload})
	dl, _ := ctx.Deadline()
	cc.nc.SetWriteDeadline(dl)
	_, err := cc.nc.Write(buf)
	if cap(buf) <= 4*MaxFrameSize {
		cc.wbuf = buf
	}
	cc.wmu.Unlock()
	if err != nil {
		// A partly written frame desynchronises the stream: drop the connection.
		cc.fail(fmt.Errorf("%w: write: %w", ErrConnectionLost, err))
	}

	select {
	case m := <-ch:
		replyPool.Put(ch)
		return cc.answer(uid, op, m)
	case <-cc.done:
		cc.mu.Lock()
		_, waiting := cc.pending[uid]
		delete(cc.pending, uid)
		err := cc.err
		cc.mu.Unlock()
		if !waiting {
			// The answer was delivered just before the connection broke.
			m := <-ch
			replyPool.Put(ch)
			return cc.answer(uid, op, m)
		}
		return nil, err
	case <-ctx.Done():
		cc.mu.Lock()
		_, waiting := cc.pending[uid]
		delete(cc.pending, uid)
		cc.mu.Unlock()
		if waiting {
			replyPool.Put(ch)
		}
		return nil, fmt.Errorf("distcache %v: %w", op, ctx.Err())
	}
}

func (cc *clientConn) answer(uid uint32, op Op, m Message) ([]byte, error) {
	if m.Op != op {
		err := fmt.Errorf("%w: answer to uid %d has operation %v, want %v", ErrConnectionLost, uid, m.Op, op)
		cc.fail(err)
		return nil, err
	}
	return m.Payload, nil
}

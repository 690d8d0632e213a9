package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Forwarding RPC wire format (on connections whose kind byte is 'F'):
//
//	frame  = type:u8 id:u64 aux:u32 len:u32 payload[len]   (big endian)
//
// Requests carry their deadline in aux (milliseconds). Responses use type
// respOK (payload = result) or respErr (aux = error code, payload = message)
// and the request's id, so many requests are in flight on one connection and
// answered out of order.
const (
	rpcPropose   byte = 'P' // payload cmd -> index:u64 result
	rpcReadIndex byte = 'I' // -> index:u64
	rpcQuery     byte = 'Q' // payload query -> answer
	rpcQueryAt   byte = 'A' // payload index:u64 query -> answer once the leader applied index
	rpcRemove    byte = 'X' // payload server id -> ""
	rpcTransfer  byte = 'T' // payload server id or "" -> ""
	rpcStatus    byte = 'S' // -> lastIndex:u64 lastContactMs:i64 (-1 = never)
	rpcRemoved   byte = 'L' // leader tells a node it was removed -> ""
	rpcKeyring   byte = 'K' // payload JSON {op,key} -> JSON key fingerprints, primary first

	respOK  byte = 'o'
	respErr byte = 'e'

	frameHeader = 17
	// maxFrame bounds a frame's payload; larger frames close the connection.
	maxFrame = 16 << 20
	// maxConnInflight bounds concurrent requests served per connection; the
	// reader stops reading (backpressure) when it is reached.
	maxConnInflight = 4096
)

// error codes carried in respErr frames so sentinels survive the hop.
const (
	codeOther uint32 = iota
	codeNoLeader
	codeNotLeader
	codeTimeout
	codeLeadershipLost
	codeClosed
	codeUnknownServer
	codeNotVoter
)

var codeErrs = map[uint32]error{
	codeNoLeader:       ErrNoLeader,
	codeNotLeader:      ErrNotLeader,
	codeTimeout:        ErrTimeout,
	codeLeadershipLost: ErrLeadershipLost,
	codeClosed:         ErrClosed,
	codeUnknownServer:  ErrUnknownServer,
	codeNotVoter:       ErrNotVoter,
}

func errCode(err error) uint32 {
	for c, e := range codeErrs {
		if errors.Is(err, e) {
			return c
		}
	}
	return codeOther
}

// errConnBroken marks a failure of the connection itself (as opposed to an
// error answered by the peer); only these are retried, on a fresh dial.
var errConnBroken = errors.New("forwarding connection broken")

// remoteError is an error answered by the peer.
type remoteError struct {
	code uint32
	msg  string
}

func (e *remoteError) Error() string { return "remote: " + e.msg }

func (e *remoteError) Unwrap() error { return codeErrs[e.code] }

type frame struct {
	typ     byte
	id      uint64
	aux     uint32
	payload []byte
}

func readFrame(r *bufio.Reader) (frame, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return frame{}, err
	}
	f := frame{typ: h[0], id: binary.BigEndian.Uint64(h[1:9]), aux: binary.BigEndian.Uint32(h[9:13])}
	n := binary.BigEndian.Uint32(h[13:17])
	if n > maxFrame {
		return frame{}, fmt.Errorf("frame of %d bytes exceeds limit %d", n, maxFrame)
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // a header without its payload is a truncated frame
		}
		return frame{}, err
	}
	return f, nil
}

// frameWriter serialises frames onto a connection and flushes only when no
// other writer is waiting, so concurrent senders share syscalls.
type frameWriter struct {
	conn    net.Conn
	waiting atomic.Int32
	mu      sync.Mutex
	w       *bufio.Writer
	err     error
}

func newFrameWriter(c net.Conn) *frameWriter {
	return &frameWriter{conn: c, w: bufio.NewWriterSize(c, 64<<10)}
}

func (fw *frameWriter) write(f frame, deadline time.Time) error {
	if len(f.payload) > maxFrame {
		return fmt.Errorf("frame of %d bytes exceeds limit %d", len(f.payload), maxFrame)
	}
	fw.waiting.Add(1)
	fw.mu.Lock()
	defer fw.mu.Unlock()
	last := fw.waiting.Add(-1) == 0
	if fw.err != nil {
		return fw.err
	}
	var h [frameHeader]byte
	h[0] = f.typ
	binary.BigEndian.PutUint64(h[1:9], f.id)
	binary.BigEndian.PutUint32(h[9:13], f.aux)
	binary.BigEndian.PutUint32(h[13:17], uint32(len(f.payload)))
	fw.conn.SetWriteDeadline(deadline)
	if _, err := fw.w.Write(h[:]); err != nil {
		fw.err = err
		return err
	}
	if _, err := fw.w.Write(f.payload); err != nil {
		fw.err = err
		return err
	}
	if last {
		if err := fw.w.Flush(); err != nil {
			fw.err = err
			return err
		}
	}
	return nil
}

// rpcHandler serves one request; the result is the response payload.
type rpcHandler func(ctx context.Context, typ byte, payload []byte) ([]byte, error)

// rpcServer serves forwarding connections handed over by the mux.
type rpcServer struct {
	handle rpcHandler
	log    *slog.Logger
	ctx    context.Context // cancelled on close
	cancel context.CancelFunc

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newRPCServer(h rpcHandler, log *slog.Logger) *rpcServer {
	ctx, cancel := context.WithCancel(context.Background())
	return &rpcServer{handle: h, log: log, ctx: ctx, cancel: cancel, conns: make(map[net.Conn]struct{})}
}

func (s *rpcServer) serveConn(conn net.Conn) {
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		conn.Close()
		return
	}
	s.conns[conn] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		conn.Close()
	}()

	r := bufio.NewReaderSize(conn, 64<<10)
	fw := newFrameWriter(conn)
	sem := make(chan struct{}, maxConnInflight)
	var reqs sync.WaitGroup
	defer reqs.Wait()
	for {
		f, err := readFrame(r)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && s.ctx.Err() == nil {
				s.log.Warn("forwarding connection: bad frame, closing", "remote", conn.RemoteAddr(), "err", err)
			}
			return
		}
		timeout := time.Duration(f.aux) * time.Millisecond
		if timeout <= 0 || timeout > time.Minute {
			s.log.Warn("forwarding connection: bad deadline, closing", "remote", conn.RemoteAddr(), "ms", f.aux)
			return
		}
		select {
		case sem <- struct{}{}:
		case <-s.ctx.Done():
			return
		}
		reqs.Add(1)
		go func() {
			defer reqs.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(s.ctx, timeout)
			defer cancel()
			res, err := s.handle(ctx, f.typ, f.payload)
			resp := frame{typ: respOK, id: f.id, payload: res}
			if err != nil {
				resp = frame{typ: respErr, id: f.id, aux: errCode(err), payload: []byte(err.Error())}
			}
			if err := fw.write(resp, time.Now().Add(timeout)); err != nil {
				conn.Close() // the reader notices and ends the connection
			}
		}()
	}
}

// close stops serving: in-flight requests see a cancelled context, then all
// connections are closed and their goroutines awaited.
func (s *rpcServer) close() {
	s.mu.Lock()
	s.cancel()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// rpcClient keeps one persistent, pipelined connection per peer address and
// reconnects after failures.
type rpcClient struct {
	dial func(ctx context.Context, addr string) (net.Conn, error)
	log  *slog.Logger

	mu     sync.Mutex
	conns  map[string]*rpcConn
	closed bool
	wg     sync.WaitGroup
}

func newRPCClient(dial func(ctx context.Context, addr string) (net.Conn, error), log *slog.Logger) *rpcClient {
	return &rpcClient{dial: dial, log: log, conns: make(map[string]*rpcConn)}
}

type rpcConn struct {
	addr    string
	conn    net.Conn
	fw      *frameWriter
	nextID  atomic.Uint64
	mu      sync.Mutex
	pending map[uint64]chan frame
	broken  bool
}

// call sends one request to addr and waits for its answer. If a pooled
// connection turns out dead, the request is retried once on a fresh dial
// (pooled connections to a restarted peer are silently dead).
func (c *rpcClient) call(ctx context.Context, addr string, typ byte, payload []byte) ([]byte, error) {
	res, err := c.callOnce(ctx, addr, typ, payload, false)
	var reused reusedErr
	if errors.As(err, &reused) {
		res, err = c.callOnce(ctx, addr, typ, payload, true)
	}
	var r reusedErr
	if errors.As(err, &r) {
		err = r.err
	}
	return res, err
}

// reusedErr marks a connection failure on a connection that was reused from
// the pool (so the request may be retried on a fresh one).
type reusedErr struct{ err error }

func (e reusedErr) Error() string { return e.err.Error() }
func (e reusedErr) Unwrap() error { return e.err }

func (c *rpcClient) callOnce(ctx context.Context, addr string, typ byte, payload []byte, fresh bool) ([]byte, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return nil, errors.New("cluster: forwarding call without deadline")
	}
	ms := time.Until(deadline).Milliseconds()
	if ms <= 0 {
		return nil, fmt.Errorf("%w: deadline passed before forwarding", ErrTimeout)
	}
	rc, reused, err := c.get(ctx, addr, fresh)
	if err != nil {
		return nil, err
	}
	id := rc.nextID.Add(1)
	ch := make(chan frame, 1)
	rc.mu.Lock()
	if rc.broken {
		rc.mu.Unlock()
		return nil, c.connErr(reused, fmt.Errorf("%w: to %s", errConnBroken, addr))
	}
	rc.pending[id] = ch
	rc.mu.Unlock()
	if err := rc.fw.write(frame{typ: typ, id: id, aux: uint32(ms), payload: payload}, deadline); err != nil {
		c.fail(rc, err)
		return nil, c.connErr(reused, fmt.Errorf("%w: to %s: %w", errConnBroken, addr, err))
	}
	select {
	case f, ok := <-ch:
		if !ok {
			return nil, c.connErr(reused, fmt.Errorf("%w: to %s", errConnBroken, addr))
		}
		if f.typ == respErr {
			return nil, &remoteError{code: f.aux, msg: string(f.payload)}
		}
		return f.payload, nil
	case <-ctx.Done():
		rc.mu.Lock()
		delete(rc.pending, id)
		rc.mu.Unlock()
		return nil, fmt.Errorf("%w: forwarding to %s: %w", ErrTimeout, addr, ctx.Err())
	}
}

func (c *rpcClient) connErr(reused bool, err error) error {
	if reused {
		return reusedErr{err}
	}
	return err
}

func (c *rpcClient) get(ctx context.Context, addr string, fresh bool) (*rpcConn, bool, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, false, ErrClosed
	}
	if rc, ok := c.conns[addr]; ok && !fresh {
		c.mu.Unlock()
		return rc, true, nil
	}
	c.mu.Unlock()

	conn, err := c.dial(ctx, addr)
	if err != nil {
		return nil, false, fmt.Errorf("%w: dial %s: %w", errConnBroken, addr, err)
	}
	rc := &rpcConn{addr: addr, conn: conn, fw: newFrameWriter(conn), pending: make(map[uint64]chan frame)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close()
		return nil, false, ErrClosed
	}
	if old, ok := c.conns[addr]; ok && !fresh {
		// Lost a race with another dialer: use theirs.
		c.mu.Unlock()
		conn.Close()
		return old, true, nil
	}
	if old, ok := c.conns[addr]; ok {
		go c.fail(old, errors.New("replaced by a fresh connection"))
	}
	c.conns[addr] = rc
	c.wg.Add(1)
	c.mu.Unlock()
	go c.readLoop(rc)
	return rc, false, nil
}

func (c *rpcClient) readLoop(rc *rpcConn) {
	defer c.wg.Done()
	r := bufio.NewReaderSize(rc.conn, 64<<10)
	for {
		f, err := readFrame(r)
		if err != nil {
			c.fail(rc, err)
			return
		}
		if f.typ != respOK && f.typ != respErr {
			c.log.Warn("forwarding connection: bad response frame, closing", "remote", rc.addr, "type", f.typ)
			c.fail(rc, errors.New("bad response frame"))
			return
		}
		rc.mu.Lock()
		ch, ok := rc.pending[f.id]
		delete(rc.pending, f.id)
		rc.mu.Unlock()
		if ok {
			ch <- f
		}
	}
}

// fail marks rc broken, fails its pending calls and drops it from the pool.
func (c *rpcClient) fail(rc *rpcConn, err error) {
	rc.mu.Lock()
	if rc.broken {
		rc.mu.Unlock()
		return
	}
	rc.broken = true
	pending := rc.pending
	rc.pending = nil
	rc.mu.Unlock()
	rc.conn.Close()
	for _, ch := range pending {
		close(ch)
	}
	c.mu.Lock()
	if c.conns[rc.addr] == rc {
		delete(c.conns, rc.addr)
	}
	c.mu.Unlock()
	c.log.Debug("forwarding connection closed", "remote", rc.addr, "err", err)
}

func (c *rpcClient) close() {
	c.mu.Lock()
	c.closed = true
	conns := make([]*rpcConn, 0, len(c.conns))
	for _, rc := range c.conns {
		conns = append(conns, rc)
	}
	c.mu.Unlock()
	for _, rc := range conns {
		c.fail(rc, ErrClosed)
	}
	c.wg.Wait()
}

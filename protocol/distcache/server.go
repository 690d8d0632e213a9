package distcache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distcache-replicated/distcache/protocol/internal/connset"
)

// Defaults for Server fields left zero.
const (
	DefaultReadTimeout  = 10 * time.Second
	DefaultWriteTimeout = 30 * time.Second
	DefaultMaxPipeline  = 128
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("distcache: server closed")

// Server accepts distcache connections on any number of listeners and hands
// each request to Handler. Fields must be set before the first Serve call.
type Server struct {
	// Handler answers requests; it is required.
	Handler Handler
	// Logger receives one line per dropped connection; nil means slog.Default().
	Logger *slog.Logger
	// ReadTimeout bounds how long a peer may stall in the middle of a message
	// (spec §10: the C server waited forever). Zero means DefaultReadTimeout,
	// negative means no limit.
	ReadTimeout time.Duration
	// IdleTimeout closes connections with no partial message that send
	// nothing for this long. Zero means never, like dc_server.
	IdleTimeout time.Duration
	// WriteTimeout bounds one write of answers to a peer that does not read:
	// it fails between half of WriteTimeout and all of it after it began (the
	// deadline is re-armed only when half has passed, not for every write).
	// Zero means DefaultWriteTimeout, negative means no limit.
	WriteTimeout time.Duration
	// MaxConns caps concurrent connections; further ones are accepted and
	// closed at once with a log line. Zero means unlimited.
	MaxConns int
	// MaxPipeline is how many requests of one connection may be executing or
	// waiting to be written; when reached the server stops reading from that
	// connection (backpressure). Zero means DefaultMaxPipeline.
	MaxPipeline int

	initOnce sync.Once
	conns    *connset.Set[*serverConn] // listeners, connections, base context
	stalls   atomic.Uint64             // times a connection stopped reading on a full pipeline
}

// set returns the server's listeners and connections, set up on first use so
// that a Server with its fields set is ready.
func (s *Server) set() *connset.Set[*serverConn] {
	s.initOnce.Do(func() {
		s.conns = connset.New[*serverConn](connset.Config{Name: "distcache", Log: s.Logger, Closed: ErrServerClosed,
			MaxConns: s.MaxConns})
	})
	return s.conns
}

// ActiveConns returns the number of open client connections, for metrics.
func (s *Server) ActiveConns() int { return s.set().Active() }

// BackpressureEvents counts how often a connection stopped reading because
// MaxPipeline answers were outstanding, for metrics.
func (s *Server) BackpressureEvents() uint64 { return s.stalls.Load() }

func durationOr(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// Serve accepts connections on ln until Shutdown/Close (then it returns
// ErrServerClosed) or a permanent accept error. It closes ln on return. Call
// it once per listener, each in its own goroutine.
func (s *Server) Serve(ln net.Listener) error {
	if s.Handler == nil {
		return errors.New("distcache: Server.Handler is nil")
	}
	return s.set().Serve(ln, s.newConn)
}

// Shutdown stops accepting, stops reading from every connection, waits until
// every request already received has been answered and the connections are
// closed, or until ctx is done (then it closes them as Close does, waits for
// their handlers to return, and returns ctx's error).
func (s *Server) Shutdown(ctx context.Context) error {
	return s.set().Shutdown(ctx)
}

// Close closes all listeners and connections at once, cancelling in-flight
// requests' contexts.
func (s *Server) Close() error {
	return s.set().Close()
}

func (s *Server) newConn(nc net.Conn) *serverConn {
	ctx, cancel := context.WithCancel(s.conns.Context())
	return &serverConn{
		srv:    s,
		nc:     nc,
		ctx:    ctx,
		cancel: cancel,
		remote: connset.Remote(nc),
		slots:  make(chan struct{}, connset.Default(s.MaxPipeline, DefaultMaxPipeline)),
		dl: connset.Deadlines{NC: nc, Read: durationOr(s.ReadTimeout, DefaultReadTimeout),
			Idle: max(s.IdleTimeout, 0), Write: durationOr(s.WriteTimeout, DefaultWriteTimeout)},
	}
}

// pending is one request of a connection, from decoding until its answer
// has been written.
type pending struct {
	req  Message
	key  []byte // session id the request touches (aliases req.Payload)
	resp []byte
	err  error
	done bool
	// executed is created when a later request with the same key must wait
	// for this one; it is closed when the handler has returned.
	executed chan struct{}
}

// requestKey returns the session id a request operates on, so that requests
// for the same id on one connection execute in arrival order.
func requestKey(m *Message) []byte {
	if m.Op == OpAdd && len(m.Payload) >= addHeaderSize {
		if n := binary.BigEndian.Uint32(m.Payload[4:8]); uint64(n) <= uint64(len(m.Payload)-addHeaderSize) {
			return m.Payload[addHeaderSize : addHeaderSize+int(n)]
		}
	}
	return m.Payload
}

var pendingPool = sync.Pool{New: func() any { return new(pending) }}

// serverConn serves one connection: the serve goroutine reads and decodes,
// requests run inline or on their own goroutine, and whichever goroutine
// completes the oldest outstanding request writes every answer that is ready
// (in order), so answers are coalesced without a dedicated writer goroutine.
type serverConn struct {
	srv      *Server
	nc       net.Conn
	ctx      context.Context
	cancel   context.CancelFunc
	remote   string
	dec      *Decoder
	slots    chan struct{} // one token per outstanding request (backpressure)
	inflight sync.WaitGroup
	// dl arms the socket's deadlines: reads by the serve goroutine, writes by
	// the goroutine that is writing.
	dl connset.Deadlines
	// held is set by the serve goroutine when it answered a request itself and
	// left the answer unwritten, so that answers to the requests already
	// buffered join the same write; Read writes them before it waits for the
	// network.
	held bool

	mu      sync.Mutex
	queue   []*pending // outstanding requests in arrival order
	writing bool       // a goroutine is writing answers
	broken  bool       // no more answers can be written
	logged  bool       // the drop reason has been logged
	out     []byte     // encode buffer, owned by the writing goroutine
	batch   []*pending // scratch, owned by the writing goroutine
}

var errStopReading = errors.New("server shutting down")

// Read implements io.Reader for the Decoder, arming the right deadline for
// the decoder's state before each read.
func (c *serverConn) Read(p []byte) (int, error) {
	c.dl.ArmRead(c.dec.Partial())
	if c.held {
		c.held = false
		c.flush()
	}
	// The deadline is armed before the flag is read: Shutdown sets the flag
	// before Wake moves the deadline into the past, so one of the two stops
	// this read.
	if c.srv.conns.Closing() {
		return 0, errStopReading
	}
	return c.nc.Read(p)
}

// Wake stops reading (Shutdown): requests already received are answered,
// then the connection closes.
func (c *serverConn) Wake() { c.nc.SetReadDeadline(time.Unix(1, 0)) }

// Close closes the connection now; outstanding answers are discarded.
func (c *serverConn) Close() { c.abort("server closed") }

// Serve reads, decodes and dispatches requests until the connection ends,
// then answers everything received completely and closes.
func (c *serverConn) Serve() {
	defer func() {
		c.cancel()
		c.nc.Close()
		c.srv.conns.Done(c)
	}()
	defer func() {
		if r := recover(); r != nil {
			c.drop(slog.LevelError, "panic serving connection", fmt.Errorf("%v", r))
		}
	}()
	c.dec = NewDecoder(c, Requests)
	quick, _ := c.srv.Handler.(QuickHandler)
	for {
		p := pendingPool.Get().(*pending)
		if err := c.dec.Decode(&p.req); err != nil {
			pendingPool.Put(p)
			c.readFailed(err)
			break
		}
		c.dl.Next()
		select {
		case c.slots <- struct{}{}:
		default:
			// Answers held back for coalescing free their slots once written.
			c.flush()
			c.srv.stalls.Add(1)
			select {
			case c.slots <- struct{}{}:
			case <-c.ctx.Done():
			}
		}
		if c.ctx.Err() != nil {
			pendingPool.Put(p)
			break
		}
		p.key = requestKey(&p.req)
		c.mu.Lock()
		var after chan struct{}
		for i := len(c.queue) - 1; i >= 0; i-- {
			if q := c.queue[i]; !q.done && bytes.Equal(q.key, p.key) {
				if q.executed == nil {
					q.executed = make(chan struct{})
				}
				after = q.executed
				break
			}
		}
		c.queue = append(c.queue, p)
		alone := len(c.queue) == 1
		c.mu.Unlock()
		c.inflight.Add(1)
		if after == nil && quick != nil && c.runQuick(quick, p) {
			// Answered on this goroutine. Hold the answer back while complete
			// requests are buffered, so that their answers join its write: the
			// next Read that would wait for the network writes them first.
			c.held = true
			continue
		}
		if alone && c.dec.Buffered() == 0 {
			c.run(p, nil) // nothing else to do: skip the goroutine hand-off
		} else {
			go c.run(p, after)
		}
	}
	// Answer everything that was received completely, then close.
	c.flush()
	c.inflight.Wait()
}

// runQuick answers p at once if the handler can, and reports whether it did.
func (c *serverConn) runQuick(h QuickHandler, p *pending) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			p.resp, p.err, ok = nil, fmt.Errorf("handler panic: %v", r), true
		}
		if ok {
			c.finish(p)
		}
	}()
	p.resp, ok = h.ServeQuick(&p.req)
	if ok && len(p.resp) > MaxPayload {
		p.err = &LimitError{Limit: "response payload size", Value: int64(len(p.resp)), Max: MaxPayload}
	}
	return ok
}

// readFailed logs why reading stopped. Clean EOF between messages and
// Shutdown are normal; everything else is a dropped connection.
func (c *serverConn) readFailed(err error) {
	var fe *FrameError
	var le *LimitError
	switch {
	case errors.Is(err, io.EOF):
		c.drop(slog.LevelDebug, "peer closed connection", nil)
	case errors.Is(err, errStopReading) || c.srv.conns.Closing():
		c.drop(slog.LevelDebug, "server shutting down", nil)
	case errors.As(err, &fe) || errors.As(err, &le):
		c.drop(slog.LevelWarn, "malformed request; closing connection", err)
	case errors.Is(err, os.ErrDeadlineExceeded) && c.dec.Partial():
		c.drop(slog.LevelWarn, "peer stalled mid-message longer than the read timeout; closing connection", err, "read_timeout", c.dl.Read)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.drop(slog.LevelInfo, "idle timeout; closing connection", nil, "idle_timeout", c.dl.Idle)
	case errors.Is(err, io.ErrUnexpectedEOF):
		c.drop(slog.LevelWarn, "peer closed connection mid-message", err)
	default:
		c.drop(slog.LevelInfo, "read error; closing connection", err)
	}
}

// drop logs the first reason a connection ends, once.
func (c *serverConn) drop(level slog.Level, msg string, err error, attrs ...any) {
	c.mu.Lock()
	first := !c.logged
	c.logged = true
	c.mu.Unlock()
	if !first {
		return
	}
	args := append([]any{"remote", c.remote}, attrs...)
	if err != nil {
		args = append(args, "err", err)
	}
	c.srv.conns.Log().Log(context.Background(), level, "distcache: "+msg, args...)
}

// abort closes the connection now; outstanding answers are discarded.
func (c *serverConn) abort(reason string) {
	c.drop(slog.LevelInfo, reason, nil)
	c.mu.Lock()
	c.broken = true
	c.mu.Unlock()
	c.cancel()
	c.nc.Close()
}

func (c *serverConn) run(p *pending, after <-chan struct{}) {
	if after != nil {
		select {
		case <-after:
		case <-c.ctx.Done():
		}
	}
	defer func() {
		if r := recover(); r != nil {
			p.resp, p.err = nil, fmt.Errorf("handler panic: %v", r)
		}
		c.complete(p)
	}()
	p.resp, p.err = c.srv.Handler.ServeDistcache(c.ctx, &p.req)
	if p.err == nil && len(p.resp) > MaxPayload {
		p.err = &LimitError{Limit: "response payload size", Value: int64(len(p.resp)), Max: MaxPayload}
	}
}

// writeChunk is how many bytes of encoded answers a connection collects
// before writing them.
const writeChunk = 64 << 10

// What the C client library (libdistcache) does with what it receives, which
// decides how multi-frame answers are written (see the package docs, "The C
// client's partial-frame bug"): it reads into a cBufSize-byte buffer and calls
// a frame complete once cHeaderCount bytes plus its data are buffered.
const (
	cBufSize     = 4096
	cHeaderCount = 10
	// riskyPause is how long the server waits before writing the last frame
	// of an answer that a C client reading everything at once would
	// mis-decode, so that it has read the frames before it by then.
	riskyPause = 500 * time.Microsecond
)

// riskyLastFrame reports whether a C client that finds a full frame and then
// the last frame of this payload in its buffer at once is fooled: the last
// frame is 1 to 4 bytes longer than what fits behind a full frame, so the
// buffer holds all of it but those bytes, which the 10-byte header count
// overlooks (payloads of 4,069–4,072, 6,117–6,120, … bytes).
func riskyLastFrame(payload int) bool {
	if payload <= MaxFrameData {
		return false
	}
	last := HeaderSize + (payload-1)%MaxFrameData + 1
	missing := last - (cBufSize - MaxFrameSize)
	return missing >= 1 && missing <= HeaderSize-cHeaderCount
}

// writeFrames writes a multi-frame answer, encoded at the end of out from
// start, after the answers before it (out[:start]): each frame on its own, as
// the C server does, and the last one of a risky answer only after riskyPause.
// A C client therefore reads the frames one by one unless it falls behind.
func (c *serverConn) writeFrames(out []byte, start, payload int) error {
	if start > 0 {
		if err := c.write(out[:start]); err != nil {
			return err
		}
	}
	frames := out[start:]
	for len(frames) > MaxFrameSize {
		if err := c.write(frames[:MaxFrameSize]); err != nil {
			return err
		}
		frames = frames[MaxFrameSize:]
	}
	if riskyLastFrame(payload) {
		time.Sleep(riskyPause)
	}
	return c.write(frames)
}

// write sends encoded answers within the write timeout.
func (c *serverConn) write(b []byte) error {
	c.dl.ArmWrite()
	_, err := c.nc.Write(b)
	return err
}

// complete marks p answered and writes every ready answer (see flush).
func (c *serverConn) complete(p *pending) {
	c.finish(p)
	c.flush()
}

// finish marks p answered without writing anything.
func (c *serverConn) finish(p *pending) {
	c.mu.Lock()
	p.done = true
	if p.executed != nil {
		close(p.executed)
	}
	c.mu.Unlock()
}

// flush writes, unless another goroutine is already writing, every answer at
// the head of the queue that is ready.
func (c *serverConn) flush() {
	c.mu.Lock()
	if c.writing {
		c.mu.Unlock()
		return
	}
	c.writing = true
	for {
		n := 0
		for n < len(c.queue) && c.queue[n].done {
			n++
		}
		if n == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.batch = append(c.batch[:0], c.queue[:n]...)
		clear(c.queue[:n])
		c.queue = c.queue[n:]
		if len(c.queue) == 0 {
			c.queue = c.queue[:0:0] // let the backing array go; reallocated lazily
		}
		broken := c.broken
		c.mu.Unlock()

		// Answers are encoded and written writeChunk bytes at a time: a peer
		// that does not read holds at most one chunk (plus one message) of
		// encoded answers here, not its whole pipeline.
		out := c.out[:0]
		var failure, werr error
		for _, q := range c.batch {
			if broken || failure != nil || werr != nil {
				break
			}
			if q.err != nil {
				failure = q.err
				break
			}
			start := len(out)
			out, _ = AppendMessage(out, &Message{UID: q.req.UID, Op: q.req.Op, Response: true, Payload: q.resp})
			switch {
			case len(q.resp) > MaxFrameData:
				werr = c.writeFrames(out, start, len(q.resp))
				out = out[:0]
			case len(out) >= writeChunk:
				werr = c.write(out)
				out = out[:0]
			}
			q.resp = nil
		}
		if !broken && werr == nil && len(out) > 0 {
			werr = c.write(out)
		}
		switch {
		case broken:
		case werr != nil:
			c.drop(slog.LevelInfo, "write failed; closing connection", werr)
			failure = werr
		case failure != nil:
			c.drop(slog.LevelWarn, "handler refused request; closing connection", failure)
		}
		if failure != nil && !broken {
			c.cancel()
			c.nc.Close()
		}
		if cap(out) <= 2*writeChunk {
			c.out = out
		}
		for _, q := range c.batch {
			*q = pending{}
			pendingPool.Put(q)
			<-c.slots
			c.inflight.Done()
		}
		clear(c.batch)
		c.mu.Lock()
		if failure != nil {
			c.broken = true
		}
	}
}

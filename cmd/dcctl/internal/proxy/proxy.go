package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// Defaults for a zero Config field.
const (
	DefaultTimeout     = 2 * time.Second
	DefaultRetry       = time.Second
	DefaultDialTimeout = time.Second
	DefaultMaxInFlight = 4096
)

// DialFunc opens a stream connection to a distcache address in the original syntax.
type DialFunc func(ctx context.Context, addr string) (net.Conn, error)

// Config configures a Proxy.
type Config struct {
	// Servers are the upstream distcache addresses, in failover order.
	Servers []string
	// Timeout is the per-request deadline: a request not answered in time gets the
	// DISCONNECTED byte (0x02). It covers waiting for an in-flight slot too.
	Timeout time.Duration
	// Retry is the pause after every server failed to connect before the next
	// round of attempts (the original's -retry).
	Retry time.Duration
	// DialTimeout bounds one connection attempt.
	DialTimeout time.Duration
	// MaxInFlight bounds the requests outstanding upstream (the original: 512).
	MaxInFlight int
	// Dial opens upstream connections.
	Dial   DialFunc
	Logger *slog.Logger
}

// Proxy is a distcache.Handler that forwards every request over one persistent,
// pipelined upstream connection, rewriting request uids so that requests of many
// local connections can share it (spec §7). Create it with New, start its connection
// manager with Run, and serve it with a distcache.Server on the local listener(s).
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	nextID atomic.Uint32
	slots  chan struct{}

	mu sync.Mutex
	up *upstream // nil while not connected
	// dialing is non-nil while the connection manager tries to (re)connect after
	// the start or a lost upstream, and closed when that round ends: requests
	// arriving meanwhile wait for it (within their deadline) instead of failing,
	// so a failover costs only the requests that were in flight.
	dialing chan struct{}

	// kick wakes the connection manager after an upstream was lost.
	kick chan struct{}
}

// New checks cfg, fills defaults and returns a Proxy.
func New(cfg Config) (*Proxy, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("proxy: no upstream server")
	}
	if cfg.Dial == nil {
		return nil, errors.New("proxy: no dial function")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Retry <= 0 {
		cfg.Retry = DefaultRetry
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Proxy{
		cfg:     cfg,
		log:     cfg.Logger,
		slots:   make(chan struct{}, cfg.MaxInFlight),
		kick:    make(chan struct{}, 1),
		dialing: make(chan struct{}),
	}, nil
}

// Upstream returns the address of the connected upstream server, or "".
func (p *Proxy) Upstream() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.up == nil {
		return ""
	}
	return p.up.addr
}

// Run keeps an upstream connection open until ctx is cancelled: it connects to the
// first server of the list that answers, and when that connection breaks it tries the
// following servers (wrapping around), pausing Retry after a round in which none
// connected. On return the upstream connection is closed.
func (p *Proxy) Run(ctx context.Context) error {
	next := 0 // index of the server to try first
	for {
		if p.Upstream() == "" {
			connected := false
			for i := 0; i < len(p.cfg.Servers) && ctx.Err() == nil; i++ {
				idx := (next + i) % len(p.cfg.Servers)
				if err := p.connect(ctx, p.cfg.Servers[idx]); err != nil {
					p.log.Warn("upstream connect failed", "server", p.cfg.Servers[idx], "err", err)
					continue
				}
				// After this one breaks, start with the one after it.
				next = (idx + 1) % len(p.cfg.Servers)
				connected = true
				break
			}
			p.endDialing()
			if !connected && ctx.Err() == nil {
				t := time.NewTimer(p.cfg.Retry)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
				p.startDialing()
				continue
			}
		}
		select {
		case <-ctx.Done():
			p.endDialing()
			p.mu.Lock()
			up := p.up
			p.mu.Unlock()
			if up != nil {
				up.fail(errors.New("proxy shutting down"))
			}
			return nil
		case <-p.kick:
		}
	}
}

func (p *Proxy) connect(ctx context.Context, addr string) error {
	dctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	conn, err := p.cfg.Dial(dctx, addr)
	if err != nil {
		return err
	}
	up := &upstream{
		p:       p,
		addr:    addr,
		conn:    conn,
		pending: make(map[uint32]*call),
		out:     make(chan []byte, 256),
		closed:  make(chan struct{}),
	}
	p.mu.Lock()
	p.up = up
	p.mu.Unlock()
	p.log.Info("upstream connected", "server", addr)
	go up.readLoop()
	go up.writeLoop()
	return nil
}

// startDialing marks a connection round as under way (see Proxy.dialing).
func (p *Proxy) startDialing() {
	p.mu.Lock()
	if p.dialing == nil {
		p.dialing = make(chan struct{})
	}
	p.mu.Unlock()
}

// endDialing marks the connection round as over and wakes the requests that
// waited for it.
func (p *Proxy) endDialing() {
	p.mu.Lock()
	if p.dialing != nil {
		close(p.dialing)
		p.dialing = nil
	}
	p.mu.Unlock()
}

// lost is called once by a failing upstream. The manager is woken to fail over,
// and requests wait for that round from now on (not only once it has started).
func (p *Proxy) lost(up *upstream, err error) {
	p.mu.Lock()
	if p.up == up {
		p.up = nil
		if p.dialing == nil {
			p.dialing = make(chan struct{})
		}
	}
	p.mu.Unlock()
	p.log.Warn("upstream connection lost", "server", up.addr, "err", err)
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Answers the proxy gives on its own (spec §7): an empty payload when no upstream is
// connected, the DISCONNECTED byte when the upstream failed or did not answer in time.
var (
	emptyAnswer        = []byte{}
	disconnectedAnswer = distcache.StatusDisconnected.Payload()
)

// ServeDistcache forwards req upstream under a fresh uid and returns the upstream's
// answer verbatim (the distcache.Server restores the client's uid and operation).
func (p *Proxy) ServeDistcache(ctx context.Context, req *distcache.Message) ([]byte, error) {
	timer := time.NewTimer(p.cfg.Timeout)
	defer timer.Stop()
	p.mu.Lock()
	up, dialing := p.up, p.dialing
	p.mu.Unlock()
	if up == nil && dialing != nil {
		// A (re)connection is under way: wait for its outcome, not for the retry
		// pause that follows a round in which no server answered.
		select {
		case <-dialing:
		case <-timer.C:
			return disconnectedAnswer, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		p.mu.Lock()
		up = p.up
		p.mu.Unlock()
	}
	if up == nil {
		return emptyAnswer, nil
	}
	select {
	case p.slots <- struct{}{}:
	case <-timer.C:
		p.log.Debug("request timed out waiting for an in-flight slot", "op", req.Op)
		return disconnectedAnswer, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-p.slots }()

	c := &call{op: req.Op, done: make(chan []byte, 1)}
	uid, ok := up.register(p, c)
	if !ok {
		return disconnectedAnswer, nil // the upstream failed meanwhile
	}
	frame, err := distcache.AppendMessage(make([]byte, 0, distcache.EncodedLen(len(req.Payload))),
		&distcache.Message{UID: uid, Op: req.Op, Payload: req.Payload})
	if err != nil {
		up.forget(uid)
		return nil, fmt.Errorf("proxy: encode request: %w", err)
	}
	sent := time.Now().UnixNano()
	select {
	case up.out <- frame:
	case <-up.closed:
	case <-timer.C:
		up.forget(uid)
		return disconnectedAnswer, nil
	case <-ctx.Done():
		up.forget(uid)
		return nil, ctx.Err()
	}
	select {
	case ans := <-c.done:
		return ans, nil
	case <-timer.C:
		up.forget(uid)
		if up.lastRead.Load() < sent {
			// Nothing at all came back while this request waited: the server is
			// stuck, not just slow on one request. Drop it so the proxy fails over.
			up.fail(fmt.Errorf("no answer from the server for %v", p.cfg.Timeout))
		} else {
			p.log.Debug("upstream did not answer in time", "server", up.addr, "op", req.Op, "upstream_uid", uid)
		}
		return disconnectedAnswer, nil
	case <-ctx.Done():
		// The local client left; a late answer will be dropped by the read loop.
		up.forget(uid)
		return nil, ctx.Err()
	}
}

// call is one forwarded request waiting for its answer.
type call struct {
	op   distcache.Op
	done chan []byte // buffered(1); receives exactly one answer
}

// upstream is one connection to a server. Requests are encoded by the caller and
// queued to writeLoop, which coalesces them into few writes; readLoop matches answers
// to calls by uid.
type upstream struct {
	p    *Proxy
	addr string
	conn net.Conn
	out  chan []byte

	// lastRead is the UnixNano time of the last answer read.
	lastRead atomic.Int64

	mu      sync.Mutex
	pending map[uint32]*call
	failed  bool

	closeOnce sync.Once
	closed    chan struct{}
}

// register assigns c a uid from the proxy's counter (starting at 1, never reset, as
// the original) that is not in use on this connection.
func (u *upstream) register(p *Proxy, c *call) (uint32, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.failed {
		return 0, false
	}
	for {
		uid := p.nextID.Add(1)
		if _, busy := u.pending[uid]; !busy {
			u.pending[uid] = c
			return uid, true
		}
	}
}

func (u *upstream) forget(uid uint32) {
	u.mu.Lock()
	delete(u.pending, uid)
	u.mu.Unlock()
}

// fail closes the connection and answers every outstanding call with DISCONNECTED.
func (u *upstream) fail(err error) {
	u.closeOnce.Do(func() {
		u.mu.Lock()
		u.failed = true
		pending := u.pending
		u.pending = nil
		u.mu.Unlock()
		close(u.closed)
		u.conn.Close()
		for _, c := range pending {
			c.done <- disconnectedAnswer
		}
		u.p.lost(u, err)
	})
}

func (u *upstream) readLoop() {
	dec := distcache.NewDecoder(u.conn, distcache.Responses)
	var m distcache.Message
	for {
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("server closed the connection")
			}
			u.fail(err)
			return
		}
		u.lastRead.Store(time.Now().UnixNano())
		u.mu.Lock()
		c, ok := u.pending[m.UID]
		if ok && c.op == m.Op {
			delete(u.pending, m.UID)
		}
		u.mu.Unlock()
		switch {
		case !ok:
			u.p.log.Debug("dropping late or unknown upstream answer", "server", u.addr, "upstream_uid", m.UID, "op", m.Op)
		case c.op != m.Op:
			u.fail(fmt.Errorf("answer for uid %d has operation %v, request had %v", m.UID, m.Op, c.op))
			return
		default:
			c.done <- m.Payload
		}
	}
}

func (u *upstream) writeLoop() {
	w := bufio.NewWriterSize(u.conn, 32<<10)
	for {
		select {
		case <-u.closed:
			return
		case b := <-u.out:
			// A server that stops reading must not block the proxy forever.
			u.conn.SetWriteDeadline(time.Now().Add(u.p.cfg.Timeout))
			if _, err := w.Write(b); err != nil {
				u.fail(err)
				return
			}
		drain:
			for {
				select {
				case b := <-u.out:
					if _, err := w.Write(b); err != nil {
						u.fail(err)
						return
					}
				default:
					break drain
				}
			}
			if err := w.Flush(); err != nil {
				u.fail(err)
				return
			}
		}
	}
}

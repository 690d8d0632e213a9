package resp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distcache-replicated/distcache/protocol/internal/connset"
	"github.com/distcache-replicated/distcache/protocol/internal/reqctx"
)

// NoExpiry is the ttl passed to Cache.Set and Cache.Add for a SET without
// EX/PX. The Cache maps it to the store's maximum lifetime. Every other ttl
// the server passes is positive and finite.
const NoExpiry time.Duration = math.MaxInt64

// Defaults used when the corresponding Server field is zero.
const (
	// DefaultMaxValueSize matches the replicated store's default size limit.
	DefaultMaxValueSize = 64 << 10
	// DefaultMaxLineLength bounds inline commands and RESP header lines.
	DefaultMaxLineLength = 2048
	// DefaultMaxArgs bounds the elements of one command array.
	DefaultMaxArgs = 1024
	// DefaultReadTimeout bounds how long a started request may take to arrive
	// completely (slowloris protection).
	DefaultReadTimeout = 10 * time.Second
	// DefaultWriteTimeout bounds how long a client may take to accept a reply:
	// a write it does not accept fails between half of it and all of it after
	// it began (the deadline is re-armed only when half has passed).
	DefaultWriteTimeout = 10 * time.Second
	// DefaultRequestTimeout bounds every Cache call, so a node without quorum
	// still answers -ERR instead of hanging Apache's TLS handshakes.
	DefaultRequestTimeout = 5 * time.Second
	// DefaultMaxConns bounds concurrent connections.
	DefaultMaxConns = 4096
	// DefaultVersion is the redis_version INFO reports; clients check it
	// to pick protocol features, so it must look like a real Redis.
	DefaultVersion = "7.0.0"
)

const (
	// swallowLimit is the largest oversized bulk string that is read and
	// discarded to keep the stream in sync; beyond it the connection closes.
	swallowLimit = 1 << 20
	// keepBuffer is the largest argument buffer a connection keeps between requests.
	keepBuffer = 16 << 10
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("resp: server closed")

// errClose makes a connection close after flushing what was already answered.
var errClose = errors.New("resp: closing connection")

// Cache is the storage the server needs; the node implements it over the
// replicated store. Keys and values passed in are only valid during the call
// (they alias connection buffers) and must be copied if retained. A returned
// value is written to the client before the next request is read.
//
// ttl is always positive: NoExpiry when the client gave none, otherwise the
// lifetime. Mutating calls must return only once the write is applied on this
// node, because the client is told +OK then.
type Cache interface {
	Get(ctx context.Context, key []byte) (value []byte, ok bool, err error)
	// Set stores unconditionally (upsert).
	Set(ctx context.Context, key, value []byte, ttl time.Duration) error
	// Add stores only if no live entry exists; stored reports which happened.
	Add(ctx context.Context, key, value []byte, ttl time.Duration) (stored bool, err error)
	Delete(ctx context.Context, key []byte) (deleted bool, err error)
}

// A QuickCache is a Cache that can sometimes answer a read from memory at once
// (a hit in the local replica). The server then skips the request context and
// its timer, which a call that cannot wait does not need.
type QuickCache interface {
	Cache
	// GetNow returns the value if it can tell without waiting (answered
	// true); otherwise the server calls Get.
	GetNow(key []byte) (value []byte, ok, answered bool)
}

// StatsProvider is optionally implemented by a Cache to add its figures to
// INFO, which status pages such as mod_socache_redis's read.
type StatsProvider interface {
	Stats() map[string]string
}

// Server serves Redis RESP2 over a Cache. The zero value with Cache set is
// ready to use; fields must not change once Serve is called.
type Server struct {
	Cache  Cache
	Logger *slog.Logger // nil: slog.Default()

	Version        string        // redis_version in INFO; empty: DefaultVersion
	MaxValueSize   int           // largest storable value; 0: DefaultMaxValueSize
	MaxLineLength  int           // longest inline command or header line; 0: DefaultMaxLineLength
	MaxArgs        int           // most elements in a command array; 0: DefaultMaxArgs
	ReadTimeout    time.Duration // a started request must complete within it; 0: DefaultReadTimeout
	IdleTimeout    time.Duration // idle connections are closed after it; 0: never (Apache pools connections)
	WriteTimeout   time.Duration // 0: DefaultWriteTimeout
	RequestTimeout time.Duration // deadline of each Cache call; 0: DefaultRequestTimeout
	MaxConns       int           // concurrent connections; 0: DefaultMaxConns

	initOnce sync.Once
	conns    *connset.Set[*conn] // listeners, connections, base context
	quick    QuickCache          // Cache, if it can answer reads at once

	commands atomic.Uint64
	hits     atomic.Uint64
	misses   atomic.Uint64
}

// set returns the server's listeners and connections, set up on first use so
// that a Server with its fields set is ready.
func (s *Server) set() *connset.Set[*conn] {
	s.initOnce.Do(func() {
		s.conns = connset.New[*conn](connset.Config{Name: "resp", Log: s.Logger, Closed: ErrServerClosed,
			MaxConns: connset.Default(s.MaxConns, DefaultMaxConns), Refuse: s.refuse})
		s.quick, _ = s.Cache.(QuickCache)
	})
	return s.conns
}

// Serve accepts connections on ln and serves each on its own goroutine until
// Shutdown or Close; it then returns ErrServerClosed. It closes ln on return.
func (s *Server) Serve(ln net.Listener) error {
	if s.Cache == nil {
		return errors.New("resp: Server.Cache is nil")
	}
	return s.set().Serve(ln, s.newConn)
}

// refuse answers a connection over MaxConns before it is closed.
func (s *Server) refuse(nc net.Conn) { io.WriteString(nc, "-ERR max number of clients reached\r\n") }

// Shutdown stops accepting, lets every connection finish the request it is
// processing, closes idle connections and waits for all of them. When ctx
// ends first, the remaining connections are closed and their Cache calls
// cancelled, and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.set().Shutdown(ctx)
}

// Close closes the listeners and every connection immediately and cancels
// in-flight Cache calls.
func (s *Server) Close() error {
	return s.set().Close()
}

// conn is one client connection; its buffers are reused across requests.
type conn struct {
	connset.Line
	s *Server

	args     [][]byte // the current command; aliases arena or the read buffer
	arena    []byte   // bulk strings of the current command
	offs     []int    // start/end pairs into arena while reading
	tooLarge bool     // a bulk string was discarded for its size

	maxValue int
	maxLine  int
	maxArgs  int
}

func (s *Server) newConn(nc net.Conn) *conn {
	set := s.set()
	maxLine := connset.Default(s.MaxLineLength, DefaultMaxLineLength)
	return &conn{
		Line: connset.NewLine(nc, maxLine, set.Log(), reqctx.New(set.Context(), connset.Default(s.RequestTimeout, DefaultRequestTimeout)),
			connset.Default(s.ReadTimeout, DefaultReadTimeout), s.IdleTimeout, connset.Default(s.WriteTimeout, DefaultWriteTimeout)),
		s:        s,
		args:     make([][]byte, 0, 8),
		offs:     make([]int, 0, 16),
		maxValue: connset.Default(s.MaxValueSize, DefaultMaxValueSize),
		maxLine:  maxLine,
		maxArgs:  connset.Default(s.MaxArgs, DefaultMaxArgs),
	}
}

// Serve handles the connection until it ends.
func (c *conn) Serve() {
	c.Line.Serve("resp", c.s.conns.Closing, c.handle, errClose, errProtocol, func() { c.s.conns.Done(c) })
}

// errProtocol marks framing violations after which the stream cannot be
// trusted; the client has been sent Redis's "-ERR Protocol error".
var errProtocol = errors.New("protocol error")

// foreignProtocol recognises a client speaking another protocol to this port
// (see connset.ForeignProtocol), and the lines Redis itself closes on
// ("POST", "Host:"), a cross-protocol attack from browsers.
func foreignProtocol(b []byte) *connset.PeerError {
	if pe := connset.ForeignProtocol(b, "RESP"); pe != nil {
		return pe
	}
	if hasFoldPrefix(b, "host:") || hasFoldPrefix(b, "post ") {
		return connset.NewPeerError("HTTP request sent to the RESP port", b, 40)
	}
	return nil
}

// hasFoldPrefix reports whether b starts with the lowercase ASCII prefix,
// ignoring case.
func hasFoldPrefix(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := range len(prefix) {
		ch := b[i]
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		if ch != prefix[i] {
			return false
		}
	}
	return true
}

// protocolError answers a framing violation the way Redis does and closes.
func (c *conn) protocolError(msg string) error {
	c.BW.WriteString("-ERR Protocol error: ")
	c.BW.WriteString(msg)
	c.BW.WriteString("\r\n")
	return fmt.Errorf("%w: %s", errProtocol, msg)
}

// readLine returns the next line without its terminator; it aliases the read
// buffer and is valid until the next read.
func (c *conn) readLine() ([]byte, error) {
	line, err := c.ReadLine(c.maxLine)
	switch {
	case errors.Is(err, connset.ErrLineTooLong):
		return nil, c.protocolError("too big request")
	case errors.Is(err, io.EOF):
		return nil, errClose
	case err != nil:
		return nil, fmt.Errorf("reading line: %w", err)
	}
	return line, nil
}

// readCommand reads one request into c.args. An empty c.args means there was
// nothing to execute (a blank inline line or an empty array).
func (c *conn) readCommand() error {
	c.args = c.args[:0]
	c.tooLarge = false
	first, err := c.BR.Peek(1)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return errClose
		}
		return fmt.Errorf("reading request: %w", err)
	}
	if first[0] == 0x16 {
		// A TLS record has no newline to wait for: look at it now.
		b, _ := c.BR.Peek(2)
		if pe := foreignProtocol(b); pe != nil {
			return pe
		}
	}
	if first[0] != '*' {
		return c.readInline()
	}
	line, err := c.readLine()
	if err != nil {
		return err
	}
	n, ok := parseInt(line[1:])
	if !ok || n > int64(c.maxArgs) {
		return c.protocolError("invalid multibulk length")
	}
	if n <= 0 {
		return nil
	}
	c.arena = c.arena[:0]
	c.offs = c.offs[:0]
	limit := c.maxValue + 2*c.maxLine // room for the value plus name, key and options
	for range n {
		line, err := c.readLine()
		if err != nil {
			return err
		}
		if len(line) == 0 || line[0] != '$' {
			return c.protocolError("expected '$'")
		}
		size, ok := parseInt(line[1:])
		if !ok || size < 0 || size > swallowLimit {
			return c.protocolError("invalid bulk length")
		}
		if c.tooLarge || size > int64(c.maxValue) || len(c.arena)+int(size) > limit {
			c.tooLarge = true
			if _, err := c.BR.Discard(int(size) + 2); err != nil {
				return fmt.Errorf("discarding bulk string: %w", err)
			}
			continue
		}
		start := len(c.arena)
		c.arena, err = c.AppendValue(c.arena, int(size)+2)
		if err != nil {
			return fmt.Errorf("reading bulk string of %d bytes: %w", size, err)
		}
		buf := c.arena[start:]
		if buf[size] != '\r' || buf[size+1] != '\n' {
			return c.protocolError("bulk string not terminated by CRLF")
		}
		c.arena = c.arena[:start+int(size)]
		c.offs = append(c.offs, start, start+int(size))
	}
	for i := 0; i < len(c.offs); i += 2 {
		c.args = append(c.args, c.arena[c.offs[i]:c.offs[i+1]])
	}
	return nil
}

// readInline reads a telnet-style command: words separated by spaces or tabs.
// Quoting is not supported.
func (c *conn) readInline() error {
	line, err := c.readLine()
	if err != nil {
		return err
	}
	if pe := foreignProtocol(line); pe != nil {
		return pe
	}
	for i := 0; i < len(line); {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		j := i
		for j < len(line) && line[j] != ' ' && line[j] != '\t' {
			j++
		}
		if j > i {
			if len(c.args) == c.maxArgs {
				return c.protocolError("too many arguments")
			}
			c.args = append(c.args, line[i:j])
		}
		i = j
	}
	return nil
}

// handle reads and answers one request. A non-nil error closes the connection
// after the answers written so far are flushed.
func (c *conn) handle() error {
	err := c.readCommand()
	defer func() {
		if cap(c.arena) > keepBuffer {
			c.arena = nil
		}
	}()
	if err != nil {
		return err
	}
	if len(c.args) == 0 {
		if c.tooLarge {
			c.writeError("value too large for cache")
		}
		return nil
	}
	c.s.commands.Add(1)
	var nameBuf [16]byte
	name := lower(nameBuf[:0], c.args[0])
	if c.tooLarge {
		c.writeError("value too large for cache")
		return nil
	}
	args := c.args[1:]
	switch string(name) {
	case "get":
		if len(args) != 1 {
			return c.arity("get")
		}
		c.get(args[0])
	case "set":
		if len(args) < 2 {
			return c.arity("set")
		}
		c.set(args)
	case "setex", "psetex":
		if len(args) != 3 {
			return c.arity(string(name))
		}
		c.setex(args, string(name) == "psetex")
	case "setnx":
		if len(args) != 2 {
			return c.arity("setnx")
		}
		c.setnx(args)
	case "del":
		if len(args) == 0 {
			return c.arity("del")
		}
		c.count(args, func(key []byte) (bool, error) {
			ctx := c.Req.Begin()
			defer c.Req.End()
			return c.s.Cache.Delete(ctx, key)
		})
	case "exists":
		if len(args) == 0 {
			return c.arity("exists")
		}
		c.count(args, func(key []byte) (bool, error) {
			_, ok, err := c.lookup(key)
			return ok, err
		})
	case "ping":
		switch len(args) {
		case 0:
			c.BW.WriteString("+PONG\r\n")
		case 1:
			c.writeBulk(args[0])
		default:
			return c.arity("ping")
		}
	case "echo":
		if len(args) != 1 {
			return c.arity("echo")
		}
		c.writeBulk(args[0])
	case "quit":
		c.BW.WriteString("+OK\r\n")
		return errClose
	case "select":
		if len(args) != 1 {
			return c.arity("select")
		}
		if n, ok := parseInt(args[0]); !ok {
			c.writeError("value is not an integer or out of range")
		} else if n != 0 {
			c.writeError("DB index is out of range")
		} else {
			c.BW.WriteString("+OK\r\n")
		}
	case "command":
		c.BW.WriteString("*0\r\n")
	case "client":
		var sub [16]byte
		if len(args) == 0 {
			return c.arity("client")
		}
		switch string(lower(sub[:0], args[0])) {
		case "setname", "setinfo":
			c.BW.WriteString("+OK\r\n")
		default:
			c.writeError("unknown subcommand '" + printable(args[0]) + "'")
		}
	case "info":
		c.info()
	default:
		c.writeError("unknown command '" + printable(c.args[0]) + "'")
	}
	return nil
}

// lower appends the ASCII-lowercased name to dst; names longer than dst's
// capacity yield a value matching no command, without allocating.
func lower(dst, name []byte) []byte {
	if len(name) > cap(dst) {
		return dst[:0]
	}
	for _, ch := range name {
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		dst = append(dst, ch)
	}
	return dst
}

// printable renders client input for an error line: clipped, no control bytes.
func printable(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	out := make([]byte, len(b))
	for i, ch := range b {
		if ch < ' ' || ch >= 0x7f || ch == '\'' {
			ch = '?'
		}
		out[i] = ch
	}
	return string(out)
}

func (c *conn) arity(name string) error {
	c.writeError("wrong number of arguments for '" + name + "' command")
	return nil
}

func (c *conn) writeError(msg string) {
	c.BW.WriteString("-ERR ")
	c.BW.WriteString(msg)
	c.BW.WriteString("\r\n")
}

func (c *conn) writeBulk(b []byte) {
	c.writeLen('$', len(b))
	c.BW.Write(b)
	c.BW.WriteString("\r\n")
}

func (c *conn) writeLen(prefix byte, n int) {
	buf := c.BW.AvailableBuffer()
	buf = append(buf, prefix)
	buf = appendInt(buf, int64(n))
	buf = append(buf, '\r', '\n')
	c.BW.Write(buf)
}

// cacheError answers a failed Cache call; the stream stays in sync.
func (c *conn) cacheError(err error) {
	c.Log.Debug("resp: cache call failed", "err", err)
	c.writeError(connset.ErrorText(err))
}

func (c *conn) get(key []byte) {
	v, ok, err := c.lookup(key)
	switch {
	case err != nil:
		c.cacheError(err)
	case !ok:
		c.s.misses.Add(1)
		c.BW.WriteString("$-1\r\n")
	default:
		c.s.hits.Add(1)
		c.writeBulk(v)
	}
}

// set handles SET key value [EX seconds|PX milliseconds] [NX].
func (c *conn) set(args [][]byte) {
	ttl := NoExpiry
	var nx, haveTTL bool
	for i := 2; i < len(args); i++ {
		var opt [8]byte
		switch o := string(lower(opt[:0], args[i])); o {
		case "nx":
			nx = true
		case "ex", "px":
			if haveTTL || i+1 == len(args) {
				c.writeError("syntax error")
				return
			}
			i++
			d, ok := c.duration(args[i], o == "px", "set")
			if !ok {
				return
			}
			ttl, haveTTL = d, true
		default: // XX, KEEPTTL, GET, EXAT, PXAT: not offered by the store
			c.writeError("syntax error")
			return
		}
	}
	ctx := c.Req.Begin()
	defer c.Req.End()
	if nx {
		stored, err := c.s.Cache.Add(ctx, args[0], args[1], ttl)
		switch {
		case err != nil:
			c.cacheError(err)
		case stored:
			c.BW.WriteString("+OK\r\n")
		default:
			c.BW.WriteString("$-1\r\n")
		}
		return
	}
	if err := c.s.Cache.Set(ctx, args[0], args[1], ttl); err != nil {
		c.cacheError(err)
		return
	}
	c.BW.WriteString("+OK\r\n")
}

// duration parses a positive EX/PX argument, answering the error itself.
func (c *conn) duration(arg []byte, millis bool, cmd string) (time.Duration, bool) {
	n, ok := parseInt(arg)
	if !ok {
		c.writeError("value is not an integer or out of range")
		return 0, false
	}
	unit := time.Second
	if millis {
		unit = time.Millisecond
	}
	if n <= 0 || n > int64(math.MaxInt64/unit) {
		c.writeError("invalid expire time in '" + cmd + "' command")
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// setex handles SETEX key seconds value (and PSETEX in milliseconds).
func (c *conn) setex(args [][]byte, millis bool) {
	cmd := "setex"
	if millis {
		cmd = "psetex"
	}
	ttl, ok := c.duration(args[1], millis, cmd)
	if !ok {
		return
	}
	ctx := c.Req.Begin()
	err := c.s.Cache.Set(ctx, args[0], args[2], ttl)
	c.Req.End()
	if err != nil {
		c.cacheError(err)
		return
	}
	c.BW.WriteString("+OK\r\n")
}

func (c *conn) setnx(args [][]byte) {
	ctx := c.Req.Begin()
	stored, err := c.s.Cache.Add(ctx, args[0], args[1], NoExpiry)
	c.Req.End()
	switch {
	case err != nil:
		c.cacheError(err)
	case stored:
		c.BW.WriteString(":1\r\n")
	default:
		c.BW.WriteString(":0\r\n")
	}
}

// count answers how many keys f holds for (DEL: deleted, EXISTS: live).
func (c *conn) count(keys [][]byte, f func(key []byte) (bool, error)) {
	n := 0
	for _, k := range keys {
		ok, err := f(k)
		if err != nil {
			c.cacheError(err)
			return
		}
		if ok {
			n++
		}
	}
	c.writeLen(':', n)
}

// lookup reads one key, from memory at once when the Cache can.
func (c *conn) lookup(key []byte) ([]byte, bool, error) {
	if c.s.quick != nil {
		if v, ok, answered := c.s.quick.GetNow(key); answered {
			return v, ok, nil
		}
	}
	ctx := c.Req.Begin()
	defer c.Req.End()
	return c.s.Cache.Get(ctx, key)
}

// parseInt parses a signed decimal int64 without allocating.
func parseInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		n = n*10 + uint64(ch-'0')
	}
	if n > math.MaxInt64 {
		return 0, false
	}
	if neg {
		return -int64(n), true
	}
	return int64(n), true
}

func appendInt(b []byte, n int64) []byte {
	if n < 0 {
		b = append(b, '-')
		n = -n
	}
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}

// ActiveConns reports how many client connections are open, for metrics.
func (s *Server) ActiveConns() int { return s.set().Active() }

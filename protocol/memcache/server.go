package memcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distcache-replicated/distcache/protocol/internal/connset"
	"github.com/distcache-replicated/distcache/protocol/internal/reqctx"
)

// NoExpiry is the ttl passed to Cache.Set and Cache.Add for memcached's
// exptime 0 ("never expires"). The Cache maps it to the store's maximum
// lifetime. Every other ttl the server passes is positive and finite.
const NoExpiry time.Duration = math.MaxInt64

// Defaults used when the corresponding Server field is zero.
const (
	// DefaultMaxValueSize matches the replicated store's default size limit
	// (not memcached's 1 MiB): a larger value could never be stored anyway.
	DefaultMaxValueSize = 64 << 10
	// DefaultMaxLineLength bounds a command line; memcached uses 2048 too.
	DefaultMaxLineLength = 2048
	// DefaultReadTimeout bounds how long a started request may take to arrive
	// completely (slowloris protection).
	DefaultReadTimeout = 10 * time.Second
	// DefaultWriteTimeout bounds how long a client may take to accept a reply:
	// a write it does not accept fails between half of it and all of it after
	// it began (the deadline is re-armed only when half has passed).
	DefaultWriteTimeout = 10 * time.Second
	// DefaultRequestTimeout bounds every Cache call, so a node without quorum
	// still answers SERVER_ERROR instead of hanging Apache's TLS handshakes.
	DefaultRequestTimeout = 5 * time.Second
	// DefaultMaxConns bounds concurrent connections.
	DefaultMaxConns = 4096
	// DefaultVersion is what the version command reports.
	DefaultVersion = "1.6.21"
)

const (
	// MaxKeyLength is memcached's key length limit.
	MaxKeyLength = 250
	// relativeExpiryLimit: memcached treats larger exptimes as Unix times.
	relativeExpiryLimit = 30 * 24 * 60 * 60
	// swallowLimit is the largest oversized data block that is read and
	// discarded to keep the stream in sync; beyond it the connection closes.
	swallowLimit = 1 << 20
	// keepBuffer is the largest value buffer a connection keeps between requests.
	keepBuffer = 16 << 10
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("memcache: server closed")

// errClose makes a connection close after flushing what was already answered.
var errClose = errors.New("memcache: closing connection")

// Cache is the storage the server needs; the node implements it over the
// replicated store. Keys and values passed in are only valid during the call
// (they alias connection buffers) and must be copied if retained. A returned
// value is written to the client before the next request is read, so the
// Cache may hand out its own immutable slice.
//
// ttl is always positive: NoExpiry for memcached's "never", otherwise the
// remaining lifetime. Mutating calls must return only once the write is
// applied on this node, because the client is told STORED/DELETED then.
type Cache interface {
	Get(ctx context.Context, key []byte) (value []byte, flags uint32, ok bool, err error)
	// Set stores unconditionally (upsert).
	Set(ctx context.Context, key, value []byte, flags uint32, ttl time.Duration) error
	// Add stores only if no live entry exists; stored reports which happened.
	Add(ctx context.Context, key, value []byte, flags uint32, ttl time.Duration) (stored bool, err error)
	Delete(ctx context.Context, key []byte) (deleted bool, err error)
}

// A QuickCache is a Cache that can sometimes answer a read from memory at once
// (a hit in the local replica). The server then skips the request context and
// its timer, which a call that cannot wait does not need.
type QuickCache interface {
	Cache
	// GetNow returns the entry if it can tell without waiting (answered
	// true); otherwise the server calls Get.
	GetNow(key []byte) (value []byte, flags uint32, ok, answered bool)
}

// StatsProvider is optionally implemented by a Cache to add its own figures
// (entries, bytes, raft state ...) to the output of the stats command, which
// status pages such as mod_socache's read.
type StatsProvider interface {
	Stats() map[string]string
}

// Server serves the memcached text protocol over a Cache. The zero value with
// Cache set is ready to use; fields must not change once Serve is called.
type Server struct {
	Cache  Cache
	Logger *slog.Logger // nil: slog.Default()

	Version        string        // reported by "version"; empty: DefaultVersion
	MaxValueSize   int           // largest storable value; 0: DefaultMaxValueSize
	MaxLineLength  int           // longest command line; 0: DefaultMaxLineLength
	ReadTimeout    time.Duration // a started request must complete within it; 0: DefaultReadTimeout
	IdleTimeout    time.Duration // idle connections are closed after it; 0: never (Apache pools connections)
	WriteTimeout   time.Duration // 0: DefaultWriteTimeout
	RequestTimeout time.Duration // deadline of each Cache call; 0: DefaultRequestTimeout
	MaxConns       int           // concurrent connections; 0: DefaultMaxConns

	// Now returns the current time, for memcached's absolute exptimes; nil: time.Now.
	Now func() time.Time

	initOnce sync.Once
	conns    *connset.Set[*conn] // listeners, connections, base context
	quick    QuickCache          // Cache, if it can answer reads at once

	cmdGet    atomic.Uint64
	getHits   atomic.Uint64
	getMisses atomic.Uint64
	cmdSet    atomic.Uint64
	cmdDelete atomic.Uint64
}

// set returns the server's listeners and connections, set up on first use so
// that a Server with its fields set is ready.
func (s *Server) set() *connset.Set[*conn] {
	s.initOnce.Do(func() {
		s.conns = connset.New[*conn](connset.Config{Name: "memcache", Log: s.Logger, Closed: ErrServerClosed,
			MaxConns: connset.Default(s.MaxConns, DefaultMaxConns), Refuse: s.refuse})
		s.quick, _ = s.Cache.(QuickCache)
	})
	return s.conns
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Serve accepts connections on ln and serves each on its own goroutine until
// Shutdown or Close; it then returns ErrServerClosed. It closes ln on return.
func (s *Server) Serve(ln net.Listener) error {
	if s.Cache == nil {
		return errors.New("memcache: Server.Cache is nil")
	}
	return s.set().Serve(ln, s.newConn)
}

// refuse answers a connection over MaxConns before it is closed.
func (s *Server) refuse(nc net.Conn) {
	io.WriteString(nc, "SERVER_ERROR too many open connections\r\n")
}

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
	s      *Server
	fields [][]byte
	key    []byte // copy of a storage command's key, which the data read overwrites
	value  []byte

	maxValue int
	maxLine  int
}

func (s *Server) newConn(nc net.Conn) *conn {
	set := s.set()
	maxLine := connset.Default(s.MaxLineLength, DefaultMaxLineLength)
	return &conn{
		Line: connset.NewLine(nc, maxLine, set.Log(), reqctx.New(set.Context(), connset.Default(s.RequestTimeout, DefaultRequestTimeout)),
			connset.Default(s.ReadTimeout, DefaultReadTimeout), s.IdleTimeout, connset.Default(s.WriteTimeout, DefaultWriteTimeout)),
		s:        s,
		fields:   make([][]byte, 0, 8),
		key:      make([]byte, 0, MaxKeyLength),
		maxValue: connset.Default(s.MaxValueSize, DefaultMaxValueSize),
		maxLine:  maxLine,
	}
}

// Serve handles the connection until it ends.
func (c *conn) Serve() {
	c.Line.Serve("memcache", c.s.conns.Closing, c.handle, errClose, errMalformed, func() { c.s.conns.Done(c) })
}

// errMalformed marks requests that break the protocol so badly that the rest
// of the stream cannot be trusted.
var errMalformed = errors.New("malformed request")

// foreignProtocol recognises a client speaking another protocol to this port
// (see connset.ForeignProtocol). Other binary bytes get memcached's
// answer, ERROR, line by line.
func foreignProtocol(b []byte) *connset.PeerError {
	return connset.ForeignProtocol(b, "memcache")
}

// readLine returns the next command line without its line terminator. The
// slice aliases the read buffer and is valid until the next read.
func (c *conn) readLine() ([]byte, error) {
	line, err := c.ReadLine(c.maxLine)
	switch {
	case errors.Is(err, connset.ErrLineTooLong):
		c.BW.WriteString("CLIENT_ERROR line too long\r\n")
		return nil, fmt.Errorf("%w: command line longer than %d bytes", errMalformed, c.maxLine)
	case errors.Is(err, io.EOF):
		return nil, errClose
	case err != nil:
		return nil, fmt.Errorf("reading command line: %w", err)
	}
	return line, nil
}

// split cuts line at spaces into c.fields, reusing its storage.
func (c *conn) split(line []byte) [][]byte {
	f := c.fields[:0]
	for i := 0; i < len(line); {
		for i < len(line) && line[i] == ' ' {
			i++
		}
		j := i
		for j < len(line) && line[j] != ' ' {
			j++
		}
		if j > i {
			f = append(f, line[i:j])
		}
		i = j
	}
	c.fields = f
	return f
}

// handle reads and answers one request. A non-nil error closes the connection
// after the answers written so far are flushed.
func (c *conn) handle() error {
	if b, _ := c.BR.Peek(1); len(b) > 0 && b[0] == 0x16 {
		// A TLS record has no newline to wait for: look at it now.
		b, _ = c.BR.Peek(2)
		if pe := foreignProtocol(b); pe != nil {
			return pe
		}
	}
	line, err := c.readLine()
	if err != nil {
		return err
	}
	if pe := foreignProtocol(line); pe != nil {
		return pe
	}
	f := c.split(line)
	if len(f) == 0 {
		c.BW.WriteString("ERROR\r\n")
		return nil
	}
	switch string(f[0]) {
	case "get":
		return c.get(f[1:])
	case "set":
		return c.store(f, false)
	case "add":
		return c.store(f, true)
	case "delete":
		return c.delete(f[1:])
	case "version":
		c.BW.WriteString("VERSION ")
		c.BW.WriteString(cmpOr(c.s.Version, DefaultVersion))
		c.BW.WriteString("\r\n")
	case "stats":
		c.stats(f[1:])
	case "verbosity":
		if len(f) >= 2 && len(f) <= 3 {
			if len(f) == 3 && string(f[2]) == "noreply" {
				return nil
			}
			c.BW.WriteString("OK\r\n")
		} else {
			c.BW.WriteString("ERROR\r\n")
		}
	case "quit":
		return errClose
	default:
		c.BW.WriteString("ERROR\r\n")
	}
	return nil
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// validKey applies the checks memcached itself makes: spaces are already split
// off, and only the length is checked. The protocol text forbids control bytes,
// but memcached accepts them and real load tools (memaslap) send them, so refusing
// them would only break clients that work against memcached.
func validKey(k []byte) bool {
	return len(k) > 0 && len(k) <= MaxKeyLength
}

func (c *conn) get(keys [][]byte) error {
	if len(keys) == 0 {
		c.BW.WriteString("ERROR\r\n")
		return nil
	}
	for _, k := range keys {
		if !validKey(k) {
			c.BW.WriteString("CLIENT_ERROR bad command line format\r\n")
			return nil
		}
	}
	for _, k := range keys {
		c.s.cmdGet.Add(1)
		v, flags, ok, err := c.lookup(k)
		if err != nil {
			c.serverError(err)
			return nil
		}
		if !ok {
			c.s.getMisses.Add(1)
			continue
		}
		c.s.getHits.Add(1)
		c.BW.WriteString("VALUE ")
		c.BW.Write(k)
		b := c.BW.AvailableBuffer()
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(flags), 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(len(v)), 10)
		b = append(b, '\r', '\n')
		c.BW.Write(b)
		c.BW.Write(v)
		c.BW.WriteString("\r\n")
	}
	c.BW.WriteString("END\r\n")
	return nil
}

// lookup reads one key, from memory at once when the Cache can.
func (c *conn) lookup(key []byte) ([]byte, uint32, bool, error) {
	if c.s.quick != nil {
		if v, flags, ok, answered := c.s.quick.GetNow(key); answered {
			return v, flags, ok, nil
		}
	}
	ctx := c.Req.Begin()
	defer c.Req.End()
	return c.s.Cache.Get(ctx, key)
}

// store handles "set|add <key> <flags> <exptime> <bytes> [noreply]".
func (c *conn) store(f [][]byte, add bool) error {
	if len(f) != 5 && len(f) != 6 {
		c.BW.WriteString("ERROR\r\n")
		return nil
	}
	noreply := len(f) == 6 && string(f[5]) == "noreply"
	n, okN := parseUint(f[4], math.MaxInt32)
	if !okN {
		// Without a byte count the data block cannot be skipped: out of sync.
		c.BW.WriteString("CLIENT_ERROR bad command line format\r\n")
		return fmt.Errorf("%w: storage command with an invalid byte count %q", errMalformed, clip(f[4]))
	}
	size := int(n)
	flags, okF := parseUint(f[2], math.MaxUint32)
	exptime, okE := parseInt(f[3])
	if !validKey(f[1]) || !okF || !okE || (len(f) == 6 && !noreply) {
		if !noreply {
			c.BW.WriteString("CLIENT_ERROR bad command line format\r\n")
		}
		return c.swallow(size)
	}
	if size > c.maxValue {
		if !noreply {
			c.BW.WriteString("SERVER_ERROR object too large for cache\r\n")
		}
		return c.swallow(size)
	}
	c.key = append(c.key[:0], f[1]...)
	defer func() {
		if cap(c.value) > keepBuffer {
			c.value = nil
		}
	}()
	buf, err := c.AppendValue(c.value[:0], size+2)
	c.value = buf
	if err != nil {
		return fmt.Errorf("reading data block of %d bytes: %w", size, err)
	}
	if buf[size] != '\r' || buf[size+1] != '\n' {
		c.BW.WriteString("CLIENT_ERROR bad data chunk\r\n")
		return fmt.Errorf("%w: data block not terminated by CRLF (byte count %d does not match the data)", errMalformed, size)
	}
	value := buf[:size]

	c.s.cmdSet.Add(1)
	ttl, expired := c.ttl(exptime)
	ctx := c.Req.Begin()
	defer c.Req.End()
	var reply string
	switch {
	case expired && add:
		// memcached would add an item that is dead on arrival: only the
		// answer is observable, and it depends on whether a live item exists.
		_, _, exists, err := c.s.Cache.Get(ctx, c.key)
		if err != nil {
			return c.serverErrorUnless(noreply, err)
		}
		reply = "STORED\r\n"
		if exists {
			reply = "NOT_STORED\r\n"
		}
	case expired:
		// Replacing with an already expired item removes the old one.
		if _, err := c.s.Cache.Delete(ctx, c.key); err != nil {
			return c.serverErrorUnless(noreply, err)
		}
		reply = "STORED\r\n"
	case add:
		stored, err := c.s.Cache.Add(ctx, c.key, value, uint32(flags), ttl)
		if err != nil {
			return c.serverErrorUnless(noreply, err)
		}
		reply = "STORED\r\n"
		if !stored {
			reply = "NOT_STORED\r\n"
		}
	default:
		if err := c.s.Cache.Set(ctx, c.key, value, uint32(flags), ttl); err != nil {
			return c.serverErrorUnless(noreply, err)
		}
		reply = "STORED\r\n"
	}
	if !noreply {
		c.BW.WriteString(reply)
	}
	return nil
}

// clip shortens client input quoted in a log line or error.
func clip(b []byte) string {
	if len(b) > 32 {
		b = b[:32]
	}
	return string(b)
}

// swallow discards an unwanted data block of size bytes plus its CRLF, or
// closes the connection if it is too large to be worth reading.
func (c *conn) swallow(size int) error {
	if size > swallowLimit {
		return fmt.Errorf("%w: data block of %d bytes exceeds the %d byte limit", errMalformed, size, swallowLimit)
	}
	if _, err := c.BR.Discard(size + 2); err != nil {
		return fmt.Errorf("discarding data block: %w", err)
	}
	return nil
}

// ttl converts a memcached exptime to the Cache's convention.
func (c *conn) ttl(exptime int64) (ttl time.Duration, expired bool) {
	switch {
	case exptime == 0:
		return NoExpiry, false
	case exptime < 0:
		return 0, true
	case exptime > relativeExpiryLimit:
		d := time.Unix(exptime, 0).Sub(c.s.now())
		if d <= 0 {
			return 0, true
		}
		return d, false
	default:
		return time.Duration(exptime) * time.Second, false
	}
}

// delete handles "delete <key> [0] [noreply]".
func (c *conn) delete(args [][]byte) error {
	noreply := len(args) > 1 && string(args[len(args)-1]) == "noreply"
	if noreply {
		args = args[:len(args)-1]
	}
	if len(args) == 2 && string(args[1]) == "0" {
		args = args[:1] // legacy hold time, as Apache's apr_memcache sends
	}
	if len(args) != 1 || !validKey(args[0]) {
		if !noreply {
			c.BW.WriteString("CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n")
		}
		return nil
	}
	c.s.cmdDelete.Add(1)
	ctx := c.Req.Begin()
	deleted, err := c.s.Cache.Delete(ctx, args[0])
	c.Req.End()
	if err != nil {
		return c.serverErrorUnless(noreply, err)
	}
	if noreply {
		return nil
	}
	if deleted {
		c.BW.WriteString("DELETED\r\n")
	} else {
		c.BW.WriteString("NOT_FOUND\r\n")
	}
	return nil
}

func (c *conn) serverErrorUnless(noreply bool, err error) error {
	if noreply {
		c.Log.Debug("memcache: cache call failed", "err", err)
		return nil
	}
	c.serverError(err)
	return nil
}

// serverError answers a failed Cache call; the stream stays in sync.
func (c *conn) serverError(err error) {
	c.Log.Debug("memcache: cache call failed", "err", err)
	c.BW.WriteString("SERVER_ERROR ")
	c.BW.WriteString(connset.ErrorText(err))
	c.BW.WriteString("\r\n")
}

func (c *conn) stats(args [][]byte) {
	if len(args) > 0 {
		// Sub-statistics (items, slabs, ...) have no meaning here.
		c.BW.WriteString("END\r\n")
		return
	}
	s := c.s
	now := time.Now()
	stat := func(name, value string) {
		c.BW.WriteString("STAT ")
		c.BW.WriteString(name)
		c.BW.WriteByte(' ')
		c.BW.WriteString(value)
		c.BW.WriteString("\r\n")
	}
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	stat("pid", strconv.Itoa(os.Getpid()))
	stat("uptime", strconv.FormatInt(int64(now.Sub(s.conns.Started())/time.Second), 10))
	stat("time", strconv.FormatInt(now.Unix(), 10))
	stat("version", cmpOr(s.Version, DefaultVersion))
	stat("curr_connections", strconv.Itoa(s.conns.Active()))
	stat("total_connections", u(s.conns.Total()))
	stat("rejected_connections", u(s.conns.Rejected()))
	stat("cmd_get", u(s.cmdGet.Load()))
	stat("cmd_set", u(s.cmdSet.Load()))
	stat("cmd_delete", u(s.cmdDelete.Load()))
	stat("get_hits", u(s.getHits.Load()))
	stat("get_misses", u(s.getMisses.Load()))
	stat("item_size_max", strconv.Itoa(c.maxValue))
	if sp, ok := s.Cache.(StatsProvider); ok {
		extra := sp.Stats()
		for _, k := range slices.Sorted(maps.Keys(extra)) {
			if validKey([]byte(k)) {
				stat(k, connset.OneLine(extra[k]))
			}
		}
	}
	c.BW.WriteString("END\r\n")
}

// parseUint parses a decimal number no larger than limit without allocating.
func parseUint(b []byte, limit uint64) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		d := uint64(ch - '0')
		if n > (limit-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// parseInt parses a signed decimal int64 without allocating.
func parseInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	n, ok := parseUint(b, math.MaxInt64)
	if !ok {
		return 0, false
	}
	if neg {
		return -int64(n), true
	}
	return int64(n), true
}

// ActiveConns reports how many client connections are open, for metrics.
func (s *Server) ActiveConns() int { return s.set().Active() }

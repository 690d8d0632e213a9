package sessiond

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distcache-replicated/distcache/internal/loglimit"
	"github.com/distcache-replicated/distcache/protocol/internal/connset"
)

// NoExpiry is the ttl passed to Cache.Set for a NEW with timeout 0 (stunnel
// never sends one in practice). The Cache maps it to the store's maximum
// lifetime. Every other ttl is positive and at most MaxTimeout seconds.
const NoExpiry time.Duration = math.MaxInt64

// Defaults used when the corresponding Server field is zero.
const (
	// DefaultKeyPrefix namespaces stunnel's sessions in the shared keyspace.
	DefaultKeyPrefix = "stunnel-sess:"
	// DefaultGetTimeout bounds a lookup. stunnel waits for the answer about
	// one kernel tick (it asks SO_RCVTIMEO for 200 µs), so a late answer is
	// useless and a slow one would delay every other lookup.
	DefaultGetTimeout = 20 * time.Millisecond
	// DefaultWriteTimeout bounds a NEW or REMOVE Cache call.
	DefaultWriteTimeout = 5 * time.Second
	// DefaultWorkers is how many NEW/REMOVE requests are applied concurrently.
	DefaultWorkers = 4
	// DefaultQueueLen is how many NEW/REMOVE requests may wait; beyond it
	// they are dropped (stunnel expects no answer and just loses resumption).
	DefaultQueueLen = 1024
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("sessiond: server closed")

// Cache is the storage the server needs; the node implements it over the
// replicated store. Keys and values passed in are only valid during the call.
//
// Get is called on the datagram read loop and must answer from local memory;
// it gets a GetTimeout deadline. Set and Delete run on worker goroutines and
// should return once the write is applied on this node, within WriteTimeout.
type Cache interface {
	Get(ctx context.Context, key []byte) (value []byte, ok bool, err error)
	Set(ctx context.Context, key, value []byte, ttl time.Duration) error
	Delete(ctx context.Context, key []byte) (deleted bool, err error)
}

// Server answers stunnel's sessiond UDP protocol over a Cache. The zero value
// with Cache set is ready to use; fields must not change once Serve is called.
// One Server serves one PacketConn.
type Server struct {
	Cache  Cache
	Logger *slog.Logger // nil: slog.Default()

	// KeyPrefix is prepended to the lowercase hex of the 32-byte zero-padded
	// session id to form the Cache key; empty: DefaultKeyPrefix.
	KeyPrefix    string
	GetTimeout   time.Duration // 0: DefaultGetTimeout
	WriteTimeout time.Duration // 0: DefaultWriteTimeout
	Workers      int           // 0: DefaultWorkers
	QueueLen     int           // 0: DefaultQueueLen

	initOnce sync.Once
	life     *connset.Group // the socket, Shutdown, Close, base context
	serving  atomic.Bool

	stats     counters
	malformed loglimit.Limiter // malformed datagrams (UDP sources can be forged)
	queueFull loglimit.Limiter // NEW/REMOVE dropped on a full queue
}

type counters struct {
	gets, hits, misses, news, removes, dropped, malformed, failed atomic.Uint64
}

// Stats are the server's cumulative counters, for metrics.
type Stats struct {
	Gets, Hits, Misses uint64
	News, Removes      uint64
	Dropped            uint64 // NEW/REMOVE dropped because the queue was full
	Malformed          uint64 // datagrams ignored as malformed
	Failed             uint64 // Cache calls that returned an error
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Gets: c.gets.Load(), Hits: c.hits.Load(), Misses: c.misses.Load(),
		News: c.news.Load(), Removes: c.removes.Load(),
		Dropped: c.dropped.Load(), Malformed: c.malformed.Load(), Failed: c.failed.Load(),
	}
}

// lifecycle returns the server's socket, Shutdown and Close, and base context,
// set up on first use so that a Server with its fields set is ready.
func (s *Server) lifecycle() *connset.Group {
	s.initOnce.Do(func() { s.life = connset.NewGroup("sessiond", s.Logger, ErrServerClosed) })
	return s.life
}

// job is a NEW or REMOVE waiting for a worker; key and value are its own copies.
type job struct {
	typ   byte
	ttl   time.Duration
	key   []byte
	value []byte
}

// Serve reads datagrams from conn until Shutdown or Close, answering GETs
// inline and queueing NEW/REMOVE for the workers. It closes conn and returns
// ErrServerClosed once the queued writes are drained (or cancelled).
func (s *Server) Serve(conn net.PacketConn) error {
	if s.Cache == nil {
		return errors.New("sessiond: Server.Cache is nil")
	}
	if s.serving.Swap(true) {
		return errors.New("sessiond: Serve called twice")
	}
	release, err := s.lifecycle().Open(conn)
	if err != nil {
		return err
	}
	defer release() // closes conn once the queued writes are drained

	queue := make(chan job, connset.Default(s.QueueLen, DefaultQueueLen))
	var wg sync.WaitGroup
	for range connset.Default(s.Workers, DefaultWorkers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range queue {
				s.apply(j)
			}
		}()
	}
	err = s.readLoop(conn, queue)
	close(queue)
	wg.Wait()
	return err
}

func (s *Server) readLoop(conn net.PacketConn, queue chan<- job) error {
	log := s.life.Log()
	prefix := s.KeyPrefix
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	getTimeout := connset.Default(s.GetTimeout, DefaultGetTimeout)
	buf := make([]byte, MaxPacketSize+1) // one spare byte detects oversized datagrams
	reply := make([]byte, 0, MaxPacketSize)
	key := make([]byte, 0, len(prefix)+2*IDSize)
	var backoff connset.Backoff
	for {
		n, addr, err := conn.ReadFrom(buf)
		if err != nil {
			switch {
			case s.life.Closing():
				return ErrServerClosed
			case errors.Is(err, net.ErrClosed):
				return fmt.Errorf("sessiond: read: %w", err)
			}
			// Everything else passes on a datagram socket (ICMP-induced
			// ECONNREFUSED, ENOBUFS, a timeout): keep serving.
			s.life.Pause(&backoff, "read", err)
			continue
		}
		backoff.Reset()
		p, err := Decode(buf[:n])
		if err == nil && p.Type != TypeNew && p.Type != TypeGet && p.Type != TypeRemove {
			err = fmt.Errorf("%w: %#02x is an answer, not a request", ErrType, p.Type)
		}
		if err != nil {
			s.stats.malformed.Add(1)
			s.reportMalformed(log, addr, n, err)
			continue
		}
		key = append(append(key[:0], prefix...), make([]byte, 2*IDSize)...)
		hex.Encode(key[len(prefix):], p.ID[:])

		switch p.Type {
		case TypeGet:
			reply = s.get(conn, addr, &p, key, reply[:0], getTimeout)
		case TypeNew, TypeRemove:
			j := job{typ: p.Type, ttl: ttlOf(p.Timeout)}
			b := make([]byte, len(key)+len(p.Value))
			j.key = b[:len(key):len(key)]
			copy(j.key, key)
			if p.Type == TypeNew {
				j.value = b[len(key):]
				copy(j.value, p.Value)
			}
			select {
			case queue <- j:
			default:
				s.stats.dropped.Add(1)
				if ok, suppressed := s.queueFull.Allow(time.Now()); ok {
					log.Warn("sessiond: write queue full; dropping request", "type", p.Type, "from", addr.String(),
						"key", string(key), "suppressed_since_last", suppressed)
				}
			}
		}
	}
}

// reportMalformed logs at most one line per second for malformed datagrams,
// so a flood cannot flood the log too.
func (s *Server) reportMalformed(log *slog.Logger, addr net.Addr, n int, err error) {
	ok, suppressed := s.malformed.Allow(time.Now())
	if !ok {
		return
	}
	log.Warn("sessiond: ignoring malformed datagram", "from", addr.String(), "bytes", n, "err", err,
		"suppressed_since_last", suppressed)
}

// ttlOf converts stunnel's timeout field to the Cache's ttl convention.
func ttlOf(timeout uint16) time.Duration {
	if timeout == 0 {
		return NoExpiry
	}
	return time.Duration(timeout) * time.Second
}

// get answers a GET at once: FOUND with the session, or NOT_FOUND on a miss,
// an error, a timeout or a value stunnel could not receive.
func (s *Server) get(conn net.PacketConn, addr net.Addr, p *Packet, key, reply []byte, timeout time.Duration) []byte {
	s.stats.gets.Add(1)
	ctx, cancel := context.WithTimeout(s.life.Context(), timeout)
	value, ok, err := s.Cache.Get(ctx, key)
	cancel()
	ans := Packet{Type: TypeNotFound, Timeout: p.Timeout, ID: p.ID}
	switch {
	case err != nil:
		s.stats.failed.Add(1)
		s.life.Log().Debug("sessiond: lookup failed; answering not found", "key", string(key), "err", err)
	case !ok:
	case len(value) == 0 || len(value) > MaxValueSize:
		s.life.Log().Warn("sessiond: stored session does not fit a datagram; answering not found",
			"key", string(key), "bytes", len(value))
	default:
		ans.Type, ans.Value = TypeFound, value
	}
	if ans.Type == TypeFound {
		s.stats.hits.Add(1)
	} else {
		s.stats.misses.Add(1)
	}
	reply = ans.Append(reply)
	if _, err := conn.WriteTo(reply, addr); err != nil {
		s.life.Log().Debug("sessiond: answer not sent", "to", addr.String(), "err", err)
	}
	return reply
}

func (s *Server) apply(j job) {
	ctx, cancel := context.WithTimeout(s.life.Context(), connset.Default(s.WriteTimeout, DefaultWriteTimeout))
	defer cancel()
	var err error
	if j.typ == TypeNew {
		s.stats.news.Add(1)
		err = s.Cache.Set(ctx, j.key, j.value, j.ttl)
	} else {
		s.stats.removes.Add(1)
		_, err = s.Cache.Delete(ctx, j.key)
	}
	if err != nil {
		s.stats.failed.Add(1)
		s.life.Log().Warn("sessiond: cache write failed", "type", j.typ, "key", string(j.key), "err", err)
	}
}

// Shutdown stops reading datagrams and waits until the queued NEW/REMOVE
// requests are applied. When ctx ends first, they are cancelled and ctx's
// error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.lifecycle().Shutdown(ctx, nil, nil)
}

// Close stops reading datagrams and cancels the queued requests' Cache calls.
func (s *Server) Close() error {
	s.lifecycle().Close(nil)
	return nil
}

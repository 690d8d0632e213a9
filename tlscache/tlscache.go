package tlscache

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// IDLen is the length of the random ticket id handed to clients.
const IDLen = 32

// keyPrefix namespaces Go sessions in the shared keyspace (Apache's live under
// "mod_ssl-sess:"); prefix plus id stays within distcache's 64-byte id limit.
const keyPrefix = "gotls:"

// Defaults used when the corresponding Cache field is zero.
const (
	DefaultTTL     = 5 * time.Minute
	DefaultTimeout = 250 * time.Millisecond
)

// Cache stores TLS sessions in a distcache cluster. Create it with New; its methods
// are safe for concurrent use by any number of handshakes.
type Cache struct {
	// TTL is how long a session may be resumed; default DefaultTTL.
	TTL time.Duration
	// Timeout bounds each cluster request, so a stalled node delays a handshake by
	// at most this much before it falls back to a full handshake; default
	// DefaultTimeout.
	Timeout time.Duration
	// SingleUse makes resumption consume the session (distcache TAKE), so a ticket
	// can be used once only: anti-replay for TLS 1.3. A client that resumes gets a
	// fresh ticket in the same handshake.
	SingleUse bool
	// Logger receives failures to reach the cluster (never session contents).
	Logger *slog.Logger

	addrs []string
	mu    sync.Mutex
	conns []*distcache.Client // one per address, dialled lazily
	next  int                 // index of the node currently preferred

	hits, misses, unavailable, badState, storeFailures atomic.Uint64
}

// Stats counts what became of the session lookups and stores of a Cache since
// New, for a server's metrics: a rising Unavailable means handshakes are going
// in full because the cluster cannot answer, not because tickets expired.
type Stats struct {
	// Hits are lookups that resumed a session.
	Hits uint64
	// Misses are lookups the cluster answered "not found": a ticket expired,
	// never stored, or (SingleUse) already used.
	Misses uint64
	// Unavailable are lookups no node could answer (distcache.ErrUnavailable:
	// no leader, quorum lost; or no node reachable). The handshake went on in
	// full; the session was neither resumed nor known to be gone, and with
	// SingleUse it may or may not have been consumed.
	Unavailable uint64
	// BadState are lookups whose stored state did not parse.
	BadState uint64
	// StoreFailures are sessions the cluster did not take; their tickets miss.
	StoreFailures uint64
}

// Stats returns the counters so far.
func (c *Cache) Stats() Stats {
	return Stats{
		Hits: c.hits.Load(), Misses: c.misses.Load(), Unavailable: c.unavailable.Load(),
		BadState: c.badState.Load(), StoreFailures: c.storeFailures.Load(),
	}
}

// New returns a Cache that talks to the given nodes (distcache addresses such as
// IP:127.0.0.1:9100 or UNIX:/run/dcnode/scache), preferring them in order and
// failing over to the next when one does not answer.
func New(addrs ...string) (*Cache, error) {
	if len(addrs) == 0 {
		return nil, errors.New("tlscache: no node addresses")
	}
	for _, a := range addrs {
		if _, err := distcache.ParseAddress(a); err != nil {
			return nil, fmt.Errorf("tlscache: %w", err)
		}
	}
	return &Cache{addrs: addrs, conns: make([]*distcache.Client, len(addrs))}, nil
}

// Install sets cfg's WrapSession and UnwrapSession so that cfg's sessions live in
// the cluster. It returns cfg for chaining.
func (c *Cache) Install(cfg *tls.Config) *tls.Config {
	cfg.WrapSession = c.WrapSession
	cfg.UnwrapSession = c.UnwrapSession
	return cfg
}

// WrapSession stores the session in the cluster and returns its id as the ticket.
func (c *Cache) WrapSession(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	state, err := ss.Bytes()
	if err != nil {
		return nil, err
	}
	id := make([]byte, IDLen)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	ttl := c.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	err = c.do(func(ctx context.Context, cl *distcache.Client) error {
		return cl.Add(ctx, key(id), state, ttl)
	})
	if err != nil {
		c.storeFailures.Add(1)
		c.logger().Warn("tlscache: session not stored; it will not resume", "err", err)
	}
	return id, nil
}

// UnwrapSession looks the ticket up in the cluster. Anything but a stored, parsable
// session resumes nothing: it returns nil, nil and the handshake goes on in full.
func (c *Cache) UnwrapSession(ticket []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
	if len(ticket) != IDLen {
		return nil, nil
	}
	var state []byte
	err := c.do(func(ctx context.Context, cl *distcache.Client) error {
		var err error
		if c.SingleUse {
			state, err = cl.Take(ctx, key(ticket))
		} else {
			state, err = cl.Get(ctx, key(ticket))
		}
		return err
	})
	switch {
	case errors.Is(err, distcache.ErrNotFound):
		c.misses.Add(1)
		return nil, nil
	case err != nil:
		// Not a miss: the cluster could not tell (ErrUnavailable) or no node
		// answered. Resume nothing; the session is not known to be gone.
		c.unavailable.Add(1)
		c.logger().Warn("tlscache: cluster unavailable for a session lookup; full handshake", "err", err)
		return nil, nil
	}
	ss, err := tls.ParseSessionState(state)
	if err != nil {
		c.badState.Add(1)
		c.logger().Warn("tlscache: stored session does not parse; full handshake", "err", err)
		return nil, nil
	}
	c.hits.Add(1)
	return ss, nil
}

// Close closes the connections to the cluster.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, cl := range c.conns {
		if cl != nil {
			cl.Close()
			c.conns[i] = nil
		}
	}
	return nil
}

func key(id []byte) []byte { return append([]byte(keyPrefix), id...) }

func (c *Cache) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// do runs f against the preferred node and, when the node cannot be reached or the
// request fails in transport, against the others in turn. Answers from a node
// (including "not found" and "exists") end the search: they are the cluster's answer.
func (c *Cache) do(f func(context.Context, *distcache.Client) error) error {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	var errs []error
	for range len(c.addrs) {
		i, cl, err := c.client(timeout)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			err = f(ctx, cl)
			cancel()
			if err == nil || isAnswer(err) {
				return err
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", c.addrs[i], err))
		c.failed(i)
	}
	return errors.Join(errs...)
}

// isAnswer tells a node's definite answer from a failure to get one
// (distcache.ErrUnavailable, or a transport error).
func isAnswer(err error) bool {
	var se *distcache.StatusError
	return errors.Is(err, distcache.ErrNotFound) || errors.Is(err, distcache.ErrExists) ||
		(errors.As(err, &se) && !errors.Is(err, distcache.ErrUnavailable))
}

// client returns the preferred node's client, dialling it if needed.
func (c *Cache) client(timeout time.Duration) (int, *distcache.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := c.next
	if c.conns[i] == nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cl, err := distcache.Dial(ctx, c.addrs[i])
		if err != nil {
			return i, nil, err
		}
		c.conns[i] = cl
	}
	return i, c.conns[i], nil
}

// failed drops node i's connection and moves the preference to the next node.
func (c *Cache) failed(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conns[i] != nil {
		c.conns[i].Close()
		c.conns[i] = nil
	}
	if c.next == i {
		c.next = (i + 1) % len(c.addrs)
	}
}

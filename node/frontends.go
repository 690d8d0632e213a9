package node

import (
	"context"
	"strconv"
	"time"

	"github.com/distcache-replicated/distcache/protocol/distcache"
	"github.com/distcache-replicated/distcache/protocol/memcache"
	"github.com/distcache-replicated/distcache/protocol/resp"
	"github.com/distcache-replicated/distcache/protocol/sessiond"
)

// The front-ends answer reads from memory on the connection's goroutine only if their
// Cache offers it: a signature that drifts would silently lose that.
var (
	_ distcache.QuickCache = distcacheCache{}
	_ memcache.QuickCache  = memcacheCache{}
	_ resp.QuickCache      = frontCache{}
)

// frontEnd builds the server for one bound listener: how to run it, how to stop it
// gracefully, and how many connections it holds.
func (n *Node) frontEnd(b boundListener) (serve func() error, shutdown func(context.Context) error, conns func() int) {
	lim := n.cfg.Limits
	log := n.log.With("protocol", protoNames[b.proto])
	fc := frontCache{n: n, proto: b.proto}
	switch b.proto {
	case protoDistcache:
		srv := &distcache.Server{Handler: distcache.NewCacheHandler(distcacheCache{fc}), Logger: log,
			MaxConns: lim.MaxConns, ReadTimeout: lim.ReadTimeout, IdleTimeout: lim.IdleTimeout}
		return func() error { return srv.Serve(b.ln) }, srv.Shutdown, srv.ActiveConns
	case protoMemcache:
		srv := &memcache.Server{Cache: memcacheCache{fc}, Logger: log, RequestTimeout: n.cfg.WriteTimeout,
			MaxConns: lim.MaxConns, ReadTimeout: lim.ReadTimeout, IdleTimeout: lim.IdleTimeout, MaxValueSize: lim.MaxValueSize}
		return func() error { return srv.Serve(b.ln) }, srv.Shutdown, srv.ActiveConns
	case protoRESP:
		srv := &resp.Server{Cache: fc, Logger: log, RequestTimeout: n.cfg.WriteTimeout,
			MaxConns: lim.MaxConns, ReadTimeout: lim.ReadTimeout, IdleTimeout: lim.IdleTimeout, MaxValueSize: lim.MaxValueSize}
		return func() error { return srv.Serve(b.ln) }, srv.Shutdown, srv.ActiveConns
	default:
		srv := &sessiond.Server{Cache: sessiondCache{fc}, Logger: log, KeyPrefix: "stunnel-sess:"}
		return func() error { return srv.Serve(b.pc) }, srv.Shutdown, func() int { return 0 }
	}
}

// frontCache adapts the Service to the front-ends' Cache interfaces for one protocol,
// counting every request for /metrics in one place, under the protocol's label. Its
// exported methods are RESP's Cache and most of distcache's and sessiond's; the few
// whose signatures differ by protocol are on distcacheCache, memcacheCache and
// sessiondCache, which embed it.
type frontCache struct {
	n     *Node
	proto int
}

func (f frontCache) observe(cmd, res int, start time.Time) {
	f.n.metrics.observe(f.proto, cmd, res, start)
}

// writeFailed counts a write that did not commit, by reason, and logs it at debug
// level (a node without quorum would otherwise flood the log).
func (f frontCache) writeFailed(cmd int, start time.Time, err error) {
	f.observe(cmd, resError, start)
	reason := "other"
	if isUnavailable(err) {
		reason = "unavailable"
	}
	f.n.metrics.writeErr.WithLabelValues(reason).Inc()
	f.n.log.Debug("write failed", "protocol", protoNames[f.proto], "command", cmdNames[cmd], "err", err)
}

func readResult(ok bool, err error) int {
	switch {
	case err != nil:
		return resError
	case ok:
		return resOK
	}
	return resMiss
}

func (f frontCache) get(ctx context.Context, key []byte) (Session, bool, error) {
	start := time.Now()
	s, ok, err := f.n.svc.Get(ctx, key)
	f.observe(cmdGet, readResult(ok, err), start)
	return s, ok, err
}

// Get reads a session with the node's read consistency.
func (f frontCache) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	s, ok, err := f.get(ctx, key)
	return s.Value, ok, err
}

// getNow answers a read from local memory when the node's read consistency allows
// it without waiting, and counts it under cmd.
func (f frontCache) getNow(key []byte, cmd int) (Session, bool, bool) {
	start := time.Now()
	s, ok, answered := f.n.svc.GetNow(key)
	if answered {
		f.observe(cmd, readResult(ok, nil), start)
	}
	return s, ok, answered
}

// GetNow serves GET hits (and misses under local reads) on the connection's reading
// goroutine, without a request context: see distcache.QuickCache and resp.QuickCache.
func (f frontCache) GetNow(key []byte) ([]byte, bool, bool) {
	s, ok, answered := f.getNow(key, cmdGet)
	return s.Value, ok, answered
}

// HaveNow is GetNow for HAVE.
func (f frontCache) HaveNow(key []byte) (bool, bool) {
	_, ok, answered := f.getNow(key, cmdHave)
	return ok, answered
}

// Have reports whether a live session exists.
func (f frontCache) Have(ctx context.Context, key []byte) (bool, error) {
	start := time.Now()
	ok, err := f.n.svc.Have(ctx, key)
	f.observe(cmdHave, readResult(ok, err), start)
	return ok, err
}

// Take reads a session and removes it in one replicated step.
func (f frontCache) Take(ctx context.Context, key []byte) ([]byte, bool, error) {
	start := time.Now()
	s, ok, err := f.n.svc.Take(ctx, key)
	if err != nil {
		f.writeFailed(cmdTake, start, err)
		return nil, false, err
	}
	f.observe(cmdTake, readResult(ok, nil), start)
	return s.Value, ok, nil
}

func (f frontCache) set(ctx context.Context, key, value []byte, flags uint32, ttl time.Duration) error {
	start := time.Now()
	if err := f.n.svc.Set(ctx, key, value, flags, capTTL(ttl)); err != nil {
		f.writeFailed(cmdSet, start, err)
		return err
	}
	f.observe(cmdSet, resOK, start)
	return nil
}

// Set stores a session, replacing any previous one.
func (f frontCache) Set(ctx context.Context, key, value []byte, ttl time.Duration) error {
	return f.set(ctx, key, value, 0, ttl)
}

// add stores a session unless a live one exists; ttl is passed on as given.
func (f frontCache) add(ctx context.Context, key, value []byte, flags uint32, ttl time.Duration) (bool, error) {
	start := time.Now()
	ok, err := f.n.svc.Add(ctx, key, value, flags, ttl)
	switch {
	case err != nil:
		f.writeFailed(cmdAdd, start, err)
	case !ok:
		f.observe(cmdAdd, resExists, start)
	default:
		f.observe(cmdAdd, resOK, start)
	}
	return ok, err
}

// Add stores a session unless a live one exists.
func (f frontCache) Add(ctx context.Context, key, value []byte, ttl time.Duration) (bool, error) {
	return f.add(ctx, key, value, 0, capTTL(ttl))
}

// Delete removes a session and reports whether a live one was there.
func (f frontCache) Delete(ctx context.Context, key []byte) (bool, error) {
	start := time.Now()
	ok, err := f.n.svc.Remove(ctx, key)
	if err != nil {
		f.writeFailed(cmdRemove, start, err)
		return false, err
	}
	f.observe(cmdRemove, readResult(ok, nil), start)
	return ok, nil
}

// Remove is Delete under distcache's name.
func (f frontCache) Remove(ctx context.Context, key []byte) (bool, error) { return f.Delete(ctx, key) }

// Stats adds the replica's figures to memcache's stats and Redis INFO (status pages).
func (f frontCache) Stats() map[string]string {
	st := f.n.store.Stats()
	cs := f.n.cluster.Status()
	return map[string]string{
		"curr_items":  strconv.FormatInt(st.Sessions, 10),
		"bytes":       strconv.FormatInt(st.PayloadBytes, 10),
		"evictions":   strconv.FormatUint(st.Evictions, 10),
		"raft_state":  cs.State,
		"raft_leader": cs.LeaderID,
		"node_id":     cs.ID,
	}
}

// capTTL maps "never expires" to the longest lifetime the store keeps.
func capTTL(ttl time.Duration) time.Duration {
	if ttl <= 0 || ttl > NoExpiry {
		return NoExpiry
	}
	return ttl
}

// distcacheCache is distcache's Cache: ADD answers a protocol status, and its
// timeout is passed to the store as the client gave it.
type distcacheCache struct{ frontCache }

func (d distcacheCache) Add(ctx context.Context, id, data []byte, timeout time.Duration) (distcache.Status, error) {
	ok, err := d.add(ctx, id, data, 0, timeout)
	switch {
	case err != nil:
		return distcache.StatusDisconnected, err
	case !ok:
		return distcache.StatusAddExists, nil
	}
	return distcache.StatusOK, nil
}

// memcacheCache is memcache's Cache, which stores memcached's flags word too.
type memcacheCache struct{ frontCache }

func (m memcacheCache) Get(ctx context.Context, key []byte) ([]byte, uint32, bool, error) {
	s, ok, err := m.get(ctx, key)
	return s.Value, s.Flags, ok, err
}

// GetNow is memcache.QuickCache's GetNow, with memcached's flags word.
func (m memcacheCache) GetNow(key []byte) ([]byte, uint32, bool, bool) {
	s, ok, answered := m.getNow(key, cmdGet)
	return s.Value, s.Flags, ok, answered
}

func (m memcacheCache) Set(ctx context.Context, key, value []byte, flags uint32, ttl time.Duration) error {
	return m.set(ctx, key, value, flags, ttl)
}

func (m memcacheCache) Add(ctx context.Context, key, value []byte, flags uint32, ttl time.Duration) (bool, error) {
	return m.add(ctx, key, value, flags, capTTL(ttl))
}

// sessiondCache is stunnel's sessiond Cache. stunnel waits only a few milliseconds
// for a GET answer, so GETs are always pure local reads here, whatever the node's
// read consistency, except that a GET of a key this node has just written and its
// replica not yet applied is read on the leader (read-your-writes, as in every mode);
// writes are replicated as usual.
type sessiondCache struct{ frontCache }

func (s sessiondCache) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	start := time.Now()
	sess, ok, err := s.n.svc.GetFresh(ctx, key)
	s.observe(cmdGet, readResult(ok, err), start)
	return sess.Value, ok, err
}

package node

import (
	"context"
	"strconv"
	"time"

	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// distcacheCache adapts the Service to the distcache protocol's Cache, counting every
// request for /metrics.
type distcacheCache struct{ n *Node }

func (d distcacheCache) Add(ctx context.Context, id, data []byte, timeout time.Duration) (distcache.Status, error) {
	start := time.Now()
	ok, err := d.n.svc.Add(ctx, id, data, 0, timeout)
	switch {
	case err != nil:
		d.n.writeFailed(protoDistcache, cmdAdd, start, err)
		return distcache.StatusDisconnected, err
	case !ok:
		d.n.metrics.observe(protoDistcache, cmdAdd, resExists, start)
		return distcache.StatusAddExists, nil
	}
	d.n.metrics.observe(protoDistcache, cmdAdd, resOK, start)
	return distcache.StatusOK, nil
}

func (d distcacheCache) Get(ctx context.Context, id []byte) ([]byte, bool, error) {
	start := time.Now()
	e, ok, err := d.n.svc.Get(ctx, id)
	d.n.metrics.observe(protoDistcache, cmdGet, readResult(ok, err), start)
	return e.value, ok, err
}

// GetNow serves GET and HAVE hits (and misses under local reads) on the
// connection's reading goroutine: see distcache.QuickCache.
func (d distcacheCache) GetNow(id []byte) ([]byte, bool, bool) {
	start := time.Now()
	e, ok, answered := d.n.svc.GetNow(id)
	if answered {
		d.n.metrics.observe(protoDistcache, cmdGet, readResult(ok, nil), start)
	}
	return e.value, ok, answered
}

// HaveNow is GetNow for HAVE.
func (d distcacheCache) HaveNow(id []byte) (bool, bool) {
	start := time.Now()
	_, ok, answered := d.n.svc.GetNow(id)
	if answered {
		d.n.metrics.observe(protoDistcache, cmdHave, readResult(ok, nil), start)
	}
	return ok, answered
}

func (d distcacheCache) Remove(ctx context.Context, id []byte) (bool, error) {
	start := time.Now()
	ok, err := d.n.svc.Remove(ctx, id)
	if err != nil {
		d.n.writeFailed(protoDistcache, cmdRemove, start, err)
		return false, err
	}
	d.n.metrics.observe(protoDistcache, cmdRemove, readResult(ok, nil), start)
	return ok, nil
}

func (d distcacheCache) Have(ctx context.Context, id []byte) (bool, error) {
	start := time.Now()
	ok, err := d.n.svc.Have(ctx, id)
	d.n.metrics.observe(protoDistcache, cmdHave, readResult(ok, err), start)
	return ok, err
}

func (d distcacheCache) Take(ctx context.Context, id []byte) ([]byte, bool, error) {
	start := time.Now()
	e, ok, err := d.n.svc.Take(ctx, id)
	if err != nil {
		d.n.writeFailed(protoDistcache, cmdTake, start, err)
		return nil, false, err
	}
	d.n.metrics.observe(protoDistcache, cmdTake, readResult(ok, nil), start)
	return e.value, ok, nil
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

// writeFailed counts a write that did not commit, by reason, and logs it at debug
// level (a node without quorum would otherwise flood the log).
func (n *Node) writeFailed(proto, cmd int, start time.Time, err error) {
	n.metrics.observe(proto, cmd, resError, start)
	reason := "other"
	if isUnavailable(err) {
		reason = "unavailable"
	}
	n.metrics.writeErr.WithLabelValues(reason).Inc()
	n.log.Debug("write failed", "protocol", protoNames[proto], "command", cmdNames[cmd], "err", err)
}

// frontEnd builds the server for one bound listener: how to run it, how to stop it
// gracefully, and how many connections it holds.
func (n *Node) frontEnd(b boundListener) (serve func() error, shutdown func(context.Context) error, conns func() int) {
	switch b.proto {
	case protoDistcache:
		lim := n.cfg.Limits
		srv := &distcache.Server{Handler: distcache.NewCacheHandler(distcacheCache{n}), Logger: n.log.With("protocol", "distcache"),
			MaxConns: lim.MaxConns, ReadTimeout: lim.ReadTimeout, IdleTimeout: lim.IdleTimeout}
		return func() error { return srv.Serve(b.ln) }, srv.Shutdown, srv.ActiveConns
	}
	return n.frontEndOther(b)
}

// memcacheCache adapts the Service to the memcache front-end.
type memcacheCache struct{ n *Node }

func (m memcacheCache) Get(ctx context.Context, key []byte) ([]byte, uint32, bool, error) {
	start := time.Now()
	e, ok, err := m.n.svc.Get(ctx, key)
	m.n.metrics.observe(protoMemcache, cmdGet, readResult(ok, err), start)
	return e.value, e.flags, ok, err
}

func (m memcacheCache) Set(ctx context.Context, key, value []byte, flags uint32, ttl time.Duration) error {
	return m.set(ctx, protoMemcache, key, value, flags, ttl)
}

func (m memcacheCache) Add(ctx context.Context, key, value []byte, flags uint32, ttl time.Duration) (bool, error) {
	return m.add(ctx, protoMemcache, key, value, flags, ttl)
}

func (m memcacheCache) Delete(ctx context.Context, key []byte) (bool, error) {
	return m.delete(ctx, protoMemcache, key)
}

// set, add and delete are shared by the memcache and RESP front-ends, which differ
// only in the protocol label and in memcache's flags word.
func (m memcacheCache) set(ctx context.Context, proto int, key, value []byte, flags uint32, ttl time.Duration) error {
	start := time.Now()
	if err := m.n.svc.Set(ctx, key, value, flags, capTTL(ttl)); err != nil {
		m.n.writeFailed(proto, cmdSet, start, err)
		return err
	}
	m.n.metrics.observe(proto, cmdSet, resOK, start)
	return nil
}

func (m memcacheCache) add(ctx context.Context, proto int, key, value []byte, flags uint32, ttl time.Duration) (bool, error) {
	start := time.Now()
	ok, err := m.n.svc.Add(ctx, key, value, flags, capTTL(ttl))
	switch {
	case err != nil:
		m.n.writeFailed(proto, cmdAdd, start, err)
	case !ok:
		m.n.metrics.observe(proto, cmdAdd, resExists, start)
	default:
		m.n.metrics.observe(proto, cmdAdd, resOK, start)
	}
	return ok, err
}

func (m memcacheCache) delete(ctx context.Context, proto int, key []byte) (bool, error) {
	start := time.Now()
	ok, err := m.n.svc.Remove(ctx, key)
	if err != nil {
		m.n.writeFailed(proto, cmdRemove, start, err)
		return false, err
	}
	m.n.metrics.observe(proto, cmdRemove, readResult(ok, nil), start)
	return ok, nil
}

// Stats adds the replica's figures to memcache's stats output (status pages).
func (m memcacheCache) Stats() map[string]string { return m.n.frontEndStats() }

// frontEndStats are the figures that memcache "stats" and Redis INFO add.
func (n *Node) frontEndStats() map[string]string {
	st := n.store.Stats()
	cs := n.cluster.Status()
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

// respCache adapts the Service to the Redis RESP front-end.
type respCache struct{ n *Node }

func (r respCache) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	start := time.Now()
	e, ok, err := r.n.svc.Get(ctx, key)
	r.n.metrics.observe(protoRESP, cmdGet, readResult(ok, err), start)
	return e.value, ok, err
}

func (r respCache) Set(ctx context.Context, key, value []byte, ttl time.Duration) error {
	return memcacheCache(r).set(ctx, protoRESP, key, value, 0, ttl)
}

func (r respCache) Add(ctx context.Context, key, value []byte, ttl time.Duration) (bool, error) {
	return memcacheCache(r).add(ctx, protoRESP, key, value, 0, ttl)
}

func (r respCache) Delete(ctx context.Context, key []byte) (bool, error) {
	return memcacheCache(r).delete(ctx, protoRESP, key)
}

// Stats adds the replica's figures to INFO (status pages).
func (r respCache) Stats() map[string]string { return r.n.frontEndStats() }

// sessiondCache adapts the Service to stunnel's sessiond. stunnel waits only a few
// milliseconds for a GET answer, so GETs are always pure local reads here, whatever
// the node's read consistency; writes are replicated as usual.
type sessiondCache struct{ n *Node }

func (s sessiondCache) Get(_ context.Context, key []byte) ([]byte, bool, error) {
	start := time.Now()
	v, _, _, ok := s.n.store.Get(key, start)
	s.n.metrics.observe(protoSessiond, cmdGet, readResult(ok, nil), start)
	return v, ok, nil
}

func (s sessiondCache) Set(ctx context.Context, key, value []byte, ttl time.Duration) error {
	return memcacheCache(s).set(ctx, protoSessiond, key, value, 0, ttl)
}

func (s sessiondCache) Delete(ctx context.Context, key []byte) (bool, error) {
	return memcacheCache(s).delete(ctx, protoSessiond, key)
}

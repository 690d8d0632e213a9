package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// Cluster is one node of a Raft-replicated state machine: it owns raft, its
// bolt and snapshot stores, the cluster port (raft transport and forwarding
// RPC), gossip discovery, bootstrap and membership reconciliation.
type Cluster struct {
	cfg        Config
	id         string
	log        *slog.Logger
	raft       *raft.Raft
	fsm        *appliedFSM
	logs       raft.LogStore    // bolt or in-memory, sealed when DataKeys are set
	stable     raft.StableStore // term and vote: no secrets, never sealed
	closeStore func() error
	snaps      raft.SnapshotStore
	trans      *raft.NetworkTransport
	mux        *mux
	gossip     *gossip
	batch      *batcher
	// leaderReads and forwardedReads let concurrent linearizable reads share
	// one read-index round: on the leader, one quorum check; on a follower,
	// one round trip to the leader.
	leaderReads, forwardedReads *readIndexGroup
	server                      *rpcServer
	client                      *rpcClient
	keyring                     *keyringState

	ready      atomic.Pointer[leaderReady] // current leadership term's readiness
	tombMu     sync.Mutex
	tombstones map[string]time.Time // operator-removed ids not to re-add while alive

	closing   atomic.Bool
	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// leaderReady is closed once the leader has committed an entry of its term
// (a barrier), after which its commit index is a valid read index.
type leaderReady struct{ ch chan struct{} }

// Open starts raft, the cluster port, gossip, joining and the bootstrap
// logic. It does not wait for a leader (see WaitForLeader).
func Open(ctx context.Context, cfg Config) (*Cluster, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if !cfg.InMemory {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("cluster: create data dir: %w", err)
		}
	}
	id := cfg.NodeID
	switch {
	case cfg.InMemory:
		var err error
		if id, err = newNodeID(); err != nil {
			return nil, err
		}
	case id == "":
		var err error
		if id, err = LoadOrCreateNodeID(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	log := cfg.Logger.With("node", id)
	c := &Cluster{cfg: cfg, id: id, log: log, tombstones: make(map[string]time.Time), done: make(chan struct{}),
		keyring: &keyringState{}}
	c.leaderReads = &readIndexGroup{c: c, fetch: c.readIndex}
	c.forwardedReads = &readIndexGroup{c: c, fetch: c.leaderReadIndex}

	ok := false
	var cleanups []func()
	defer func() {
		if !ok {
			for i := len(cleanups) - 1; i >= 0; i-- {
				cleanups[i]()
			}
		}
	}()

	if err := c.openStores(); err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() { c.closeStore() })
	store, snaps := c.logs, c.snaps

	m, err := newMux(cfg.RaftAddr, cfg.AdvertiseRaftAddr, cfg.TLS, log)
	if err != nil {
		return nil, err
	}
	c.mux = m
	cleanups = append(cleanups, func() { m.close(); m.wait() })
	c.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  newRaftLayer(m),
		MaxPool: 3,
		// 1 disables raft's pipelined replication: with the default (2) its
		// unbuffered pipeline channels can deadlock after a rejected append
		// (replication to that follower stops and Shutdown hangs); batching
		// (BatchApplyCh, MaxAppendEntries, group commit) gives the throughput.
		MaxRPCsInFlight: 1,
		Timeout:         10 * time.Second,
		Logger:          newHCLogger(log, "raft-net"),
	})
	cleanups = append(cleanups, func() { c.trans.Close() })

	c.fsm = newAppliedFSM(cfg.FSM, snaps)
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(id)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	rc.ShutdownOnRemove = false // a removed node may be re-added after Join
	rc.NoLegacyTelemetry = true
	rc.Logger = newHCLogger(log, "raft")
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("cluster: raft config: %w", err)
	}
	hasState, err := raft.HasExistingState(store, c.stable, snaps)
	if err != nil {
		return nil, fmt.Errorf("cluster: inspect raft state: %w", err)
	}
	r, err := raft.NewRaft(rc, c.fsm, store, c.stable, snaps, c.trans)
	if err != nil {
		return nil, fmt.Errorf("cluster: start raft: %w", err)
	}
	c.raft = r
	cleanups = append(cleanups, func() { r.Shutdown().Error() })

	c.server = newRPCServer(c.handleRPC, log)
	c.client = newRPCClient(func(ctx context.Context, addr string) (net.Conn, error) {
		return m.dial(ctx, addr, kindForward)
	}, log)
	m.onForward = c.server.serveConn
	m.serve()
	cleanups = append(cleanups, func() { c.server.close(); c.client.close() })

	meta := make(map[string]string, len(cfg.Meta)+3)
	for k, v := range cfg.Meta {
		meta[k] = v
	}
	meta[metaRaftAddr] = m.advertise.String()
	meta[metaExpect] = strconv.Itoa(cfg.BootstrapExpect)
	if hasState {
		meta[metaInCluster] = "1"
	}
	keyring, err := c.openKeyring()
	if err != nil {
		return nil, err
	}
	g, err := newGossip(id, cfg.GossipAddr, meta, keyring, cfg, log)
	if err != nil {
		return nil, err
	}
	c.gossip = g

	c.batch = newBatcher(r, cfg)
	c.wg.Add(5)
	go func() { defer c.wg.Done(); c.batch.run() }()
	go func() { defer c.wg.Done(); c.skipLoop() }()
	go func() { defer c.wg.Done(); c.leaderLoop() }()
	go func() { defer c.wg.Done(); c.reconcileLoop() }()
	go func() { defer c.wg.Done(); c.joinLoop(hasState) }()
	ok = true
	log.Info("cluster node started", "raft_addr", m.advertise.String(), "gossip_addr", g.localAddr(),
		"existing_state", hasState, "bootstrap_expect", cfg.BootstrapExpect,
		"storage", storageKind(cfg), "cluster_tls", cfg.TLS != nil, "gossip_encrypted", keyring != nil)
	return c, nil
}

func storageKind(cfg Config) string {
	switch {
	case cfg.InMemory:
		return "in-memory"
	case len(cfg.DataKeys) > 0:
		return "disk, sealed (key " + cfg.DataKeys[0].ID + ")"
	}
	return "disk, plaintext"
}

// openStores opens the log, stable and snapshot stores: in memory, or bolt
// and files under DataDir, sealed below raft when DataKeys are set.
func (c *Cluster) openStores() error {
	cfg := c.cfg
	if cfg.InMemory {
		m := raft.NewInmemStore()
		c.logs, c.stable, c.snaps = m, m, raft.NewInmemSnapshotStore()
		c.closeStore = func() error { return nil }
		return nil
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{
		Path:   filepath.Join(cfg.DataDir, "raft.db"),
		NoSync: cfg.NoSync,
		// The freelist is not written on every commit (it is rebuilt by a scan
		// when the file is opened) and is kept as a hash map: once raft
		// truncates its log, an array freelist written per commit grows with
		// the number of free pages and every commit pays for it.
		BoltOptions: &bbolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType},
	})
	if errors.Is(err, bbolt.ErrTimeout) {
		return fmt.Errorf("cluster: open raft.db: %w: another process holds %s (is a dcnode already running on this data dir?)", err, cfg.DataDir)
	}
	if err != nil {
		return fmt.Errorf("cluster: open raft.db: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, newHCLogger(c.log, "snapshot"))
	if err != nil {
		bolt.Close()
		return fmt.Errorf("cluster: open snapshot store: %w", err)
	}
	c.logs, c.stable, c.snaps, c.closeStore = bolt, bolt, snaps, bolt.Close
	if len(cfg.DataKeys) > 0 {
		s, err := newSealer(cfg.DataKeys)
		if err != nil {
			bolt.Close()
			return err
		}
		c.logs = &sealedLogStore{LogStore: bolt, s: s}
		c.snaps = &sealedSnapshotStore{inner: snaps, s: s, dir: cfg.DataDir}
	}
	// The newest entries are served from memory: replication to a follower that
	// is a few entries behind and the read path's look at entries just applied
	// would otherwise read them back from bolt (and unseal them). Entries are at
	// most MaxBatchBytes, so the cache holds at most logCacheEntries of those.
	cached, err := raft.NewLogCache(logCacheEntries, c.logs)
	if err != nil {
		bolt.Close()
		return fmt.Errorf("cluster: log cache: %w", err)
	}
	c.logs = cached
	return nil
}

// logCacheEntries is the number of newest log entries kept in memory.
const logCacheEntries = 64

// ID returns this node's id.
func (c *Cluster) ID() string { return c.id }

// RaftAddr returns the advertised cluster-port address.
func (c *Cluster) RaftAddr() string { return c.mux.advertise.String() }

// GossipAddr returns the bound gossip address (with the port memberlist
// picked when 0 was asked for), for others' Join lists.
func (c *Cluster) GossipAddr() string { return c.gossip.localAddr() }

// Raft exposes the raft instance for metrics and diagnostics.
func (c *Cluster) Raft() *raft.Raft { return c.raft }

// IsLeader reports whether this node is the Raft leader right now.
func (c *Cluster) IsLeader() bool { return c.raft.State() == raft.Leader }

// Leader returns the current leader's id and raft address ("" if unknown).
func (c *Cluster) Leader() (id, raftAddr string) {
	addr, lid := c.raft.LeaderWithID()
	return string(lid), string(addr)
}

// WaitForLeader blocks until a leader is known or ctx ends.
func (c *Cluster) WaitForLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if id, _ := c.Leader(); id != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: waiting for a leader: %w", ErrNoLeader, ctx.Err())
		case <-c.done:
			return ErrClosed
		case <-t.C:
		}
	}
}

func (c *Cluster) writeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= c.cfg.WriteTimeout {
		return ctx, func() {} // already bounded at least as tightly: no second timer
	}
	return context.WithTimeout(ctx, c.cfg.WriteTimeout)
}

// Propose replicates cmd and returns its FSM result once the entry holding it
// has been applied on THIS node, so a local read right after sees it. Any
// node accepts proposals; followers forward them to the leader. It fails with
// ErrNoLeader at once when no leader is known, and with ErrTimeout (outcome
// unknown) when the write timeout passes.
func (c *Cluster) Propose(ctx context.Context, cmd []byte) ([]byte, error) {
	if c.closing.Load() {
		return nil, ErrClosed
	}
	ctx, cancel := c.writeCtx(ctx)
	defer cancel()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			// The leader just changed: give the new one a moment to appear.
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %w (after %w)", ErrTimeout, ctx.Err(), lastErr)
			}
		}
		if c.IsLeader() {
			res, _, err := c.batch.submit(ctx, cmd)
			if errors.Is(err, ErrNotLeader) {
				lastErr = err
				continue
			}
			return res, err
		}
		lid, addr := c.Leader()
		if addr == "" || lid == c.id {
			return nil, ErrNoLeader
		}
		out, err := c.client.call(ctx, addr, rpcPropose, cmd)
		if err != nil {
			if errors.Is(err, ErrNotLeader) {
				lastErr = err
				continue
			}
			if errors.Is(err, errConnBroken) {
				return nil, fmt.Errorf("%w: leader %s unreachable: %w", ErrNoLeader, lid, err)
			}
			return nil, err
		}
		if len(out) < 8 {
			return nil, fmt.Errorf("cluster: short propose answer from %s", lid)
		}
		idx := binary.BigEndian.Uint64(out)
		if err := c.fsm.waitApplied(ctx, idx, nil); err != nil {
			return nil, err
		}
		return out[8:], nil
	}
	return nil, lastErr
}

// skipLoop advances the FSM's applied index over committed entries that
// never reach the FSM (the leader's no-op, barriers) while anyone waits for a
// later index: a read index often points at one. Raft gives no signal when it
// passes them, so one goroutine polls for all waiters, only while there are
// waiters.
func (c *Cluster) skipLoop() {
	t := time.NewTicker(2 * time.Millisecond) // idle costs nothing: nobody receives
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-c.fsm.waiting:
		}
		for {
			cur, waited := c.fsm.appliedIndex()
			if !waited {
				break
			}
			c.skipNonFSM(cur)
			select {
			case <-c.done:
				return
			case <-t.C:
			}
		}
	}
}

// skipNonFSM advances the applied index past the entries after cur that
// raft has processed and the FSM never sees.
func (c *Cluster) skipNonFSM(cur uint64) {
	last, end := c.raft.AppliedIndex(), cur
	var l raft.Log
	for j := cur + 1; j <= last; j++ {
		if err := c.logs.GetLog(j, &l); err != nil || l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			break
		}
		end = j
	}
	c.fsm.skip(cur, end)
}

// await waits for a raft future from one of the cluster's own loops, giving up
// when the cluster closes: raft v1.7.3 never answers a Barrier, AddVoter,
// RemoveServer or Bootstrap future that was queued but not yet processed when
// raft shut down, and waiting on one would hang Close.
func (c *Cluster) await(f raft.Future) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := waitFuture(ctx, f); err != nil {
		if ctx.Err() != nil && errors.Is(err, ErrTimeout) {
			return ErrClosed
		}
		return err
	}
	return nil
}

// waitFuture waits for a raft future, bounded by ctx.
func waitFuture(ctx context.Context, f raft.Future) error {
	ch := make(chan error, 1)
	go func() { ch <- f.Error() }()
	select {
	case err := <-ch:
		return mapRaftErr(err)
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
	}
}

// QueryLeader runs cfg.Query on the leader (locally when this node leads).
// With no leader known it fails at once with ErrNoLeader, so a
// leader-on-miss read degrades to a miss instead of hanging.
func (c *Cluster) QueryLeader(ctx context.Context, q []byte) ([]byte, error) {
	if c.cfg.Query == nil {
		return nil, errors.New("cluster: no Query function configured")
	}
	if c.closing.Load() {
		return nil, ErrClosed
	}
	if c.IsLeader() {
		return c.cfg.Query(q)
	}
	lid, addr := c.Leader()
	if addr == "" || lid == c.id {
		return nil, ErrNoLeader
	}
	ctx, cancel := c.writeCtx(ctx)
	defer cancel()
	out, err := c.client.call(ctx, addr, rpcQuery, q)
	if errors.Is(err, errConnBroken) {
		return nil, fmt.Errorf("%w: leader %s unreachable: %w", ErrNoLeader, lid, err)
	}
	return out, err
}

// handleRPC serves forwarding requests from other nodes.
func (c *Cluster) handleRPC(ctx context.Context, typ byte, payload []byte) ([]byte, error) {
	if c.closing.Load() && typ != rpcStatus {
		return nil, ErrClosed
	}
	switch typ {
	case rpcPropose:
		if !c.IsLeader() {
			return nil, ErrNotLeader
		}
		res, idx, err := c.batch.submit(ctx, payload)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 8, 8+len(res))
		binary.BigEndian.PutUint64(out, idx)
		return append(out, res...), nil
	case rpcReadIndex:
		idx, err := c.leaderReads.get(ctx)
		if err != nil {
			return nil, err
		}
		return binary.BigEndian.AppendUint64(nil, idx), nil
	case rpcQuery:
		if !c.IsLeader() {
			return nil, ErrNotLeader
		}
		if c.cfg.Query == nil {
			return nil, errors.New("no Query function configured")
		}
		return c.cfg.Query(payload)
	case rpcRemove:
		return nil, c.removeOnLeader(ctx, string(payload))
	case rpcTransfer:
		return nil, c.transferOnLeader(ctx, string(payload))
	case rpcStatus:
		out := binary.BigEndian.AppendUint64(nil, c.raft.LastIndex())
		lc := int64(-1)
		if t := c.raft.LastContact(); !t.IsZero() {
			lc = time.Since(t).Milliseconds()
		}
		return binary.BigEndian.AppendUint64(out, uint64(lc)), nil
	case rpcKeyring:
		return c.handleKeyring(payload)
	case rpcRemoved:
		c.log.Warn("removed from the cluster by the leader; leaving gossip (Join to come back)")
		if err := c.gossip.leave(time.Second); err != nil {
			c.log.Warn("leaving gossip after removal", "err", err)
		}
		return nil, nil
	}
	return nil, fmt.Errorf("unknown request type %q", typ)
}

package cluster

import (
	"context"
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

	"github.com/distcache-replicated/distcache/cluster/gossip"
	"github.com/distcache-replicated/distcache/cluster/mux"
	"github.com/hashicorp/raft"
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
	logStore   string // LogStoreWAL or LogStoreBolt; "" in memory
	snaps      raft.SnapshotStore
	trans      *raft.NetworkTransport
	mux        *mux.Mux
	gossip     *gossip.Gossip
	batch      *batcher
	// leaderReads and forwardedReads let concurrent linearizable reads share
	// one read-index round: on the leader, one quorum check; on a follower,
	// one round trip to the leader.
	leaderReads, forwardedReads *readIndexGroup
	server                      *rpcServer
	client                      *rpcClient
	keyring                     *gossip.Keyring

	leaders      leaderHistory               // recent changes of leader, for operators
	ready        atomic.Pointer[leaderReady] // current leadership term's readiness
	progress     catchUp                     // see Ready
	start        *startCatchUp               // reads wait for it after a start: see catchup.go
	disk         diskHealth                  // see Ready
	reconcileNow chan struct{}               // capacity 1: reconcile without waiting for the interval
	tombMu       sync.Mutex
	tombstones   map[string]time.Time // operator-removed ids not to re-add while alive

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
		reconcileNow: make(chan struct{}, 1)}
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

	keyringPath := ""
	if !cfg.InMemory {
		keyringPath = filepath.Join(cfg.DataDir, keyringFile)
	}
	ring, err := gossip.OpenKeyring(keyringPath, cfg.GossipKeys, log)
	if err != nil {
		return nil, err
	}
	c.keyring = ring

	if err := c.openStores(); err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() { c.closeStore() })
	c.logs = watchedLogStore{LogStore: c.logs, health: &c.disk}
	store, snaps := c.logs, c.snaps

	m, err := mux.Listen(cfg.RaftAddr, cfg.AdvertiseRaftAddr, cfg.TLS, log)
	if err != nil {
		return nil, err
	}
	c.mux = m
	cleanups = append(cleanups, func() { m.Close(); m.Wait() })
	c.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  m.RaftLayer(),
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

	c.fsm = newAppliedFSM(cfg.StateMachine, snaps)
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
	if err := c.recoverIfAsked(rc, hasState, m.Advertise().String()); err != nil {
		return nil, err
	}
	r, err := raft.NewRaft(rc, c.fsm, store, c.stable, snaps, c.trans)
	if err != nil {
		return nil, fmt.Errorf("cluster: start raft: %w", err)
	}
	c.raft = r
	c.start = newStartCatchUp(r.LastIndex())
	cleanups = append(cleanups, func() { r.Shutdown().Error() })

	c.server = newRPCServer(c.handleRPC, log)
	c.client = newRPCClient(func(ctx context.Context, addr string) (net.Conn, error) {
		return m.Dial(ctx, addr, mux.KindForward)
	}, log)
	m.Serve(c.server.serveConn)
	cleanups = append(cleanups, func() { c.server.close(); c.client.close() })

	meta := make(map[string]string, len(cfg.Meta)+3)
	for k, v := range cfg.Meta {
		meta[k] = v
	}
	meta[metaRaftAddr] = m.Advertise().String()
	meta[metaExpect] = strconv.Itoa(cfg.BootstrapExpect)
	if hasState {
		meta[metaInCluster] = "1"
	}
	g, err := gossip.New(gossip.Config{
		NodeID:        id,
		BindAddr:      cfg.GossipAddr,
		Meta:          meta,
		EssentialMeta: []string{metaRaftAddr, metaExpect, metaInCluster},
		Keyring:       ring,
		ProbeInterval: cfg.GossipProbeInterval,
		ProbeTimeout:  cfg.GossipProbeTimeout,
		Logger:        log,
	})
	if err != nil {
		return nil, err
	}
	c.gossip = g

	c.batch = newBatcher(r, cfg)
	c.watchLeaders()
	c.wg.Add(7)
	go func() { defer c.wg.Done(); c.catchUpLoop() }()
	go func() { defer c.wg.Done(); c.batch.run() }()
	go func() { defer c.wg.Done(); c.readyLoop() }()
	go func() { defer c.wg.Done(); c.skipLoop() }()
	go func() { defer c.wg.Done(); c.leaderLoop() }()
	go func() { defer c.wg.Done(); c.reconcileLoop() }()
	go func() { defer c.wg.Done(); c.joinLoop(hasState) }()
	ok = true
	log.Info("cluster node started", "raft_addr", m.Advertise().String(), "gossip_addr", g.LocalAddr(),
		"existing_state", hasState, "bootstrap_expect", cfg.BootstrapExpect,
		"storage", storageKind(cfg), "log_store", c.logStore, "cluster_tls", cfg.TLS != nil, "gossip_encrypted", ring.Enabled())
	return c, nil
}

// ID returns this node's id.
func (c *Cluster) ID() string { return c.id }

// RaftAddr returns the advertised cluster-port address.
func (c *Cluster) RaftAddr() string { return c.mux.Advertise().String() }

// GossipAddr returns the bound gossip address (with the port memberlist
// picked when 0 was asked for), for others' Join lists.
func (c *Cluster) GossipAddr() string { return c.gossip.LocalAddr() }

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

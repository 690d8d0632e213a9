package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/distcache-replicated/distcache/cluster/atrest"
)

// Sentinel errors returned (wrapped with %w) by Cluster methods. Callers test
// them with errors.Is; the wrapping message carries the detail.
var (
	// ErrNoLeader means no leader is known right now (election in progress or
	// no quorum). Nothing was written; the caller may retry later.
	ErrNoLeader = errors.New("cluster: no leader")
	// ErrNotLeader means the operation must run on the leader and this node is
	// not it (for calls that are not forwarded, or a leader that just stepped
	// down before accepting the work). Nothing was written.
	ErrNotLeader = errors.New("cluster: not the leader")
	// ErrTimeout means the deadline passed before the operation completed. For
	// a write the outcome is unknown: it may still be committed later.
	ErrTimeout = errors.New("cluster: timeout")
	// ErrLeadershipLost means the leader lost its role while the write was in
	// flight. As with ErrTimeout the outcome is unknown.
	ErrLeadershipLost = errors.New("cluster: leadership lost while writing")
	// ErrClosed means the Cluster has been closed (or is closing).
	ErrClosed = errors.New("cluster: closed")
	// ErrUnknownServer means an operator named a server id that is not in the
	// Raft configuration. Nothing was changed.
	ErrUnknownServer = errors.New("not in the Raft configuration")
	// ErrNotVoter means leadership was to go to a server that cannot lead (a
	// non-voter). Nothing was changed.
	ErrNotVoter = errors.New("not a voter")
	// ErrBadSnapshot means a snapshot given to SnapshotRestore was not written
	// by SnapshotSave. Nothing was changed.
	ErrBadSnapshot = errors.New("cluster: not a snapshot written by SnapshotSave")
	// ErrJoinUnreachable means a join reached none of the addresses it was
	// given: wrong addresses, a gossip port that is not reachable from here,
	// or a gossip key that does not match. Nothing was changed.
	ErrJoinUnreachable = errors.New("cluster: join reached no member")
)

// Config describes one node of the cluster. Zero values of the tunables get
// LAN defaults (see withDefaults); tests use smaller timeouts.
type Config struct {
	// NodeID is this node's identity in Raft and gossip. "" means
	// LoadOrCreateNodeID(DataDir): random, persisted, never the hostname
	// (which collides in containers).
	NodeID string
	// DataDir holds the log store (wal/ or raft.db: Raft's log and stable
	// store), snapshots/ and node-id.
	DataDir string
	// RaftAddr is the host:port of the cluster port (Raft and forwarding,
	// multiplexed by the first byte of each connection). Port 0 picks one.
	RaftAddr string
	// AdvertiseRaftAddr is the address other nodes dial; "" means the bound
	// address (which must then be reachable, i.e. not 0.0.0.0).
	AdvertiseRaftAddr string
	// GossipAddr is host:port for memberlist (TCP and UDP). Port 0 picks one.
	GossipAddr string
	// Join lists gossip addresses of other nodes; joining is tried before any
	// bootstrap decision, so one command line serves first start and restart.
	Join []string
	// BootstrapExpect is the number of servers to wait for before the first
	// configuration is bootstrapped. 0 = never bootstrap (join a cluster).
	BootstrapExpect int
	// Meta is extra metadata gossiped with the node (client addresses etc.).
	// The whole encoded metadata must fit in 512 bytes.
	Meta map[string]string
	// StateMachine is what is replicated. It is wrapped to track the applied
	// index; a raft.BatchingFSM keeps its batching.
	StateMachine StateMachine
	// Logger receives structured logs; raft and memberlist logs are routed
	// into it. nil = slog.Default().
	Logger *slog.Logger
	// TLS, when set, wraps every cluster connection (accepted and dialed) in
	// mutual TLS; nil = plaintext. It must carry both the certificate and the
	// CA pool, and ClientAuth for the server side.
	TLS *tls.Config

	// HeartbeatTimeout, ElectionTimeout and LeaderLeaseTimeout are raft's
	// failure-detection timings; defaults 500ms, 500ms and half the heartbeat
	// timeout. After a SIGKILL of the leader, writes resumed in 1.27s (median
	// of 5). 300/300/150ms resumed in 0.65s but elected spuriously under full
	// load on a 2-core host oversubscribed by other work (load average
	// 11-22), where 500ms did not (bench/run.sh failover; BENCHMARKS.md).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// CommitTimeout is how often the leader sends the commit index to a
	// follower when no new entries go out (raft randomises it up to twice
	// that); default 50ms. A write through a follower is answered on the
	// leader's commit (ProposeCommitted), so this no longer adds to its
	// latency; it only bounds how long a follower's replica trails the
	// leader when writes stop, i.e. how long a read of a key this node just
	// wrote may wait (read-your-writes) and how stale a local read elsewhere
	// is. At 1ms (before issue 12) it cost an idle 3-node cluster 14 % of a
	// core on the leader and 5.5 % on each follower.
	CommitTimeout     time.Duration
	SnapshotThreshold uint64        // raft; default 16384 entries
	SnapshotInterval  time.Duration // raft; default 30s
	TrailingLogs      uint64        // raft; default 10240 entries
	// WriteTimeout bounds every Propose (and forwarded RPC); default 2s.
	WriteTimeout time.Duration
	// MaxBatch is the maximum number of commands packed in one entry; default 512.
	MaxBatch int
	// MaxBatchBytes bounds the summed command sizes of one entry; default 1 MiB.
	MaxBatchBytes int
	// MaxInflight is the number of entries applied concurrently; default 8.
	MaxInflight int
	// DeadServerTimeout removes a failed voter automatically after this long
	// (never below a majority of the configured size); 0 = never.
	DeadServerTimeout time.Duration
	// ReadyMaxLag is how long this node may take to apply what the leader
	// has committed and still be Ready; default 1s. A follower that cannot
	// keep up (or store entries at all) turns not-ready.
	ReadyMaxLag time.Duration
	// ReconcileInterval is how often the leader reconciles Raft membership
	// with gossip even without events; default 5s.
	ReconcileInterval time.Duration
	// GossipProbeInterval and GossipProbeTimeout tune failure detection;
	// default 1s/500ms (memberlist LAN).
	GossipProbeInterval time.Duration
	GossipProbeTimeout  time.Duration
	// DataKeys, when set, seal session values at rest: command entries of the
	// Raft log and snapshot streams are encrypted with AES-256-GCM under the
	// first key; every key opens data sealed under its id (key rotation).
	// nil stores plaintext. See package atrest.
	DataKeys []atrest.DataKey
	// InMemory keeps the Raft log, stable store and snapshots in memory and
	// writes nothing under DataDir (which may be ""). Such a node cannot
	// restart with its state: NodeID must be "" and a fresh random id is
	// drawn at every Open, so a restarted node joins as a new member and the
	// leader replaces its old identity. Incompatible with DataKeys.
	InMemory bool
	// GossipKeys enable memberlist encryption (AES-GCM, keys of 16, 24 or 32
	// bytes); the first is the primary. Once a keyring file exists in DataDir
	// (written on first use and after every keyring change) it wins over
	// GossipKeys, so a node restarted after a rotation still talks to the
	// cluster. nil = plaintext gossip (unless the keyring file exists).
	GossipKeys [][]byte
	// LogStore picks the disk log store: LogStoreWAL or LogStoreBolt. ""
	// keeps the store DataDir already holds, and uses LogStoreWAL for a new
	// data dir; naming the other store than the one holding data fails
	// Open. Unused with InMemory.
	LogStore string
	// NoSync disables fsync of the Raft log: only for benchmarks of the code
	// path, never in production.
	NoSync bool
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HeartbeatTimeout, 500*time.Millisecond)
	def(&c.ElectionTimeout, 500*time.Millisecond)
	// The lease follows the heartbeat timeout when not set, so a node run with
	// slower failure detection (a loaded host, -heartbeat-timeout 500ms) does not
	// keep the LAN lease and step down at every scheduling hiccup.
	def(&c.LeaderLeaseTimeout, c.HeartbeatTimeout/2)
	def(&c.CommitTimeout, 50*time.Millisecond)
	def(&c.SnapshotInterval, 30*time.Second)
	def(&c.WriteTimeout, 2*time.Second)
	def(&c.ReconcileInterval, 5*time.Second)
	def(&c.ReadyMaxLag, time.Second)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 16384
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 512
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 1 << 20
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = 8
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.DataDir == "" && !c.InMemory:
		return errors.New("cluster: DataDir is required")
	case c.InMemory && c.NodeID != "":
		return errors.New("cluster: an in-memory node must rejoin under a new id at every start: leave NodeID empty")
	case c.LogStore != "" && c.LogStore != LogStoreWAL && c.LogStore != LogStoreBolt:
		return fmt.Errorf("cluster: unknown log store %q (want %s or %s)", c.LogStore, LogStoreWAL, LogStoreBolt)
	case c.InMemory && len(c.DataKeys) > 0:
		return errors.New("cluster: an in-memory node stores nothing at rest: DataKeys do not apply")
	case c.RaftAddr == "":
		return errors.New("cluster: RaftAddr is required")
	case c.GossipAddr == "":
		return errors.New("cluster: GossipAddr is required")
	case c.StateMachine == nil:
		return errors.New("cluster: StateMachine is required")
	case c.BootstrapExpect < 0:
		return fmt.Errorf("cluster: BootstrapExpect %d < 0", c.BootstrapExpect)
	}
	return nil
}

// Package cluster replicates opaque commands for a StateMachine across a set
// of nodes. It owns hashicorp/raft with a raft-wal (or bolt) log/stable store
// and a file snapshot store under DataDir, bootstrap-expect, membership reconciliation,
// forwarding to the leader, group commit, read-index reads, snapshot backup
// and restore, and the node's lifecycle. It knows nothing of sessions or
// wire protocols: the node layer gives it a StateMachine (a raft.FSM that
// also packs commands into one entry and answers leader reads).
//
// Three packages below it own one concern each and import nothing of it:
// cluster/mux (the cluster port: listener, first-byte routing, mutual TLS,
// raft's stream layer), cluster/gossip (memberlist, member states, the
// gossip keyring) and cluster/atrest (sealed log and snapshot stores).
//
// # Files
//
// cluster.go: the Cluster and Open; config.go; stores.go: the log store
// (raft-wal in wal/ for new data dirs, or bolt's raft.db; a data dir keeps
// the store it was written with), snapshots and the log cache under DataDir
// (snapshots/, node-id,
// gossip-keyring; write-probe and peers.json are ready.go's and
// recover.go's); propose.go and batcher.go: the write path; fsm.go: the
// StateMachine and the applied-index wrapper; forward.go and rpc.go: the
// forwarding RPC; readindex.go: reads; membership.go: bootstrap,
// reconciliation, Join/RemoveServer/TransferLeadership; meta.go: the
// cluster's gossip metadata; status.go: Status and Members; leaders.go: the
// recent changes of leader; keyring.go: the cluster-wide gossip keyring;
// snapshot.go: SnapshotSave/SnapshotRestore; ready.go: Ready and what keeps
// it current; logging.go: the hclog bridge for raft; lifecycle.go: Leave,
// Close, Kill; recover.go: recovery from a lost quorum (peers.json).
//
// # Ports and wire format
//
// One TCP cluster port (package mux) carries Raft and forwarding, told apart
// by the first byte a dialer writes: 'R' hands the connection to raft's
// NetworkTransport, 'F' to the forwarding RPC server. TLS, when configured,
// wraps both kinds in one place before that byte.
//
// Forwarding frames are type:u8 id:u64 aux:u32 len:u32 payload, big endian.
// Requests carry their deadline in aux (ms); responses carry the request's
// id, so one persistent connection per peer is pipelined and answered out of
// order. Frames over 16 MiB, requests without a deadline and unknown kinds
// close the connection with a log line. A call that fails on a pooled
// connection is retried once on a fresh dial (pooled connections to a
// restarted peer are silently dead); answered errors are never retried.
//
// Gossip metadata (package gossip encodes it, ≤ 512 bytes) carries the raft
// address ("raft"), the bootstrap-expect value ("expect"), an in-cluster
// flag ("incluster") and the node's own Meta (client addresses).
//
// # Write path
//
// Propose on a follower forwards the command to the leader. The leader's
// batcher drains queued proposals into one log entry (StateMachine.Pack; up to
// MaxBatch commands / MaxBatchBytes), calls raft.Apply without waiting for
// the previous entry (up to MaxInflight in flight) and raft's BatchApplyCh
// groups entries per fsync. The FSM returns one result per packed command.
// The leader answers (index, result) once its FSM applied the entry.
// ProposeCommitted returns that answer at once, so a write through a
// follower costs what one through the leader does; the caller keeps
// read-your-writes by having a later local read wait with WaitApplied(index)
// (the node layer does this per key). Propose also waits until this node's
// FSM has applied the index, so a local read right after sees the write.
// The applied index is tracked by wrapping the FSM (raft's
// AppliedIndex runs ahead of the FSM); entries the FSM never sees (no-ops,
// barriers) are skipped by looking them up in the log store.
//
// Failures are answered, never hung: no known leader fails at once with
// ErrNoLeader; every wait is bounded by WriteTimeout (ErrTimeout, outcome
// unknown), except the leader's VerifyLeader, which raft itself answers within
// its leader lease; ErrNotLeader from a leader that just stepped down is
// re-routed up to twice.
//
// # Reads
//
// ReadBarrier implements ReadIndex: the leader (after committing a barrier
// in its term) captures its commit index, confirms leadership with
// VerifyLeader, and the asking node waits until it has applied that index.
// Concurrent reads share one round and wait on one channel per index, woken
// by the apply path; the limits count the cluster's work (a round, the
// apply), never the time a read spent queued behind others.
// QueryLeader runs StateMachine.Query on the leader for leader-on-miss reads;
// QueryAt runs it on a replica that has applied a given index (here, or the
// leader, which waits for it), for a read of a write this node acknowledged
// before applying it.
//
// # Readiness
//
// Ready is the one answer to "does this node serve current reads and take
// writes" (the admin /readyz, and the service manager's notification). A
// background loop obtains a read index from the leader every 250ms (sharing
// rounds with linearizable reads) and probes the data dir with a small write
// (write-probe, created and removed) every second. Ready then needs a known
// leader, a recent read index from that leader, this node not behind such an
// index for longer than ReadyMaxLag, and its storage writable (the last log
// store write did not fail, the probe succeeded). Applied means through
// Raft's own entries too (no-ops and barriers never reach the FSM: the skip
// loop advances the applied index over them for the probe's wait as for any
// other), so an idle cluster is ready right after an election.
//
// After a start (or a restart from the data dir) a node is not ready, and
// serves no read in any read mode (WaitCaughtUp, which node.Service waits
// on), until it has caught up once: a read index obtained after the start,
// applied (catchup.go). Until then it holds its latest snapshot's state, which
// may be older than what it acknowledged before it stopped; Ready says
// "catching up after restart: applied X of Y".
//
// # Membership
//
// A node first joins the -join list; without Raft state and with
// BootstrapExpect N it waits until N alive gossip members with the same N
// are seen and none of them is already in a cluster; the lowest id then
// bootstraps all of them. A node with existing state never bootstraps.
// The leader reconciles on gossip events and every ReconcileInterval: alive
// members missing from the configuration are added as voters, members that
// left (Leave: a departure for good) are removed, failed members (crashed or
// stopped gracefully) stay voters unless
// DeadServerTimeout is set (and never below a majority of the expected
// size). An operator-removed node is tombstoned on the leader and told to
// leave gossip; Join brings it back.
//
// Close is a graceful stop that keeps the node a member: a leader transfers
// leadership (to the reachable voter with the longest log), gossip stops
// without a leave message, raft stops and the stores close. Peers see the
// node failed, and a failed voter stays a voter, so stopping nodes for
// maintenance or a rolling restart never changes the quorum size; the node
// resumes from its data dir. Leave is the explicit way out: a leader hands
// leadership over, then the node has the leader remove it (retrying while a
// new leader is elected) and leaves gossip; "left" members are removed from
// the configuration by the leader's reconciliation, and a node started again
// after leaving is added back as a new voter.
//
// # Recovery from a lost quorum
//
// With a majority of the servers gone for good, no leader can be elected and
// the configuration cannot change. The operator puts PeersFile (peers.json:
// [{"id": ..., "address": ...}], "non_voter": true for a non-voter) in a
// stopped survivor's data dir and starts it: before raft starts, Open checks
// that the node has Raft state and is listed as a voter at the address it
// advertises, logs loudly, rewrites the configuration with
// raft.RecoverCluster (every entry in the survivor's log counts as committed)
// and renames the file to peers.json.applied, so that it is applied once. New
// nodes then join it the usual way.
//
// # Security
//
// Config.TLS turns on mutual TLS for every cluster-port connection (mux).
// The dialing side verifies the peer's certificate against the cluster CA
// and the host it dialed (an IP SAN for peers addressed by IP), so a node
// holding some certificate of the CA cannot answer for another's address.
// Refused handshakes are logged once per connection with the remote
// address. Because gossip membership only proves the gossip key, the leader
// adds a member to Raft, and bootstrap-expect counts a peer, only after a
// forwarding call to its cluster port succeeds (peerAuthenticated); without
// TLS that check is skipped.
//
// Config.GossipKeys turn on memberlist encryption (package gossip); Keyring
// installs, promotes and removes keys on every live member through the
// forwarding RPC and each node persists its ring in DataDir/gossip-keyring.
// Answers name keys by fingerprint only.
//
// Config.DataKeys seal LogCommand entries and snapshot streams below raft
// (package atrest): AES-256-GCM, key id stored with the data for rotation,
// additional data binding each entry to its index/term/type and each
// snapshot chunk to its position and finality. Raft, the FSM and replication
// see plaintext, so nodes may use different keys. Config.InMemory replaces
// bolt and the file snapshot store with raft's in-memory stores and draws a
// fresh node id at every Open: a node that lost its log must not come back
// under an identity that promised to remember it.
//
// Raft's pipelined replication is disabled (MaxRPCsInFlight 1): its
// unbuffered pipeline channels can deadlock after a rejected append, which
// stops replication to that follower and hangs Shutdown.
//
// # What it must not know
//
// Sessions, wire protocols and the node's listeners: commands, queries and
// their answers are opaque bytes of the StateMachine, and Config.Meta is
// opaque metadata. Imports point one way: cluster uses mux, gossip and
// atrest; none of them imports cluster.
package cluster

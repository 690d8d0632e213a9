// Package node wires one member of the cache together: it binds the client
// listeners (distcache, and optionally memcache, Redis RESP and stunnel sessiond),
// opens the replicated store (fsm) and the cluster (Raft, gossip, forwarding), and
// serves the admin HTTP endpoint (JSON for dcctl, /metrics, /healthz, /readyz, and
// the status page of node/statuspage at /ui).
//
// # One service for every protocol
//
// Every front-end reaches the same Service (Add, Set, Remove, Take, Get, Have)
// through one adapter that counts its requests under the protocol's label, so
// expiry, consistency, error semantics and metrics do not depend on the protocol a
// TLS server speaks. Writes become fsm commands proposed through the cluster; the leader
// packs concurrent commands into one log entry (fsm.EncodeBatch), stamping its clock
// and the size caps into the entry so every replica applies the same thing. A write
// is answered once the leader has committed and applied it, through a follower as
// fast as through the leader; if this node's replica has not applied it yet, the key
// and the entry's index are remembered (ownwrites.go), and a read of that key through
// this node, in any read mode and on any front-end, is answered by a replica that has
// applied it (the leader, one round trip; cluster.QueryAt): the client's next read
// here sees its write, and only that rare read pays.
//
// Reads are local. The per-node read consistency decides what a miss or a stale hit
// costs: local (nothing), leader-on-miss (a miss is re-asked of the leader; the
// default, because a TLS session stored through any node should resume everywhere) or
// linearizable (a quorum round trip before every read). stunnel's sessiond waits only
// a few milliseconds, so its reads are always local (but for a key of its own write).
//
// # Failure answers
//
// A client is never left hanging: every call that waits on the cluster is bounded by
// the write timeout, and failures become each protocol's own error answer (distcache
// 0x02, memcache SERVER_ERROR, RESP -ERR). A leader-on-miss read that cannot reach the
// leader is a miss: a miss costs the client a full handshake, a wait could stall it.
//
// # Session-ticket keys
//
// The ring of TLS session-ticket keys is replicated state (fsm). tickets.go proposes
// rotations — on an operator's request through any node, and on the leader every
// -ticket-rotate, measured from the replicated time of the last rotation so a change
// of leader neither skips nor repeats one — drawing the new key from crypto/rand on
// the proposing node. Each node with outputs hands its replica of the ring to the TLS
// servers on its host (package ticketkeys) whenever it changes, but only once it has
// caught up with the cluster after starting (a read index from a leader, applied
// here): a node that was down during rotations never writes its servers an older
// ring than they hold. The admin API names keys by id and age; their bytes leave a
// node only in Raft entries and snapshots (sealed at rest with -data-key-file) and in
// the files it writes.
//
// # Start and stop order
//
// Listeners are bound before the cluster starts, so a bad address fails fast and the
// bound addresses travel in gossip metadata; they are served once the service exists.
// Close runs in reverse: listeners stop and drain, then the cluster leaves (a leader
// transfers leadership first) and the stores close.
package node

package adminapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"
)

// Paths of the admin endpoint. Reads of status, members, metrics, health, the
// ticket keys' ids and the status page are open (the endpoint is loopback by
// default); every POST, the snapshot download (it holds every session value and
// the ticket keys) and the keyring need the bearer token when the node has one.
const (
	// PathStatus: GET → Status.
	PathStatus = "/v1/status"
	// PathMembers: GET → Members.
	PathMembers = "/v1/members"
	// PathJoin: POST JoinRequest → JoinAnswer.
	PathJoin = "/v1/join"
	// PathRemove: POST RemoveRequest → Ack; 404 for an id not in the
	// configuration.
	PathRemove = "/v1/remove"
	// PathLeave: POST (any body, {} by convention) → Ack; the node then shuts down.
	PathLeave = "/v1/leave"
	// PathTransferLeader: POST TransferLeaderRequest → TransferLeaderAnswer; 404
	// for an id not in the configuration, 409 for a non-voter.
	PathTransferLeader = "/v1/transfer-leader"
	// PathSnapshot: GET → the snapshot as ContentTypeSnapshot; POST the snapshot
	// → Ack once the cluster has restored it (a follower relays it to the
	// leader); 400 for a body that is not a snapshot.
	PathSnapshot = "/v1/snapshot"
	// PathKeyring: GET → KeyringAnswer; POST KeyringRequest → KeyringAnswer.
	PathKeyring = "/v1/keyring"
	// PathTickets: GET → TicketRing (ids and ages of the session-ticket keys,
	// never their bytes).
	PathTickets = "/v1/tickets"
	// PathTicketsRotate: POST (any body, {} by convention) → TicketRing after
	// one rotation of the session-ticket keys.
	PathTicketsRotate = "/v1/tickets/rotate"
	// PathTicketsStatus: GET → TicketsStatus: what every member delivered to
	// its local TLS servers.
	PathTicketsStatus = "/v1/tickets/status"
	// PathMetrics: GET → Prometheus text exposition.
	PathMetrics = "/metrics"
	// PathHealthz: GET → 200 "ok" while the process serves.
	PathHealthz = "/healthz"
	// PathReadyz: GET → 200 "ready" when this node serves current reads and
	// can take writes (a leader is known, this node keeps up with what it
	// commits, its storage takes writes), else 503 with the reason as plain
	// text.
	PathReadyz = "/readyz"
	// PathUI: GET → the live status page (HTML, for a browser), which reads
	// PathStatus, PathMembers, PathMetrics and PathReadyz and nothing else.
	PathUI = "/ui"
)

// Content types and the token header.
const (
	ContentTypeJSON     = "application/json"
	ContentTypeSnapshot = "application/octet-stream"
	// BearerPrefix precedes the token in the Authorization header.
	BearerPrefix = "Bearer "
)

// Raw keeps an answer's JSON as the node sent it; every answer type embeds it.
// A tool that prints answers (dcctl --json) prints this document, so fields a
// newer node adds survive an older client. It is empty in values the node builds
// to send, and contributes nothing to their encoding.
type Raw struct{ doc json.RawMessage }

// JSON returns the answer as received, or nil for a value not decoded by Client.
func (r Raw) JSON() json.RawMessage { return r.doc }

func (r *Raw) setJSON(b json.RawMessage) { r.doc = b }

// Status is the answer of GET PathStatus: this node's view of itself and the
// cluster.
type Status struct {
	Raw
	ID string `json:"id"`
	// State is the Raft role: Follower, Candidate, Leader or Shutdown.
	State      string `json:"state"`
	LeaderID   string `json:"leader_id"`   // "" while no leader is known
	LeaderAddr string `json:"leader_addr"` // the leader's Raft address
	// Term and the indexes are Raft's: log positions, not counts of sessions.
	Term         uint64 `json:"term"`
	LastIndex    uint64 `json:"last_index"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	// LastContactMS is milliseconds since this node last heard from a leader; -1
	// on the leader itself or when it never heard from one.
	LastContactMS int64 `json:"last_contact_ms"`
	// Sessions is the number of stored sessions; PayloadBytes the sum of their id
	// and value lengths, in bytes. Signed like the store's counters and len().
	Sessions     int64 `json:"sessions"`
	PayloadBytes int64 `json:"payload_bytes"`
	// MaxSessions and MaxBytes are the node's caps (-sessions, -max-bytes): past
	// either, the sessions due to expire soonest are evicted.
	MaxSessions int64 `json:"max_sessions"`
	MaxBytes    int64 `json:"max_bytes"`
	// ReadConsistency is local, leader-on-miss or linearizable.
	ReadConsistency string `json:"read_consistency"`
	// Version is the node's build, as `dcnode -version` prints it first.
	Version string `json:"version"`
	// Listeners are the bound client addresses by front-end (distcache, memcache,
	// resp, sessiond).
	Listeners  map[string][]string `json:"listeners"`
	RaftAddr   string              `json:"raft_addr"`
	GossipAddr string              `json:"gossip_addr"`
	AdminAddr  string              `json:"admin_addr"`
	// UptimeSeconds is seconds since the node started.
	UptimeSeconds float64 `json:"uptime_seconds"`
	// LeaderChanges are the changes of leader this node saw in the last hour,
	// oldest first (at most the last 128): more than one or two is a sign of
	// trouble (a node restarting, an overloaded host, a flaky network).
	LeaderChanges []LeaderChange `json:"leader_changes"`
	// Tickets is this node's share of the session-ticket keys: the ring it
	// holds and what it delivered to its local TLS servers.
	Tickets *TicketDelivery `json:"tickets,omitempty"`
}

// TicketDelivery is one node's view of the session-ticket keys it hands to the
// TLS servers on its host (files, HAProxy's runtime API, a reload command).
type TicketDelivery struct {
	// Generation is the generation of the ring this node holds (0: none yet).
	Generation uint64 `json:"generation"`
	// Outputs say where the node writes the ring (format:path, and a HAProxy
	// runtime socket); empty when it writes nothing.
	Outputs []string `json:"outputs,omitempty"`
	// CaughtUp reports that the node has applied the cluster's log as far as
	// a leader had committed it after the node started: until then it writes
	// nothing, so a node back from an outage never hands its servers a ring
	// older than the one they hold.
	CaughtUp bool `json:"caught_up"`
	// Delivered is the generation the node last delivered completely (files
	// written, keys pushed, reload command succeeded); 0 before the first.
	Delivered   uint64     `json:"delivered_generation"`
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
	// Reloads counts successful runs of the reload command since start.
	Reloads uint64 `json:"reloads"`
	// Error is the last delivery's failure, retried with backoff; "" after a
	// success.
	Error string `json:"error,omitempty"`
}

// LeaderChange is one change of leader as the answering node saw it.
type LeaderChange struct {
	// At is when the node learned of the change (RFC 3339, milliseconds).
	At time.Time `json:"at"`
	// LeaderID is the new leader; "" when the node lost its leader and an
	// election was under way.
	LeaderID string `json:"leader_id"`
	// Term is the node's Raft term just after the change.
	Term uint64 `json:"term"`
}

// Members is the answer of GET PathMembers.
type Members struct {
	Raw
	Members []Member `json:"members"`
}

// Member is one member: the gossip view joined with its Raft suffrage.
type Member struct {
	ID         string `json:"id"`
	GossipAddr string `json:"gossip_addr"`
	RaftAddr   string `json:"raft_addr"`
	// Status is the gossip state: alive, suspect, dead or left.
	Status string `json:"status"`
	// Suffrage is voter, nonvoter or none (not in the Raft configuration).
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
	// LastContactMS is milliseconds since the member last heard from a leader; -1
	// for the leader itself or when unknown.
	LastContactMS int64 `json:"last_contact_ms"`
	// Lag is how many log entries the member trails the leader; -1 when unknown.
	Lag int64 `json:"lag"`
	// Version is the member's build, from its gossip metadata ("" from a node
	// that does not announce it).
	Version string `json:"version"`
	// Meta is the member's gossip metadata: its client and admin addresses and
	// its version by name (distcache, memcache, resp, sessiond, admin, version).
	Meta map[string]string `json:"meta,omitempty"`
	// Reached reports whether the answering node read the member's own status
	// (GET PathStatus at the member's admin address) for this answer. When it
	// did not (the member is down or unreachable, or announces no admin
	// address), StatusError says why and the figures below are zero.
	Reached     bool   `json:"reached"`
	StatusError string `json:"status_error,omitempty"`
	// State is the member's Raft role as it reports it (Status.State).
	State string `json:"state,omitempty"`
	// Sessions, PayloadBytes, MaxSessions and MaxBytes are the member's own, as
	// in its Status: how full its replica is against its caps.
	Sessions     int64 `json:"sessions"`
	PayloadBytes int64 `json:"payload_bytes"`
	MaxSessions  int64 `json:"max_sessions"`
	MaxBytes     int64 `json:"max_bytes"`
}

// JoinRequest is the body of POST PathJoin: gossip addresses of any members of
// the cluster to join.
type JoinRequest struct {
	Addrs []string `json:"addrs"`
}

// JoinAnswer says how many of the addresses answered.
type JoinAnswer struct {
	Raw
	Joined int `json:"joined"`
}

// RemoveRequest is the body of POST PathRemove: the node id to drop from the Raft
// configuration and gossip.
type RemoveRequest struct {
	ID string `json:"id"`
}

// TransferLeaderRequest is the body of POST PathTransferLeader; an empty ID lets
// Raft pick the most up-to-date voter.
type TransferLeaderRequest struct {
	ID string `json:"id"`
}

// TransferLeaderAnswer names the leader after the transfer ("" if none was
// elected within the node's wait).
type TransferLeaderAnswer struct {
	Raw
	LeaderID string `json:"leader_id"`
}

// Ack is the answer of calls that only succeed or fail (remove, leave, snapshot
// restore): {} today.
type Ack struct {
	Raw
}

// KeyringOp is an operation on the gossip keyring of every live member.
type KeyringOp string

// The keyring operations of POST PathKeyring (listing is GET).
const (
	KeyringInstall KeyringOp = "install" // add the key to every ring
	KeyringUse     KeyringOp = "use"     // make it the primary (encrypting) key
	KeyringRemove  KeyringOp = "remove"  // drop it; the primary cannot be removed
)

// KeyringRequest is the body of POST PathKeyring. Key is the standard base64 of
// 16, 24 or 32 bytes (AES-128, -192, -256).
type KeyringRequest struct {
	Op  KeyringOp `json:"op"`
	Key string    `json:"key"`
}

// KeyringAnswer is the answer of GET and POST PathKeyring: every member's ring,
// keys named by KeyFingerprint. Error is set, with status 200, when the operation
// failed on some members (their rows say why): every operation is idempotent, so
// the operator re-runs it once they are back. See Err.
type KeyringAnswer struct {
	Raw
	Nodes []KeyringNode `json:"nodes"`
	Error string        `json:"error,omitempty"`
}

// Err is the answer's partial failure as an error, or nil when every member
// applied the operation.
func (a KeyringAnswer) Err() error {
	if a.Error == "" {
		return nil
	}
	return errors.New(a.Error)
}

// KeyringNode is one member's ring after the operation; Err is set when the
// operation failed there or the member could not be reached.
type KeyringNode struct {
	Node    string   `json:"node"`
	Primary string   `json:"primary,omitempty"` // fingerprint of the encrypting key
	Keys    []string `json:"keys,omitempty"`    // fingerprints, primary first
	Err     string   `json:"error,omitempty"`
}

// KeyFingerprint names a gossip key in answers without revealing it: the first 8
// bytes of its SHA-256, in hex. It must agree with the cluster's naming (node's
// tests check that).
func KeyFingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// TicketRing is the answer of GET PathTickets and POST PathTicketsRotate: the
// session-ticket keys by id and age. Key bytes never leave the cluster through
// the admin API: a node writes them only to its local servers' files.
type TicketRing struct {
	Raw
	// Generation counts the rotations applied; 0 means no ring yet (rotate
	// once, or set -ticket-rotate, to create it).
	Generation uint64 `json:"generation"`
	// RotatedAt is when the last rotation was applied (the leader's clock).
	RotatedAt *time.Time `json:"rotated_at,omitempty"`
	// RotateEverySeconds is the answering node's -ticket-rotate (0: off);
	// the leader's setting is the one that schedules rotations.
	RotateEverySeconds float64 `json:"rotate_every_seconds"`
	// NextRotation is when that schedule rotates next, if it is on.
	NextRotation *time.Time `json:"next_rotation,omitempty"`
	// LifetimeSeconds is the answering node's -ticket-lifetime: a past key is
	// kept this long after it stopped encrypting.
	LifetimeSeconds float64 `json:"lifetime_seconds"`
	// Keys are the current key, the next and the past keys, newest first.
	Keys []TicketKey `json:"keys"`
}

// Roles of a ticket key.
const (
	TicketCurrent = "current" // encrypts new tickets everywhere
	TicketNext    = "next"    // decrypts already; encrypts after the next rotation
	TicketPast    = "past"    // decrypts tickets issued while it was current
)

// TicketKey names one key of the ring without its bytes.
type TicketKey struct {
	ID   uint64 `json:"id"`
	Role string `json:"role"`
	// CreatedAt is when the key joined the ring (as the next key).
	CreatedAt  time.Time `json:"created_at"`
	AgeSeconds float64   `json:"age_seconds"`
	// RetiredAt is when a past key stopped encrypting.
	RetiredAt *time.Time `json:"retired_at,omitempty"`
}

// TicketsStatus is the answer of GET PathTicketsStatus: the answering node's
// ring generation and every member's delivery, asked of each member's admin
// endpoint.
type TicketsStatus struct {
	Raw
	Generation uint64       `json:"generation"`
	Nodes      []TicketNode `json:"nodes"`
}

// TicketNode is one member's delivery, or why it could not be read.
type TicketNode struct {
	Node    string `json:"node"`
	Reached bool   `json:"reached"`
	// Err says why the member's status could not be read.
	Err string `json:"status_error,omitempty"`
	TicketDelivery
}

// ErrorBody is the body of every non-2xx JSON answer. The status says whose
// fault it is: 4xx the request's (400 malformed, 401 token, 404 unknown node id,
// 409 not possible in the cluster's state), 5xx the node's or the cluster's (503
// no leader, retry; 504 not finished in time, the outcome is unknown).
type ErrorBody struct {
	Error string `json:"error"`
}

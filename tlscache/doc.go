// Package tlscache lets Go TLS servers share sessions through a distcache cluster, so
// that a client whose session was negotiated by one server resumes it on another.
//
// It plugs into crypto/tls through Config.WrapSession and Config.UnwrapSession: the
// ticket handed to the client is a random 32-byte id, and the serialized session state
// (tls.SessionState.Bytes) is stored in the cluster under that id with a lifetime. The
// ticket therefore carries no secret at all (unlike Go's default self-encrypted
// tickets, whose key every server would have to share and rotate), and a session can
// be invalidated centrally.
//
// Resumption is best effort by design: a miss, a cluster error, a ticket of the wrong
// length or state that fails to parse resumes nothing (the handshake falls back to a
// full one) instead of failing it. Storing a session is also best effort: if the
// cluster cannot take the write, the client gets a ticket that will simply miss.
// Stats tells the outcomes apart: a node that cannot answer (no leader, quorum
// lost: distcache.ErrUnavailable) is counted as Unavailable, never as a miss, so
// a single-use ticket refused during an election is not mistaken for a replay.
//
// Go servers never resume TLS 1.2 sessions by session id, only by ticket, so tickets
// must stay enabled (SessionTicketsDisabled false) for TLS 1.2 as well.
//
// The stateless alternative is WatchTicketKeys: Go's own self-encrypted tickets,
// under the session-ticket keys the cluster rotates for the whole fleet (nginx,
// HAProxy, Apache and Go servers alike), read from the file the node on the same
// host writes. No request reaches the cluster during a handshake; a ticket resumes
// on every server until its key leaves the ring. See tickets.go for the trade-off.
//
// It must not know how the cluster stores or replicates a session: it speaks to
// nodes only through the distcache client (protocol/distcache) and the ticket-key
// file a node writes.
package tlscache

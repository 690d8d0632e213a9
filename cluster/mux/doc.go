// Package mux owns a node's one cluster port: the listener, mutual TLS on
// both sides of every connection, routing by the first byte, and the set of
// connections in use, which Close ends.
//
// # Wire format
//
// A dialer opens TCP, completes the TLS handshake when the port is
// configured for TLS, then writes one kind byte: 'R' (KindRaft) hands the
// connection to raft's transport through the raft.StreamLayer that
// RaftLayer returns, 'F' (KindForward) to the handler given to Serve. Any
// other byte, or silence (or a handshake) longer than 5 s, closes the
// connection with a log line; the port keeps serving others.
//
// # Security
//
// With a tls.Config the accepting side requires what the configuration
// requires (the cluster's certificates: ClientAuth with the cluster CA), and
// a refused handshake is logged once per connection with the remote address.
// The dialing side verifies the peer's certificate against the CA and the
// host it dialed (an IP SAN for a peer addressed by IP), unless the
// configuration names a server, so a node holding some certificate of the CA
// cannot answer for another's address. Without TLS the port is
// unauthenticated.
//
// # What it must not know
//
// Nothing of raft's RPCs, the forwarding protocol or its payloads, gossip or
// the cluster's configuration: it moves connections, and raft appears only as
// the StreamLayer interface it implements. It imports nothing else of
// cluster/.
package mux

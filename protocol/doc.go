// Package protocol is the root of the client-facing wire protocols a node
// speaks. It holds no code; each front-end is a sibling package below it:
//
//   - distcache: the original distcache protocol (frames, codec, the IP:/UNIX:
//     address syntax, a pipelining connection server and a Go client), which
//     libdistcache clients, Apache's mod_socache_dc and this project's own tools
//     speak;
//   - memcache: the memcached text protocol, for mod_socache_memcache;
//   - resp: a Redis RESP2 subset, for mod_socache_redis and Redis clients;
//   - sessiond: stunnel's sessiond UDP protocol.
//
// What the front-ends share lives in protocol/internal: connset (the accept
// loop, the connection cap, refusal logging, graceful and immediate shutdown,
// the base context, and the line protocols' connection loop and reading),
// reqctx (the per-request context of the line protocols) and frontendtest
// (what the front-ends' tests share). Log lines for events a peer can repeat
// at will go through internal/loglimit (at most one a second).
//
// Each front-end knows its wire format and a small Cache interface at its point
// of use; none knows the replicated store, the cluster or the node that wires
// them together, and none logs session values: they are TLS master secrets.
package protocol

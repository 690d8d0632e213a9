// Package proxy is the engine of `dcctl proxy`, the successor of the original
// dc_client: a distcache.Handler that forwards every request from many short-lived
// local connections over one persistent, pipelined connection to a distcache server.
//
// Behaviour follows spec §7, with the fixes of §10 item 4 and 5:
//
//   - each forwarded request gets a fresh upstream request_uid from the proxy's own
//     counter (starting at 1, never reset, also across reconnects); the local client
//     gets its own uid back (the distcache.Server answers under the request's uid);
//   - payloads are forwarded verbatim in both directions; the proxy never interprets
//     ADD/GET/...;
//   - with no upstream connected, a request is answered at once with an empty payload;
//     requests outstanding when the upstream fails are answered with 0x02
//     (DISCONNECTED), and the proxy then connects to the next server of its list;
//   - new: while it (re)connects — at start and after losing a server — a request
//     waits for the outcome within its deadline instead of getting the empty answer,
//     so a failover costs only the requests in flight; the empty answer is for the
//     pause (-retry) after a round in which no server could be reached;
//   - new: every request has a deadline (0x02 when it passes), and an upstream that
//     returns nothing at all while a request times out is considered stuck and
//     dropped, so the proxy fails over instead of hanging; answers with an unknown uid
//     (late, after a deadline or a departed client) are dropped with a debug log
//     instead of aborting the process.
//
// The upstream connection has one writer goroutine that coalesces queued requests
// into few writes (with a write deadline) and one reader goroutine that matches
// answers to waiting requests by uid.
package proxy

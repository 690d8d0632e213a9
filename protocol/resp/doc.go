// Package resp serves a small subset of Redis over RESP2, so that Apache
// httpd's mod_socache_redis (apr_redis), redis-cli and client libraries can
// use a distcache cluster node as their session cache unchanged.
//
// # Wire format
//
// Requests are arrays of bulk strings (*N\r\n$len\r\n...\r\n) or inline
// commands (words separated by spaces or tabs, no quoting, e.g. "PING\r\n"
// from telnet). Command names are case-insensitive. Answers:
//
//	GET key                          $len value | $-1
//	SET key value [EX s|PX ms] [NX]  +OK  (NX and present: $-1)
//	SETEX key s value, PSETEX        +OK
//	SETNX key value                  :1 | :0
//	DEL key...                       :deleted   EXISTS key...  :present
//	PING [msg], ECHO msg             +PONG | $len msg
//	SELECT 0                         +OK (any other index: -ERR DB index is out of range)
//	COMMAND ...                      *0
//	CLIENT SETNAME|SETINFO ...       +OK
//	INFO [section]                   $len "# Server\r\nredis_version:7.0.0\r\n..."
//	QUIT                             +OK, then the connection closes
//
// Anything else, HELLO included (clients then fall back to RESP2), gets
// "-ERR unknown command '<name>'". SET options the store cannot honour (XX,
// KEEPTTL, GET, EXAT, PXAT) are a syntax error rather than silently ignored.
// A SET without a lifetime is passed to the Cache with NoExpiry, which the node
// maps to the store's maximum lifetime.
//
// # Decisions
//
//   - One request at a time per connection, answers strictly in order; the
//     write buffer is flushed only when no further request is buffered, so a
//     pipelined burst is answered with one write. IdleTimeout defaults to none
//     (Apache pools connections), but a started request must arrive completely
//     within ReadTimeout (slowloris protection).
//   - Every Cache call has a RequestTimeout deadline so that a node without
//     quorum answers -ERR promptly: apr_redis waits practically forever.
//   - Bounds: header and inline lines MaxLineLength (2048), MaxArgs array
//     elements (1024), values MaxValueSize (64 KiB, the store's default). An
//     oversized bulk string up to 1 MiB is read and discarded and the command
//     answered "-ERR value too large for cache"; a larger or negative length, a
//     bad array header or a bulk string not ending in CRLF is answered
//     "-ERR Protocol error: ..." and the connection closed, as Redis does.
//   - The GET path allocates nothing and, for a request that arrives whole,
//     touches no timer: arguments live in a reused per-connection arena,
//     numbers are parsed by hand, socket deadlines are armed only when a
//     request arrives in pieces (the write deadline only when half of it has
//     passed), and GET and EXISTS read through QuickCache's GetNow when the
//     Cache can answer at once (a local hit), without a request context.
//     Other calls get the connection's one re-armable request context instead
//     of context.WithTimeout per request. Pipelined requests are answered in
//     one write. Keys and values given to the Cache alias connection buffers
//     and are valid only during the call.
//   - Hostile input: a request must arrive completely within ReadTimeout from
//     its first byte (slowloris); a data buffer grows with the bytes that
//     actually arrived, 16 KiB at a time, so a client announcing a large
//     value and stalling costs what it sent. A TLS ClientHello or an HTTP
//     request sent to the RESP port is recognised from its first bytes and
//     the connection closed with a log line naming the mistake. Every close
//     is explained by one line (stalled, cut short, malformed, foreign
//     protocol), logged before the close so that it exists when the peer sees
//     EOF; idle timeouts are logged at info level.
//   - Values are never logged: they are TLS master secrets.
package resp

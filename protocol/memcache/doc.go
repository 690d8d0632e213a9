// Package memcache serves the memcached text protocol over a replicated
// session cache, so that Apache httpd's mod_socache_memcache (apr_memcache)
// can use a distcache cluster node unchanged.
//
// # Wire format
//
// Only the text protocol is spoken. Supported commands:
//
//	get <key>*                                  VALUE <key> <flags> <bytes>\r\n<data>\r\n ... END\r\n
//	set|add <key> <flags> <exptime> <bytes> [noreply]\r\n<data>\r\n
//	                                            STORED | NOT_STORED
//	delete <key> [0] [noreply]                  DELETED | NOT_FOUND
//	version | stats | verbosity <n> | quit
//
// Apache sends "set <key> 0 299 181 \r\n" (note the space before CRLF): lines
// are split on runs of spaces and may end in "\r\n" or "\n". Unknown commands
// get ERROR, malformed known ones CLIENT_ERROR <msg>, failed Cache calls (no
// quorum, timeout) SERVER_ERROR <msg>. noreply suppresses every answer of its
// command. gets/cas, incr/decr, append/prepend, touch and flush_all are not
// offered: a TLS session cache has no use for them and the replicated store
// does not keep CAS versions.
//
// exptime follows memcached: 0 never expires (passed to the Cache as
// NoExpiry, which the node maps to the store's maximum lifetime), negative is
// already expired, more than 30 days is an absolute Unix time. An already
// expired set deletes the key; an already expired add only reports whether a
// live entry existed.
//
// # Decisions
//
//   - One request at a time per connection, answers strictly in order; the
//     write buffer is flushed only when no further request is buffered, so a
//     pipelined burst is answered with one write. Apache holds pooled
//     connections idle for a long time, so IdleTimeout defaults to none, but
//     once the first byte of a request has arrived the whole request (line and
//     data block) must arrive within ReadTimeout (slowloris protection).
//   - Every Cache call has a RequestTimeout deadline, so a node without quorum
//     answers SERVER_ERROR promptly: Apache's memcache client has no read
//     timeout and a silent server would hang TLS handshakes.
//   - Bounds: command line MaxLineLength (2048), key 250 bytes without control
//     characters, value MaxValueSize (64 KiB, the store's default limit). A
//     larger value is answered "SERVER_ERROR object too large for cache" and
//     its data block discarded, as memcached does, up to 1 MiB; beyond that,
//     or when the stream cannot be resynchronised (bad byte count, data block
//     not ending in CRLF, over-long line), the connection is closed after one
//     log line. Other connections are unaffected.
//   - The GET path allocates nothing and, for a request that arrives whole,
//     touches no timer: the connection reuses its read and write buffers,
//     parses numbers by hand, arms its socket deadlines only when a request
//     arrives in pieces (and the write deadline only when half of it has
//     passed), and reads through QuickCache's GetNow when the Cache can
//     answer at once (a local hit), without a request context. Other calls
//     get the connection's one re-armable request context instead of
//     context.WithTimeout per request. A get of several keys, and pipelined
//     requests, are answered in one write. Keys and values given to the Cache
//     alias connection buffers and are valid only during the call.
//   - Hostile input: a request must arrive completely within ReadTimeout from
//     its first byte (slowloris); a data buffer grows with the bytes that
//     actually arrived, 16 KiB at a time, so a client announcing a large
//     value and stalling costs what it sent. A TLS ClientHello or an HTTP
//     request sent to the memcache port is recognised from its first bytes and
//     the connection closed with a log line naming the mistake. Every close
//     is explained by one line (stalled, cut short, malformed, foreign
//     protocol), logged before the close so that it exists when the peer sees
//     EOF; idle timeouts are logged at info level.
//   - Values are never logged: they are TLS master secrets.
package memcache

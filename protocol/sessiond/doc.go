// Package sessiond answers stunnel's external session cache protocol (the
// "sessiond = host:port" service option), so stunnel servers share TLS
// sessions through a distcache cluster node unchanged.
//
// # Wire format
//
// Verified against stunnel's src/ctx.c (cache_transfer, cache_new,
// cache_get, cache_remove; unchanged from 5.x through current releases). One
// UDP datagram per request, sent from a fresh IPv4 socket. Every datagram is
// the C struct CACHE_PACKET truncated after the value:
//
//	offset size field
//	0      1    version  always 1
//	1      1    type     0x00 NEW, 0x01 GET, 0x02 REMOVE (requests);
//	                     0x81 found, 0x80 not found (answers to GET)
//	2      2    timeout  big-endian seconds, min(session timeout, 64800);
//	                     present in EVERY datagram, 0 in GET and REMOVE
//	4      32   id       session id, zero padded to 32 bytes
//	36     n    value    DER session (NEW and found answers), n <= 512
//
// A NEW is 36+n bytes, GET and REMOVE exactly 36. NEW and REMOVE are not
// answered. A GET is answered to the sending address with the same header
// (version 1, the same id; stunnel ignores the timeout, we echo it) and type
// 0x81 followed by the value, or type 0x80 and nothing else. stunnel checks
// only length >= 36, version, the id's first id-length bytes and the type,
// reads at most 548 bytes, and waits for the answer with SO_RCVTIMEO of
// 200 µs (the code comment says 200 ms), which Linux rounds up to one
// scheduler tick: a few milliseconds.
//
// # Decisions
//
//   - GETs are answered on the read loop straight away from Cache.Get, which
//     must be a local read, under a short GetTimeout; any failure is answered
//     "not found" at once, since silence costs stunnel the same miss plus the
//     wait. NEW and REMOVE go to a bounded queue served by a few workers, so
//     replication latency never delays a lookup; when the queue is full the
//     request is dropped and logged (stunnel expects no answer; the only cost
//     is a lost resumption).
//   - The Cache key is KeyPrefix ("stunnel-sess:") followed by the lowercase
//     hex of all 32 id bytes, padding included, so stunnel's entries are
//     readable in the shared keyspace and cannot collide with mod_ssl's.
//   - Datagrams that deviate from the layout (short, long, wrong version,
//     unknown or answer type, GET/REMOVE with trailing bytes, NEW without a
//     session) are dropped without an answer; the log line for them is rate
//     limited to one per second so a flood cannot flood the log.
//   - A stored value that stunnel could not receive (over 512 bytes, e.g.
//     written through another front-end) is answered "not found".
//   - Values are never logged: they are TLS master secrets.
package sessiond

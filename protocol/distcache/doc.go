// Package distcache implements the distcache wire protocol: frames and their
// reassembly, the four operations of the original C toolkit (ADD, GET, REMOVE,
// HAVE), the original's address syntax, a connection server that hands
// requests to a Handler, and a pipelining Go client.
//
// It knows nothing of the replicated store or the cluster: a session store
// reaches it through the Cache interface (NewCacheHandler), a proxy through
// Handler. Accepting connections, the connection cap with its refusal log
// line, and Shutdown and Close are shared with the other front-ends
// (protocol/internal/connset); what is here is the distcache framing and the
// per-connection request pipeline.
//
// # Wire format
//
// A message is one or more frames; a frame is a 14-byte header
//
//	proto_level(4) is_response(1) request_uid(4) op_class(1) operation(1) complete(1) data_len(2)
//
// followed by data_len (≤ 2048) bytes. Non-final frames carry exactly 2048
// bytes; a message has at most 16 frames (32768 payload bytes). All integers
// are big-endian. An ADD payload is timeout_ms(4) id_len(4) id data; every
// other request payload is the session id. Answers are one status byte, except
// a GET hit, whose payload is the session data itself.
// The spec is the project's shared/spec/distcache-protocol.md; the golden vectors of its
// §9 are tests here, and any divergence from it is a bug.
//
// # Extension: TAKE (operation 4)
//
// This package adds one operation that the C toolkit does not have: TAKE,
// which returns a session and removes it atomically (a single-use read for
// TLS 1.3 anti-replay). It is answered like GET. Only this project's clients
// send it; C peers never do, so compatibility with them is untouched. The
// decoder accepts operation 4; a C server would close the connection.
//
// # Decisions (what we do instead of the C defects of spec §10)
//
//   - The Decoder waits for whole frames (no off-by-four phantom requests) and
//     reports every violation as a typed error (*FrameError, *LimitError) that
//     names the field, value and limit. Non-distcache bytes close the
//     connection; they never abort the process.
//   - The Server executes pipelined requests of one connection concurrently
//     (so that replicated writes can be group-committed) but writes answers
//     strictly in request order, coalescing ready answers into writes of up
//     to 64 KiB (so a peer that does not read holds one chunk of encoded
//     answers in memory, not its whole pipeline); a multi-frame answer is
//     written a frame at a time (see "The C client's partial-frame bug").
//     Requests for the same session id on one connection still execute in
//     arrival order, so a pipelined ADD-then-GET behaves as on the C server;
//     only requests for different ids may overtake each other, which no C
//     client can observe (none of them pipelines dependent requests). When
//     MaxPipeline answers are outstanding it stops reading (backpressure)
//     instead of dropping the connection. On EOF it answers every request it
//     received completely, then closes. A request arriving on an otherwise idle
//     connection is executed on the reading goroutine, so a sequential client
//     pays no goroutine hand-off.
//   - ReadTimeout bounds a whole message from the moment its first byte is
//     awaited, not the gap between two reads: a peer dribbling a byte at a
//     time (slowloris) is closed like one that stops.
//   - A peer that stalls mid-message longer than ReadTimeout, sends a malformed
//     frame or an over-limit message gets one log line and a closed
//     connection; other connections are unaffected.
//   - A unix listener refuses to replace a socket another process still
//     accepts on, and removes only a stale socket (never another file type).
//   - The Client pipelines requests from many goroutines over one connection,
//     matches answers by request_uid, honours context deadlines, drops late
//     answers to abandoned requests, and redials after a broken connection.
//   - A failure is never read as an answer. The C library (libdistcache, and
//     so mod_socache_dc) reads any GET answer shorter than 5 bytes as a miss
//     (spec §4.3, §6); C clients keep that rule, and it is harmless for them
//     because they only use GET to resume a session. This Client treats only
//     NOTOK (0x01) as a miss (ErrNotFound, or false from Have) and every other
//     answer under 5 bytes to GET, TAKE and HAVE — DISCONNECTED (0x02), which
//     a node sends when it knows no leader or cannot commit in time, another
//     status, 2–4 bytes, an empty payload — as ErrUnavailable: a TAKE that
//     failed must not look like a ticket already used, nor a GET that failed
//     like a session gone. Answers of 5 bytes or more are data; sessions of
//     1–4 bytes are still never returned. The server answers a store error
//     with DISCONNECTED for every operation, GET and TAKE included.
//
// # The C client's partial-frame bug
//
// libdistcache (the C client library behind Apache's mod_socache_dc and
// dc_client) counts a frame header as 10 bytes instead of 14 (spec §10 item
// 1): it reads into a 4,096-byte buffer and calls a frame complete once 10
// bytes plus its data_len are buffered, then decodes the frame's header with
// the previous frame's data. It is fooled whenever its buffer holds a frame
// that lacks only its last 1–4 bytes. Frames written one per write arrive
// whole on their own, so the case that matters is the buffer filling up: a
// client that finds a full 2,062-byte frame and the last frame of an answer
// waiting reads 4,096 bytes, which is the last frame but 1–4 bytes when that
// frame carries 2,021–2,024 data bytes. Those are answers of 4,069–4,072,
// 6,117–6,120, … bytes (2,048·k + 2,021…2,024), 60 sizes in all
// (riskyLastFrame); the client then returns corrupted session data.
//
// What the server does about it, without slowing single-frame answers:
//
//   - A multi-frame answer is written a frame per write, as the C server
//     does, after the answers before it; single-frame answers still share
//     writes.
//   - Before the last frame of a risky answer it waits 500 µs, so that a
//     client waiting for the answer has read the frames before it by then
//     and reads the last one on its own.
//
// Measured with a model of the C decoder reading over loopback in select(2)
// and read(2) on a thread of its own (TestCClientOverLoopback, 600 risky
// answers per run, 16 runs at load 9–18 on 2 cores): the whole answer in one
// write (what this server did before) is mis-decoded in 100 % of cases, a
// frame per write (the C server) in 49–91 %, this server in 0–0.8 %. The
// pause was chosen by the same measurement: 50 µs gave 0.5–1.3 % (5 runs), and
// 0.5 ms leaves room for a client slowed by a busy machine. It costs those
// 60 answer sizes 0.5 ms each. A client that falls further behind than the
// pause, or pipelines many requests (dc_client), can still be fooled: no
// write pattern prevents that, since the C client alone decides how much it
// reads. A client with one request in flight (Apache) decodes every other
// answer size correctly however the frames arrive.
//
// Memory: a Decoder holds an 8 KiB read buffer, plus up to 32 KiB of
// reassembly buffer once its connection has sent a multi-frame message (kept
// so later large messages cost one allocation, the returned payload).
//
// Session data are TLS master secrets: nothing in this package logs payloads.
package distcache

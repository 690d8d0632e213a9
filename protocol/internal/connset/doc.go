// Package connset is the server plumbing that every front-end shares, so that
// accepting, capping, refusing, shutting down and closing behave and log the
// same whatever the protocol:
//
//   - Group: the listeners, sockets and goroutines of one server, and its
//     lifecycle: graceful Shutdown (stop accepting, let what was received be
//     answered, wait on a WaitGroup, no polling), immediate Close, the base
//     context of its backend calls, and the paced retry after transient
//     accept or read errors (timeouts, EMFILE, ENFILE: back off and log).
//     sessiond's UDP server uses it directly.
//   - Set: a Group with the one accept loop of the stream front-ends
//     (distcache, memcache, RESP), the connection cap and the refusal log line
//     (at most one a second, via loglimit).
//   - Line: the connection of a line protocol (memcache, RESP): socket,
//     buffers, timeouts, the request loop with its close reasons (answers
//     flushed once nothing more is pipelined), and reading lines and announced
//     values (ReadLine, AppendValue) so that a stalled client costs only what
//     it sent.
//   - Deadlines: the read, idle and write deadlines of a stream connection
//     (Line's and distcache's), armed only when they can change what happens:
//     a request that arrives whole and an answer that leaves at once cost no
//     timer update.
//
// Each front-end keeps only what differs: how it refuses a connection, how a
// connection reads and answers requests. connset knows nothing of any wire
// format or of the cache behind the front-ends.
package connset

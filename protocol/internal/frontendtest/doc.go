// Package frontendtest is what the front-ends' tests share instead of copying:
// an in-memory Store standing in for the replicated one (which the front-ends
// may not import), a Failing cache (no quorum, or a call that hangs), loggers
// that write to the test log or to a buffer, starting a stream or datagram
// server on loopback and shutting it down at cleanup, a line-protocol test
// Client, readers that replay or stall, a CountingListener that counts the
// writes and deadlines a server makes, and the hostile-input and cost tests
// that every line-protocol front-end (memcache, RESP) must pass, parameterised
// by its requests (LineProtocol).
//
// Only tests import it. It knows no wire format: each front-end's tests supply
// their own requests and answers.
package frontendtest

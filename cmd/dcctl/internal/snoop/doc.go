// Package snoop is the engine of `dcctl snoop`, the working successor of the original
// dc_snoop: a transparent proxy that prints one line per distcache message passing in
// either direction.
//
// Bytes are forwarded unchanged: each direction's decoder reads through a recorder,
// and once a message is complete its line is printed and its exact bytes are passed
// on. A peer cannot act on half a message, so holding it back costs a copy and no
// round trip, and it orders the output: a request is printed before the server can
// answer it, an answer before the client sees it. Answers are matched to their
// request by uid per connection to print the id and the round-trip time. Session
// data is never printed, only sizes (it holds TLS master secrets). A framing error
// closes both connections with a log line; a clean end of stream is passed on as a
// half-close, so a peer still gets the answers to requests sent just before it shut
// down its write side. Unlike dc_snoop (at most 10 pairs) the number of connections
// is not limited.
package snoop

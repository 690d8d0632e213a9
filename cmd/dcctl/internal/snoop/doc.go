// Package snoop is the engine of `dcctl snoop`, the working successor of the original
// dc_snoop: a transparent proxy that prints one line per distcache message passing in
// either direction.
//
// Bytes are forwarded unchanged and as soon as they arrive: each direction's decoder
// reads through an io.TeeReader that writes to the other side first, so decoding
// never delays or reorders the stream. Answers are matched to their request by uid
// per connection to print the id and the round-trip time. Session data is never
// printed, only sizes (it holds TLS master secrets). A framing error closes both
// connections with a log line; a clean end of stream is passed on as a half-close,
// so a peer still gets the answers to requests sent just before it shut down its
// write side.
package snoop

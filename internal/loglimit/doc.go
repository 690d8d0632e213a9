// Package loglimit keeps events that repeat at will from turning into a log
// flood: a connection refused at the connection cap, a malformed datagram
// (whose source address UDP lets anyone forge), a peer that stays unreachable.
// At most one line per interval per kind of event gets through, and the next
// line says how many were left out.
//
// It must not know what the events are or where lines go: the caller names the kind and owns the logger.
package loglimit

// Package loglimit keeps events that a peer can repeat at will (a connection
// refused at the connection cap, a malformed datagram, whose source address UDP
// lets anyone forge) from turning into a log flood: at most one line per second
// per kind of event, and the next line says how many were left out.
package loglimit

import (
	"sync/atomic"
	"time"
)

// Limiter lets one log line per second through. The zero value is ready.
type Limiter struct {
	last       atomic.Int64 // unix nanos of the last line let through
	suppressed atomic.Uint64
}

// Allow reports whether a line may be logged at now, and if so how many
// lines were suppressed since the previous one.
func (l *Limiter) Allow(now time.Time) (ok bool, suppressed uint64) {
	t := now.UnixNano()
	last := l.last.Load()
	if (last != 0 && t-last < int64(time.Second)) || !l.last.CompareAndSwap(last, t) {
		l.suppressed.Add(1)
		return false, 0
	}
	return true, l.suppressed.Swap(0)
}

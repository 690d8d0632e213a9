package loglimit

import (
	"sync"
	"sync/atomic"
	"time"
)

// Limiter lets one log line per Interval through. The zero value is ready and
// lets one line a second through.
type Limiter struct {
	// Interval is the shortest time between two lines; zero means a second.
	// Set it before the first Allow.
	Interval time.Duration

	last       atomic.Int64 // unix nanos of the last line let through
	suppressed atomic.Uint64
}

// Allow reports whether a line may be logged at now, and if so how many
// lines were suppressed since the previous one.
func (l *Limiter) Allow(now time.Time) (ok bool, suppressed uint64) {
	every := l.Interval
	if every <= 0 {
		every = time.Second
	}
	t := now.UnixNano()
	last := l.last.Load()
	if (last != 0 && t-last < int64(every)) || !l.last.CompareAndSwap(last, t) {
		l.suppressed.Add(1)
		return false, 0
	}
	return true, l.suppressed.Swap(0)
}

// Keyed is one Limiter per key (per peer, say), each letting one line per
// Interval through. Keys silent for several intervals are forgotten, so a
// stream of distinct keys does not grow it without bound. The zero value is
// ready and lets one line a second per key through.
type Keyed struct {
	// Interval is each key's shortest time between two lines; zero means a
	// second. Set it before the first Allow.
	Interval time.Duration

	mu     sync.Mutex
	keys   map[string]*Limiter
	pruned time.Time
}

// Allow is Limiter.Allow for the events of key k.
func (k *Keyed) Allow(key string, now time.Time) (ok bool, suppressed uint64) {
	k.mu.Lock()
	if k.keys == nil {
		k.keys = make(map[string]*Limiter)
	}
	every := k.Interval
	if every <= 0 {
		every = time.Second
	}
	if now.Sub(k.pruned) > 4*every {
		// A key whose last line is this old has nothing held back worth the
		// memory: its next event is logged as a first one.
		for key, l := range k.keys {
			if now.UnixNano()-l.last.Load() > int64(4*every) {
				delete(k.keys, key)
			}
		}
		k.pruned = now
	}
	l := k.keys[key]
	if l == nil {
		l = &Limiter{Interval: every}
		k.keys[key] = l
	}
	k.mu.Unlock()
	return l.Allow(now)
}

package frontendtest

import (
	"bytes"
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// NoExpiry is the ttl every front-end passes for "never expires" (each has
// its own constant with this value).
const NoExpiry time.Duration = math.MaxInt64

// Store is an in-memory session map with expiry and memcache's flags word,
// safe for concurrent use. Each front-end's tests adapt it to their Cache.
type Store struct {
	// Now is the clock expiry is judged by; nil: time.Now. Set it before use.
	Now func() time.Time

	mu      sync.Mutex
	entries map[string]entry
	lastTTL time.Duration
	quick   atomic.Int64 // GetNow calls
}

type entry struct {
	value   []byte
	flags   uint32
	ttl     time.Duration
	expires time.Time
}

// NewStore returns an empty Store.
func NewStore() *Store { return &Store{entries: make(map[string]entry)} }

func (m *Store) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Store) live(key []byte) (entry, bool) {
	e, ok := m.entries[string(key)]
	if !ok || !m.now().Before(e.expires) {
		return entry{}, false
	}
	return e, true
}

// Get returns an unexpired entry.
func (m *Store) Get(key []byte) (value []byte, flags uint32, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.live(key)
	return e.value, e.flags, ok
}

// GetNow is Get for a front-end's QuickCache (a read answered at once, on the
// connection's goroutine); QuickReads counts its calls.
func (m *Store) GetNow(key []byte) (value []byte, flags uint32, ok bool) {
	m.quick.Add(1)
	return m.Get(key)
}

// QuickReads is how many reads went through GetNow.
func (m *Store) QuickReads() int64 { return m.quick.Load() }

// Set stores a copy of value. A front-end never passes a non-positive ttl, so
// one panics.
func (m *Store) Set(key, value []byte, flags uint32, ttl time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.put(key, value, flags, ttl)
}

func (m *Store) put(key, value []byte, flags uint32, ttl time.Duration) {
	if ttl <= 0 {
		panic("Cache got a non-positive ttl")
	}
	exp := time.Unix(1<<40, 0)
	if ttl != NoExpiry {
		exp = m.now().Add(ttl)
	}
	m.lastTTL = ttl
	m.entries[string(key)] = entry{value: bytes.Clone(value), flags: flags, ttl: ttl, expires: exp}
}

// Add stores value unless an unexpired entry exists, and reports whether it did.
func (m *Store) Add(key, value []byte, flags uint32, ttl time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.live(key); ok {
		return false
	}
	m.put(key, value, flags, ttl)
	return true
}

// Delete removes an entry and reports whether an unexpired one was there.
func (m *Store) Delete(key []byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.live(key)
	delete(m.entries, string(key))
	return ok
}

// Len is the number of entries, expired ones included.
func (m *Store) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// LastTTL is the ttl of the last store, so a test can check how a front-end
// converted its protocol's expiry.
func (m *Store) LastTTL() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastTTL
}

// Lookup returns an entry and the ttl it was stored with, ignoring expiry.
func (m *Store) Lookup(key string) (value []byte, ttl time.Duration, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	return e.value, e.ttl, ok
}

// Failing stands in for a cache that cannot serve: every call returns Err or,
// when Err is nil, hangs until its context ends (a node without quorum).
type Failing struct{ Err error }

// Wait is what every call of a Failing cache returns.
func (f Failing) Wait(ctx context.Context) error {
	if f.Err != nil {
		return f.Err
	}
	<-ctx.Done()
	return ctx.Err()
}

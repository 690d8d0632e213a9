package fsm

import (
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// numShards is the number of independently locked, independently
// copy-on-write parts of the keyspace. It bounds both read contention and the
// cost of the first write to a shard while a snapshot is being persisted
// (that write clones 1/numShards of the index, never the payload).
const numShards = 256

// order is an (expiry, seq) pair, the eviction and snapshot order.
type order struct {
	expiry int64
	seq    uint64
}

var emptyOrder = order{math.MaxInt64, math.MaxUint64}

func (a order) less(b order) bool {
	return a.expiry < b.expiry || (a.expiry == b.expiry && a.seq < b.seq)
}

// shard guards one table. mu orders the apply path's writes against
// concurrent local reads; frozen is owned by the apply path.
type shard struct {
	mu     sync.RWMutex
	t      *table
	frozen bool
	_      [32]byte // keep neighbouring shards' locks off one cache line
}

// Config configures a Store.
type Config struct {
	// Logger receives malformed-entry and restore diagnostics (never
	// session values). Nil means slog.Default().
	Logger *slog.Logger
}

// Store is the replicated session store: the state machine every node's Raft
// log is applied to. It implements raft.FSM and raft.BatchingFSM. Writes
// arrive only through Apply/ApplyBatch/Restore (serialised by Raft and by an
// internal mutex); Get, Have and Stats may be called concurrently from any
// goroutine.
type Store struct {
	logger *slog.Logger
	seed   maphash.Seed // shard selection; local only, never affects replicated state
	shards [numShards]shard

	// Owned by the apply path (applyMu).
	applyMu sync.Mutex
	mins    [numShards]order // cached table.min() of every shard
	// tour is a tournament tree over mins: node n (1-based, children 2n and
	// 2n+1) holds the shard whose min is smaller; leaves numShards+i hold i.
	// tour[1] is the shard holding the globally soonest-expiring entry, so
	// eviction and EXPIRE find it in O(1) and each write updates 8 nodes.
	tour    [2 * numShards]uint16
	lastNow int64 // latest batch time applied; time never runs backwards
	tickets ticketState
	nextSeq uint64
	scratch [][]byte
	resBuf  []int // result end offsets, reused

	appliedIndex atomic.Uint64
	sessions     atomic.Int64
	payload      atomic.Int64
	adds         atomic.Uint64
	sets         atomic.Uint64
	removes      atomic.Uint64
	takes        atomic.Uint64
	evictions    atomic.Uint64
	expirations  atomic.Uint64
	invalid      atomic.Uint64
	hits         atomic.Uint64
	misses       atomic.Uint64
}

var (
	_ raft.FSM         = (*Store)(nil)
	_ raft.BatchingFSM = (*Store)(nil)
)

// New returns an empty Store.
func New(cfg Config) *Store {
	s := &Store{logger: cfg.Logger, seed: maphash.MakeSeed()}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	for i := range s.shards {
		s.shards[i].t = newTable(s.seed, 0)
		s.tour[numShards+i] = uint16(i)
	}
	s.resetMins()
	return s
}

// resetMins recomputes every cached minimum and the whole tournament tree.
func (s *Store) resetMins() {
	for i := range s.shards {
		s.mins[i] = s.shards[i].t.min()
	}
	for n := numShards - 1; n >= 1; n-- {
		s.tour[n] = s.winner(n)
	}
}

func (s *Store) winner(n int) uint16 {
	l, r := s.tour[2*n], s.tour[2*n+1]
	if s.mins[r].less(s.mins[l]) {
		return r
	}
	return l
}

// setMin records shard i's new minimum and replays its path to the root.
func (s *Store) setMin(i int, o order) {
	s.mins[i] = o
	for n := (numShards + i) / 2; n >= 1; n /= 2 {
		s.tour[n] = s.winner(n)
	}
}

// soonest returns the shard holding the entry with the smallest
// (expiry, seq) in the whole store, or -1 if the store is empty.
func (s *Store) soonest() int {
	i := int(s.tour[1])
	if s.mins[i] == emptyOrder {
		return -1
	}
	return i
}

// locate returns the shard of key and its tag in that shard's index.
func (s *Store) locate(key []byte) (int, uint32) {
	h := hashKey(s.seed, key)
	return int(h % numShards), tagOf(h)
}

// NextExpiry reports the earliest expiry among stored entries (false when the
// store is empty), so the leader proposes EXPIRE only when something is due rather
// than adding a log entry every interval.
func (s *Store) NextExpiry() (time.Time, bool) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	best := emptyOrder
	for _, o := range s.mins {
		if o.less(best) {
			best = o
		}
	}
	if best == emptyOrder {
		return time.Time{}, false
	}
	return time.UnixMilli(best.expiry), true
}

// Stats is a point-in-time view of the store's counters, for metrics.
// Sessions and PayloadBytes describe the replicated state (they include
// expired entries not yet removed by EXPIRE or eviction); the operation
// counters count this node's applied commands and local reads since start
// and are not part of snapshots.
type Stats struct {
	Sessions     int64  // stored entries
	PayloadBytes int64  // sum of key and value lengths of stored entries
	Adds         uint64 // ADDs that stored an entry
	Sets         uint64 // SETs applied
	Removes      uint64 // REMOVEs that deleted a live entry
	Takes        uint64 // TAKEs that returned and deleted a live entry
	Evictions    uint64 // live entries deleted to respect Limits
	Expirations  uint64 // expired entries deleted (EXPIRE, eviction, overwrite)
	Invalid      uint64 // malformed commands refused
	Hits         uint64 // Get/Have that found a live entry
	Misses       uint64 // Get/Have that did not
	AppliedIndex uint64 // index of the last applied Raft log entry
}

// Stats returns the current counters. Safe to call concurrently with
// everything else.
func (s *Store) Stats() Stats {
	return Stats{
		Sessions:     s.sessions.Load(),
		PayloadBytes: s.payload.Load(),
		Adds:         s.adds.Load(),
		Sets:         s.sets.Load(),
		Removes:      s.removes.Load(),
		Takes:        s.takes.Load(),
		Evictions:    s.evictions.Load(),
		Expirations:  s.expirations.Load(),
		Invalid:      s.invalid.Load(),
		Hits:         s.hits.Load(),
		Misses:       s.misses.Load(),
		AppliedIndex: s.appliedIndex.Load(),
	}
}

// Get returns the value stored under key if it is live at now (the caller's
// local clock; it only affects this read). The returned slice is shared with
// the store and must not be modified; it stays valid and unchanged forever.
func (s *Store) Get(key []byte, now time.Time) (value []byte, flags uint32, expiry time.Time, ok bool) {
	value, e, ok := s.lookup(key, now)
	if !ok {
		return nil, 0, time.Time{}, false
	}
	return value, e.flags, time.UnixMilli(e.expiry), true
}

// Have reports whether a live entry exists under key at now (local clock).
func (s *Store) Have(key []byte, now time.Time) bool {
	_, _, ok := s.lookup(key, now)
	return ok
}

func (s *Store) lookup(key []byte, now time.Time) ([]byte, slot, bool) {
	si, tag := s.locate(key)
	sh := &s.shards[si]
	var e slot
	var value []byte
	sh.mu.RLock()
	t := sh.t
	idx, ok := t.find(key, tag)
	if ok {
		e = t.slots[idx]
		_, value = t.record(idx)
	}
	sh.mu.RUnlock()
	if !ok || e.expiry <= now.UnixMilli() {
		s.misses.Add(1)
		return nil, slot{}, false
	}
	s.hits.Add(1)
	return value, e, true
}

// Apply applies one log entry. For a command entry it returns a [][]byte
// holding one encoded Result per command, in order; for an entry that
// cannot be decoded at all it returns an error (and changes nothing); for
// other log types it returns nil. Apply never reads the local clock and does
// not retain l.Data.
func (s *Store) Apply(l *raft.Log) interface{} {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	return s.applyLocked(l)
}

// ApplyBatch applies several log entries in order; see Apply.
func (s *Store) ApplyBatch(logs []*raft.Log) []interface{} {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	out := make([]interface{}, len(logs))
	for i, l := range logs {
		out[i] = s.applyLocked(l)
	}
	return out
}

func (s *Store) applyLocked(l *raft.Log) interface{} {
	if l.Index > s.appliedIndex.Load() {
		s.appliedIndex.Store(l.Index)
	}
	if l.Type != raft.LogCommand {
		return nil
	}
	bt, err := decodeBatch(l.Data, s.scratch)
	if err != nil {
		clear(s.scratch[:cap(s.scratch)]) // drop references into l.Data
		s.logger.Warn("fsm: refusing undecodable log entry", "index", l.Index, "bytes", len(l.Data), "err", err)
		return fmt.Errorf("fsm: log entry %d: %w", l.Index, err)
	}
	now := max(bt.now, s.lastNow)
	s.lastNow = now

	var buf []byte
	ends := s.resBuf[:0]
	for _, raw := range bt.cmds {
		r := s.applyCommand(now, bt.lim, raw)
		if buf == nil {
			buf = make([]byte, 0, len(bt.cmds)+len(r.Value)+resultHeaderLen)
		}
		buf = r.Append(buf)
		ends = append(ends, len(buf))
	}
	out := make([][]byte, len(ends))
	start := 0
	for i, end := range ends {
		out[i] = buf[start:end:end]
		start = end
	}
	s.resBuf = ends
	clear(bt.cmds) // do not retain l.Data
	s.scratch = bt.cmds[:0]
	return out
}

func (s *Store) applyCommand(now int64, lim Limits, raw []byte) Result {
	c, err := decodeCommand(raw)
	if err != nil {
		s.invalid.Add(1)
		return Result{Status: ResultInvalid}
	}
	switch c.op {
	case OpAdd, OpSet:
		return s.applyStore(now, lim, c)
	case OpRemove, OpTake:
		e, ok := s.removeLive(now, c.key)
		if !ok {
			return Result{Status: ResultNotFound}
		}
		if c.op == OpRemove {
			s.removes.Add(1)
			return Result{Status: ResultOK}
		}
		s.takes.Add(1)
		return Result{Status: ResultOK, Value: e.value, Flags: e.flags, Expiry: e.expiry}
	case OpExpire:
		for i := s.soonest(); i >= 0 && s.mins[i].expiry <= now; i = s.soonest() {
			s.removeAt(i, s.shards[i].t.heap[0])
			s.expirations.Add(1)
		}
		return Result{Status: ResultOK}
	case OpRotateTickets:
		return s.applyRotateTickets(now, raw)
	}
	// decodeCommand accepts only the ops above.
	s.invalid.Add(1)
	return Result{Status: ResultInvalid}
}

// removeLive deletes the entry under key. It reports whether that entry was
// live; an expired one is deleted too (as an expiration) but reported absent.
func (s *Store) removeLive(now int64, key []byte) (removed, bool) {
	si, tag := s.locate(key)
	idx, ok := s.shards[si].t.find(key, tag)
	if !ok {
		return removed{}, false
	}
	e := s.removeAt(si, idx)
	if e.expiry <= now {
		s.expirations.Add(1)
		return removed{}, false
	}
	return e, true
}

func (s *Store) applyStore(now int64, lim Limits, c command) Result {
	need := int64(len(c.key) + len(c.value))
	si, tag := s.locate(c.key)
	idx, exists := s.shards[si].t.find(c.key, tag)
	if exists && c.op == OpAdd && s.shards[si].t.slots[idx].expiry > now {
		return Result{Status: ResultExists}
	}
	if lim.MaxBytes > 0 && need > lim.MaxBytes {
		return Result{Status: ResultNoSpace}
	}
	if exists {
		// An expired entry (ADD) or the replaced one (SET) goes first.
		if old := s.removeAt(si, idx); old.expiry <= now {
			s.expirations.Add(1)
		}
	}
	if c.op == OpAdd {
		s.adds.Add(1)
	} else {
		s.sets.Add(1)
	}
	expiry := int64(math.MaxInt64) // saturate rather than wrap
	if c.ttlMS <= uint64(math.MaxInt64-max(now, 0)) {
		expiry = now + int64(c.ttlMS)
	}
	if expiry <= now {
		// Zero lifetime: accepted but never visible, so not stored.
		return Result{Status: ResultOK}
	}
	for (lim.MaxSessions > 0 && s.sessions.Load() >= int64(lim.MaxSessions)) ||
		(lim.MaxBytes > 0 && s.payload.Load()+need > lim.MaxBytes) {
		if !s.evictOne(now) {
			break
		}
	}
	s.insertAt(si, tag, c.key, c.value, slot{expiry: expiry, seq: s.nextSeq, flags: c.flags})
	s.nextSeq++
	return Result{Status: ResultOK}
}

// evictOne deletes the entry with the smallest (expiry, seq) in the store;
// it reports false if the store is empty.
func (s *Store) evictOne(now int64) bool {
	best := s.soonest()
	if best < 0 {
		return false
	}
	e := s.removeAt(best, s.shards[best].t.heap[0])
	if e.expiry <= now {
		s.expirations.Add(1)
	} else {
		s.evictions.Add(1)
	}
	return true
}

// writable returns shard i's table, cloning it first if a snapshot holds it.
func (s *Store) writable(i int) *table {
	sh := &s.shards[i]
	if !sh.frozen {
		return sh.t
	}
	t := sh.t.clone() // readers may read sh.t meanwhile; it is not modified
	sh.mu.Lock()
	sh.t = t
	sh.frozen = false
	sh.mu.Unlock()
	return t
}

func (s *Store) insertAt(i int, tag uint32, key, value []byte, e slot) {
	t := s.writable(i)
	sh := &s.shards[i]
	sh.mu.Lock()
	t.insert(tag, key, value, e)
	sh.mu.Unlock()
	s.setMin(i, t.min())
	s.sessions.Add(1)
	s.payload.Add(int64(len(key) + len(value)))
}

// removeAt deletes slot idx of shard i. A shard left mostly empty (mass
// deletion, eviction after a lower limit) is replaced by a right-sized copy
// so that its index and slabs give memory back.
func (s *Store) removeAt(i int, idx int32) removed {
	t := s.writable(i)
	sh := &s.shards[i]
	sh.mu.Lock()
	e := t.remove(idx)
	sh.mu.Unlock()
	if t.sparse() {
		c := t.compacted() // readers may read t meanwhile; it is not modified
		sh.mu.Lock()
		sh.t = c
		sh.mu.Unlock()
		t = c
	}
	s.setMin(i, t.min())
	s.sessions.Add(-1)
	s.payload.Add(-e.size)
	return e
}

// Package fsm is the replicated session store: the deterministic state
// machine that every node's Raft log is applied to (raft.FSM and
// raft.BatchingFSM), plus the binary encodings of its commands, log entries,
// results and snapshots.
//
// # Data model
//
// One keyspace of binary keys (1..MaxKeyLen bytes) mapping to binary values
// (0..MaxValueLen bytes), each with an absolute expiry (Unix milliseconds) and
// a 32-bit opaque word for front-ends (memcache flags). An entry is live while
// now < expiry: an entry that expires at T is already absent at T. A lifetime
// of 0 therefore yields an entry that is accepted (ResultOK) but never visible
// — the distcache behaviour for timeout 0 — and such an entry is not stored.
//
// # Determinism
//
// The leader stamps its clock into every log entry (EncodeBatch) together with
// the size Limits from its configuration; Apply never reads a clock and never
// looks at local flags, so identical logs give identical state. The batch
// time is clamped to never run backwards (a new leader with a slower clock
// cannot resurrect expired entries); the clamped time is part of the state.
// Every inserted entry gets a sequence number from a counter in the state;
// eviction removes the entry with the smallest (expiry, seq) — soonest expiry
// first, ties by insertion order — and never depends on reads, which are not
// replicated. Only as many entries as needed are evicted (the C server
// evicted N/30 at a time; that batching was an artefact of its sorted
// array). SET of an existing key counts as a new insertion (new seq).
//
// Reads (Get, Have) are local and concurrent with Apply; they hide entries
// whose expiry has passed by the caller's clock. Expired entries occupy
// memory until an EXPIRE command (proposed periodically by the leader), an
// overwrite of the same key, or eviction removes them; they are evicted
// before any live entry because their expiry is the smallest.
//
// # Encodings
//
// Commands: version u8 | op u8 | op-specific fields (see AppendAdd ...),
// varints for lengths and lifetimes. A log entry: version u8 | now i64 |
// limits | count | length-prefixed commands (see EncodeBatch). A whole entry
// is parsed before anything is applied; an undecodable entry changes nothing
// and Apply returns an error value, a malformed command inside a decodable
// entry yields ResultInvalid for that command only. Apply returns [][]byte,
// one encoded Result per command.
//
// # Memory layout
//
// The keyspace is split into 256 shards by a seeded hash (local only; it never
// influences replicated state or snapshot bytes). A shard's table (table.go)
// holds its keys and values in append-only byte slabs (512 B growing to
// 64 KiB with the shard; a record over 16 KiB gets a slab of its own), and
// beside them arrays without pointers, which the garbage collector never
// scans: a 32-byte slot per entry (slab offset, expiry, seq, flags, heap
// position), an open-addressing index of 32-bit hash tags and slot numbers
// (at most 3/4 full, deletion by backward shift, no tombstones), a min-heap
// of slots ordered by (expiry, seq) and a free list. A 256-leaf tournament
// tree over the shards' minimums finds the globally soonest-expiring entry in
// O(1) for eviction and EXPIRE. A session costs its key and value plus 4
// bytes of record header and about 60 bytes of slot, index and heap.
//
// Bytes once written to a slab are never changed, so a value returned by Get
// or TAKE stays valid and unchanged while the store moves on. Freed space is
// reclaimed by copying, never by reuse in place: a slab with no live record
// is released, one less than half live (and not the one being filled) has
// its live records copied to the slab being filled and is released; a shard
// whose slot capacity is less than a quarter used (mass deletion, a lowered
// limit) is rebuilt right-sized, index and slabs included.
//
// # Ticket keys
//
// Besides the keyspace the store holds a ring of TLS session-ticket keys
// (tickets.go): the current key, the next one and past ones, changed only by
// ROTATE_TICKETS, which carries the new key bytes (drawn by the proposer) and
// the generation it expects, so that two proposals made from the same ring
// rotate once. Retention of past keys is decided at the batch time, like
// expiry. Key bytes never appear in logs, errors or String output.
//
// # Snapshots
//
// Snapshot marks every shard copy-on-write in O(256) and hands the current
// tables to the snapshot; the first later write to a shard clones that
// shard's slots, index and heap (never the slabs, which are append-only),
// which bounds the Apply stall to one shard's worth of copying. Persist sorts the frozen entries by (expiry, seq)
// and streams them: a versioned header, fixed-size record headers, and a
// CRC-32C trailer. The bytes are a pure function of the replicated state, so
// two replicas can be compared byte for byte. A non-empty ticket ring follows
// as a versioned section of its own with its own checksum; a snapshot without
// it (older, or no ring) restores an empty ring. Restore validates everything
// (magic, version, order, uniqueness, lengths, checksum, trailing bytes)
// while building the new state aside, and swaps it in only when complete.
package fsm

package fsm

import (
	"bytes"
	"hash/maphash"
	"math/bits"
	"slices"
)

// Slab sizes. A shard's records go into append-only byte slabs; the slab
// being filled grows with the shard (slabMin..slabMax) so that a small store
// does not reserve 256 large slabs, and a record larger than slabMax/4 gets a
// slab of its own so that it never strands the rest of a shared one.
const (
	slabMin = 512
	slabMax = 64 << 10
	// recordHeaderBytes precede every record in a slab: key length u8,
	// value length u24 (big-endian; MaxValueLen needs 17 bits).
	recordHeaderBytes = 4
	// shrinkMinSlots: tables with fewer slots never shrink (they are small
	// already and would only churn).
	shrinkMinSlots = 256
)

// slot is the fixed-size record of one stored session. It holds no
// pointers, so the garbage collector never scans the slot arrays; the key
// and value live in the table's slabs at ref.
type slot struct {
	ref    uint64 // slab number << 32 | offset of the record in that slab
	expiry int64  // absolute, Unix milliseconds; live while now < expiry
	seq    uint64 // deterministic insertion sequence, breaks expiry ties
	flags  uint32
	hpos   int32 // position in table.heap
}

// table is the data of one shard: an open-addressing index from key hash to
// slot, the slots, a min-heap of slots ordered by (expiry, seq), a free list
// of slots, and the slabs holding keys and values. Once a table has been
// handed to a snapshot it is frozen and never modified again; the next write
// clones it (everything but the slab bytes, which are append-only: bytes
// once written are never changed, so readers, snapshots and TAKE results may
// keep slices into them).
type table struct {
	seed maphash.Seed // the store's; recomputes a record's hash when compacting
	// index is a linear-probing hash table of tag<<32 | slot+1 (0 is empty),
	// tag being the upper half of the key's 64-bit hash; its length is a
	// power of two (or 0) and it is at most 3/4 full. The home bucket of a
	// key is tag & (len-1).
	index []uint64
	slots []slot
	heap  []int32
	free  []int32

	slabs     [][]byte // nil once released
	live      []uint32 // record bytes still referenced, per slab
	freeSlabs []uint32 // released slab numbers, for reuse
	cur       int32    // slab being filled, -1 if none
	retired   []int32  // slabs that were cur, until settle looks at them
	payload   int64    // key and value bytes of stored entries
}

func newTable(seed maphash.Seed, capacity int) *table {
	t := &table{
		seed: seed,
		cur:  -1,
	}
	if capacity > 0 {
		t.slots = make([]slot, 0, capacity)
		t.heap = make([]int32, 0, capacity)
		t.index = make([]uint64, indexLen(capacity))
	}
	return t
}

// indexLen is the index length that holds n keys at most 3/4 full.
func indexLen(n int) int {
	want := n + n/3 + 1
	return max(8, 1<<bits.Len(uint(want-1)))
}

// hashKey is the 64-bit hash of a key: the low bits choose the shard, the
// upper 32 are the index tag. It is local (seeded per process) and never
// influences replicated state or snapshot bytes.
func hashKey(seed maphash.Seed, key []byte) uint64 {
	return maphash.Bytes(seed, key)
}

func tagOf(h uint64) uint32 { return uint32(h >> 32) }

// clone returns a copy of the index structures; the slabs' bytes are
// shared (append-only). Capacities are kept so that the clone does not
// reallocate (a second stall) on its next insert.
func (t *table) clone() *table {
	c := *t
	c.index = slices.Clone(t.index)
	c.slots = append(make([]slot, 0, cap(t.slots)), t.slots...)
	c.heap = append(make([]int32, 0, cap(t.heap)), t.heap...)
	c.free = slices.Clone(t.free)
	c.slabs = slices.Clone(t.slabs)
	c.live = slices.Clone(t.live)
	c.freeSlabs = slices.Clone(t.freeSlabs)
	c.retired = nil // settle empties it before every return
	return &c
}

// len is the number of stored entries.
func (t *table) len() int { return len(t.heap) }

// record returns the key and value of slot i. The slices point into a slab
// and stay valid and unchanged forever.
func (t *table) record(i int32) (key, value []byte) {
	ref := t.slots[i].ref
	b := t.slabs[ref>>32][uint32(ref):]
	klen := int(b[0])
	vlen := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	k := recordHeaderBytes + klen
	return b[recordHeaderBytes:k:k], b[k : k+vlen : k+vlen]
}

// find returns the slot holding key, whose hash has tag.
func (t *table) find(key []byte, tag uint32) (int32, bool) {
	if len(t.index) == 0 {
		return -1, false
	}
	mask := len(t.index) - 1
	for p := int(tag) & mask; ; p = (p + 1) & mask {
		b := t.index[p]
		if b == 0 {
			return -1, false
		}
		if uint32(b>>32) == tag {
			i := int32(uint32(b)) - 1
			if k, _ := t.record(i); bytes.Equal(k, key) {
				return i, true
			}
		}
	}
}

// place puts bucket b (tag<<32 | slot+1) into the index; there is room.
func (t *table) place(b uint64) {
	mask := len(t.index) - 1
	p := int(b>>32) & mask
	for t.index[p] != 0 {
		p = (p + 1) & mask
	}
	t.index[p] = b
}

// unplace deletes bucket b from the index, shifting later members of its
// probe run back so that no tombstones are needed.
func (t *table) unplace(b uint64) {
	mask := len(t.index) - 1
	i := int(b>>32) & mask
	for t.index[i] != b {
		i = (i + 1) & mask
	}
	for j := i; ; {
		j = (j + 1) & mask
		c := t.index[j]
		if c == 0 {
			break
		}
		// c may move back to i unless its home lies cyclically in (i, j].
		home := int(c>>32) & mask
		if (i <= j && i < home && home <= j) || (i > j && (i < home || home <= j)) {
			continue
		}
		t.index[i] = c
		i = j
	}
	t.index[i] = 0
}

// resizeIndex rebuilds the index with n buckets (a power of two).
func (t *table) resizeIndex(n int) {
	old := t.index
	t.index = make([]uint64, n)
	for _, b := range old {
		if b != 0 {
			t.place(b)
		}
	}
}

func (t *table) less(a, b int32) bool {
	ea, eb := &t.slots[a], &t.slots[b]
	if ea.expiry != eb.expiry {
		return ea.expiry < eb.expiry
	}
	return ea.seq < eb.seq
}

func (t *table) swap(i, j int) {
	h := t.heap
	h[i], h[j] = h[j], h[i]
	t.slots[h[i]].hpos = int32(i)
	t.slots[h[j]].hpos = int32(j)
}

func (t *table) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !t.less(t.heap[j], t.heap[i]) {
			break
		}
		t.swap(i, j)
		j = i
	}
}

func (t *table) down(i0 int) bool {
	i, n := i0, len(t.heap)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && t.less(t.heap[r], t.heap[l]) {
			j = r
		}
		if !t.less(t.heap[j], t.heap[i]) {
			break
		}
		t.swap(i, j)
		i = j
	}
	return i > i0
}

// insert stores key → value with the expiry, seq and flags of e; the key
// must not be present and its hash must have tag.
func (t *table) insert(tag uint32, key, value []byte, e slot) {
	if (len(t.heap)+1)*4 > len(t.index)*3 {
		t.resizeIndex(max(8, 2*len(t.index)))
	}
	var idx int32
	if n := len(t.free); n > 0 {
		idx = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		idx = int32(len(t.slots))
		t.slots = append(t.slots, slot{})
	}
	e.ref = t.storeRecord(key, value)
	e.hpos = int32(len(t.heap))
	t.slots[idx] = e
	t.heap = append(t.heap, idx)
	t.up(len(t.heap) - 1)
	t.place(uint64(tag)<<32 | uint64(idx+1))
	t.payload += int64(len(key) + len(value))
	t.settle()
}

// removed describes an entry that remove deleted. value points into a slab
// and stays valid.
type removed struct {
	value  []byte
	expiry int64
	flags  uint32
	size   int64 // key and value bytes
}

// remove deletes slot idx and returns what it held.
func (t *table) remove(idx int32) removed {
	e := t.slots[idx]
	key, value := t.record(idx)
	r := removed{value: value, expiry: e.expiry, flags: e.flags, size: int64(len(key) + len(value))}
	pos, last := int(e.hpos), len(t.heap)-1
	if pos != last {
		t.swap(pos, last)
	}
	t.heap = t.heap[:last]
	if pos < last && !t.down(pos) {
		t.up(pos)
	}
	t.unplace(uint64(tagOf(hashKey(t.seed, key)))<<32 | uint64(idx+1))
	t.slots[idx] = slot{}
	t.free = append(t.free, idx)
	t.payload -= r.size
	t.releaseRecord(e.ref, recordHeaderBytes+int(r.size))
	t.settle()
	return r
}

func (t *table) min() order {
	if len(t.heap) == 0 {
		return emptyOrder
	}
	e := &t.slots[t.heap[0]]
	return order{e.expiry, e.seq}
}

// storeRecord appends a record to a slab and returns its ref.
func (t *table) storeRecord(key, value []byte) uint64 {
	n := recordHeaderBytes + len(key) + len(value)
	var s int32
	switch {
	case n > slabMax/4:
		s = t.newSlab(n) // a slab of its own; t.cur stays
	case t.cur < 0 || cap(t.slabs[t.cur])-len(t.slabs[t.cur]) < n:
		size := slabMin
		if want := t.payload / 8; want >= slabMax {
			size = slabMax
		} else if want > slabMin {
			size = 1 << bits.Len64(uint64(want-1))
		}
		if t.cur >= 0 {
			t.retired = append(t.retired, t.cur)
		}
		t.cur = t.newSlab(size)
		s = t.cur
	default:
		s = t.cur
	}
	b := t.slabs[s]
	off := len(b)
	vlen := len(value)
	b = append(b, byte(len(key)), byte(vlen>>16), byte(vlen>>8), byte(vlen))
	b = append(b, key...)
	b = append(b, value...)
	t.slabs[s] = b
	t.live[s] += uint32(n)
	return uint64(s)<<32 | uint64(off)
}

// newSlab allocates an empty slab of capacity size and returns its number.
func (t *table) newSlab(size int) int32 {
	b := make([]byte, 0, size)
	if n := len(t.freeSlabs); n > 0 {
		s := t.freeSlabs[n-1]
		t.freeSlabs = t.freeSlabs[:n-1]
		t.slabs[s] = b
		return int32(s)
	}
	t.slabs = append(t.slabs, b)
	t.live = append(t.live, 0)
	return int32(len(t.slabs) - 1)
}

// releaseRecord accounts for the death of the n-byte record at ref. A slab
// with no live record left is released; one that is less than half live
// (and is not the slab being filled) is compacted: its live records are
// copied to the slab being filled and it is released, so dead bytes never
// exceed live ones outside the current slab. Released slabs are never
// written again; slices into them stay valid for whoever holds them.
func (t *table) releaseRecord(ref uint64, n int) {
	s := int32(ref >> 32)
	t.live[s] -= uint32(n)
	switch {
	case s == t.cur:
	case t.live[s] == 0:
		t.dropSlab(s)
	case uint64(t.live[s])*2 < uint64(len(t.slabs[s])):
		t.compactSlab(s)
	}
}

// settle applies releaseRecord's rule to a slab that stopped being the one
// being filled (its records died while it was current).
func (t *table) settle() {
	for len(t.retired) > 0 {
		s := t.retired[len(t.retired)-1]
		t.retired = t.retired[:len(t.retired)-1]
		if t.slabs[s] == nil || s == t.cur {
			continue
		}
		switch {
		case t.live[s] == 0:
			t.dropSlab(s)
		case uint64(t.live[s])*2 < uint64(len(t.slabs[s])):
			t.compactSlab(s)
		}
	}
}

func (t *table) dropSlab(s int32) {
	t.slabs[s] = nil
	t.live[s] = 0
	t.freeSlabs = append(t.freeSlabs, uint32(s))
}

// compactSlab moves slab s's live records to the slab being filled and
// releases s. A record is live if the index maps its key to a slot that
// refers to it.
func (t *table) compactSlab(s int32) {
	b := t.slabs[s]
	for off := 0; off < len(b); {
		klen := int(b[off])
		vlen := int(b[off+1])<<16 | int(b[off+2])<<8 | int(b[off+3])
		k := off + recordHeaderBytes
		key, value := b[k:k+klen], b[k+klen:k+klen+vlen]
		ref := uint64(s)<<32 | uint64(off)
		if i, ok := t.find(key, tagOf(hashKey(t.seed, key))); ok && t.slots[i].ref == ref {
			t.slots[i].ref = t.storeRecord(key, value)
		}
		off = k + klen + vlen
	}
	t.dropSlab(s)
}

// sparse reports whether most of the table's slot capacity is unused (after
// mass deletion), so that compacted would give memory back.
func (t *table) sparse() bool {
	return cap(t.slots) >= shrinkMinSlots && len(t.heap)*4 < cap(t.slots)
}

// compacted returns a new table holding the same entries in right-sized
// arrays and fresh slabs. The receiver is not modified.
func (t *table) compacted() *table {
	n := len(t.heap)
	c := newTable(t.seed, n+n/4)
	for _, i := range t.heap {
		e := t.slots[i]
		key, value := t.record(i)
		// The heap order is kept: slot j goes to heap position j.
		e.ref = c.storeRecord(key, value)
		c.slots = append(c.slots, e)
		j := int32(len(c.heap))
		c.heap = append(c.heap, j)
		c.place(uint64(tagOf(hashKey(t.seed, key)))<<32 | uint64(j+1))
		c.payload += int64(len(key) + len(value))
	}
	return c
}

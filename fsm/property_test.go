package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// model is the trivially correct reference: a plain map, eviction by a full
// scan for the smallest (expiry, seq).
type model struct {
	m    map[string]modelEntry
	now  int64
	seq  uint64
	ring TicketRing
}

type modelEntry struct {
	value  []byte
	flags  uint32
	expiry int64
	seq    uint64
}

// op is a generated command in structured form; the store gets its
// encoding, the model the structure.
type op struct {
	kind  Op
	key   []byte
	value []byte
	flags uint32
	ttl   int64 // ms
	bad   []byte
	// ROTATE_TICKETS: the generation it expects (set by resolveRotations),
	// whether that is deliberately not the ring's, and the new keys.
	expect uint64
	stale  bool
	keys   [][TicketKeyLen]byte
}

// resolveRotations gives each ROTATE_TICKETS in ops the generation it expects,
// for a ring at generation gen before the batch: the ring's own (it rotates)
// unless the op is stale (it conflicts, as a leader's late proposal would),
// and the number of keys that generation needs.
func resolveRotations(ops []op, gen uint64) uint64 {
	for i := range ops {
		o := &ops[i]
		if o.kind != OpRotateTickets {
			continue
		}
		o.expect = gen
		if o.stale {
			o.expect = gen + 1
		} else {
			gen++
		}
		if o.expect != 0 {
			o.keys = o.keys[:1]
		}
	}
	return gen
}

// opGarbage is op.kind for bytes that are not a valid command.
const opGarbage Op = 255

func (o op) encode() []byte {
	switch o.kind {
	case OpAdd:
		return AppendAdd(nil, o.key, o.value, o.flags, ms(o.ttl))
	case OpSet:
		return AppendSet(nil, o.key, o.value, o.flags, ms(o.ttl))
	case OpRemove:
		return AppendRemove(nil, o.key)
	case OpTake:
		return AppendTake(nil, o.key)
	case OpExpire:
		return AppendExpire(nil)
	case OpRotateTickets:
		return AppendRotateTickets(nil, o.expect, ms(o.ttl), o.keys...)
	}
	return o.bad
}

func (m *model) payload() int64 {
	var n int64
	for k, e := range m.m {
		n += int64(len(k) + len(e.value))
	}
	return n
}

func (m *model) evictMin() {
	var victim string
	var best *modelEntry
	for k, e := range m.m {
		if best == nil || e.expiry < best.expiry || (e.expiry == best.expiry && e.seq < best.seq) {
			victim, best = k, &e
		}
	}
	delete(m.m, victim)
}

func (m *model) apply(lim Limits, o op) Result {
	now := m.now
	k := string(o.key)
	switch o.kind {
	case OpAdd, OpSet:
		if e, ok := m.m[k]; ok && o.kind == OpAdd && e.expiry > now {
			return Result{Status: ResultExists}
		}
		need := int64(len(o.key) + len(o.value))
		if lim.MaxBytes > 0 && need > lim.MaxBytes {
			return Result{Status: ResultNoSpace}
		}
		delete(m.m, k)
		exp := now + max(o.ttl, 0)
		if exp <= now {
			return Result{Status: ResultOK}
		}
		for (lim.MaxSessions > 0 && len(m.m) >= lim.MaxSessions) || (lim.MaxBytes > 0 && m.payload()+need > lim.MaxBytes) {
			m.evictMin()
		}
		m.m[k] = modelEntry{value: bytes.Clone(o.value), flags: o.flags, expiry: exp, seq: m.seq}
		m.seq++
		return Result{Status: ResultOK}
	case OpRemove, OpTake:
		e, ok := m.m[k]
		delete(m.m, k)
		if !ok || e.expiry <= now {
			return Result{Status: ResultNotFound}
		}
		if o.kind == OpRemove {
			return Result{Status: ResultOK}
		}
		return Result{Status: ResultOK, Value: e.value, Flags: e.flags, Expiry: e.expiry}
	case OpExpire:
		maps.DeleteFunc(m.m, func(_ string, e modelEntry) bool { return e.expiry <= now })
		return Result{Status: ResultOK}
	case OpRotateTickets:
		return m.rotate(o)
	}
	return Result{Status: ResultInvalid}
}

// rotate is the ring's reference: the new next key appended behind the old
// next, the old current retired at the front of the past keys, past keys
// kept while younger than the retention, at most MaxTicketKeys in all.
func (m *model) rotate(o op) Result {
	if m.ring.Generation != o.expect {
		return Result{Status: ResultExists}
	}
	gen := m.ring.Generation + 1
	if gen == 1 {
		m.ring = TicketRing{Generation: 1, RotatedAt: m.now, Keys: []TicketKey{
			{ID: 1, Created: m.now, Material: o.keys[0]}, {ID: 2, Created: m.now, Material: o.keys[1]},
		}}
		return Result{Status: ResultOK}
	}
	old := m.ring.Keys
	cur := old[0]
	cur.Retired = m.now
	keys := []TicketKey{old[1], {ID: gen + 1, Created: m.now, Material: o.keys[0]}, cur}
	for _, k := range old[2:] {
		if m.now-k.Retired < max(o.ttl, 0) {
			keys = append(keys, k)
		}
	}
	m.ring = TicketRing{Generation: gen, RotatedAt: m.now, Keys: keys[:min(len(keys), MaxTicketKeys)]}
	return Result{Status: ResultOK}
}

func (m *model) clone() *model {
	c := &model{m: maps.Clone(m.m), now: m.now, seq: m.seq, ring: m.ring}
	return c
}

// dumpEntry is one entry of a store or model, for whole-state comparison.
type dumpEntry struct {
	key    string
	value  string
	flags  uint32
	expiry int64
	seq    uint64
}

func (m *model) dump() []dumpEntry {
	var out []dumpEntry
	for k, e := range m.m {
		out = append(out, dumpEntry{k, string(e.value), e.flags, e.expiry, e.seq})
	}
	slices.SortFunc(out, func(a, b dumpEntry) int { return int(a.seq) - int(b.seq) })
	return out
}

func dumpStore(s *Store) []dumpEntry {
	var out []dumpEntry
	for i := range s.shards {
		t := s.shards[i].t
		for _, slot := range t.heap {
			e := &t.slots[slot]
			key, value := t.record(slot)
			out = append(out, dumpEntry{string(key), string(value), e.flags, e.expiry, e.seq})
		}
	}
	slices.SortFunc(out, func(a, b dumpEntry) int { return int(a.seq) - int(b.seq) })
	return out
}

// checkInvariants verifies the store's internal structures against each
// other: index ↔ slots ↔ heap positions, heap order, slab accounting,
// cached minimums, counters.
func checkInvariants(t fataler, s *Store) {
	var n, payload int64
	for i := range s.shards {
		tb := s.shards[i].t
		buckets := 0
		for _, b := range tb.index {
			if b != 0 {
				buckets++
			}
		}
		if buckets != len(tb.heap) {
			t.Fatalf("shard %d: %d keys, %d heap slots", i, buckets, len(tb.heap))
		}
		live := make([]uint32, len(tb.slabs))
		var tablePayload int64
		for pos, slot := range tb.heap {
			e := &tb.slots[slot]
			key, value := tb.record(slot)
			si, tag := s.locate(key)
			if found, ok := tb.find(key, tag); si != i || !ok || int(e.hpos) != pos || found != slot {
				t.Fatalf("shard %d: slot %d inconsistent", i, slot)
			}
			live[e.ref>>32] += uint32(recordHeaderBytes + len(key) + len(value))
			tablePayload += int64(len(key) + len(value))
			if pos > 0 && tb.less(slot, tb.heap[(pos-1)/2]) {
				t.Fatalf("shard %d: heap order violated at %d", i, pos)
			}
			n++
			payload += int64(len(key) + len(value))
		}
		if !slices.Equal(live, tb.live) || tablePayload != tb.payload {
			t.Fatalf("shard %d: slab accounting %v / %d, computed %v / %d", i, tb.live, tb.payload, live, tablePayload)
		}
		for sl, b := range tb.slabs {
			if int32(sl) != tb.cur && b != nil && uint64(live[sl])*2 < uint64(len(b)) {
				t.Fatalf("shard %d: slab %d less than half live (%d of %d bytes) and not compacted", i, sl, live[sl], len(b))
			}
		}
		if s.mins[i] != tb.min() {
			t.Fatalf("shard %d: cached min %v, heap min %v", i, s.mins[i], tb.min())
		}
	}
	for n := 1; n < numShards; n++ {
		if s.tour[n] != s.winner(n) {
			t.Fatalf("tournament node %d stale", n)
		}
	}
	if i := s.soonest(); i >= 0 {
		for j := range s.mins {
			if s.mins[j].less(s.mins[i]) {
				t.Fatalf("soonest shard %d, but shard %d has a smaller min", i, j)
			}
		}
	}
	if st := s.Stats(); st.Sessions != n || st.PayloadBytes != payload {
		t.Fatalf("counters say %d sessions / %d bytes, structures hold %d / %d", st.Sessions, st.PayloadBytes, n, payload)
	}
}

func genOp(keys []string) *rapid.Generator[op] {
	return rapid.Custom(func(t *rapid.T) op {
		o := op{kind: Op(rapid.IntRange(1, 7).Draw(t, "kind"))}
		if o.kind == 7 {
			o.kind = opGarbage
		}
		o.key = []byte(rapid.SampledFrom(keys).Draw(t, "key"))
		switch o.kind {
		case OpAdd, OpSet:
			o.value = rapid.SliceOfN(rapid.Byte(), 0, 12).Draw(t, "value")
			o.flags = rapid.Uint32().Draw(t, "flags")
			o.ttl = rapid.Int64Range(-1, 12).Draw(t, "ttl")
		case OpExpire:
			o.key = nil
		case OpRotateTickets:
			o.key = nil
			o.stale = rapid.IntRange(0, 4).Draw(t, "stale") == 0
			o.ttl = rapid.Int64Range(-1, 12).Draw(t, "retain")
			for range 2 {
				var k [TicketKeyLen]byte
				copy(k[:], rapid.SliceOfN(rapid.Byte(), 1, 4).Draw(t, "keyBytes"))
				o.keys = append(o.keys, k)
			}
		case opGarbage:
			o.bad = rapid.SliceOfN(rapid.Byte(), 0, 6).Draw(t, "garbage")
			if ValidateCommand(o.bad) == nil {
				o.bad = nil // an accidentally valid command: use the empty one
			}
		}
		return o
	})
}

func sameResult(a, b Result) bool {
	return a.Status == b.Status && a.Flags == b.Flags && a.Expiry == b.Expiry &&
		(a.Value == nil) == (b.Value == nil) && bytes.Equal(a.Value, b.Value)
}

// TestStoreMatchesModel runs random batches of random commands, with random
// caps and a clock that sometimes runs backwards, against the model, and
// compares every result, random reads at random local times, the whole
// state, and snapshots taken mid-way and persisted later.
func TestStoreMatchesModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		keys := rapid.SliceOfNDistinct(rapid.StringN(1, 3, 3), 1, 12, rapid.ID).Draw(t, "keys")
		s := newTestStore()
		a := &applier{t: t, s: s}
		m := &model{m: map[string]modelEntry{}}
		lim := Limits{
			MaxSessions: rapid.IntRange(0, 8).Draw(t, "maxSessions"),
			MaxBytes:    rapid.Int64Range(0, 60).Draw(t, "maxBytes"),
		}
		type pending struct {
			snap *snapshot
			m    *model
		}
		var snaps []pending
		clock := int64(1000)

		steps := rapid.IntRange(1, 60).Draw(t, "steps")
		for range steps {
			clock += rapid.Int64Range(-3, 6).Draw(t, "tick")
			if rapid.IntRange(0, 9).Draw(t, "limchange") == 0 {
				lim.MaxSessions = rapid.IntRange(0, 8).Draw(t, "maxSessions")
			}
			ops := rapid.SliceOfN(genOp(keys), 1, 6).Draw(t, "ops")
			resolveRotations(ops, m.ring.Generation)
			cmds := make([][]byte, len(ops))
			for i, o := range ops {
				cmds[i] = o.encode()
			}
			got := a.apply(clock, lim, cmds...)
			m.now = max(m.now, clock)
			for i, o := range ops {
				want := m.apply(lim, o)
				if !sameResult(got[i], want) {
					t.Fatalf("%v %q at %d: store %+v, model %+v", o.kind, o.key, m.now, got[i], want)
				}
			}
			for range rapid.IntRange(0, 4).Draw(t, "reads") {
				k := rapid.SampledFrom(keys).Draw(t, "readKey")
				at := m.now + rapid.Int64Range(-20, 40).Draw(t, "readSkew")
				e, ok := m.m[k]
				ok = ok && e.expiry > at
				v, flags, exp, hit := s.Get([]byte(k), time.UnixMilli(at))
				if hit != ok || s.Have([]byte(k), time.UnixMilli(at)) != ok {
					t.Fatalf("read %q at %d: store hit %v, model %v", k, at, hit, ok)
				}
				if ok && (!bytes.Equal(v, e.value) || flags != e.flags || exp.UnixMilli() != e.expiry) {
					t.Fatalf("read %q: store %q/%d/%d, model %q/%d/%d", k, v, flags, exp.UnixMilli(), e.value, e.flags, e.expiry)
				}
			}
			if rapid.IntRange(0, 5).Draw(t, "snap") == 0 {
				sn, _ := s.Snapshot()
				snaps = append(snaps, pending{sn.(*snapshot), m.clone()})
			}
			checkInvariants(t, s)
			if !slices.Equal(dumpStore(s), m.dump()) {
				t.Fatalf("state differs:\nstore %v\nmodel %v", dumpStore(s), m.dump())
			}
			if ring, _ := s.TicketRing(); !reflect.DeepEqual(ring, m.ring) {
				t.Fatalf("ticket ring differs:\nstore %+v\nmodel %+v", ring, m.ring)
			}
		}
		// Persist the (long since frozen) snapshots now and check each
		// restores to the model state of its moment.
		for i, p := range snaps {
			var buf bytes.Buffer
			if err := p.snap.write(&buf); err != nil {
				t.Fatal(err)
			}
			r := newTestStore()
			if err := r.Restore(nopCloser{&buf}); err != nil {
				t.Fatalf("restore snapshot %d: %v", i, err)
			}
			checkInvariants(t, r)
			if ring, _ := r.TicketRing(); !reflect.DeepEqual(ring, p.m.ring) {
				t.Fatalf("snapshot %d restored ticket ring %+v, model had %+v", i, ring, p.m.ring)
			}
			if !slices.Equal(dumpStore(r), p.m.dump()) || r.lastNow != p.m.now || r.nextSeq != p.m.seq {
				t.Fatalf("snapshot %d restored to %v (now %d seq %d), model had %v (now %d seq %d)",
					i, dumpStore(r), r.lastNow, r.nextSeq, p.m.dump(), p.m.now, p.m.seq)
			}
		}
	})
}

type nopCloser struct{ *bytes.Buffer }

func (nopCloser) Close() error { return nil }

func snapshotBytes(t interface {
	Helper()
	Fatal(...any)
}, s *Store) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestDeterminism feeds the same log to two stores whose local reads use
// different clocks, and requires byte-identical snapshots; a store restored
// from the snapshot must snapshot to the same bytes and answer the rest of
// the log identically.
func TestDeterminism(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		keys := rapid.SliceOfNDistinct(rapid.StringN(1, 4, 4), 1, 30, rapid.ID).Draw(t, "keys")
		s1, s2 := newTestStore(), newTestStore()
		a1, a2 := &applier{t: t, s: s1}, &applier{t: t, s: s2}
		lim := Limits{MaxSessions: rapid.IntRange(0, 20).Draw(t, "maxSessions"), MaxBytes: rapid.Int64Range(0, 200).Draw(t, "maxBytes")}
		clock := int64(1 << 40)
		var log [][][]byte
		var times []int64
		var gen uint64 // the ticket ring's generation after the batches so far
		for range rapid.IntRange(1, 30).Draw(t, "batches") {
			clock += rapid.Int64Range(-3, 10).Draw(t, "tick")
			ops := rapid.SliceOfN(genOp(keys), 1, 8).Draw(t, "ops")
			gen = resolveRotations(ops, gen)
			cmds := make([][]byte, len(ops))
			for i, o := range ops {
				cmds[i] = o.encode()
			}
			log, times = append(log, cmds), append(times, clock)
		}
		cut := rapid.IntRange(0, len(log)).Draw(t, "cut")
		var r *Store
		var ra *applier
		for i, cmds := range log {
			if i == cut {
				b1 := snapshotBytes(t, s1)
				r = newTestStore()
				if err := r.Restore(nopCloser{bytes.NewBuffer(b1)}); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(snapshotBytes(t, r), b1) {
					t.Fatal("restored store snapshots differently")
				}
				ra = &applier{t: t, s: r, index: a1.index}
			}
			res1 := a1.apply(times[i], lim, cmds...)
			// s2's node has a clock two minutes fast and reads a lot.
			for _, k := range keys {
				s2.Get([]byte(k), time.UnixMilli(times[i]+120_000))
			}
			res2 := a2.apply(times[i], lim, cmds...)
			for j := range res1 {
				if !sameResult(res1[j], res2[j]) {
					t.Fatalf("batch %d cmd %d: %+v vs %+v", i, j, res1[j], res2[j])
				}
			}
			if ra != nil {
				resR := ra.apply(times[i], lim, cmds...)
				for j := range res1 {
					if !sameResult(res1[j], resR[j]) {
						t.Fatalf("restored store: batch %d cmd %d: %+v vs %+v", i, j, res1[j], resR[j])
					}
				}
			}
		}
		b1, b2 := snapshotBytes(t, s1), snapshotBytes(t, s2)
		if !bytes.Equal(b1, b2) {
			t.Fatalf("snapshots differ (%d vs %d bytes)", len(b1), len(b2))
		}
		if r != nil && !bytes.Equal(snapshotBytes(t, r), b1) {
			t.Fatal("store restored mid-log diverged from the original")
		}
	})
}

// TestRestoreRejectsCorruption truncates and bit-flips a snapshot at every
// position; every variant must fail with ErrCorruptSnapshot and leave the
// previous state byte-identical.
func TestRestoreRejectsCorruption(t *testing.T) {
	src := newTestStore()
	a := &applier{t: t, s: src}
	for i := range 20 {
		a.one(int64(i), Limits{}, AppendSet(nil, fmt.Appendf(nil, "key-%d", i), bytes.Repeat([]byte{byte(i)}, i), uint32(i), ms(int64(100+i%3))))
	}
	good := snapshotBytes(t, src)

	dst := newTestStore()
	(&applier{t: t, s: dst}).one(5, Limits{}, AppendAdd(nil, []byte("previous"), []byte("state"), 1, ms(10)))
	before := snapshotBytes(t, dst)
	check := func(what string, b []byte) {
		t.Helper()
		err := dst.Restore(nopCloser{bytes.NewBuffer(b)})
		if err == nil || !errorsIsCorrupt(err) {
			t.Fatalf("%s: Restore err = %v, want ErrCorruptSnapshot", what, err)
		}
		if !bytes.Equal(snapshotBytes(t, dst), before) {
			t.Fatalf("%s: failed Restore changed the state", what)
		}
	}
	for n := 0; n < len(good); n++ {
		check(fmt.Sprintf("truncated to %d", n), good[:n])
	}
	for i := range good {
		b := bytes.Clone(good)
		b[i] ^= 0x10
		check(fmt.Sprintf("byte %d flipped", i), b)
	}
	check("trailing byte", append(bytes.Clone(good), 0))

	if err := dst.Restore(nopCloser{bytes.NewBuffer(good)}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snapshotBytes(t, dst), good) {
		t.Fatal("good snapshot did not restore exactly")
	}
	if v, _, _, ok := dst.Get([]byte("key-7"), time.UnixMilli(0)); !ok || !bytes.Equal(v, bytes.Repeat([]byte{7}, 7)) {
		t.Fatalf("restored Get = %v %v", v, ok)
	}
}

func errorsIsCorrupt(err error) bool { return errors.Is(err, ErrCorruptSnapshot) }

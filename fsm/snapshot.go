package fsm

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

	"github.com/hashicorp/raft"
)

// Snapshot format (all integers big-endian):
//
//	header:  magic "DCFSMSNP" | version u32 | last_now i64 | next_seq u64 |
//	         applied_index u64 | count u64
//	count ×  expiry i64 | seq u64 | flags u32 | key_len u8 | value_len u32 |
//	         key | value
//	trailer: crc32c u32 of every preceding byte
//	then, only when the ring of ticket keys is not empty, its own section
//	(tickets.go), so snapshots from before the ring restore as they were
//
// Entries are in strictly increasing (expiry, seq) order, which makes the
// bytes a pure function of the replicated state (independent of shard count,
// hash seeds and map iteration order) and lets Restore rebuild every
// expiry heap without sifting.
const (
	snapshotMagic     = "DCFSMSNP"
	snapshotVersion   = 1
	snapshotHeaderLen = 8 + 4 + 8 + 8 + 8 + 8
	recordHeaderLen   = 8 + 8 + 4 + 1 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorruptSnapshot is wrapped by every Restore error caused by the
// snapshot's content (bad magic, version, checksum, order or truncation).
var ErrCorruptSnapshot = errors.New("fsm: corrupt snapshot")

// snapshot is a frozen, point-in-time view of the store: the shards' tables
// at the moment of Snapshot, which the apply path will never modify again.
type snapshot struct {
	lastNow      int64
	nextSeq      uint64
	appliedIndex uint64
	sessions     int64
	tables       [numShards]*table
	tickets      TicketRing // immutable once published (tickets.go)
}

// Snapshot freezes the current state in O(numShards) time: every shard's
// table is marked copy-on-write and shared with the returned snapshot, whose
// Persist then streams it while Apply continues (the first write to each
// shard afterwards pays for cloning that shard's index).
func (s *Store) Snapshot() (raft.FSMSnapshot, error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	return s.snapshotLocked(), nil
}

func (s *Store) snapshotLocked() *snapshot {
	snap := &snapshot{
		lastNow:      s.lastNow,
		nextSeq:      s.nextSeq,
		appliedIndex: s.appliedIndex.Load(),
		sessions:     s.sessions.Load(),
		tickets:      s.tickets.load().ring,
	}
	for i := range s.shards {
		s.shards[i].frozen = true
		snap.tables[i] = s.shards[i].t
	}
	return snap
}

// WriteSnapshot writes a snapshot of the current state to w in the format
// Persist produces and Restore reads (for backups, and for comparing
// replicas byte for byte).
func (s *Store) WriteSnapshot(w io.Writer) error {
	s.applyMu.Lock()
	snap := s.snapshotLocked()
	s.applyMu.Unlock()
	return snap.write(w)
}

// Persist streams the snapshot to sink and closes it, or cancels it on error.
func (p *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := p.write(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("fsm: persist snapshot: close sink: %w", err)
	}
	return nil
}

// Release drops the snapshot's references; the frozen tables become garbage
// once the store has replaced them.
func (p *snapshot) Release() {
	p.tables = [numShards]*table{}
}

// forEachOrdered calls f for every entry of the snapshot in (expiry, seq)
// order: it sorts each table's slots and merges the 256 runs, so the scratch
// is 4 bytes per entry (a copy of the heaps) rather than a sorted copy of
// every entry's order and location (24 bytes; 240 MB at 10 M sessions, taken
// at every Raft snapshot).
func (p *snapshot) forEachOrdered(f func(t *table, slot int32) error) error {
	var runs [numShards][]int32
	for i, t := range p.tables {
		r := slices.Clone(t.heap)
		slices.SortFunc(r, func(a, b int32) int {
			ea, eb := &t.slots[a], &t.slots[b]
			if c := cmp.Compare(ea.expiry, eb.expiry); c != 0 {
				return c
			}
			return cmp.Compare(ea.seq, eb.seq)
		})
		runs[i] = r
	}
	// heads[i] is the order of run i's first entry; h is a binary min-heap
	// of the runs with entries left, by head.
	var heads [numShards]order
	next := func(i int) {
		e := &p.tables[i].slots[runs[i][0]]
		heads[i] = order{e.expiry, e.seq}
	}
	h := make([]int, 0, numShards)
	less := func(a, b int) bool { return heads[h[a]].less(heads[h[b]]) }
	down := func(i int) {
		for {
			l := 2*i + 1
			if l >= len(h) {
				return
			}
			j := l
			if r := l + 1; r < len(h) && less(r, l) {
				j = r
			}
			if !less(j, i) {
				return
			}
			h[i], h[j] = h[j], h[i]
			i = j
		}
	}
	for i := range runs {
		if len(runs[i]) > 0 {
			next(i)
			h = append(h, i)
		}
	}
	for i := len(h)/2 - 1; i >= 0; i-- {
		down(i)
	}
	for len(h) > 0 {
		i := h[0]
		if err := f(p.tables[i], runs[i][0]); err != nil {
			return err
		}
		if runs[i] = runs[i][1:]; len(runs[i]) > 0 {
			next(i)
		} else {
			h[0] = h[len(h)-1]
			h = h[:len(h)-1]
		}
		down(0)
	}
	return nil
}

func (p *snapshot) write(w io.Writer) error {
	var count uint64
	for _, t := range p.tables {
		count += uint64(t.len())
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	var crc uint32
	rec := make([]byte, 0, recordHeaderLen+MaxKeyLen+MaxValueLen)
	put := func(b []byte) error {
		crc = crc32.Update(crc, castagnoli, b)
		_, err := bw.Write(b)
		return err
	}

	rec = append(rec, snapshotMagic...)
	rec = binary.BigEndian.AppendUint32(rec, snapshotVersion)
	rec = binary.BigEndian.AppendUint64(rec, uint64(p.lastNow))
	rec = binary.BigEndian.AppendUint64(rec, p.nextSeq)
	rec = binary.BigEndian.AppendUint64(rec, p.appliedIndex)
	rec = binary.BigEndian.AppendUint64(rec, count)
	if err := put(rec); err != nil {
		return err
	}
	err := p.forEachOrdered(func(t *table, slot int32) error {
		e := &t.slots[slot]
		key, value := t.record(slot)
		rec = binary.BigEndian.AppendUint64(rec[:0], uint64(e.expiry))
		rec = binary.BigEndian.AppendUint64(rec, e.seq)
		rec = binary.BigEndian.AppendUint32(rec, e.flags)
		rec = append(rec, uint8(len(key)))
		rec = binary.BigEndian.AppendUint32(rec, uint32(len(value)))
		rec = append(rec, key...)
		rec = append(rec, value...)
		return put(rec)
	})
	if err != nil {
		return err
	}
	if _, err := bw.Write(binary.BigEndian.AppendUint32(rec[:0], crc)); err != nil {
		return err
	}
	if err := writeTicketSection(bw, p.tickets); err != nil {
		return err
	}
	return bw.Flush()
}

// Restore replaces the store's state with the snapshot read from rc. The new
// state is built aside and swapped in only once the whole stream, including
// its checksum, has been validated; on any error the previous state is left
// intact. Operation counters (Adds, Hits, ...) are local and kept.
func (s *Store) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	snap, err := s.readSnapshot(rc)
	if err != nil {
		s.logger.Error("fsm: snapshot restore failed, previous state kept", "err", err)
		return fmt.Errorf("fsm: restore: %w", err)
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	var payload int64
	for i := range s.shards {
		sh := &s.shards[i]
		t := snap.tables[i]
		sh.mu.Lock()
		sh.t = t
		sh.frozen = false
		sh.mu.Unlock()
		payload += t.payload
	}
	s.resetMins()
	s.lastNow = snap.lastNow
	s.nextSeq = snap.nextSeq
	s.appliedIndex.Store(snap.appliedIndex)
	s.sessions.Store(snap.sessions)
	s.payload.Store(payload)
	s.tickets.set(snap.tickets)
	return nil
}

// snapReader reads a snapshot stream while keeping its running checksum.
type snapReader struct {
	r   *bufio.Reader
	crc uint32
}

func (sr *snapReader) read(b []byte) error {
	if _, err := io.ReadFull(sr.r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: truncated", ErrCorruptSnapshot)
		}
		return err
	}
	sr.crc = crc32.Update(sr.crc, castagnoli, b)
	return nil
}

// header reads a section header into hdr and checks that it starts with magic
// (8 bytes) and version (u32).
func (sr *snapReader) header(hdr []byte, magic string, version uint32) error {
	if err := sr.read(hdr); err != nil {
		return err
	}
	if string(hdr[:8]) != magic {
		return fmt.Errorf("%w: bad magic (want %s)", ErrCorruptSnapshot, magic)
	}
	if v := binary.BigEndian.Uint32(hdr[8:]); v != version {
		return fmt.Errorf("%w: unsupported %s version %d", ErrCorruptSnapshot, magic, v)
	}
	return nil
}

func (s *Store) readSnapshot(r io.Reader) (*snapshot, error) {
	sr := &snapReader{r: bufio.NewReaderSize(r, 256<<10)}
	var hdr [snapshotHeaderLen]byte
	if err := sr.header(hdr[:], snapshotMagic, snapshotVersion); err != nil {
		return nil, err
	}
	snap := &snapshot{
		lastNow:      int64(binary.BigEndian.Uint64(hdr[12:])),
		nextSeq:      binary.BigEndian.Uint64(hdr[20:]),
		appliedIndex: binary.BigEndian.Uint64(hdr[28:]),
	}
	count := binary.BigEndian.Uint64(hdr[36:])
	if count > snap.nextSeq {
		return nil, fmt.Errorf("%w: %d entries but next sequence %d", ErrCorruptSnapshot, count, snap.nextSeq)
	}
	// Presize from the count, but never trust it for more than a modest
	// allocation: a lying header must not exhaust memory before the
	// checksum catches it.
	per := int(min(count, 1<<20)/numShards) + 1
	for i := range snap.tables {
		snap.tables[i] = newTable(s.seed, per+per/8)
	}

	var rh [recordHeaderLen]byte
	buf := make([]byte, MaxKeyLen+MaxValueLen) // one record's key and value, copied into a slab
	prev, first := order{}, true
	for n := uint64(0); n < count; n++ {
		if err := sr.read(rh[:]); err != nil {
			return nil, err
		}
		e := slot{
			expiry: int64(binary.BigEndian.Uint64(rh[0:])),
			seq:    binary.BigEndian.Uint64(rh[8:]),
			flags:  binary.BigEndian.Uint32(rh[16:]),
		}
		klen := int(rh[20])
		vlen := binary.BigEndian.Uint32(rh[21:])
		if klen == 0 || vlen > MaxValueLen {
			return nil, fmt.Errorf("%w: entry %d: key of %d / value of %d bytes", ErrCorruptSnapshot, n, klen, vlen)
		}
		cur := order{e.expiry, e.seq}
		if (!first && !prev.less(cur)) || e.seq >= snap.nextSeq {
			return nil, fmt.Errorf("%w: entry %d out of order", ErrCorruptSnapshot, n)
		}
		prev, first = cur, false
		kv := buf[:klen+int(vlen)]
		if err := sr.read(kv); err != nil {
			return nil, err
		}
		key, value := kv[:klen], kv[klen:]
		si, tag := s.locate(key)
		t := snap.tables[si]
		if _, dup := t.find(key, tag); dup {
			return nil, fmt.Errorf("%w: entry %d: duplicate key", ErrCorruptSnapshot, n)
		}
		// Entries arrive in heap order, so appending keeps each heap valid.
		t.insert(tag, key, value, e)
	}
	want := sr.crc
	var tr [4]byte
	if err := sr.read(tr[:]); err != nil {
		return nil, err
	}
	if got := binary.BigEndian.Uint32(tr[:]); got != want {
		return nil, fmt.Errorf("%w: checksum mismatch (stored %08x, computed %08x)", ErrCorruptSnapshot, got, want)
	}
	tickets, err := readTicketSection(sr.r)
	if err != nil {
		return nil, err
	}
	snap.tickets = tickets
	snap.sessions = int64(count)
	return snap, nil
}

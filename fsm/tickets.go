package fsm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"sync/atomic"
	"time"
)

// Session-ticket keys (STEKs) for the TLS servers in front of the cluster.
// They are replicated state like the sessions: the node that proposes a
// rotation draws the new key from crypto/rand and puts it in the command, so
// every replica holds the same bytes (sealed at rest with the log and the
// snapshots), and the ring changes only through ROTATE_TICKETS at the batch
// time, never through a local clock.

// TicketKeyLen is the size of one ticket key: a 16-byte key name, a 32-byte
// HMAC-SHA256 secret and a 32-byte AES-256 key, in nginx's 80-byte layout.
// Package ticketkeys renders it in each TLS server's own layout.
const TicketKeyLen = 80

// MaxTicketKeys bounds the ring (current, next and past keys), so a burst of
// rotations cannot grow the replicated state without limit; past the bound the
// oldest past keys are dropped even if their retention has not run out.
const MaxTicketKeys = 64

// TicketKey is one key of the ring. Its String, GoString and LogValue name it
// by ID only, so printing a key or a ring never prints its bytes.
type TicketKey struct {
	// ID numbers keys in order of creation, from 1. The key that becomes
	// "next" at generation g has ID g+1, so the current key's ID equals the
	// ring's generation.
	ID uint64
	// Created is the batch time (Unix milliseconds) of the rotation that
	// added the key as "next".
	Created int64
	// Retired is the batch time at which the key stopped encrypting (it
	// became a past key); 0 for the current and the next key.
	Retired int64
	// Material is the secret: name | HMAC secret | AES key.
	Material [TicketKeyLen]byte
}

// String names the key without its bytes.
func (k TicketKey) String() string { return fmt.Sprintf("ticket key #%d", k.ID) }

// GoString names the key without its bytes, for %#v.
func (k TicketKey) GoString() string { return k.String() }

// LogValue logs the key as its id only.
func (k TicketKey) LogValue() slog.Value { return slog.Uint64Value(k.ID) }

// TicketRing is the replicated ring of ticket keys.
type TicketRing struct {
	// Generation counts the rotations applied; 0 means no ring yet.
	Generation uint64
	// RotatedAt is the batch time (Unix milliseconds) of the last rotation:
	// a leader schedules the next one from it, so the schedule survives
	// changes of leader.
	RotatedAt int64
	// Keys are the current key (encrypts), the next one (already on every
	// server, so it decrypts before it encrypts anywhere) and the past keys,
	// newest first, that still decrypt tickets they issued. Empty when
	// Generation is 0. Shared with the store: never modify it.
	Keys []TicketKey
}

// Current returns the key that encrypts new tickets; false without a ring.
func (r TicketRing) Current() (TicketKey, bool) {
	if len(r.Keys) < 2 {
		return TicketKey{}, false
	}
	return r.Keys[0], true
}

// AppendRotateTickets appends a ROTATE_TICKETS command to dst and returns the
// extended slice. It applies only if the ring is still at generation expect
// (otherwise ResultExists and nothing changes), so two proposals made from
// the same state — a scheduled rotation by a leader that just lost its role
// and one by its successor — rotate once. With expect 0 (no ring yet) keys
// must hold two keys, the first current and the next; otherwise exactly one,
// the new next key. Past keys retired for at least retain by the batch time
// are dropped.
//
// Layout: version u8 | op u8 | expect uvarint | retain_ms uvarint | keys (rest)
func AppendRotateTickets(dst []byte, expect uint64, retain time.Duration, keys ...[TicketKeyLen]byte) []byte {
	dst = append(dst, commandVersion, byte(OpRotateTickets))
	dst = binary.AppendUvarint(dst, expect)
	dst = binary.AppendUvarint(dst, ttlMillis(retain))
	for _, k := range keys {
		dst = append(dst, k[:]...)
	}
	return dst
}

// rotation is a decoded ROTATE_TICKETS command; keys alias the command.
type rotation struct {
	expect   uint64
	retainMS uint64
	keys     []byte
}

// decodeRotation parses the fields after version and op.
func decodeRotation(b []byte) (rotation, error) {
	var r rotation
	var n int
	if r.expect, n = binary.Uvarint(b); n <= 0 {
		return r, fmt.Errorf("%w: ROTATE_TICKETS bad generation", ErrMalformed)
	}
	b = b[n:]
	if r.retainMS, n = binary.Uvarint(b); n <= 0 {
		return r, fmt.Errorf("%w: ROTATE_TICKETS bad retention", ErrMalformed)
	}
	r.keys = b[n:]
	want := TicketKeyLen
	if r.expect == 0 {
		want = 2 * TicketKeyLen
	}
	if len(r.keys) != want {
		return r, fmt.Errorf("%w: ROTATE_TICKETS from generation %d carries %d key bytes, want %d", ErrMalformed, r.expect, len(r.keys), want)
	}
	return r, nil
}

// rotate returns the ring after r at batch time now. It builds new slices:
// the old ring may be held by readers and snapshots.
func (ring TicketRing) rotate(now int64, r rotation) TicketRing {
	key := func(id uint64, i int) TicketKey {
		k := TicketKey{ID: id, Created: now}
		copy(k.Material[:], r.keys[i*TicketKeyLen:])
		return k
	}
	out := TicketRing{Generation: ring.Generation + 1, RotatedAt: now}
	if ring.Generation == 0 {
		out.Keys = []TicketKey{key(1, 0), key(2, 1)}
		return out
	}
	retired := ring.Keys[0]
	retired.Retired = now
	out.Keys = make([]TicketKey, 0, min(len(ring.Keys)+1, MaxTicketKeys))
	out.Keys = append(out.Keys, ring.Keys[1], key(out.Generation+1, 0), retired)
	for _, k := range ring.Keys[2:] {
		if len(out.Keys) == MaxTicketKeys {
			break
		}
		// now >= k.Retired: batch time never runs backwards.
		if uint64(now-k.Retired) < r.retainMS {
			out.Keys = append(out.Keys, k)
		}
	}
	return out
}

// ticketView is one state of the ring and the channel closed when it is
// replaced.
type ticketView struct {
	ring    TicketRing
	changed chan struct{}
}

// ticketState holds the ring for lock-free reads concurrent with Apply. Its
// zero value is an empty ring; writes come only from the apply path.
type ticketState struct {
	view atomic.Pointer[ticketView]
}

func (t *ticketState) load() *ticketView {
	if v := t.view.Load(); v != nil {
		return v
	}
	t.view.CompareAndSwap(nil, &ticketView{changed: make(chan struct{})})
	return t.view.Load()
}

// set publishes ring and wakes whoever waits on the previous view.
func (t *ticketState) set(ring TicketRing) {
	old := t.load()
	t.view.Store(&ticketView{ring: ring, changed: make(chan struct{})})
	close(old.changed)
}

// TicketRing returns the ring as applied on this replica and a channel that
// is closed when it next changes (a rotation or a snapshot restore). Safe to
// call from any goroutine; the returned Keys must not be modified.
func (s *Store) TicketRing() (TicketRing, <-chan struct{}) {
	v := s.tickets.load()
	return v.ring, v.changed
}

func (s *Store) applyRotateTickets(now int64, raw []byte) Result {
	r, err := decodeRotation(raw[2:])
	if err != nil { // decodeCommand validated it already
		s.invalid.Add(1)
		return Result{Status: ResultInvalid}
	}
	ring := s.tickets.load().ring
	if ring.Generation != r.expect {
		return Result{Status: ResultExists}
	}
	s.tickets.set(ring.rotate(now, r))
	return Result{Status: ResultOK}
}

// The ring travels in snapshots as a section of its own after the session
// stream's checksum, so that snapshots written before it existed (no
// section) still restore, and the session format stays untouched. An empty
// ring writes no section, so a section always holds a ring:
//
//	magic "DCTICKET" | version u32 | generation u64 | rotated_at i64 |
//	count u32 | count × (id u64 | created i64 | retired i64 | material)
//	crc32c u32 of the section's preceding bytes
const (
	ticketSectionMagic   = "DCTICKET"
	ticketSectionVersion = 1
	ticketHeaderLen      = 8 + 4 + 8 + 8 + 4
	ticketRecordLen      = 8 + 8 + 8 + TicketKeyLen
)

// writeTicketSection writes ring's section to w; nothing for an empty ring.
func writeTicketSection(w io.Writer, ring TicketRing) error {
	if ring.Generation == 0 {
		return nil
	}
	b := make([]byte, 0, ticketHeaderLen+len(ring.Keys)*ticketRecordLen+4)
	b = append(b, ticketSectionMagic...)
	b = binary.BigEndian.AppendUint32(b, ticketSectionVersion)
	b = binary.BigEndian.AppendUint64(b, ring.Generation)
	b = binary.BigEndian.AppendUint64(b, uint64(ring.RotatedAt))
	b = binary.BigEndian.AppendUint32(b, uint32(len(ring.Keys)))
	for _, k := range ring.Keys {
		b = binary.BigEndian.AppendUint64(b, k.ID)
		b = binary.BigEndian.AppendUint64(b, uint64(k.Created))
		b = binary.BigEndian.AppendUint64(b, uint64(k.Retired))
		b = append(b, k.Material[:]...)
	}
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	_, err := w.Write(b)
	return err
}

// readTicketSection reads what follows the session stream: nothing (an empty
// ring, as in snapshots from before the ring existed) or exactly one valid
// section.
func readTicketSection(r *bufio.Reader) (TicketRing, error) {
	var ring TicketRing
	if _, err := r.Peek(1); errors.Is(err, io.EOF) {
		return ring, nil
	} else if err != nil {
		return ring, err
	}
	sr := &snapReader{r: r}
	var hdr [ticketHeaderLen]byte
	if err := sr.header(hdr[:], ticketSectionMagic, ticketSectionVersion); err != nil {
		return ring, err // garbage after the session stream fails here too
	}
	ring.Generation = binary.BigEndian.Uint64(hdr[12:])
	ring.RotatedAt = int64(binary.BigEndian.Uint64(hdr[20:]))
	count := binary.BigEndian.Uint32(hdr[28:])
	if ring.Generation == 0 || count < 2 || count > MaxTicketKeys {
		return ring, fmt.Errorf("%w: ticket ring of generation %d with %d keys", ErrCorruptSnapshot, ring.Generation, count)
	}
	ring.Keys = make([]TicketKey, count)
	var rec [ticketRecordLen]byte
	for i := range ring.Keys {
		if err := sr.read(rec[:]); err != nil {
			return ring, err
		}
		k := &ring.Keys[i]
		k.ID = binary.BigEndian.Uint64(rec[0:])
		k.Created = int64(binary.BigEndian.Uint64(rec[8:]))
		k.Retired = int64(binary.BigEndian.Uint64(rec[16:]))
		copy(k.Material[:], rec[24:])
	}
	if err := validRing(ring); err != nil {
		return ring, err
	}
	want := sr.crc
	var tr [4]byte
	if err := sr.read(tr[:]); err != nil {
		return ring, err
	}
	if got := binary.BigEndian.Uint32(tr[:]); got != want {
		return ring, fmt.Errorf("%w: ticket section checksum mismatch", ErrCorruptSnapshot)
	}
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		if err == nil {
			return ring, fmt.Errorf("%w: trailing data after the ticket section", ErrCorruptSnapshot)
		}
		return ring, err
	}
	return ring, nil
}

// validRing checks the invariants rotate keeps: the current key's id is the
// generation, the next one's follows it, past ids decrease, and neither the
// current nor the next key is retired.
func validRing(ring TicketRing) error {
	bad := func(what string) error {
		return fmt.Errorf("%w: ticket ring of generation %d: %s", ErrCorruptSnapshot, ring.Generation, what)
	}
	ks := ring.Keys
	if ks[0].ID != ring.Generation || ks[1].ID != ring.Generation+1 || ks[0].Retired != 0 || ks[1].Retired != 0 {
		return bad("current and next keys out of place")
	}
	prev := ks[0].ID
	for _, k := range ks[2:] {
		if k.ID >= prev || k.ID == 0 {
			return bad("past keys out of order")
		}
		prev = k.ID
	}
	return nil
}

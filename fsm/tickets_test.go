package fsm

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// ticketKey returns a key whose every byte is b, easy to recognise in output.
func ticketKey(b byte) [TicketKeyLen]byte {
	var k [TicketKeyLen]byte
	for i := range k {
		k[i] = b
	}
	return k
}

// ringIDs lists the ids of ring's keys in ring order.
func ringIDs(r TicketRing) []uint64 {
	var out []uint64
	for _, k := range r.Keys {
		out = append(out, k.ID)
	}
	return out
}

func TestRotateTicketsRing(t *testing.T) {
	s := newTestStore()
	a := &applier{t: t, s: s}
	ring, changed := s.TicketRing()
	if ring.Generation != 0 || len(ring.Keys) != 0 {
		t.Fatalf("new store has ring %+v", ring)
	}
	if _, ok := ring.Current(); ok {
		t.Fatal("empty ring has a current key")
	}

	// The first rotation installs current and next.
	wantStatus(t, "first rotation", a.one(100, Limits{}, AppendRotateTickets(nil, 0, ms(50), ticketKey(1), ticketKey(2))), ResultOK)
	select {
	case <-changed:
	default:
		t.Fatal("rotation did not close the change channel")
	}
	ring, changed = s.TicketRing()
	if ring.Generation != 1 || ring.RotatedAt != 100 || fmt.Sprint(ringIDs(ring)) != "[1 2]" {
		t.Fatalf("after the first rotation: %+v", ring)
	}
	if cur, _ := ring.Current(); cur.Material != ticketKey(1) || ring.Keys[1].Material != ticketKey(2) || cur.Created != 100 {
		t.Fatal("first rotation: current and next are not the proposed keys")
	}

	// A proposal made from a state that is gone changes nothing.
	wantStatus(t, "stale rotation", a.one(110, Limits{}, AppendRotateTickets(nil, 0, ms(50), ticketKey(8), ticketKey(9))), ResultExists)
	wantStatus(t, "future rotation", a.one(110, Limits{}, AppendRotateTickets(nil, 5, ms(50), ticketKey(8))), ResultExists)
	select {
	case <-changed:
		t.Fatal("a refused rotation changed the ring")
	default:
	}

	// Each rotation: next becomes current, the new key next, current past.
	wantStatus(t, "second rotation", a.one(120, Limits{}, AppendRotateTickets(nil, 1, ms(50), ticketKey(3))), ResultOK)
	ring, _ = s.TicketRing()
	if ring.Generation != 2 || fmt.Sprint(ringIDs(ring)) != "[2 3 1]" || ring.Keys[2].Retired != 120 || ring.Keys[0].Retired != 0 {
		t.Fatalf("after the second rotation: %+v", ring)
	}
	if ring.Keys[0].Material != ticketKey(2) || ring.Keys[1].Material != ticketKey(3) || ring.Keys[2].Material != ticketKey(1) {
		t.Fatal("second rotation moved the wrong bytes")
	}
	// Key 1 retired at 120 with a 50ms retention: kept at 169, dropped at 170.
	wantStatus(t, "third rotation", a.one(169, Limits{}, AppendRotateTickets(nil, 2, ms(50), ticketKey(4))), ResultOK)
	ring, _ = s.TicketRing()
	if fmt.Sprint(ringIDs(ring)) != "[3 4 2 1]" {
		t.Fatalf("after the third rotation: ids %v", ringIDs(ring))
	}
	wantStatus(t, "fourth rotation", a.one(170, Limits{}, AppendRotateTickets(nil, 3, ms(50), ticketKey(5))), ResultOK)
	ring, _ = s.TicketRing()
	if fmt.Sprint(ringIDs(ring)) != "[4 5 3 2]" {
		t.Fatalf("after the fourth rotation (key 1 past its retention): ids %v", ringIDs(ring))
	}
	// A clock that runs backwards is clamped: retention never sees negative ages.
	wantStatus(t, "rotation in the past", a.one(10, Limits{}, AppendRotateTickets(nil, 4, 0, ticketKey(6))), ResultOK)
	ring, _ = s.TicketRing()
	if fmt.Sprint(ringIDs(ring)) != "[5 6 4]" || ring.RotatedAt != 170 {
		t.Fatalf("after a rotation with no retention: %+v", ring)
	}
}

func TestRotateTicketsBoundsTheRing(t *testing.T) {
	s := newTestStore()
	a := &applier{t: t, s: s}
	a.one(1, Limits{}, AppendRotateTickets(nil, 0, 0, ticketKey(1), ticketKey(2)))
	for g := uint64(1); g < 3*MaxTicketKeys; g++ {
		wantStatus(t, "rotation", a.one(int64(g+1), Limits{}, AppendRotateTickets(nil, g, ms(1<<40), ticketKey(byte(g)))), ResultOK)
	}
	ring, _ := s.TicketRing()
	if len(ring.Keys) != MaxTicketKeys {
		t.Fatalf("ring holds %d keys, want the bound %d", len(ring.Keys), MaxTicketKeys)
	}
	if err := validRing(ring); err != nil {
		t.Fatal(err)
	}
	if last := ring.Keys[len(ring.Keys)-1]; last.ID != ring.Generation-MaxTicketKeys+2 {
		t.Fatalf("oldest kept key is #%d at generation %d: the oldest must go first", last.ID, ring.Generation)
	}
}

func TestRotateTicketsMalformed(t *testing.T) {
	k := ticketKey(7)
	for name, cmd := range map[string][]byte{
		"first rotation with one key":   AppendRotateTickets(nil, 0, 0, k),
		"first rotation with three":     AppendRotateTickets(nil, 0, 0, k, k, k),
		"later rotation with two keys":  AppendRotateTickets(nil, 3, 0, k, k),
		"later rotation without a key":  AppendRotateTickets(nil, 3, 0),
		"truncated key":                 AppendRotateTickets(nil, 3, 0, k)[:20],
		"no generation":                 {commandVersion, byte(OpRotateTickets)},
		"generation without retention":  {commandVersion, byte(OpRotateTickets), 1},
		"overlong generation varint":    append([]byte{commandVersion, byte(OpRotateTickets)}, bytes.Repeat([]byte{0xff}, 11)...),
		"key bytes one short of a pair": AppendRotateTickets(nil, 0, 0, k, k)[:2+1+1+2*TicketKeyLen-1],
	} {
		if err := ValidateCommand(cmd); err == nil {
			t.Errorf("%s: ValidateCommand accepted it", name)
		}
		s := newTestStore()
		wantStatus(t, name, (&applier{t: t, s: s}).one(1, Limits{}, cmd), ResultInvalid)
		if ring, _ := s.TicketRing(); ring.Generation != 0 {
			t.Errorf("%s: changed the ring", name)
		}
	}
	if op, err := CommandOp(AppendRotateTickets(nil, 2, 0, k)); err != nil || op != OpRotateTickets || op.String() != "ROTATE_TICKETS" {
		t.Fatalf("CommandOp = %v, %v", op, err)
	}
}

// The key bytes must never reach output: printing a key or a whole ring with
// any verb names keys by id only.
func TestTicketKeysNeverPrinted(t *testing.T) {
	s := newTestStore()
	a := &applier{t: t, s: s}
	a.one(1, Limits{}, AppendRotateTickets(nil, 0, 0, ticketKey(0xAB), ticketKey(0xAB)))
	ring, _ := s.TicketRing()
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	logger.Info("ring", "ring", ring, "key", ring.Keys[0])
	for _, out := range []string{
		fmt.Sprint(ring), fmt.Sprintf("%v %+v %#v %s", ring, ring, ring, ring.Keys), buf.String(),
	} {
		if strings.Contains(out, "171") || strings.Contains(strings.ToLower(out), "abab") {
			t.Fatalf("key bytes in output: %s", out)
		}
	}
}

func TestTicketRingSnapshot(t *testing.T) {
	src := newTestStore()
	a := &applier{t: t, s: src}
	a.one(5, Limits{}, AppendSet(nil, []byte("k"), []byte("v"), 0, ms(100)))
	empty := snapshotBytes(t, src)
	if bytes.Contains(empty, []byte(ticketSectionMagic)) {
		t.Fatal("a store without a ring wrote a ticket section")
	}
	a.one(6, Limits{}, AppendRotateTickets(nil, 0, ms(10), ticketKey(1), ticketKey(2)))
	a.one(7, Limits{}, AppendRotateTickets(nil, 1, ms(10), ticketKey(3)))
	good := snapshotBytes(t, src)
	// The session stream is as long as before (same entries): the section
	// starts where the ring-less snapshot ended.
	section := len(empty)
	if !bytes.Equal(good[section:section+len(ticketSectionMagic)], []byte(ticketSectionMagic)) {
		t.Fatal("the ticket section does not follow the session stream")
	}

	// A snapshot from before the ring existed restores with no ring; one with
	// a ring restores it exactly and wakes waiters.
	dst := newTestStore()
	_, changed := dst.TicketRing()
	if err := dst.Restore(nopCloser{bytes.NewBuffer(good)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("restore did not close the change channel")
	}
	want, _ := src.TicketRing()
	if got, _ := dst.TicketRing(); fmt.Sprint(ringIDs(got)) != fmt.Sprint(ringIDs(want)) || got.Keys[2].Material != ticketKey(1) || got.RotatedAt != 7 {
		t.Fatalf("restored ring %+v, want %+v", got, want)
	}
	if !bytes.Equal(snapshotBytes(t, dst), good) {
		t.Fatal("restored store snapshots differently")
	}
	if err := dst.Restore(nopCloser{bytes.NewBuffer(empty)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := dst.TicketRing(); got.Generation != 0 || got.Keys != nil {
		t.Fatalf("snapshot without a section restored ring %+v", got)
	}

	// Every truncation inside the section and every flipped bit of it is
	// refused, leaving the state as it was.
	before := snapshotBytes(t, dst)
	for n := section + 1; n < len(good); n++ {
		if err := dst.Restore(nopCloser{bytes.NewBuffer(good[:n])}); !errorsIsCorrupt(err) {
			t.Fatalf("truncated to %d: err %v", n, err)
		}
	}
	for i := section; i < len(good); i++ {
		b := bytes.Clone(good)
		b[i] ^= 0x04
		if err := dst.Restore(nopCloser{bytes.NewBuffer(b)}); !errorsIsCorrupt(err) {
			t.Fatalf("byte %d flipped: err %v", i, err)
		}
	}
	if !bytes.Equal(snapshotBytes(t, dst), before) {
		t.Fatal("a refused snapshot changed the state")
	}
}

// A section that is well formed but breaks the ring's invariants is refused:
// it cannot have come from rotations.
func TestTicketSectionInvariants(t *testing.T) {
	base := TicketRing{Generation: 3, RotatedAt: 9, Keys: []TicketKey{
		{ID: 3, Created: 5}, {ID: 4, Created: 9}, {ID: 2, Created: 1, Retired: 9},
	}}
	if err := validRing(base); err != nil {
		t.Fatal(err)
	}
	atEpoch := TicketRing{Generation: 2, Keys: []TicketKey{{ID: 2}, {ID: 3}, {ID: 1}}}
	if err := validRing(atEpoch); err != nil {
		t.Fatalf("a ring rotated at batch time 0 is refused: %v", err)
	}
	for name, mutate := range map[string]func(*TicketRing){
		"current id is not the generation": func(r *TicketRing) { r.Keys[0].ID = 2 },
		"next id does not follow":          func(r *TicketRing) { r.Keys[1].ID = 9 },
		"current retired":                  func(r *TicketRing) { r.Keys[0].Retired = 1 },
		"past key newer than current":      func(r *TicketRing) { r.Keys[2].ID = 7 },
	} {
		r := base
		r.Keys = append([]TicketKey(nil), base.Keys...)
		mutate(&r)
		var buf bytes.Buffer
		if err := writeTicketSection(&buf, r); err != nil {
			t.Fatal(err)
		}
		s := newTestStore()
		stream := append(snapshotBytes(t, s), buf.Bytes()...)
		if err := s.Restore(nopCloser{bytes.NewBuffer(stream)}); !errorsIsCorrupt(err) {
			t.Errorf("%s: Restore err %v, want ErrCorruptSnapshot", name, err)
		}
	}
}

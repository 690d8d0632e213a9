package fsm

import (
	"bytes"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// FuzzApply feeds arbitrary log entries to a store: Apply must never panic,
// must answer either an error (state unchanged) or one result per command,
// and must leave the internal structures consistent.
func FuzzApply(f *testing.F) {
	f.Add(EncodeBatch(nil, 5, Limits{MaxSessions: 2}, [][]byte{
		AppendAdd(nil, []byte("a"), []byte("1"), 1, ms(10)),
		AppendSet(nil, []byte("b"), []byte("2"), 2, ms(10)),
		AppendTake(nil, []byte("a")),
		AppendRemove(nil, []byte("b")),
		AppendExpire(nil),
	}))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0})
	var k [TicketKeyLen]byte
	f.Add(EncodeBatch(nil, 9, Limits{}, [][]byte{
		AppendRotateTickets(nil, 0, ms(5), k, k),
		AppendRotateTickets(nil, 1, ms(5), k),
		AppendRotateTickets(nil, 1, ms(5), k),
	}))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newTestStore()
		a := &applier{t: t, s: s}
		a.one(0, Limits{}, AppendAdd(nil, []byte("a"), []byte("pre"), 0, ms(1<<40)))
		before := snapshotBytes(t, s)
		out := s.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: data})
		switch v := out.(type) {
		case error:
			s.appliedIndex.Store(1)
			if !bytes.Equal(before, snapshotBytes(t, s)) {
				t.Fatal("refused entry changed the state")
			}
		case [][]byte:
			bt, err := decodeBatch(data, nil)
			if err != nil || len(bt.cmds) != len(v) {
				t.Fatalf("%d results for an entry that decodes to %d commands (%v)", len(v), len(bt.cmds), err)
			}
			for _, r := range v {
				if _, err := DecodeResult(r); err != nil {
					t.Fatal(err)
				}
			}
		default:
			t.Fatalf("Apply returned %T", out)
		}
		var n int64
		for i := range s.shards {
			n += int64(len(s.shards[i].t.heap))
		}
		if n != s.Stats().Sessions {
			t.Fatalf("sessions counter %d, structures %d", s.Stats().Sessions, n)
		}
		s.Get([]byte("a"), time.Now())
	})
}

// FuzzRestore feeds arbitrary bytes to Restore: it must never panic, and
// must either fail leaving the state intact or succeed with a state that
// snapshots back to exactly the input.
func FuzzRestore(f *testing.F) {
	src := newTestStore()
	a := &applier{t: f, s: src}
	a.apply(7, Limits{}, AppendAdd(nil, []byte("k1"), []byte("v1"), 1, ms(5)), AppendAdd(nil, []byte("k2"), nil, 2, ms(5)))
	f.Add(snapshotBytes(f, src))
	var k [TicketKeyLen]byte
	a.apply(8, Limits{}, AppendRotateTickets(nil, 0, ms(5), k, k), AppendRotateTickets(nil, 1, ms(5), k))
	f.Add(snapshotBytes(f, src))
	f.Add(snapshotBytes(f, newTestStore()))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newTestStore()
		(&applier{t: t, s: s}).one(1, Limits{}, AppendAdd(nil, []byte("x"), []byte("y"), 0, ms(5)))
		before := snapshotBytes(t, s)
		if err := s.Restore(nopCloser{bytes.NewBuffer(data)}); err != nil {
			if !bytes.Equal(before, snapshotBytes(t, s)) {
				t.Fatal("failed Restore changed the state")
			}
			return
		}
		if !bytes.Equal(snapshotBytes(t, s), data) {
			t.Fatal("accepted snapshot does not round-trip")
		}
	})
}

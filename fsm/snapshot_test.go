package fsm

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestSnapshotThroughRaftFileStore persists through hashicorp/raft's own
// file snapshot store (real files, its own checksumming) while Apply keeps
// changing the store, and restores from what raft reads back.
func TestSnapshotThroughRaftFileStore(t *testing.T) {
	fss, err := raft.NewFileSnapshotStore(t.TempDir(), 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestStore()
	a := &applier{t: t, s: s}
	for i := range 2000 {
		a.one(int64(i), Limits{MaxSessions: 1500}, AppendAdd(nil, fmt.Appendf(nil, "id-%d", i), fmt.Appendf(nil, "secret-%d", i), uint32(i), ms(int64(5000+i%50))))
	}
	want := snapshotBytes(t, s)
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after Snapshot must not leak into it.
	for i := range 500 {
		a.one(3000, Limits{MaxSessions: 1500}, AppendTake(nil, fmt.Appendf(nil, "id-%d", 1000+i)))
		a.one(3000, Limits{MaxSessions: 1500}, AppendSet(nil, fmt.Appendf(nil, "new-%d", i), []byte("x"), 0, ms(10)))
	}
	after := snapshotBytes(t, s)

	sink, err := fss.Create(raft.SnapshotVersionMax, 2000, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	metas, err := fss.List()
	if err != nil || len(metas) != 1 {
		t.Fatalf("List = %v, %v", metas, err)
	}
	_, rc, err := fss.Open(metas[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	r := newTestStore()
	if err := r.Restore(rc); err != nil {
		t.Fatal(err)
	}
	if got := snapshotBytes(t, r); !bytes.Equal(got, want) {
		t.Fatalf("restored state differs from the state at Snapshot (%d vs %d bytes)", len(got), len(want))
	}
	if bytes.Equal(want, after) {
		t.Fatal("test is vacuous: the writes after Snapshot changed nothing")
	}
	st := r.Stats()
	if st.Sessions != 1500 || st.AppliedIndex != 2000 {
		t.Fatalf("restored stats %+v", st)
	}
	if v, flags, exp, ok := r.Get([]byte("id-1999"), time.UnixMilli(0)); !ok || string(v) != "secret-1999" || flags != 1999 || exp.UnixMilli() != 1999+5000+1999%50 {
		t.Fatalf("restored Get = %q %d %v %v", v, flags, exp.UnixMilli(), ok)
	}
}

// failingSink fails after n bytes, to check Persist cancels.
type failingSink struct {
	n         int
	cancelled bool
	closed    bool
}

func (f *failingSink) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return 0, io.ErrShortWrite
	}
	f.n -= len(p)
	return len(p), nil
}
func (f *failingSink) Close() error  { f.closed = true; return nil }
func (f *failingSink) ID() string    { return "failing" }
func (f *failingSink) Cancel() error { f.cancelled = true; return nil }

func TestPersistCancelsOnWriteError(t *testing.T) {
	s := newTestStore()
	a := &applier{t: t, s: s}
	for i := range 5000 {
		a.one(0, Limits{}, AppendAdd(nil, fmt.Appendf(nil, "k%d", i), bytes.Repeat([]byte("v"), 100), 0, ms(1000)))
	}
	snap, _ := s.Snapshot()
	sink := &failingSink{n: 100 << 10}
	if err := snap.Persist(sink); err == nil {
		t.Fatal("Persist succeeded on a failing sink")
	}
	if !sink.cancelled || sink.closed {
		t.Fatalf("sink cancelled=%v closed=%v, want cancelled only", sink.cancelled, sink.closed)
	}
}

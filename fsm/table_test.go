package fsm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"
)

// TestMassDeletionGivesMemoryBack fills the store, keeps a value returned by
// Get and a snapshot taken before, deletes 95% of the entries and checks that
// the shards were rebuilt right-sized, that slab accounting holds, that the
// survivors read back intact, that the kept value and the earlier snapshot
// are unchanged, and that a restore of the result writes the same bytes.
func TestMassDeletionGivesMemoryBack(t *testing.T) {
	const n = 100_000
	s := newTestStore()
	a := &applier{t: t, s: s}
	value := func(i int) []byte {
		return bytes.Repeat([]byte{byte(i)}, i%300) // 0..299 bytes, some slab-sized runs
	}
	key := func(i int) []byte { return fmt.Appendf(nil, "session-%07d", i) }
	var cmds [][]byte
	for i := range n {
		cmds = append(cmds, AppendAdd(nil, key(i), value(i), uint32(i), time.Hour+time.Duration(i%977)*time.Second))
		if len(cmds) == 1000 {
			a.apply(benchNow, Limits{}, cmds...)
			cmds = cmds[:0]
		}
	}
	slotsBefore, indexBefore := 0, 0
	for i := range s.shards {
		slotsBefore += cap(s.shards[i].t.slots)
		indexBefore += len(s.shards[i].t.index)
	}
	kept, _, _, ok := s.Get(key(299), time.UnixMilli(benchNow))
	if !ok || !bytes.Equal(kept, value(299)) {
		t.Fatalf("Get before deletion: %v %q", ok, kept)
	}
	var before bytes.Buffer
	if err := s.WriteSnapshot(&before); err != nil {
		t.Fatal(err)
	}
	frozen, err := s.Snapshot() // persisted only after the deletion below
	if err != nil {
		t.Fatal(err)
	}

	// A reader runs through the deletion (slab compaction, shard rebuilds);
	// whatever it finds must be the right value. Run with -race.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i = (i + 7919) % n {
			select {
			case <-stop:
				return
			default:
			}
			if v, _, _, ok := s.Get(key(i), time.UnixMilli(benchNow)); ok && !bytes.Equal(v, value(i)) {
				t.Errorf("concurrent Get of key %d: %d bytes, not its value", i, len(v))
				return
			}
		}
	}()
	for i := range n {
		if i%20 != 0 {
			cmds = append(cmds, AppendRemove(nil, key(i)))
		}
		if len(cmds) == 1000 {
			a.apply(benchNow, Limits{}, cmds...)
			cmds = cmds[:0]
		}
	}
	a.apply(benchNow, Limits{}, cmds...)
	close(stop)
	wg.Wait()
	checkInvariants(t, s)

	slotsAfter, indexAfter := 0, 0
	for i := range s.shards {
		tb := s.shards[i].t
		slotsAfter += cap(tb.slots)
		indexAfter += len(tb.index)
		if cap(tb.slots) >= shrinkMinSlots && tb.len()*4 < cap(tb.slots) {
			t.Fatalf("shard %d: %d entries in %d slots after mass deletion", i, tb.len(), cap(tb.slots))
		}
	}
	if got := s.Stats().Sessions; got != n/20 {
		t.Fatalf("%d sessions after deletion, want %d", got, n/20)
	}
	if slotsAfter*2 > slotsBefore || indexAfter*2 > indexBefore {
		t.Fatalf("slot capacity %d, index %d after deleting 95%% of %d (were %d, %d): shards did not shrink",
			slotsAfter, indexAfter, n, slotsBefore, indexBefore)
	}
	now := time.UnixMilli(benchNow)
	for i := range n {
		v, flags, _, ok := s.Get(key(i), now)
		if want := i%20 == 0; ok != want || (ok && (!bytes.Equal(v, value(i)) || flags != uint32(i))) {
			t.Fatalf("key %d after deletion: found %v (want %v), %d bytes", i, ok, want, len(v))
		}
	}
	if !bytes.Equal(kept, value(299)) {
		t.Fatal("a value returned by Get changed after its slab was compacted")
	}

	sink := newFileSink(t, t.TempDir())
	if err := frozen.Persist(sink); err != nil {
		t.Fatal(err)
	}
	frozen.Release()
	persisted, err := os.ReadFile(sink.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(persisted, before.Bytes()) {
		t.Fatal("a snapshot taken before the deletion persisted different bytes after it")
	}

	var after bytes.Buffer
	if err := s.WriteSnapshot(&after); err != nil {
		t.Fatal(err)
	}
	r := newTestStore()
	if err := r.Restore(io.NopCloser(bytes.NewReader(after.Bytes()))); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, r)
	var again bytes.Buffer
	if err := r.WriteSnapshot(&again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), after.Bytes()) {
		t.Fatal("restore of the shrunk store writes different snapshot bytes")
	}
}

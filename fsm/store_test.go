package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newTestStore() *Store { return New(Config{Logger: quietLogger()}) }

// fataler is what both *testing.T and *rapid.T provide.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// applier feeds batches to a store with increasing log indexes.
type applier struct {
	t     fataler
	s     *Store
	index uint64
}

func (a *applier) apply(now int64, lim Limits, cmds ...[]byte) []Result {
	a.t.Helper()
	a.index++
	out := a.s.Apply(&raft.Log{Index: a.index, Type: raft.LogCommand, Data: EncodeBatch(nil, now, lim, cmds)})
	raw, ok := out.([][]byte)
	if !ok {
		a.t.Fatalf("Apply returned %T (%v), want [][]byte", out, out)
	}
	if len(raw) != len(cmds) {
		a.t.Fatalf("Apply returned %d results for %d commands", len(raw), len(cmds))
	}
	res := make([]Result, len(raw))
	for i, b := range raw {
		r, err := DecodeResult(b)
		if err != nil {
			a.t.Fatalf("result %d: %v", i, err)
		}
		res[i] = r
	}
	return res
}

func (a *applier) one(now int64, lim Limits, cmd []byte) Result {
	a.t.Helper()
	return a.apply(now, lim, cmd)[0]
}

func ms(n int64) time.Duration { return time.Duration(n) * time.Millisecond }

func wantStatus(t *testing.T, what string, got Result, want Status) {
	t.Helper()
	if got.Status != want {
		t.Fatalf("%s: status %v, want %v", what, got.Status, want)
	}
}

func TestAddGetExpiry(t *testing.T) {
	s := newTestStore()
	a := &applier{t: t, s: s}
	const t0 = 1_700_000_000_000
	k, v := []byte("session-1"), []byte("master secret bytes")

	wantStatus(t, "first ADD", a.one(t0, Limits{}, AppendAdd(nil, k, v, 7, ms(1500))), ResultOK)
	wantStatus(t, "duplicate ADD", a.one(t0+10, Limits{}, AppendAdd(nil, k, []byte("other"), 0, ms(99999))), ResultExists)

	got, flags, exp, ok := s.Get(k, time.UnixMilli(t0+1499))
	if !ok || !bytes.Equal(got, v) || flags != 7 || exp.UnixMilli() != t0+1500 {
		t.Fatalf("Get before expiry = %q, %d, %v, %v; want %q, 7, %d, true", got, flags, exp.UnixMilli(), ok, v, t0+1500)
	}
	if s.Have(k, time.UnixMilli(t0+1500)) {
		t.Fatal("entry visible at its expiry instant; live means now < expiry")
	}
	// Expired for ADD too: the second ADD replaces the stale entry.
	wantStatus(t, "ADD after expiry", a.one(t0+1500, Limits{}, AppendAdd(nil, k, []byte("new"), 0, ms(10))), ResultOK)
	if got, _, _, _ := s.Get(k, time.UnixMilli(t0+1501)); string(got) != "new" {
		t.Fatalf("Get after re-ADD = %q, want %q", got, "new")
	}
	st := s.Stats()
	if st.Adds != 2 || st.Expirations != 1 || st.Sessions != 1 || st.PayloadBytes != int64(len(k)+3) {
		t.Fatalf("stats %+v", st)
	}
	if st.Hits != 2 || st.Misses != 1 {
		t.Fatalf("hits/misses %d/%d, want 2/1", st.Hits, st.Misses)
	}
}

func TestZeroTTLNeverVisible(t *testing.T) {
	s := newTestStore()
	a := &applier{t: t, s: s}
	k := []byte("zero")
	wantStatus(t, "ADD ttl 0", a.one(1000, Limits{}, AppendAdd(nil, k, []byte("v"), 0, 0)), ResultOK)
	if s.Have(k, time.UnixMilli(0)) {
		t.Fatal("ttl-0 entry visible")
	}
	wantStatus(t, "second ADD ttl 0", a.one(1000, Limits{}, AppendAdd(nil, k, []byte("v"), 0, 0)), ResultOK)
	if n := s.Stats().Sessions; n != 0 {
		t.Fatalf("ttl-0 entries stored: %d", n)
	}
	// Sub-millisecond lifetimes truncate to 0; negative means expired.
	wantStatus(t, "ADD ttl -1s", a.one(1000, Limits{}, AppendAdd(nil, k, []byte("v"), 0, -time.Second)), ResultOK)
	wantStatus(t, "ADD ttl 0.5ms", a.one(1000, Limits{}, AppendAdd(nil, k, []byte("v"), 0, 500*time.Microsecond)), ResultOK)
	if n := s.Stats().Sessions; n != 0 {
		t.Fatalf("expired entries stored: %d", n)
	}
}

func TestSetRemoveTake(t *testing.T) {
	s := newTestStore()
	a := &applier{t: t, s: s}
	k := []byte("k")
	wantStatus(t, "REMOVE missing", a.one(10, Limits{}, AppendRemove(nil, k)), ResultNotFound)
	wantStatus(t, "TAKE missing", a.one(10, Limits{}, AppendTake(nil, k)), ResultNotFound)
	wantStatus(t, "SET", a.one(10, Limits{}, AppendSet(nil, k, []byte("one"), 1, ms(100))), ResultOK)
	wantStatus(t, "SET again", a.one(20, Limits{}, AppendSet(nil, k, []byte("two"), 2, ms(100))), ResultOK)
	r := a.one(30, Limits{}, AppendTake(nil, k))
	if r.Status != ResultOK || string(r.Value) != "two" || r.Flags != 2 || r.Expiry != 120 {
		t.Fatalf("TAKE = %+v, want OK two flags 2 expiry 120", r)
	}
	wantStatus(t, "second TAKE", a.one(30, Limits{}, AppendTake(nil, k)), ResultNotFound)

	// TAKE of an empty value still carries a (non-nil, empty) value.
	a.one(40, Limits{}, AppendSet(nil, k, nil, 0, ms(100)))
	r = a.one(40, Limits{}, AppendTake(nil, k))
	if r.Status != ResultOK || r.Value == nil || len(r.Value) != 0 {
		t.Fatalf("TAKE empty = %+v", r)
	}

	a.one(50, Limits{}, AppendAdd(nil, k, []byte("x"), 0, ms(5)))
	wantStatus(t, "REMOVE live", a.one(54, Limits{}, AppendRemove(nil, k)), ResultOK)
	a.one(60, Limits{}, AppendAdd(nil, k, []byte("x"), 0, ms(5)))
	wantStatus(t, "REMOVE expired", a.one(65, Limits{}, AppendRemove(nil, k)), ResultNotFound)
	st := s.Stats()
	if st.Sessions != 0 || st.PayloadBytes != 0 || st.Sets != 3 || st.Takes != 2 || st.Removes != 1 || st.Expirations != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestExpireCommand(t *testing.T) {
	s := newTestStore()
	a := &applier{t: t, s: s}
	for i := range 300 {
		a.one(0, Limits{}, AppendAdd(nil, fmt.Appendf(nil, "k%d", i), []byte("v"), 0, ms(int64(i+1))))
	}
	wantStatus(t, "EXPIRE", a.one(100, Limits{}, AppendExpire(nil)), ResultOK)
	st := s.Stats()
	if st.Sessions != 200 || st.Expirations != 100 {
		t.Fatalf("after EXPIRE at 100: sessions %d expirations %d, want 200, 100", st.Sessions, st.Expirations)
	}
	if s.Have([]byte("k99"), time.UnixMilli(0)) || !s.Have([]byte("k100"), time.UnixMilli(0)) {
		t.Fatal("EXPIRE removed the wrong entries")
	}
}

func TestEvictionSoonestExpiryThenInsertionOrder(t *testing.T) {
	s := newTestStore()
	a := &applier{t: t, s: s}
	lim := Limits{MaxSessions: 4}
	// a and b share an expiry; a was inserted first.
	a.apply(0, lim,
		AppendAdd(nil, []byte("late"), []byte("1"), 0, ms(1000)),
		AppendAdd(nil, []byte("a"), []byte("1"), 0, ms(500)),
		AppendAdd(nil, []byte("b"), []byte("1"), 0, ms(500)),
		AppendAdd(nil, []byte("mid"), []byte("1"), 0, ms(700)),
	)
	// Reads must not influence eviction.
	for range 10 {
		s.Get([]byte("a"), time.UnixMilli(1))
	}
	now := time.UnixMilli(1)
	for _, step := range []struct{ add, gone string }{{"n1", "a"}, {"n2", "b"}, {"n3", "mid"}} {
		wantStatus(t, "ADD "+step.add, a.one(1, lim, AppendAdd(nil, []byte(step.add), []byte("1"), 0, ms(2000))), ResultOK)
		if s.Have([]byte(step.gone), now) {
			t.Fatalf("after ADD %s: %s not evicted", step.add, step.gone)
		}
		if n := s.Stats().Sessions; n != 4 {
			t.Fatalf("sessions %d, want 4", n)
		}
	}
	if !s.Have([]byte("late"), now) {
		t.Fatal("late evicted too early")
	}
	if ev := s.Stats().Evictions; ev != 3 {
		t.Fatalf("evictions %d, want 3", ev)
	}

	// Byte cap: one 10-byte entry forces out enough small ones.
	s2 := newTestStore()
	a2 := &applier{t: t, s: s2}
	blim := Limits{MaxBytes: 12}
	for i := range 6 {
		a2.one(0, blim, AppendAdd(nil, []byte{'k', byte('0' + i)}, nil, 0, ms(int64(100+i)))) // 2 bytes each
	}
	wantStatus(t, "big ADD", a2.one(0, blim, AppendAdd(nil, []byte("KK"), make([]byte, 8), 0, ms(999))), ResultOK)
	st := s2.Stats()
	if st.PayloadBytes != 12 || st.Sessions != 2 || !s2.Have([]byte("k5"), time.UnixMilli(0)) {
		t.Fatalf("after byte-cap eviction: %+v", st)
	}
	wantStatus(t, "oversized ADD", a2.one(0, blim, AppendAdd(nil, []byte("X"), make([]byte, 12), 0, ms(999))), ResultNoSpace)
	if s2.Stats().Sessions != 2 {
		t.Fatal("oversized ADD changed the store")
	}
}

func TestTimeNeverRunsBackwards(t *testing.T) {
	s := newTestStore()
	a := &applier{t: t, s: s}
	a.one(1000, Limits{}, AppendAdd(nil, []byte("k"), []byte("v"), 0, ms(100)))
	a.one(2000, Limits{}, AppendExpire(nil)) // expires k; time is now 2000
	// A batch stamped by a slow clock executes at 2000, not 500.
	a.one(500, Limits{}, AppendAdd(nil, []byte("j"), []byte("v"), 0, ms(1000)))
	_, _, exp, ok := s.Get([]byte("j"), time.UnixMilli(2000))
	if !ok || exp.UnixMilli() != 3000 {
		t.Fatalf("expiry %d ok %v, want 3000 true", exp.UnixMilli(), ok)
	}
}

func TestMalformedInput(t *testing.T) {
	s := newTestStore()
	a := &applier{t: t, s: s}
	a.one(0, Limits{}, AppendAdd(nil, []byte("keep"), []byte("v"), 0, ms(1000)))
	var before bytes.Buffer
	if err := s.WriteSnapshot(&before); err != nil {
		t.Fatal(err)
	}

	good := EncodeBatch(nil, 5, Limits{}, [][]byte{AppendAdd(nil, []byte("x"), []byte("y"), 0, ms(10)), AppendRemove(nil, []byte("keep"))})
	for cut := 0; cut < len(good); cut++ {
		out := s.Apply(&raft.Log{Index: 100, Type: raft.LogCommand, Data: good[:cut]})
		err, ok := out.(error)
		if !ok || !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated batch (%d bytes): Apply returned %v, want ErrMalformed", cut, out)
		}
	}
	for _, bad := range [][]byte{{9}, append([]byte{2}, good[1:]...), append(bytes.Clone(good), 0)} {
		if _, ok := s.Apply(&raft.Log{Index: 101, Type: raft.LogCommand, Data: bad}).(error); !ok {
			t.Fatalf("garbage batch %x accepted", bad)
		}
	}
	var after bytes.Buffer
	s.appliedIndex.Store(1) // the garbage entries advanced only the index
	if err := s.WriteSnapshot(&after); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before.Bytes(), after.Bytes()) {
		t.Fatal("malformed entries changed the state")
	}

	// Malformed commands inside a valid batch: ResultInvalid, neighbours applied.
	badCmds := [][]byte{
		nil, {1}, {2, byte(OpAdd)}, {1, 99}, {1, byte(OpRemove)},
		AppendRemove(nil, make([]byte, MaxKeyLen+1)),
		AppendAdd(nil, nil, []byte("v"), 0, ms(1)),
		AppendAdd(nil, []byte("k"), make([]byte, MaxValueLen+1), 0, ms(1)),
		append(AppendExpire(nil), 0),
		AppendAdd(nil, []byte("k"), []byte("v"), 0, ms(1))[:7],
	}
	for i, c := range badCmds {
		if ValidateCommand(c) == nil {
			t.Errorf("ValidateCommand accepted bad command %d (%x)", i, c)
		}
		res := a.apply(10, Limits{}, AppendAdd(nil, []byte("ok1"), []byte("v"), 0, ms(1000)), c, AppendRemove(nil, []byte("ok1")))
		if res[0].Status != ResultOK || res[1].Status != ResultInvalid || res[2].Status != ResultOK {
			t.Errorf("bad command %d: results %v %v %v", i, res[0].Status, res[1].Status, res[2].Status)
		}
	}
	if got := s.Stats().Invalid; got != uint64(len(badCmds)) {
		t.Fatalf("Invalid = %d, want %d", got, len(badCmds))
	}
}

func TestNonCommandLogsAndBatching(t *testing.T) {
	s := newTestStore()
	logs := []*raft.Log{
		{Index: 1, Type: raft.LogConfiguration, Data: []byte("whatever")},
		{Index: 2, Type: raft.LogCommand, Data: EncodeBatch(nil, 1, Limits{}, [][]byte{AppendAdd(nil, []byte("a"), []byte("1"), 0, ms(100))})},
		{Index: 3, Type: raft.LogNoop},
		{Index: 4, Type: raft.LogCommand, Data: EncodeBatch(nil, 1, Limits{}, [][]byte{AppendAdd(nil, []byte("a"), []byte("2"), 0, ms(100)), AppendTake(nil, []byte("a"))})},
	}
	out := s.ApplyBatch(logs)
	if len(out) != 4 || out[0] != nil || out[2] != nil {
		t.Fatalf("ApplyBatch = %v", out)
	}
	r4 := out[3].([][]byte)
	exists, _ := DecodeResult(r4[0])
	take, _ := DecodeResult(r4[1])
	if exists.Status != ResultExists || take.Status != ResultOK || string(take.Value) != "1" {
		t.Fatalf("batch results %+v %+v", exists, take)
	}
	if got := s.Stats().AppliedIndex; got != 4 {
		t.Fatalf("AppliedIndex %d, want 4", got)
	}
}

func TestResultRoundTrip(t *testing.T) {
	for _, r := range []Result{
		{Status: ResultOK},
		{Status: ResultExists},
		{Status: ResultOK, Value: []byte{}, Flags: 1, Expiry: -5},
		{Status: ResultOK, Value: []byte("abc"), Flags: 0xdeadbeef, Expiry: 1 << 50},
	} {
		got, err := DecodeResult(r.Append(nil))
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != r.Status || got.Flags != r.Flags || got.Expiry != r.Expiry ||
			(got.Value == nil) != (r.Value == nil) || !bytes.Equal(got.Value, r.Value) {
			t.Fatalf("round trip %+v -> %+v", r, got)
		}
	}
	for _, bad := range [][]byte{nil, {0, 1}, make([]byte, resultHeaderLen-1)} {
		if _, err := DecodeResult(bad); !errors.Is(err, ErrMalformed) {
			t.Fatalf("DecodeResult(%x) err %v", bad, err)
		}
	}
}

func TestCommandOp(t *testing.T) {
	for op, c := range map[Op][]byte{
		OpAdd: AppendAdd(nil, []byte("k"), nil, 0, 0), OpSet: AppendSet(nil, []byte("k"), nil, 0, 0),
		OpRemove: AppendRemove(nil, []byte("k")), OpTake: AppendTake(nil, []byte("k")), OpExpire: AppendExpire(nil),
	} {
		got, err := CommandOp(c)
		if err != nil || got != op {
			t.Fatalf("CommandOp(%v) = %v, %v", op, got, err)
		}
	}
}

// TestConcurrentReadsDuringApplyAndSnapshot runs readers against a store
// that is being written and snapshotted; run with -race.
func TestConcurrentReadsDuringApplyAndSnapshot(t *testing.T) {
	s := newTestStore()
	a := &applier{t: t, s: s}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Appendf(nil, "k%d", (i+r)%500)
				if v, _, _, ok := s.Get(k, time.UnixMilli(0)); ok && !bytes.HasPrefix(v, k) {
					t.Errorf("Get(%s) = %q: value of another key", k, v)
					return
				}
				s.Stats()
			}
		}()
	}
	for round := range 20 {
		var cmds [][]byte
		for i := range 100 {
			k := fmt.Appendf(nil, "k%d", (round*37+i)%500)
			cmds = append(cmds, AppendSet(nil, k, append(k, "-value"...), 0, ms(1000)), AppendTake(nil, fmt.Appendf(nil, "k%d", i*3)))
		}
		a.apply(int64(round), Limits{MaxSessions: 300}, cmds...)
		if round%5 == 0 {
			snap, err := s.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer snap.Release()
				if err := snap.(*snapshot).write(&buf); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	close(stop)
	wg.Wait()
}

func TestNextExpiry(t *testing.T) {
	s := New(Config{})
	if _, ok := s.NextExpiry(); ok {
		t.Fatal("an empty store reports an expiry")
	}
	now := int64(1_700_000_000_000)
	cmds := [][]byte{
		AppendAdd(nil, []byte("late"), []byte("v"), 0, time.Hour),
		AppendAdd(nil, []byte("soon"), []byte("v"), 0, time.Minute),
	}
	s.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: EncodeBatch(nil, now, Limits{}, cmds)})
	got, ok := s.NextExpiry()
	if want := time.UnixMilli(now).Add(time.Minute); !ok || !got.Equal(want) {
		t.Fatalf("NextExpiry = %v, %v; want %v", got, ok, want)
	}
}

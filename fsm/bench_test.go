package fsm

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// Benchmark shapes: distcache-like sessions, 32-byte ids and 200-byte values.
const (
	benchKeyLen   = 32
	benchValueLen = 200
	benchNow      = 1_700_000_000_000
	million       = 1_000_000
)

// benchKey writes key number i into dst (benchKeyLen bytes).
func benchKey(dst *[benchKeyLen]byte, i uint64) []byte {
	copy(dst[:], "tls-session-id-0123456789abcdef-")
	binary.BigEndian.PutUint64(dst[benchKeyLen-8:], i)
	return dst[:]
}

// benchTTL spreads expiries over an hour, deterministically.
func benchTTL(i uint64) time.Duration {
	return time.Hour + time.Duration(i*7919%3_600_000)*time.Millisecond
}

// fillStore applies n ADDs of benchValueLen-byte values in entries of 1000
// commands, returning the next log index.
func fillStore(tb testing.TB, s *Store, n int) uint64 {
	tb.Helper()
	value := make([]byte, benchValueLen)
	var k [benchKeyLen]byte
	var cmds [][]byte
	var entry []byte
	index := s.Stats().AppliedIndex
	for start := 0; start < n; start += 1000 {
		cmds = cmds[:0]
		for i := start; i < min(start+1000, n); i++ {
			binary.BigEndian.PutUint64(value, uint64(i))
			cmds = append(cmds, AppendAdd(nil, benchKey(&k, uint64(i)), value, 0, benchTTL(uint64(i))))
		}
		index++
		entry = EncodeBatch(entry[:0], benchNow, Limits{}, cmds)
		if _, ok := s.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: entry}).([][]byte); !ok {
			tb.Fatal("fill: Apply failed")
		}
	}
	if got := s.Stats().Sessions; got != int64(n) {
		tb.Fatalf("fill: %d sessions, want %d", got, n)
	}
	return index
}

// benchSteadySessions is the size of the store the Apply benchmarks run
// against: full, so every ADD also evicts one session (the steady state of a
// busy cache), and ns/op does not drift with b.N.
const benchSteadySessions = 100_000

// BenchmarkApplyAdd200 measures one log entry carrying one ADD of a 200-byte
// session into a full store of 100,000 sessions.
func BenchmarkApplyAdd200(b *testing.B) {
	s := newTestStore()
	fillStore(b, s, benchSteadySessions)
	lim := Limits{MaxSessions: benchSteadySessions}
	value := make([]byte, benchValueLen)
	var k [benchKeyLen]byte
	var cmd, entry []byte
	cmds := make([][]byte, 1)
	l := &raft.Log{Type: raft.LogCommand}
	b.ReportAllocs()
	i := uint64(benchSteadySessions)
	for b.Loop() {
		i++
		cmd = AppendAdd(cmd[:0], benchKey(&k, i), value, 0, benchTTL(i))
		cmds[0] = cmd
		entry = EncodeBatch(entry[:0], benchNow, lim, cmds)
		l.Index, l.Data = i+1, entry
		if _, ok := s.Apply(l).([][]byte); !ok {
			b.Fatal("Apply failed")
		}
	}
}

// BenchmarkApplyAdd200Batch64 measures group commit: 64 ADDs per log entry,
// into a full store of 100,000 sessions; ns/op is per command.
func BenchmarkApplyAdd200Batch64(b *testing.B) {
	s := newTestStore()
	index := fillStore(b, s, benchSteadySessions)
	lim := Limits{MaxSessions: benchSteadySessions}
	value := make([]byte, benchValueLen)
	var k [benchKeyLen]byte
	cmds := make([][]byte, 64)
	var entry []byte
	l := &raft.Log{Type: raft.LogCommand}
	b.ReportAllocs()
	i := uint64(benchSteadySessions)
	for b.Loop() {
		i++
		cmds[i%64] = AppendAdd(cmds[i%64][:0], benchKey(&k, i), value, 0, benchTTL(i))
		if i%64 != 63 {
			continue
		}
		index++
		entry = EncodeBatch(entry[:0], benchNow, lim, cmds)
		l.Index, l.Data = index, entry
		if _, ok := s.Apply(l).([][]byte); !ok {
			b.Fatal("Apply failed")
		}
	}
}

// BenchmarkGet measures a local read hit in a store of 100,000 sessions.
func BenchmarkGet(b *testing.B) {
	const n = 100_000
	s := newTestStore()
	fillStore(b, s, n)
	now := time.UnixMilli(benchNow)
	keys := make([][benchKeyLen]byte, n)
	for i := range keys {
		benchKey(&keys[i], uint64(i))
	}
	b.ReportAllocs()
	b.Run("serial", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			if _, _, _, ok := s.Get(keys[i%n][:], now); !ok {
				b.Fatal("miss")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(n)
			for pb.Next() {
				i++
				if _, _, _, ok := s.Get(keys[i%n][:], now); !ok {
					b.Error("miss")
					return
				}
			}
		})
	})
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkMemory1M reports the live heap per session with 1,000,000
// sessions of 200-byte values and 32-byte keys, and its ratio to the
// payload (value bytes, and key+value bytes).
func BenchmarkMemory1M(b *testing.B) {
	for b.Loop() {
		before := heapInUse()
		s := newTestStore()
		fillStore(b, s, million)
		after := heapInUse()
		per := float64(after-before) / million
		b.ReportMetric(per, "heap-B/session")
		b.ReportMetric(per/benchValueLen, "heap/value-bytes")
		b.ReportMetric(per/(benchValueLen+benchKeyLen), "heap/payload-bytes")
		runtime.KeepAlive(s)
	}
}

// fileSink is a raft.SnapshotSink over a real file.
type fileSink struct{ *os.File }

func (fileSink) ID() string { return "bench" }
func (f fileSink) Cancel() error {
	f.File.Close()
	return os.Remove(f.Name())
}

func newFileSink(tb testing.TB, dir string) fileSink {
	f, err := os.Create(filepath.Join(dir, "snap.bin"))
	if err != nil {
		tb.Fatal(err)
	}
	return fileSink{f}
}

// BenchmarkSnapshot1M measures Snapshot+Persist of 1,000,000 sessions to a
// file (no fsync), then Restore from it.
func BenchmarkSnapshot1M(b *testing.B) {
	dir := b.TempDir()
	s := newTestStore()
	fillStore(b, s, million)
	b.Run("persist", func(b *testing.B) {
		for b.Loop() {
			snap, err := s.Snapshot()
			if err != nil {
				b.Fatal(err)
			}
			if err := snap.Persist(newFileSink(b, dir)); err != nil {
				b.Fatal(err)
			}
			snap.Release()
		}
		if st, err := os.Stat(filepath.Join(dir, "snap.bin")); err == nil {
			b.ReportMetric(float64(st.Size())/million, "file-B/session")
		}
	})
	b.Run("restore", func(b *testing.B) {
		for b.Loop() {
			f, err := os.Open(filepath.Join(dir, "snap.bin"))
			if err != nil {
				b.Fatal(err)
			}
			r := newTestStore()
			if err := r.Restore(f); err != nil {
				b.Fatal(err)
			}
			if r.Stats().Sessions != million {
				b.Fatal("restore lost sessions")
			}
		}
	})
}

// BenchmarkApplyStallDuringSnapshot1M applies single-ADD entries (against
// the 1M cap, so each also evicts) while a snapshot of 1,000,000 sessions is
// persisted to a file, and reports the longest and the 99.9th-percentile
// Apply latency during the persist, next to the same figures without a
// snapshot running.
func BenchmarkApplyStallDuringSnapshot1M(b *testing.B) {
	dir := b.TempDir()
	s := newTestStore()
	index := fillStore(b, s, million)
	lim := Limits{MaxSessions: million}
	value := make([]byte, benchValueLen)
	var k [benchKeyLen]byte
	var cmd, entry []byte
	cmds := make([][]byte, 1)
	next := uint64(million)
	// Wall time includes being descheduled (the machine may be shared);
	// thread CPU time is the work Apply itself did, including GC assists.
	type sample struct{ wall, cpu time.Duration }
	applyOne := func() sample {
		next++
		index++
		cmd = AppendAdd(cmd[:0], benchKey(&k, next), value, 0, benchTTL(next))
		cmds[0] = cmd
		entry = EncodeBatch(entry[:0], benchNow, lim, cmds)
		start, cpu := time.Now(), threadCPUTime()
		s.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: entry})
		return sample{time.Since(start), threadCPUTime() - cpu}
	}
	report := func(samples []sample, prefix string) {
		wall := make([]time.Duration, len(samples))
		cpu := make([]time.Duration, len(samples))
		for i, x := range samples {
			wall[i], cpu[i] = x.wall, x.cpu
		}
		slices.Sort(wall)
		slices.Sort(cpu)
		b.ReportMetric(float64(wall[len(wall)-1].Microseconds()), prefix+"max-wall-µs")
		b.ReportMetric(float64(wall[len(wall)*999/1000].Microseconds()), prefix+"p999-wall-µs")
		b.ReportMetric(float64(cpu[len(cpu)/2].Nanoseconds())/1e3, prefix+"p50-cpu-µs")
		b.ReportMetric(float64(cpu[len(cpu)-1].Microseconds()), prefix+"max-cpu-µs")
		b.ReportMetric(float64(cpu[len(cpu)*999/1000].Microseconds()), prefix+"p999-cpu-µs")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for b.Loop() {
		snap, err := s.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		done := make(chan struct{})
		var perr error
		persistStart := time.Now()
		var persistTime time.Duration
		wg.Go(func() {
			defer close(done)
			perr = snap.Persist(newFileSink(b, dir))
			persistTime = time.Since(persistStart)
		})
		var during []sample
	loop:
		for {
			select {
			case <-done:
				break loop
			default:
				during = append(during, applyOne())
			}
		}
		wg.Wait()
		snap.Release()
		if perr != nil {
			b.Fatal(perr)
		}
		baseline := make([]sample, len(during))
		for i := range baseline {
			baseline[i] = applyOne()
		}
		report(during, "during-")
		report(baseline, "idle-")
		b.ReportMetric(float64(len(during)), "applies-during")
		b.ReportMetric(float64(persistTime.Milliseconds()), "persist-ms")
	}
}

var _ io.Writer = fileSink{}

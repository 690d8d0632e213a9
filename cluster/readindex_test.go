package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestReadBarrierManyWaitersLoadedApply: tens of thousands of concurrent
// linearizable reads, arriving faster than the node can run them, while
// writes keep the commit index ahead of a slow FSM, all succeed and all see
// the writes acknowledged before they began. A read queued behind the others
// must not fail because of the time it spent queued: the write timeout bounds
// the cluster's work (a read-index round, the local apply), not the wait for
// a CPU. Each reader once had a write-timeout timer of its own plus a 2 ms
// poll timer while waiting for the apply, and some timed out.
func TestReadBarrierManyWaitersLoadedApply(t *testing.T) {
	nodes := newTestCluster(t, 1, func(c *Config) { c.WriteTimeout = time.Second })
	n := nodes[0]
	n.fsm.delay.Store(int64(5 * time.Millisecond))

	// Writers keep several entries in flight, so that a round's index is
	// usually ahead of the FSM; acked is the highest key number acknowledged.
	const writers = 4
	var acked, next atomic.Int64
	stop := make(chan struct{})
	writerErrs := make(chan error, writers)
	for range writers {
		go func() {
			for {
				select {
				case <-stop:
					writerErrs <- nil
					return
				default:
				}
				i := next.Add(1)
				if _, err := n.c.Propose(context.Background(), addCmd(fmt.Sprintf("w-%d", i), "v")); err != nil {
					writerErrs <- err
					return
				}
				for a := acked.Load(); a < i && !acked.CompareAndSwap(a, i); a = acked.Load() {
				}
			}
		}()
	}
	eventually(t, 10*time.Second, "the first write", func() bool { return acked.Load() > 0 })

	const readers = 30000
	before := n.c.leaderReads.rounds.Load()
	var wg sync.WaitGroup
	var failed atomic.Int64
	errs := make(chan error, 10)
	report := func(err error) {
		if failed.Add(1) <= int64(cap(errs)) {
			errs <- err
		}
	}
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := acked.Load()
			if err := n.c.ReadBarrier(context.Background()); err != nil {
				report(err)
				return
			}
			if _, ok := n.fsm.get(fmt.Sprintf("w-%d", k)); !ok {
				report(fmt.Errorf("after ReadBarrier the FSM misses w-%d, acknowledged before", k))
			}
		}()
	}
	wg.Wait()
	close(stop)
	for range writers {
		if err := <-writerErrs; err != nil {
			// Writes are not what this test is about: one that times out on a
			// loaded machine just stops its writer.
			t.Logf("writer stopped: %v", err)
		}
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d reads in %d read-index rounds, %d writes", readers, n.c.leaderReads.rounds.Load()-before, acked.Load())
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d reads failed", f, readers)
	}
	if _, waited := n.c.fsm.appliedIndex(); waited {
		t.Error("apply waiters left registered after every read returned")
	}
}

// TestReadBarrierOnNoopIndex: a read index that points at entries the FSM
// never sees (the leader's no-op and barrier, as on a fresh leader before
// any write) is reached anyway, without a write to move the FSM along.
func TestReadBarrierOnNoopIndex(t *testing.T) {
	nodes := newTestCluster(t, 1, nil)
	n := nodes[0]
	// The catch-up after start waits for the leader's first entries, which
	// moves the FSM past them; a barrier after it makes a fresh one.
	ctx0, cancel0 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel0()
	if err := n.c.WaitCaughtUp(ctx0); err != nil {
		t.Fatal(err)
	}
	if err := n.c.raft.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the leader's barrier processed", func() bool {
		rd := n.c.ready.Load()
		if rd == nil {
			return false
		}
		select {
		case <-rd.ch:
		default:
			return false
		}
		return n.c.raft.AppliedIndex() >= n.c.raft.LastIndex()
	})
	applied, _ := n.c.fsm.appliedIndex()
	last := n.c.raft.LastIndex()
	if applied >= last {
		t.Fatalf("FSM applied index %d already at the last index %d: no entry the FSM never sees to test with", applied, last)
	}
	for j := applied + 1; j <= last; j++ {
		var l raft.Log
		if err := n.c.logs.GetLog(j, &l); err != nil {
			t.Fatal(err)
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			t.Fatalf("entry %d (%v) after the FSM's applied index %d reaches the FSM", j, l.Type, applied)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.c.fsm.waitApplied(ctx, last, nil); err != nil {
		t.Fatalf("waiting for no-op index %d (FSM at %d): %v", last, applied, err)
	}
	if err := n.c.ReadBarrier(ctx); err != nil {
		t.Fatalf("read barrier: %v", err)
	}
}

// TestWaitAppliedPrefersApplied: a waiter that gives up is withdrawn, and one
// woken by its deadline after its index was applied succeeds.
func TestWaitAppliedPrefersApplied(t *testing.T) {
	f := newAppliedFSM(newKV(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.waitApplied(ctx, 5, nil); !errors.Is(err, ErrTimeout) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait for an unapplied index: %v, want ErrTimeout wrapping context.Canceled", err)
	}
	if _, waited := f.appliedIndex(); waited {
		t.Fatal("a waiter that gave up is still registered")
	}

	expired := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- f.waitApplied(context.Background(), 5, expired) }()
	eventually(t, 5*time.Second, "the waiter registered", func() bool { _, w := f.appliedIndex(); return w })
	// Both happen before the waiter runs again: the index was applied, so the
	// read must not fail.
	f.mu.Lock()
	f.advance(5)
	close(expired)
	f.mu.Unlock()
	if err := <-done; err != nil {
		t.Fatalf("index applied before the deadline was noticed: %v", err)
	}

	expired = make(chan struct{})
	go func() { done <- f.waitApplied(context.Background(), 9, expired) }()
	eventually(t, 5*time.Second, "the waiter registered", func() bool { _, w := f.appliedIndex(); return w })
	close(expired)
	if err := <-done; !errors.Is(err, ErrTimeout) {
		t.Fatalf("expired wait for an unapplied index: %v, want ErrTimeout", err)
	}
	if _, waited := f.appliedIndex(); waited {
		t.Fatal("an expired waiter is still registered")
	}
}

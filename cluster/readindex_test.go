package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestReadBarrierOnNoopIndex: a read index that points at entries the FSM
// never sees (the leader's no-op and barrier, as on a fresh leader before
// any write) is reached anyway, without a write to move the FSM along.
func TestReadBarrierOnNoopIndex(t *testing.T) {
	nodes := newTestCluster(t, 1, nil)
	n := nodes[0]
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

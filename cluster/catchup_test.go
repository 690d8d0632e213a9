package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestRestartedNodeCatchesUpBeforeReads: a follower killed and restarted from
// its data dir, whose state machine cannot apply yet, knows the leader but has
// not caught up: it is not ready ("catching up after restart: applied X of
// Y"), and WaitCaughtUp fails with ErrCatchingUp once its context ends. When
// its state machine applies again it catches up (including the writes made
// while it was down) and becomes ready.
func TestRestartedNodeCatchesUpBeforeReads(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	readyWithin(t, nodes, 10*time.Second, "at start")
	leader, followers := leaderAndFollowers(t, nodes)
	f := followers[0]
	for i := range 10 {
		proposeEventually(t, leader, fmt.Sprintf("before-%02d", i), "v")
	}
	if !f.c.CaughtUp() {
		t.Fatalf("%s not caught up although ready", f.id)
	}
	f.kill()
	for i := range 10 {
		proposeEventually(t, leader, fmt.Sprintf("while-down-%02d", i), "v")
	}

	// Restart with the state machine stalled: raft stores what the leader
	// sends, nothing is applied.
	f.fsm = newKV()
	f.fsm.mu.Lock()
	stalled := true
	defer func() {
		if stalled {
			f.fsm.mu.Unlock()
		}
	}()
	c, err := Open(context.Background(), f.config())
	if err != nil {
		t.Fatal(err)
	}
	f.c, f.stopped = c, false
	eventually(t, 10*time.Second, f.id+" reports catching up after restart", func() bool {
		err := f.c.Ready()
		return err != nil && strings.Contains(err.Error(), "catching up after restart: applied")
	})
	t.Logf("%s: %v", f.id, f.c.Ready())
	if f.c.CaughtUp() {
		t.Fatalf("%s caught up with a stalled state machine", f.id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err = f.c.WaitCaughtUp(ctx)
	cancel()
	if !errors.Is(err, ErrCatchingUp) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("WaitCaughtUp while stalled: %v, want ErrCatchingUp and ErrTimeout", err)
	}

	f.fsm.mu.Unlock()
	stalled = false
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.c.WaitCaughtUp(ctx); err != nil {
		t.Fatalf("WaitCaughtUp once the state machine applies: %v", err)
	}
	if _, ok := f.fsm.get("while-down-09"); !ok {
		t.Fatalf("%s caught up without the writes made while it was down", f.id)
	}
	readyWithin(t, nodes, 10*time.Second, "after the catch-up")
}

package cluster

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// StateMachine is the replicated state machine: a raft.FSM (a
// raft.BatchingFSM keeps its batching) that also packs commands into one log
// entry and answers reads on the leader. The cluster knows nothing of what
// the commands mean.
type StateMachine interface {
	raft.FSM
	// Pack builds one log entry from several commands (group commit); it is
	// called only on the leader. Applying such an entry must return [][]byte
	// with one result per command, or an error, which fails all of them.
	Pack(cmds [][]byte) []byte
	// Query answers a read on the leader, for followers' leader-on-miss
	// reads (QueryLeader).
	Query(q []byte) ([]byte, error)
}

// appliedFSM wraps the user's FSM to record the index of the last entry the
// FSM has finished applying. raft.AppliedIndex runs ahead of the FSM (it is
// bumped when entries are handed to the FSM goroutine), so "answer after
// local apply" waits on this index instead.
//
// It always implements raft.BatchingFSM, so configuration entries also reach
// it and advance the index; a non-batching inner FSM gets Apply calls for
// command entries only.
type appliedFSM struct {
	inner   raft.FSM
	batch   raft.BatchingFSM // nil if inner does not batch
	snaps   raft.SnapshotStore
	mu      sync.Mutex
	applied atomic.Uint64 // written under mu; read without it on the fast path
	// waiters holds one channel per index someone waits for, closed once
	// applied reaches it: the apply path wakes exactly the waiters it
	// satisfies, and every reader of one read-index round shares a channel.
	waiters map[uint64]*applyWaiters
	// waiting is signalled when a waiter is added, so that the cluster's
	// skip loop looks for entries the FSM never sees (see Cluster.skipLoop).
	waiting chan struct{}
}

// applyWaiters are the callers waiting for one index.
type applyWaiters struct {
	ch chan struct{} // closed once the index is applied
	n  int           // callers still waiting
}

var _ raft.BatchingFSM = (*appliedFSM)(nil)

func newAppliedFSM(inner raft.FSM, snaps raft.SnapshotStore) *appliedFSM {
	f := &appliedFSM{inner: inner, snaps: snaps, waiters: make(map[uint64]*applyWaiters),
		waiting: make(chan struct{}, 1)}
	f.batch, _ = inner.(raft.BatchingFSM)
	return f
}

func (f *appliedFSM) set(idx uint64, force bool) {
	f.mu.Lock()
	if idx > f.applied.Load() || force {
		f.advance(idx)
	}
	f.mu.Unlock()
}

// skip advances the applied index from cur to idx if it is still cur: the
// caller has checked that the entries after cur up to idx never reach the
// FSM (no-op, barrier), so the FSM's state at cur is its state at idx.
func (f *appliedFSM) skip(cur, idx uint64) {
	f.mu.Lock()
	if f.applied.Load() == cur && idx > cur {
		f.advance(idx)
	}
	f.mu.Unlock()
}

// advance sets the applied index and wakes the waiters it satisfies; f.mu
// is held.
func (f *appliedFSM) advance(idx uint64) {
	f.applied.Store(idx)
	for i, w := range f.waiters {
		if i <= idx {
			close(w.ch)
			delete(f.waiters, i)
		}
	}
}

// appliedIndex returns the FSM's applied index and whether anyone waits for
// a later one.
func (f *appliedFSM) appliedIndex() (applied uint64, waited bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied.Load(), len(f.waiters) > 0
}

// wait returns nil if idx has been applied, else a channel closed once it
// is; the caller calls unwait if it stops waiting before that.
func (f *appliedFSM) wait(idx uint64) <-chan struct{} {
	if f.applied.Load() >= idx {
		return nil // without the lock: a read-index round wakes thousands at once
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.applied.Load() >= idx {
		return nil
	}
	w := f.waiters[idx]
	if w == nil {
		w = &applyWaiters{ch: make(chan struct{})}
		f.waiters[idx] = w
		select {
		case f.waiting <- struct{}{}:
		default:
		}
	}
	w.n++
	return w.ch
}

// unwait withdraws a caller that waited on ch for idx and reports whether
// idx has been applied after all.
func (f *appliedFSM) unwait(idx uint64, ch <-chan struct{}) (applied bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if w := f.waiters[idx]; w != nil && w.ch == ch {
		if w.n--; w.n == 0 {
			delete(f.waiters, idx)
		}
	}
	return f.applied.Load() >= idx
}

// Apply implements raft.FSM.
func (f *appliedFSM) Apply(l *raft.Log) interface{} {
	var r interface{}
	if l.Type == raft.LogCommand {
		r = f.inner.Apply(l)
	}
	f.set(l.Index, false)
	return r
}

// ApplyBatch implements raft.BatchingFSM.
func (f *appliedFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	if len(logs) == 0 {
		return nil
	}
	var out []interface{}
	if f.batch != nil {
		out = f.batch.ApplyBatch(logs)
	} else {
		out = make([]interface{}, len(logs))
		for i, l := range logs {
			if l.Type == raft.LogCommand {
				out[i] = f.inner.Apply(l)
			}
		}
	}
	f.set(logs[len(logs)-1].Index, false)
	return out
}

// Snapshot implements raft.FSM.
func (f *appliedFSM) Snapshot() (raft.FSMSnapshot, error) { return f.inner.Snapshot() }

// Restore implements raft.FSM. Raft has stored the snapshot being restored
// before calling this, so the newest snapshot in the store gives its index.
func (f *appliedFSM) Restore(rc io.ReadCloser) error {
	if err := f.inner.Restore(rc); err != nil {
		return err
	}
	metas, err := f.snaps.List()
	if err != nil {
		return fmt.Errorf("cluster: list snapshots after restore: %w", err)
	}
	if len(metas) > 0 {
		f.set(metas[0].Index, true)
	}
	return nil
}

// waitApplied blocks until the local FSM has applied idx, or ctx ends, or
// expired (nil: never) is closed. It takes no timer of its own: thousands of
// linearizable reads wait on one channel per index. An index that has been
// applied by the time the waiter looks is never reported as a failure, however
// late the waiter was scheduled.
func (f *appliedFSM) waitApplied(ctx context.Context, idx uint64, expired <-chan struct{}) error {
	ch := f.wait(idx)
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	case <-expired:
	}
	if f.unwait(idx, ch) {
		return nil
	}
	cur, _ := f.appliedIndex()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: waiting for local apply of index %d (at %d): %w", ErrTimeout, idx, cur, err)
	}
	return fmt.Errorf("%w: waiting for local apply of index %d (at %d)", ErrTimeout, idx, cur)
}

package cluster

import (
	"context"
	"fmt"
	"io"
	"sync"

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
	applied uint64
	changed chan struct{} // closed and replaced on every advance
}

var _ raft.BatchingFSM = (*appliedFSM)(nil)

func newAppliedFSM(inner raft.FSM, snaps raft.SnapshotStore) *appliedFSM {
	f := &appliedFSM{inner: inner, snaps: snaps, changed: make(chan struct{})}
	f.batch, _ = inner.(raft.BatchingFSM)
	return f
}

func (f *appliedFSM) set(idx uint64, force bool) {
	f.mu.Lock()
	if idx > f.applied || force {
		f.applied = idx
		close(f.changed)
		f.changed = make(chan struct{})
	}
	f.mu.Unlock()
}

// appliedIndex returns the FSM's applied index and a channel closed at the
// next change.
func (f *appliedFSM) appliedIndex() (uint64, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied, f.changed
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

// waitApplied blocks until the local FSM has applied idx, or ctx ends.
// extra is consulted when the FSM index alone is not enough (entries that
// never reach the FSM, such as the leader's no-op), see Cluster.appliedIndex.
func (f *appliedFSM) waitApplied(ctx context.Context, idx uint64, extra func(uint64) bool) error {
	for {
		cur, ch := f.appliedIndex()
		if cur >= idx {
			return nil
		}
		if extra != nil && extra(cur) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: waiting for local apply of index %d (at %d): %w", ErrTimeout, idx, cur, ctx.Err())
		case <-timeAfterPoll():
			// Re-check extra: non-FSM entries advance no channel.
		}
	}
}

// appliedIndex is the index through which this node has applied the log: the
// FSM's applied index, extended over the entries after it that the FSM never
// sees (a new leader's no-op, barriers) once raft has processed them. Without
// them a node that has applied everything would look behind after every
// election until the next write. The scan resumes where the last one ended
// and is skipped when neither index moved, so a call costs a lock and, at
// most, a look at entries not seen before (in the log cache: they are recent).
func (c *Cluster) appliedIndex() uint64 {
	applied, _ := c.fsm.appliedIndex()
	last := c.raft.AppliedIndex()
	c.skip.mu.Lock()
	defer c.skip.mu.Unlock()
	s := &c.skip
	if applied == s.fsm && last == s.raft {
		return s.through
	}
	through := max(applied, s.through)
	var l raft.Log
	for i := through + 1; i <= last; i++ {
		if err := c.logs.GetLog(i, &l); err != nil || l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			break // the FSM has yet to apply it (or it is gone: a snapshot covers it)
		}
		through = i
	}
	s.fsm, s.raft, s.through = applied, last, through
	return through
}

// skippedEntries is appliedIndex's memory: the FSM's and raft's applied
// indexes at its last scan, and how far that scan found the log applied.
type skippedEntries struct {
	mu                 sync.Mutex
	fsm, raft, through uint64
}

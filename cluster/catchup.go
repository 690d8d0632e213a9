package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Catching up after a start. A node that restarts from its data dir restores
// its latest snapshot and then knows nothing of the commit index until a
// leader tells it: raft applies the log entries after the snapshot only once
// it learns they are committed. Until then its state machine holds the
// snapshot's state, which may be older than what it acknowledged before it
// died (a session it REMOVEd or TAKEn would be found again). So a node serves
// no read, in any read mode, until it has caught up once: it obtained a read
// index (the leader's commit index, confirmed by a quorum) after it started
// and applied it. Every write it ever acknowledged was committed before that
// index was captured, so from then on it is at least as new as anything it
// said. The log's last index at start is only reported (Ready says "applied X
// of Y"): it is no bound to wait for, since an uncommitted tail may be
// truncated by the leader and the cluster's log may never reach it again.

// ErrCatchingUp means the node has not caught up with the cluster since it
// started, so it cannot answer reads yet (see WaitCaughtUp).
var ErrCatchingUp = errors.New("catching up after start")

// catchUpRetry is the pause between attempts to catch up (no leader yet, or a
// round failed).
const catchUpRetry = 100 * time.Millisecond

// startCatchUp tracks the one catch-up a node does after it starts.
type startCatchUp struct {
	done      chan struct{} // closed once caught up
	caughtUp  atomic.Bool   // done is closed; the fast path of reads
	lastIndex uint64        // the log's last index when raft started
	target    atomic.Uint64 // the read index being applied (0: none yet)
}

func newStartCatchUp(lastIndex uint64) *startCatchUp {
	return &startCatchUp{done: make(chan struct{}), lastIndex: lastIndex}
}

// CaughtUp reports whether this node has caught up with the cluster since it
// started, so that its local state is at least as new as anything it
// acknowledged before a restart.
func (c *Cluster) CaughtUp() bool { return c.start.caughtUp.Load() }

// WaitCaughtUp returns nil once this node has caught up since it started,
// at once on the fast path. Until then it waits, as long as ctx allows, and
// fails with an error wrapping ErrCatchingUp (and ErrTimeout when ctx ended),
// never serving the older state.
func (c *Cluster) WaitCaughtUp(ctx context.Context) error {
	if c.start.caughtUp.Load() {
		return nil
	}
	select {
	case <-c.start.done:
		return nil
	case <-c.done:
		return ErrClosed
	case <-ctx.Done():
		applied, target := c.catchUpProgress()
		return fmt.Errorf("%w: %w (applied %d of %d): %w", ErrTimeout, ErrCatchingUp, applied, target, ctx.Err())
	}
}

// catchUpProgress returns the applied index and the one this node waits for:
// the read index it obtained, or the log's last index at start while it has
// none (or when that is higher, for the operator's sake).
func (c *Cluster) catchUpProgress() (applied, target uint64) {
	applied, _ = c.fsm.appliedIndex()
	return applied, max(c.start.target.Load(), c.start.lastIndex)
}

// catchUpReason is Ready's reason while the node catches up, "" after.
func (c *Cluster) catchUpReason() string {
	if c.start.caughtUp.Load() {
		return ""
	}
	applied, target := c.catchUpProgress()
	if c.start.target.Load() == 0 {
		return fmt.Sprintf("catching up after restart: applied %d of %d, waiting for a read index from a leader", applied, target)
	}
	return fmt.Sprintf("catching up after restart: applied %d of %d", applied, target)
}

// catchUpLoop obtains a read index and waits until it is applied, retrying
// until that succeeds once or the cluster closes.
func (c *Cluster) catchUpLoop() {
	ctx, cancel := c.untilClosed(context.Background())
	defer cancel()
	for {
		err := c.catchUpOnce(ctx)
		if err == nil {
			c.start.caughtUp.Store(true)
			close(c.start.done)
			applied, _ := c.fsm.appliedIndex()
			c.log.Info("caught up after start; serving reads", "applied", applied,
				"read_index", c.start.target.Load(), "last_index_at_start", c.start.lastIndex)
			return
		}
		c.log.Debug("not caught up yet", "err", err)
		select {
		case <-c.done:
			return
		case <-time.After(catchUpRetry):
		}
	}
}

// catchUpOnce is one attempt: a read index from the leader (or, on the
// leader, its own after its term's barrier), then its local apply, each
// bounded by the write timeout.
func (c *Cluster) catchUpOnce(ctx context.Context) error {
	if lid, _ := c.Leader(); lid == "" {
		return ErrNoLeader
	}
	rctx, cancel := c.writeCtx(ctx)
	defer cancel()
	idx, err := c.readGroup().get(rctx)
	if err != nil {
		return err
	}
	c.start.target.Store(idx)
	actx, cancelA := c.writeCtx(ctx)
	defer cancelA()
	return c.fsm.waitApplied(actx, idx, nil)
}

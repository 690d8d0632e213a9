package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// writeCtx bounds ctx by the write timeout.
func (c *Cluster) writeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= c.cfg.WriteTimeout {
		return ctx, func() {} // already bounded at least as tightly: no second timer
	}
	return context.WithTimeout(ctx, c.cfg.WriteTimeout)
}

// Propose replicates cmd and returns its FSM result once the entry holding it
// has been applied on THIS node, so a local read right after sees it. Any
// node accepts proposals; followers forward them to the leader. It fails with
// ErrNoLeader at once when no leader is known, and with ErrTimeout (outcome
// unknown) when the write timeout passes.
func (c *Cluster) Propose(ctx context.Context, cmd []byte) ([]byte, error) {
	ctx, cancel := c.writeCtx(ctx)
	defer cancel()
	res, idx, err := c.ProposeCommitted(ctx, cmd)
	if err != nil {
		return nil, err
	}
	if err := c.fsm.waitApplied(ctx, idx, nil); err != nil {
		return nil, err
	}
	return res, nil
}

// ProposeCommitted replicates cmd and returns its FSM result and the index of
// its log entry as soon as the LEADER has committed and applied it: a
// follower does not wait until its own FSM has applied the entry, which it
// learns of only with the leader's next AppendEntries (new entries, or
// CommitTimeout later). The write is durable on a majority and its result is
// final; only this node's replica may not show it yet. A caller that reads
// its own replica afterwards waits with WaitApplied(idx) first, so the wait
// belongs to the read that needs it, not to every write. Errors are
// Propose's.
func (c *Cluster) ProposeCommitted(ctx context.Context, cmd []byte) ([]byte, uint64, error) {
	if c.closing.Load() {
		return nil, 0, ErrClosed
	}
	ctx, cancel := c.writeCtx(ctx)
	defer cancel()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			// The leader just changed: give the new one a moment to appear.
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
				return nil, 0, fmt.Errorf("%w: %w (after %w)", ErrTimeout, ctx.Err(), lastErr)
			}
		}
		if c.IsLeader() {
			res, idx, err := c.batch.submit(ctx, cmd)
			if errors.Is(err, ErrNotLeader) {
				lastErr = err
				continue
			}
			return res, idx, err
		}
		lid, addr := c.Leader()
		if addr == "" || lid == c.id {
			return nil, 0, ErrNoLeader
		}
		out, err := c.client.call(ctx, addr, rpcPropose, cmd)
		if err != nil {
			if errors.Is(err, ErrNotLeader) {
				lastErr = err
				continue
			}
			if errors.Is(err, errConnBroken) {
				return nil, 0, fmt.Errorf("%w: leader %s unreachable: %w", ErrNoLeader, lid, err)
			}
			return nil, 0, err
		}
		if len(out) < 8 {
			return nil, 0, fmt.Errorf("cluster: short propose answer from %s", lid)
		}
		return out[8:], binary.BigEndian.Uint64(out), nil
	}
	return nil, 0, lastErr
}

// WaitApplied blocks until this node's FSM has applied idx (an index
// returned by ProposeCommitted), or ctx ends (ErrTimeout), bounded by the
// write timeout. It returns at once, without locking, when idx is applied.
func (c *Cluster) WaitApplied(ctx context.Context, idx uint64) error {
	if c.fsm.applied.Load() >= idx {
		return nil
	}
	ctx, cancel := c.writeCtx(ctx)
	defer cancel()
	return c.fsm.waitApplied(ctx, idx, nil)
}

// AppliedIndex is the index of the last entry this node's FSM has applied
// (or skipped as never reaching it): the state a local read sees.
func (c *Cluster) AppliedIndex() uint64 { return c.fsm.applied.Load() }

// skipLoop advances the FSM's applied index over committed entries that
// never reach the FSM (the leader's no-op, barriers) while anyone waits for a
// later index: a read index often points at one. Raft gives no signal when it
// passes them, so one goroutine polls for all waiters, only while there are
// waiters.
func (c *Cluster) skipLoop() {
	t := time.NewTicker(2 * time.Millisecond) // idle costs nothing: nobody receives
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-c.fsm.waiting:
		}
		for {
			cur, waited := c.fsm.appliedIndex()
			if !waited {
				break
			}
			c.skipNonFSM(cur)
			select {
			case <-c.done:
				return
			case <-t.C:
			}
		}
	}
}

// skipNonFSM advances the applied index past the entries after cur that
// raft has processed and the FSM never sees.
func (c *Cluster) skipNonFSM(cur uint64) {
	last, end := c.raft.AppliedIndex(), cur
	var l raft.Log
	for j := cur + 1; j <= last; j++ {
		if err := c.logs.GetLog(j, &l); err != nil || l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			break
		}
		end = j
	}
	c.fsm.skip(cur, end)
}

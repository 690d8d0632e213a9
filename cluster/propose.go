package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
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
	if c.closing.Load() {
		return nil, ErrClosed
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
				return nil, fmt.Errorf("%w: %w (after %w)", ErrTimeout, ctx.Err(), lastErr)
			}
		}
		if c.IsLeader() {
			res, _, err := c.batch.submit(ctx, cmd)
			if errors.Is(err, ErrNotLeader) {
				lastErr = err
				continue
			}
			return res, err
		}
		lid, addr := c.Leader()
		if addr == "" || lid == c.id {
			return nil, ErrNoLeader
		}
		out, err := c.client.call(ctx, addr, rpcPropose, cmd)
		if err != nil {
			if errors.Is(err, ErrNotLeader) {
				lastErr = err
				continue
			}
			if errors.Is(err, errConnBroken) {
				return nil, fmt.Errorf("%w: leader %s unreachable: %w", ErrNoLeader, lid, err)
			}
			return nil, err
		}
		if len(out) < 8 {
			return nil, fmt.Errorf("cluster: short propose answer from %s", lid)
		}
		idx := binary.BigEndian.Uint64(out)
		if err := c.waitApplied(ctx, idx); err != nil {
			return nil, err
		}
		return out[8:], nil
	}
	return nil, lastErr
}

// waitApplied waits until this node has applied idx (see appliedIndex:
// entries that never reach the FSM, the leader's no-op and barriers, count
// once raft has processed them, so a read index that points at one does not
// wait forever).
func (c *Cluster) waitApplied(ctx context.Context, idx uint64) error {
	return c.fsm.waitApplied(ctx, idx, func(uint64) bool {
		return c.raft.AppliedIndex() >= idx && c.appliedIndex() >= idx
	})
}

// timeAfterPoll paces re-checks of conditions that have no change signal.
func timeAfterPoll() <-chan time.Time { return time.After(2 * time.Millisecond) }

package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// QueryLeader runs the state machine's Query on the leader (locally when
// this node leads). With no leader known it fails at once with ErrNoLeader,
// so a leader-on-miss read degrades to a miss instead of hanging.
func (c *Cluster) QueryLeader(ctx context.Context, q []byte) ([]byte, error) {
	if c.closing.Load() {
		return nil, ErrClosed
	}
	if c.IsLeader() {
		return c.cfg.StateMachine.Query(q)
	}
	lid, addr := c.Leader()
	if addr == "" || lid == c.id {
		return nil, ErrNoLeader
	}
	ctx, cancel := c.writeCtx(ctx)
	defer cancel()
	out, err := c.client.call(ctx, addr, rpcQuery, q)
	if errors.Is(err, errConnBroken) {
		return nil, fmt.Errorf("%w: leader %s unreachable: %w", ErrNoLeader, lid, err)
	}
	return out, err
}

// QueryAt runs the state machine's Query on a replica that has applied idx
// (an index from ProposeCommitted): here when this node has, else on the
// leader, which has applied every index it answered (it waits for a newer
// leader to catch up). A read of a key this node just wrote costs one round
// trip instead of waiting until the leader's next AppendEntries tells this
// node the commit index (up to CommitTimeout when writes stop). With no
// leader reachable it falls back to waiting for the local apply.
func (c *Cluster) QueryAt(ctx context.Context, idx uint64, q []byte) ([]byte, error) {
	if c.closing.Load() {
		return nil, ErrClosed
	}
	if c.fsm.applied.Load() >= idx || c.IsLeader() {
		if err := c.WaitApplied(ctx, idx); err != nil {
			return nil, err
		}
		return c.cfg.StateMachine.Query(q)
	}
	if lid, addr := c.Leader(); addr != "" && lid != c.id {
		wctx, cancel := c.writeCtx(ctx)
		out, err := c.client.call(wctx, addr, rpcQueryAt, append(binary.BigEndian.AppendUint64(nil, idx), q...))
		cancel()
		if err == nil {
			return out, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: query at %d: %w", ErrTimeout, idx, err)
		}
	}
	if err := c.WaitApplied(ctx, idx); err != nil {
		return nil, err
	}
	return c.cfg.StateMachine.Query(q)
}

// handleRPC serves forwarding requests from other nodes (rpc.go carries
// them): writes and reads on the leader, operator calls forwarded to it, and
// notices and keyring changes from peers.
func (c *Cluster) handleRPC(ctx context.Context, typ byte, payload []byte) ([]byte, error) {
	if c.closing.Load() && typ != rpcStatus {
		return nil, ErrClosed
	}
	switch typ {
	case rpcPropose:
		if !c.IsLeader() {
			return nil, ErrNotLeader
		}
		res, idx, err := c.batch.submit(ctx, payload)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 8, 8+len(res))
		binary.BigEndian.PutUint64(out, idx)
		return append(out, res...), nil
	case rpcReadIndex:
		idx, err := c.leaderReads.get(ctx)
		if err != nil {
			return nil, err
		}
		return binary.BigEndian.AppendUint64(nil, idx), nil
	case rpcQuery:
		if !c.IsLeader() {
			return nil, ErrNotLeader
		}
		return c.cfg.StateMachine.Query(payload)
	case rpcQueryAt:
		if !c.IsLeader() {
			return nil, ErrNotLeader
		}
		if len(payload) < 8 {
			return nil, errors.New("short query-at request")
		}
		if err := c.fsm.waitApplied(ctx, binary.BigEndian.Uint64(payload), nil); err != nil {
			return nil, err
		}
		return c.cfg.StateMachine.Query(payload[8:])
	case rpcRemove:
		return nil, c.removeOnLeader(ctx, string(payload))
	case rpcTransfer:
		return nil, c.transferOnLeader(ctx, string(payload))
	case rpcStatus:
		out := binary.BigEndian.AppendUint64(nil, c.raft.LastIndex())
		lc := int64(-1)
		if t := c.raft.LastContact(); !t.IsZero() {
			lc = time.Since(t).Milliseconds()
		}
		return binary.BigEndian.AppendUint64(out, uint64(lc)), nil
	case rpcKeyring:
		return c.handleKeyring(payload)
	case rpcRemoved:
		c.log.Warn("removed from the cluster by the leader; leaving gossip (Join to come back)")
		if err := c.gossip.Leave(time.Second); err != nil {
			c.log.Warn("leaving gossip after removal", "err", err)
		}
		return nil, nil
	}
	return nil, fmt.Errorf("unknown request type %q", typ)
}

// callLeader runs an operator call on the leader through the forwarding RPC.
func (c *Cluster) callLeader(ctx context.Context, typ byte, payload []byte) error {
	lid, addr := c.Leader()
	if addr == "" || lid == c.id {
		return ErrNoLeader
	}
	_, err := c.client.call(ctx, addr, typ, payload)
	if errors.Is(err, errConnBroken) {
		return fmt.Errorf("%w: leader %s unreachable: %w", ErrNoLeader, lid, err)
	}
	return err
}

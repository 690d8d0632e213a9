package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ReadBarrier makes the next local read linearizable (ReadIndex): the leader
// confirms its leadership with a quorum and reports its commit index, then
// this node waits until its FSM has applied that index.
//
// Concurrent callers share rounds: a caller joins the round that has not
// started yet, so the index it gets was captured after it arrived, which is
// all linearizability asks. Without this, 25,000 pipelined linearizable GETs
// meant 25,000 quorum checks (or round trips to the leader) and some timed out.
//
// The waits are bounded per step of the cluster's work, not per caller: a
// round's fetch by raft's answer or the write timeout (see readIndex), then
// the local apply of its index by the write timeout. A read that queued
// behind thousands of others, or was scheduled late, still succeeds when its
// round did. ctx only cancels (the client went away), unless its caller gave
// it a deadline.
func (c *Cluster) ReadBarrier(ctx context.Context) error {
	if c.closing.Load() {
		return ErrClosed
	}
	r, err := c.readGroup().join(ctx)
	if err != nil {
		return err
	}
	return c.fsm.waitApplied(ctx, r.idx, r.expired)
}

// readGroup is where this node's read-index rounds are shared: the leader's
// own on the leader, those asked of the leader on a follower.
func (c *Cluster) readGroup() *readIndexGroup {
	if c.IsLeader() {
		return c.leaderReads
	}
	return c.forwardedReads
}

// readIndex runs on the leader: wait for its term's barrier, capture the
// commit index, then verify leadership with a quorum. The barrier wait is
// bounded by the write timeout, the verification only by ctx: raft answers
// every VerifyLeader, with an error once it cannot reach a quorum within its
// leader lease, while a deadline of ours there measured how long raft's
// goroutine waited for a CPU behind tens of thousands of queued reads (over
// a second on a loaded machine, for a single voter).
func (c *Cluster) readIndex(ctx context.Context) (uint64, error) {
	rd := c.ready.Load()
	if rd == nil || !c.IsLeader() {
		return 0, ErrNotLeader
	}
	wctx, cancel := c.writeCtx(ctx)
	defer cancel()
	select {
	case <-rd.ch:
	case <-wctx.Done():
		return 0, fmt.Errorf("%w: leader not ready: %w", ErrTimeout, wctx.Err())
	}
	idx := c.raft.CommitIndex()
	if err := waitFuture(ctx, c.raft.VerifyLeader()); err != nil {
		return 0, err
	}
	return idx, nil
}

// leaderReadIndex runs on a follower: ask the leader for a read index,
// within the write timeout.
func (c *Cluster) leaderReadIndex(ctx context.Context) (uint64, error) {
	lid, addr := c.Leader()
	if addr == "" || lid == c.id {
		return 0, ErrNoLeader
	}
	ctx, cancel := c.writeCtx(ctx)
	defer cancel()
	out, err := c.client.call(ctx, addr, rpcReadIndex, nil)
	if err != nil {
		if errors.Is(err, errConnBroken) {
			return 0, fmt.Errorf("%w: leader %s unreachable: %w", ErrNoLeader, lid, err)
		}
		return 0, err
	}
	if len(out) != 8 {
		return 0, fmt.Errorf("cluster: bad read-index answer from %s", lid)
	}
	return binary.BigEndian.Uint64(out), nil
}

// readIndexGroup coalesces concurrent requests for a read index into rounds of
// one fetch each. At most one round runs at a time; callers that arrive while
// it runs join the next one, which starts when it ends.
type readIndexGroup struct {
	c     *Cluster
	fetch func(context.Context) (uint64, error)

	mu      sync.Mutex
	pending *readRound // not started yet; new callers join it
	running bool       // a goroutine is running rounds

	rounds atomic.Uint64 // fetches started, for tests and diagnostics
}

// readRound is one fetch shared by every caller that joined it; done is closed
// when idx, err and expired are set.
type readRound struct {
	done chan struct{}
	idx  uint64
	err  error
	// expired is closed one write timeout after idx was fetched: the local
	// apply of idx is given that long, one timer for all of the round's
	// callers.
	expired chan struct{}
}

// get returns a read index captured after the call began.
func (g *readIndexGroup) get(ctx context.Context) (uint64, error) {
	r, err := g.join(ctx)
	if err != nil {
		return 0, err
	}
	return r.idx, nil
}

// join waits for a round that starts after the call began and returns it
// once it has ended. A round that ended is never reported as a timeout,
// however late this caller was scheduled.
func (g *readIndexGroup) join(ctx context.Context) (*readRound, error) {
	g.mu.Lock()
	if g.pending == nil {
		g.pending = &readRound{done: make(chan struct{})}
	}
	r := g.pending
	if !g.running {
		g.running = true
		go g.run()
	}
	g.mu.Unlock()
	select {
	case <-r.done:
	case <-ctx.Done():
		select {
		case <-r.done:
		default:
			return nil, fmt.Errorf("%w: read index: %w", ErrTimeout, ctx.Err())
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	return r, nil
}

// run fetches rounds until none is pending. A round is bounded by the
// cluster's lifetime and by its fetch's own limits (see readIndex and
// leaderReadIndex), not by any one caller's context: its callers may give up,
// the others still get the answer.
func (g *readIndexGroup) run() {
	for {
		g.mu.Lock()
		r := g.pending
		g.pending = nil
		if r == nil {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		g.rounds.Add(1)
		r.idx, r.err = g.fetchRound()
		if r.err == nil {
			r.expired = make(chan struct{})
			time.AfterFunc(g.c.cfg.WriteTimeout, func() { close(r.expired) })
		}
		close(r.done)
	}
}

func (g *readIndexGroup) fetchRound() (uint64, error) {
	if g.c.closing.Load() {
		return 0, ErrClosed
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-g.c.done:
			cancel()
		case <-stop:
		}
	}()
	return g.fetch(ctx)
}

package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ReadBarrier makes the next local read linearizable (ReadIndex): the leader
// confirms its leadership with a quorum and reports its commit index, then
// this node waits until its FSM has applied that index.
//
// Concurrent callers share rounds: a caller joins the round that has not
// started yet, so the index it gets was captured after it arrived, which is
// all linearizability asks. Without this, 25,000 pipelined linearizable GETs
// meant 25,000 quorum checks (or round trips to the leader) and some timed out.
func (c *Cluster) ReadBarrier(ctx context.Context) error {
	if c.closing.Load() {
		return ErrClosed
	}
	ctx, cancel := c.writeCtx(ctx)
	defer cancel()
	idx, err := c.sharedReadIndex(ctx)
	if err != nil {
		return err
	}
	return c.waitApplied(ctx, idx)
}

// sharedReadIndex returns a read index captured after the call began, from a
// round shared with concurrent callers: the leader's own on the leader, one
// asked of the leader on a follower.
func (c *Cluster) sharedReadIndex(ctx context.Context) (uint64, error) {
	g := c.forwardedReads
	if c.IsLeader() {
		g = c.leaderReads
	}
	return g.get(ctx)
}

// readIndex runs on the leader: wait for its term's barrier, capture the
// commit index, then verify leadership with a quorum.
func (c *Cluster) readIndex(ctx context.Context) (uint64, error) {
	rd := c.ready.Load()
	if rd == nil || !c.IsLeader() {
		return 0, ErrNotLeader
	}
	select {
	case <-rd.ch:
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: leader not ready: %w", ErrTimeout, ctx.Err())
	}
	idx := c.raft.CommitIndex()
	if err := waitFuture(ctx, c.raft.VerifyLeader()); err != nil {
		return 0, err
	}
	return idx, nil
}

// leaderReadIndex runs on a follower: ask the leader for a read index.
func (c *Cluster) leaderReadIndex(ctx context.Context) (uint64, error) {
	lid, addr := c.Leader()
	if addr == "" || lid == c.id {
		return 0, ErrNoLeader
	}
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
// when idx and err are set.
type readRound struct {
	done chan struct{}
	idx  uint64
	err  error
}

// get returns a read index captured after the call began.
func (g *readIndexGroup) get(ctx context.Context) (uint64, error) {
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
		return r.idx, r.err
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: read index: %w", ErrTimeout, ctx.Err())
	}
}

// run fetches rounds until none is pending. A round is bounded by the write
// timeout and by the cluster's lifetime, not by any one caller's context: its
// callers may give up, the others still get the answer.
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
		close(r.done)
	}
}

func (g *readIndexGroup) fetchRound() (uint64, error) {
	if g.c.closing.Load() {
		return 0, ErrClosed
	}
	ctx, cancel := g.c.writeCtx(context.Background())
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

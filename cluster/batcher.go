package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// proposal is one command waiting for group commit on the leader.
type proposal struct {
	ctx  context.Context
	cmd  []byte
	done chan proposalResult // buffered 1
}

type proposalResult struct {
	res   []byte
	index uint64
	err   error
}

// batcher implements group commit on the leader: it drains queued proposals
// (local and forwarded) into entries of up to MaxBatch commands/MaxBatchBytes,
// packs each with the state machine's Pack and hands it to raft.Apply
// without waiting for the previous entry, keeping up to MaxInflight entries
// in flight. Raft's
// BatchApplyCh then writes several entries per fsync, so one fsync commits
// many commands.
type batcher struct {
	r        *raft.Raft
	pack     func([][]byte) []byte
	maxBatch int
	maxBytes int
	timeout  time.Duration
	queue    chan *proposal
	inflight chan struct{}
	done     chan struct{}
	stopped  chan struct{}
}

func newBatcher(r *raft.Raft, cfg Config) *batcher {
	return &batcher{
		r:        r,
		pack:     cfg.StateMachine.Pack,
		maxBatch: cfg.MaxBatch,
		maxBytes: cfg.MaxBatchBytes,
		timeout:  cfg.WriteTimeout,
		queue:    make(chan *proposal, 4*cfg.MaxBatch*cfg.MaxInflight),
		inflight: make(chan struct{}, cfg.MaxInflight),
		done:     make(chan struct{}),
		stopped:  make(chan struct{}),
	}
}

// submit queues a proposal and waits for its result.
func (b *batcher) submit(ctx context.Context, cmd []byte) ([]byte, uint64, error) {
	p := &proposal{ctx: ctx, cmd: cmd, done: make(chan proposalResult, 1)}
	select {
	case b.queue <- p:
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("%w: queueing write: %w", ErrTimeout, ctx.Err())
	case <-b.done:
		return nil, 0, ErrClosed
	}
	select {
	case r := <-p.done:
		return r.res, r.index, r.err
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("%w: waiting for commit: %w", ErrTimeout, ctx.Err())
	}
}

func (b *batcher) run() {
	defer close(b.stopped)
	batch := make([]*proposal, 0, b.maxBatch)
	var carry *proposal
	for {
		var first *proposal
		if carry != nil {
			first, carry = carry, nil
		} else {
			select {
			case first = <-b.queue:
			case <-b.done:
				b.drain()
				return
			}
		}
		// Take an in-flight slot before cutting the batch: while we wait,
		// more proposals queue up and join this entry.
		select {
		case b.inflight <- struct{}{}:
		case <-b.done:
			first.done <- proposalResult{err: ErrClosed}
			b.drain()
			return
		}
		batch = append(batch[:0], first)
		size := len(first.cmd)
	fill:
		for len(batch) < b.maxBatch {
			select {
			case p := <-b.queue:
				if size+len(p.cmd) > b.maxBytes {
					carry = p
					break fill
				}
				batch = append(batch, p)
				size += len(p.cmd)
			default:
				break fill
			}
		}
		b.apply(batch)
	}
}

// apply sends one entry to raft and completes its proposals asynchronously.
func (b *batcher) apply(batch []*proposal) {
	live := make([]*proposal, 0, len(batch))
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.done <- proposalResult{err: fmt.Errorf("%w: expired before commit: %w", ErrTimeout, err)}
			continue
		}
		live = append(live, p)
	}
	if len(live) == 0 {
		<-b.inflight
		return
	}
	cmds := make([][]byte, len(live))
	for i, p := range live {
		cmds[i] = p.cmd
	}
	f := b.r.Apply(b.pack(cmds), b.timeout)
	go func() {
		defer func() { <-b.inflight }()
		err := f.Error()
		if err != nil {
			err = mapRaftErr(err)
			for _, p := range live {
				p.done <- proposalResult{err: err}
			}
			return
		}
		idx := f.Index()
		resp := f.Response()
		if e, ok := resp.(error); ok {
			for _, p := range live {
				p.done <- proposalResult{err: e, index: idx}
			}
			return
		}
		rs, ok := resp.([][]byte)
		if !ok || len(rs) != len(live) {
			err := fmt.Errorf("cluster: FSM returned %T with %d results for %d packed commands", resp, len(rs), len(live))
			for _, p := range live {
				p.done <- proposalResult{err: err, index: idx}
			}
			return
		}
		for i, p := range live {
			p.done <- proposalResult{res: rs[i], index: idx}
		}
	}()
}

func (b *batcher) drain() {
	for {
		select {
		case p := <-b.queue:
			p.done <- proposalResult{err: ErrClosed}
		default:
			return
		}
	}
}

// stop ends the loop and waits for in-flight entries to finish.
func (b *batcher) stop() {
	close(b.done)
	<-b.stopped
	for i := 0; i < cap(b.inflight); i++ {
		b.inflight <- struct{}{}
	}
}

// mapRaftErr converts raft's errors to this package's sentinels.
func mapRaftErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: %w", ErrLeadershipLost, err)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

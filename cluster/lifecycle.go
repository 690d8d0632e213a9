package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/raft"
)

// Leave departs the cluster for good, the explicit way out (dcctl leave): a
// leader first hands leadership over, then the node has the leader remove it
// from the Raft configuration, and it leaves gossip. Close afterwards.
func (c *Cluster) Leave(ctx context.Context) error {
	if c.closing.Load() {
		return ErrClosed
	}
	c.transferIfLeader(ctx)
	if err := c.removeSelf(ctx); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	if err := c.gossip.Leave(time.Second); err != nil {
		return fmt.Errorf("cluster: leave gossip: %w", err)
	}
	c.log.Info("left the cluster: removed from the raft configuration and from gossip")
	return nil
}

// removeSelf has the leader remove this node from the configuration. Right
// after a leadership transfer no leader may be known yet, and a leader that
// steps down answers "not the leader": those are retried until a leader
// answers, bounded by ctx and a few write timeouts. A node that is not in the
// configuration (any more), or is its last server, has nothing to do.
func (c *Cluster) removeSelf(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*c.cfg.WriteTimeout+2*c.cfg.ElectionTimeout)
	defer cancel()
	for {
		if st := c.Status(); !st.Member || st.NumPeers == 0 {
			return nil
		}
		err := c.RemoveServer(ctx, c.id)
		switch {
		case err == nil, errors.Is(err, ErrUnknownServer):
			// ErrUnknownServer: an earlier attempt committed but its answer was lost.
			return nil
		case !errors.Is(err, ErrNoLeader) && !errors.Is(err, ErrNotLeader) &&
			!errors.Is(err, ErrLeadershipLost) && !errors.Is(err, ErrTimeout):
			return err
		}
		c.log.Debug("leave: waiting for a leader to remove this node", "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-c.done:
			return ErrClosed
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// transferIfLeader hands leadership to another voter, bounded by ctx and two
// seconds, so the cluster does not wait for a failure detection. The target
// is the reachable voter with the longest log; with none reachable (the
// others are down too) there is nobody to hand over to.
func (c *Cluster) transferIfLeader(ctx context.Context) {
	if !c.IsLeader() || c.Status().NumPeers == 0 {
		return
	}
	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	target, ok := c.transferTarget(tctx)
	if !ok {
		c.log.Info("not handing over leadership before shutdown: no other voter answers")
		return
	}
	if err := waitFuture(tctx, c.raft.LeadershipTransferToServer(target.ID, target.Address)); err != nil {
		c.log.Warn("leadership transfer before shutdown failed", "to", target.ID, "err", err)
		return
	}
	c.log.Info("leadership transferred before shutdown", "to", target.ID)
}

// transferTarget asks every other voter for its last log index and returns
// the one with the highest of those that answered within a quarter second.
func (c *Cluster) transferTarget(ctx context.Context) (raft.Server, bool) {
	f := c.raft.GetConfiguration()
	if f.Error() != nil {
		return raft.Server{}, false
	}
	var voters []raft.Server
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != c.id {
			voters = append(voters, s)
		}
	}
	sort.Slice(voters, func(i, j int) bool { return voters[i].ID < voters[j].ID })
	qctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
	defer cancel()
	last := make([]uint64, len(voters))
	answered := make([]bool, len(voters))
	done := make(chan int, len(voters))
	for i, s := range voters {
		go func() {
			if out, err := c.client.call(qctx, string(s.Address), rpcStatus, nil); err == nil && len(out) >= 8 {
				last[i], answered[i] = binary.BigEndian.Uint64(out), true
			}
			done <- i
		}()
	}
	for range voters {
		<-done
	}
	best := -1
	for i := range voters {
		if answered[i] && (best < 0 || last[i] > last[best]) {
			best = i
		}
	}
	if best < 0 {
		return raft.Server{}, false
	}
	return voters[best], true
}

// Close stops the node gracefully and keeps it a member: a leader first
// hands leadership over, in-flight forwarded requests end, gossip stops
// without a leave message (peers see the node failed, and a failed voter
// stays a voter), raft stops and the stores are closed. Stopping nodes for
// maintenance thus never changes the quorum size, and restarting one with
// its data dir resumes where it stopped. Leave first to depart for good.
// Close is idempotent.
func (c *Cluster) Close(ctx context.Context) error {
	c.closeOnce.Do(func() { c.closeErr = c.shutdown(true, ctx) })
	return c.closeErr
}

// Kill stops the node abruptly as far as the cluster is concerned: no
// leadership transfer (peers see a failure). Tests use it to model a crash;
// resources are still released.
func (c *Cluster) Kill() error {
	c.closeOnce.Do(func() { c.closeErr = c.shutdown(false, context.Background()) })
	return c.closeErr
}

func (c *Cluster) shutdown(graceful bool, ctx context.Context) error {
	if graceful {
		c.transferIfLeader(ctx)
	}
	c.closing.Store(true)
	var errs []error
	c.gossip.Kill() // a no-op after Leave
	close(c.done)
	c.batch.stop() // in-flight entries finish (or fail) before raft stops
	c.server.close()
	c.client.close()
	if err := c.raft.Shutdown().Error(); err != nil {
		errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
	}
	c.wg.Wait()
	c.trans.Close()
	c.mux.Close()
	c.mux.Wait()
	if err := c.closeStore(); err != nil {
		errs = append(errs, fmt.Errorf("close the log store: %w", err))
	}
	c.log.Info("cluster node stopped", "graceful", graceful)
	return errors.Join(errs...)
}

package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Leave departs the cluster for good: a leader first hands leadership over,
// then the node asks the leader to remove it from the Raft configuration and
// leaves gossip. Close afterwards.
func (c *Cluster) Leave(ctx context.Context) error {
	if c.closing.Load() {
		return ErrClosed
	}
	c.transferIfLeader(ctx)
	st := c.Status()
	if st.Member && st.NumPeers > 0 {
		if err := c.RemoveServer(ctx, c.id); err != nil {
			return fmt.Errorf("cluster: leave: %w", err)
		}
	}
	if err := c.gossip.Leave(time.Second); err != nil {
		return fmt.Errorf("cluster: leave gossip: %w", err)
	}
	return nil
}

// transferIfLeader hands leadership to another voter, bounded by ctx and the
// election timeout, so the cluster does not wait for a failure detection.
func (c *Cluster) transferIfLeader(ctx context.Context) {
	if !c.IsLeader() || c.Status().NumPeers == 0 {
		return
	}
	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := waitFuture(tctx, c.raft.LeadershipTransfer()); err != nil {
		c.log.Warn("leadership transfer before shutdown failed", "err", err)
		return
	}
	c.log.Info("leadership transferred before shutdown")
}

// Close shuts the node down gracefully: a leader transfers leadership, the
// node leaves gossip (so the leader removes it from Raft; a restart with the
// same data dir rejoins and is re-added), in-flight forwarded requests end,
// raft stops and the stores are closed. It is idempotent.
func (c *Cluster) Close(ctx context.Context) error {
	c.closeOnce.Do(func() { c.closeErr = c.close(ctx) })
	return c.closeErr
}

// Kill stops the node abruptly as far as the cluster is concerned: no
// leadership transfer, no gossip leave (peers see a failure). Tests use it
// to model a crash; resources are still released.
func (c *Cluster) Kill() error {
	c.closeOnce.Do(func() { c.closeErr = c.shutdown(false, context.Background()) })
	return c.closeErr
}

func (c *Cluster) close(ctx context.Context) error {
	return c.shutdown(true, ctx)
}

func (c *Cluster) shutdown(graceful bool, ctx context.Context) error {
	if graceful {
		c.transferIfLeader(ctx)
	}
	c.closing.Store(true)
	var errs []error
	if graceful {
		// Not an error for Close: when every peer is down too, nobody
		// acknowledges the leave broadcast.
		if err := c.gossip.Leave(time.Second); err != nil {
			c.log.Warn("leaving gossip", "err", err)
		}
	} else {
		c.gossip.Kill()
	}
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
		errs = append(errs, fmt.Errorf("close raft.db: %w", err))
	}
	c.log.Info("cluster node stopped", "graceful", graceful)
	return errors.Join(errs...)
}

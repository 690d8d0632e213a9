package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"
)

// snapshotMagic starts a user snapshot file: magic, then the FSM snapshot
// size (u64 big endian), then the FSM's own snapshot bytes.
var snapshotMagic = []byte("DCSNAP01")

// SnapshotSave writes a snapshot of the FSM state to w. It first runs a
// ReadBarrier so the snapshot holds every write acknowledged anywhere before
// the call (a backup that can miss acknowledged writes would surprise), then
// snapshots this node's FSM (a fresh snapshot if anything is new since the
// last one, else the latest stored one).
func (c *Cluster) SnapshotSave(ctx context.Context, w io.Writer) error {
	if c.closing.Load() {
		return ErrClosed
	}
	if err := c.ReadBarrier(ctx); err != nil {
		return fmt.Errorf("cluster: snapshot: read barrier: %w", err)
	}
	var meta *raft.SnapshotMeta
	var rc io.ReadCloser
	f := c.raft.Snapshot()
	err := waitFuture(ctx, f)
	switch {
	case err == nil:
		if meta, rc, err = f.Open(); err != nil {
			return fmt.Errorf("cluster: open snapshot: %w", err)
		}
	case errors.Is(err, raft.ErrNothingNewToSnapshot):
		metas, lerr := c.snaps.List()
		if lerr != nil || len(metas) == 0 {
			return fmt.Errorf("cluster: no snapshot to save: %w", err)
		}
		if meta, rc, err = c.snaps.Open(metas[0].ID); err != nil {
			return fmt.Errorf("cluster: open snapshot: %w", err)
		}
	default:
		return fmt.Errorf("cluster: take snapshot: %w", err)
	}
	defer rc.Close()
	hdr := binary.BigEndian.AppendUint64(append([]byte(nil), snapshotMagic...), uint64(meta.Size))
	if _, err := w.Write(hdr); err != nil {
		return fmt.Errorf("cluster: write snapshot: %w", err)
	}
	if n, err := io.Copy(w, rc); err != nil || n != meta.Size {
		return fmt.Errorf("cluster: write snapshot (%d of %d bytes): %w", n, meta.Size, err)
	}
	return nil
}

// SnapshotRestore replaces the replicated state with a snapshot written by
// SnapshotSave. It runs through raft on the leader (ErrNotLeader elsewhere),
// and every follower then installs it.
func (c *Cluster) SnapshotRestore(ctx context.Context, r io.Reader) error {
	if c.closing.Load() {
		return ErrClosed
	}
	if !c.IsLeader() {
		lid, _ := c.Leader()
		return fmt.Errorf("%w: restore must run on the leader (%q)", ErrNotLeader, lid)
	}
	hdr := make([]byte, len(snapshotMagic)+8)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return fmt.Errorf("cluster: read snapshot header: %w", err)
	}
	if !bytes.Equal(hdr[:len(snapshotMagic)], snapshotMagic) {
		return errors.New("cluster: not a snapshot written by SnapshotSave")
	}
	size := int64(binary.BigEndian.Uint64(hdr[len(snapshotMagic):]))
	timeout := 10 * c.cfg.WriteTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if err := c.raft.Restore(&raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: size}, io.LimitReader(r, size), timeout); err != nil {
		return fmt.Errorf("cluster: restore: %w", mapRaftErr(err))
	}
	return nil
}

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

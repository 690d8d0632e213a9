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
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: shorter than its header", ErrBadSnapshot)
		}
		return fmt.Errorf("cluster: read snapshot header: %w", err)
	}
	if !bytes.Equal(hdr[:len(snapshotMagic)], snapshotMagic) {
		return ErrBadSnapshot
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

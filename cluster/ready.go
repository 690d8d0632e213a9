package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Readiness: a node is ready when it serves current reads and can take
// writes. Ready computes it from what a background loop (readyLoop) keeps
// current, so that a load balancer's probe costs a few loads and no round
// trip:
//
//   - a leader is known;
//   - it has caught up once since it started (catchup.go), so it serves no
//     state older than what it acknowledged before a restart;
//   - this node applies what that leader has committed without falling
//     behind: every readyProbeInterval it obtains a read index from the
//     leader (its commit index, confirmed by a quorum); it must not stay
//     behind such an index for longer than ReadyMaxLag. Raft's own entries
//     (a new leader's no-op, barriers) count as applied (the skip loop passes
//     them for the probe's wait), so an idle cluster is ready without waiting
//     for a client's write, at first and after every election;
//   - its own storage is writable: the last write to its log store did not
//     fail, and a small probe file in the data dir can be written (so a full
//     disk is seen while the node is idle, and so is the space returning).

const (
	// readyProbeInterval is how often readyLoop asks the leader for a read
	// index (sharing rounds with linearizable reads).
	readyProbeInterval = 250 * time.Millisecond
	// diskProbeInterval is how often the data dir gets a probe write.
	diskProbeInterval = time.Second
	// diskProbeFile is the probe file in the data dir: written and removed
	// at each probe, so it holds no space between probes (a file rewritten in
	// place would reuse its own blocks on a full disk).
	diskProbeFile = "write-probe"
	// diskProbeSize is written at each probe: a page, which a full file
	// system cannot find room for.
	diskProbeSize = 4096
)

// readyWindow is how old the latest read index may be: a round is bounded by
// the write timeout and followed by at most ReadyMaxLag of waiting for it.
func (c *Cluster) readyWindow() time.Duration {
	return max(2*time.Second, c.cfg.WriteTimeout+c.cfg.ReadyMaxLag+readyProbeInterval)
}

// readIndexProbe is readyLoop's latest read index from a leader.
type readIndexProbe struct {
	leader string
	index  uint64
	at     time.Time // when the index was obtained
	// behindSince is when this node obtained the earliest read index of this
	// leader that it has not applied yet (at, when it had applied the
	// previous one): how long it has been behind.
	behindSince time.Time
}

// catchUp is what readyLoop last learned of this node's progress against the
// leader's commit index.
type catchUp struct {
	mu     sync.Mutex
	latest readIndexProbe // the latest completed probe
	err    error          // why the last attempt failed; nil after a success
}

// Ready returns nil when this node serves current reads and can take writes,
// or an error saying in words why not (for /readyz and the service manager).
// It is cheap: a few loads and, at most, a look at the log entries applied
// since the last call.
func (c *Cluster) Ready() error {
	if c.closing.Load() {
		return errors.New("shutting down")
	}
	if err := c.disk.check(); err != nil {
		return err
	}
	lid, _ := c.Leader()
	if lid == "" {
		return errors.New("no leader")
	}
	if reason := c.catchUpReason(); reason != "" {
		return errors.New(reason)
	}
	c.progress.mu.Lock()
	p, perr := c.progress.latest, c.progress.err
	c.progress.mu.Unlock()
	if p.leader != lid || time.Since(p.at) > c.readyWindow() {
		if perr != nil {
			return fmt.Errorf("no read index from leader %s: %w", lid, perr)
		}
		return fmt.Errorf("waiting for a read index from leader %s", lid)
	}
	if applied, _ := c.fsm.appliedIndex(); applied < p.index {
		if behind := time.Since(p.behindSince); behind > c.cfg.ReadyMaxLag {
			return fmt.Errorf("catching up: applied %d of the %d committed by leader %s, behind for %v (bound %v)",
				applied, p.index, lid, behind.Round(time.Millisecond), c.cfg.ReadyMaxLag)
		}
	}
	return nil
}

// StorageWritable returns nil while this node's own storage takes writes (the
// data dir's probe write and the last Raft log write succeeded), the disk part
// of Ready, for the distcache_storage_writable metric: an alert can then say
// "disk" rather than only "not ready".
func (c *Cluster) StorageWritable() error { return c.disk.check() }

// readyLoop keeps what Ready reads current: a read index from the leader
// every readyProbeInterval and whether this node applies it, and a probe
// write in the data dir every diskProbeInterval.
func (c *Cluster) readyLoop() {
	t := time.NewTicker(readyProbeInterval)
	defer t.Stop()
	var lastDisk time.Time
	for {
		if !c.cfg.InMemory && time.Since(lastDisk) >= diskProbeInterval {
			c.disk.probe(filepath.Join(c.cfg.DataDir, diskProbeFile))
			lastDisk = time.Now()
		}
		c.probeReadIndex()
		select {
		case <-c.done:
			return
		case <-t.C:
		}
	}
}

// probeReadIndex obtains a read index from the leader, records it for Ready,
// and gives this node up to ReadyMaxLag to apply it.
func (c *Cluster) probeReadIndex() {
	lid, _ := c.Leader()
	if lid == "" {
		return // Ready says "no leader" without help
	}
	ctx, cancel := c.untilClosed(context.Background())
	defer cancel()
	rctx, cancelR := c.writeCtx(ctx)
	defer cancelR()
	idx, err := c.readGroup().get(rctx)
	if err != nil {
		c.progress.mu.Lock()
		c.progress.err = err
		c.progress.mu.Unlock()
		return
	}
	now := time.Now()
	applied, _ := c.fsm.appliedIndex()
	p := readIndexProbe{leader: lid, index: idx, at: now, behindSince: now}
	c.progress.mu.Lock()
	if prev := c.progress.latest; prev.leader == lid && applied < prev.index {
		p.behindSince = prev.behindSince // still behind an earlier index
	}
	c.progress.latest, c.progress.err = p, nil
	c.progress.mu.Unlock()
	// A node that applies slowly is not asked for newer indexes faster than
	// it applies them.
	actx, cancelA := context.WithTimeout(ctx, c.cfg.ReadyMaxLag)
	defer cancelA()
	c.fsm.waitApplied(actx, idx, nil)
}

// untilClosed derives a context that also ends when the cluster closes, for
// waits of the cluster's own goroutines that no caller bounds.
func (c *Cluster) untilClosed(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	go func() {
		select {
		case <-c.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// diskHealth is whether this node's own storage takes writes: the outcome of
// the latest write to the log store and of the latest probe write in the
// data dir. The more recent failure or success of each decides.
type diskHealth struct {
	mu       sync.Mutex
	logErr   error // the last log store write's error
	logErrAt time.Time
	logOKAt  time.Time
	probeErr error // the last probe write's error
	probeAt  time.Time
}

// check returns why storage is not writable, or nil.
func (d *diskHealth) check() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.probeErr != nil {
		return fmt.Errorf("data dir not writable: %w", d.probeErr)
	}
	// A failed log write is cleared by a later successful one, or by a later
	// successful probe (an idle follower writes nothing until the leader
	// retries, which it does once it sees the node healthy again).
	if d.logErr != nil && d.logErrAt.After(d.logOKAt) && d.logErrAt.After(d.probeAt) {
		return fmt.Errorf("raft log store not writable: %w", d.logErr)
	}
	return nil
}

// probe writes diskProbeSize bytes to a new probe file and removes it.
func (d *diskHealth) probe(path string) {
	err := writeProbe(path)
	d.mu.Lock()
	d.probeErr, d.probeAt = err, time.Now()
	d.mu.Unlock()
}

func writeProbe(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(make([]byte, diskProbeSize))
	err = errors.Join(err, f.Close())
	if rerr := os.Remove(path); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// logWrite records the outcome of a write to the log store.
func (d *diskHealth) logWrite(err error) {
	now := time.Now()
	d.mu.Lock()
	if err != nil {
		d.logErr, d.logErrAt = err, now
	} else {
		d.logOKAt = now
	}
	d.mu.Unlock()
}

// watchedLogStore reports the outcome of every write of raft's log store to
// the node's diskHealth, whatever the store (bolt, WAL, sealed, in memory).
type watchedLogStore struct {
	raft.LogStore
	health *diskHealth
}

// StoreLog implements raft.LogStore.
func (s watchedLogStore) StoreLog(l *raft.Log) error {
	err := s.LogStore.StoreLog(l)
	s.health.logWrite(err)
	return err
}

// IsMonotonic implements raft.MonotonicLogStore for a store that is (raft-wal):
// raft then clears the log before a snapshot install or restore instead of
// leaving a gap the store refuses.
func (s watchedLogStore) IsMonotonic() bool {
	m, ok := s.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

// StoreLogs implements raft.LogStore.
func (s watchedLogStore) StoreLogs(logs []*raft.Log) error {
	err := s.LogStore.StoreLogs(logs)
	s.health.logWrite(err)
	return err
}

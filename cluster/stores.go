package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/distcache-replicated/distcache/cluster/atrest"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// storageKind describes where cfg keeps raft's state, for the start-up log.
func storageKind(cfg Config) string {
	switch {
	case cfg.InMemory:
		return "in-memory"
	case len(cfg.DataKeys) > 0:
		return "disk, sealed (key " + cfg.DataKeys[0].ID + ")"
	}
	return "disk, plaintext"
}

// Log stores for Config.LogStore.
const (
	// LogStoreWAL is hashicorp/raft-wal under DataDir/wal: segment files
	// appended with one fsync per batch of entries; the default for new data
	// dirs (bench/run.sh logstore; BENCHMARKS.md, issue 12).
	LogStoreWAL = "wal"
	// LogStoreBolt is raft-boltdb/v2 in DataDir/raft.db: a B+tree with
	// copy-on-write pages, two fsyncs per commit.
	LogStoreBolt = "bolt"
)

// walDir is where the raft-wal log store keeps its segments and metadata.
const walDir = "wal"

// existingLogStore reports which log store holds dataDir's Raft state ("" for
// none): a node keeps the store its data was written with.
func existingLogStore(dataDir string) (string, error) {
	_, berr := os.Stat(filepath.Join(dataDir, "raft.db"))
	_, werr := os.Stat(filepath.Join(dataDir, walDir, metadb.FileName))
	switch {
	case berr == nil && werr == nil:
		return "", fmt.Errorf("cluster: %s holds both raft.db and %s/: remove the one not in use", dataDir, walDir)
	case berr == nil:
		return LogStoreBolt, nil
	case werr == nil:
		return LogStoreWAL, nil
	}
	return "", nil
}

// chooseLogStore resolves cfg.LogStore against what DataDir already holds:
// "" means the existing store, else LogStoreWAL; naming the other store than
// the one holding the data is an error, never a silent switch to an empty log.
func chooseLogStore(cfg Config) (string, error) {
	have, err := existingLogStore(cfg.DataDir)
	if err != nil {
		return "", err
	}
	switch {
	case cfg.LogStore == "" && have != "":
		return have, nil
	case cfg.LogStore == "":
		return LogStoreWAL, nil
	case have != "" && have != cfg.LogStore:
		return "", fmt.Errorf("cluster: log store %q asked for, but %s holds a %q log: start with -log-store %s (or move the data dir away to start empty)",
			cfg.LogStore, cfg.DataDir, have, have)
	}
	return cfg.LogStore, nil
}

// logAndStable is what a disk log store is: raft's log and its stable store
// (term and vote) in one, closed once.
type logAndStable interface {
	raft.LogStore
	raft.StableStore
	Close() error
}

// openLogStore opens the chosen disk log store.
func (c *Cluster) openLogStore(kind string) (logAndStable, error) {
	cfg := c.cfg
	if kind == LogStoreWAL {
		dir := filepath.Join(cfg.DataDir, walDir)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("cluster: create %s: %w", dir, err)
		}
		if lock, err := lockDir(dir); err != nil {
			return nil, err
		} else if cfg.NoSync {
			lock.Close()
			return nil, errors.New("cluster: NoSync is only supported with the bolt log store")
		} else {
			w, err := wal.Open(dir, wal.WithLogger(newHCLogger(c.log, "wal")), wal.WithSegmentSize(walSegmentSize))
			if err != nil {
				lock.Close()
				return nil, fmt.Errorf("cluster: open raft-wal in %s: %w", dir, err)
			}
			return walStore{WAL: w, lock: lock}, nil
		}
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{
		Path:   filepath.Join(cfg.DataDir, "raft.db"),
		NoSync: cfg.NoSync,
		// The freelist is not written on every commit (it is rebuilt by a scan
		// when the file is opened) and is kept as a hash map: once raft
		// truncates its log, an array freelist written per commit grows with
		// the number of free pages and every commit pays for it.
		BoltOptions: &bbolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType},
	})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("cluster: open raft.db: %w: another process holds %s (is a dcnode already running on this data dir?)", err, cfg.DataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: open raft.db: %w", err)
	}
	return bolt, nil
}

// walSegmentSize is the size of one raft-wal segment file: 16 MiB holds
// about 70,000 entries of 200 B sessions before the segment is sealed and a
// new one started; sealed segments go once raft compacts past them.
const walSegmentSize = 16 << 20

// walStore is raft-wal with the data dir lock it runs under.
type walStore struct {
	*wal.WAL
	lock *os.File
}

// GetLog implements raft.LogStore without the entries raft has compacted:
// raft-wal drops them only with whole segments and still returns those of a
// segment it keeps, so a follower that fell behind the compaction would be
// sent them instead of the snapshot, unlike with bolt (and than the operator
// expects from -trailing-logs).
func (w walStore) GetLog(index uint64, l *raft.Log) error {
	if first, err := w.WAL.FirstIndex(); err == nil && index < first {
		return raft.ErrLogNotFound
	}
	return w.WAL.GetLog(index, l)
}

func (w walStore) Close() error {
	err := w.WAL.Close()
	return errors.Join(err, w.lock.Close())
}

// lockDir takes an exclusive, non-blocking flock on dir/LOCK, so that two
// processes never append to one WAL (bolt's own file lock does this for
// raft.db); the lock goes with the returned file.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cluster: lock %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("cluster: lock %s: %w: another process holds it (is a dcnode already running on this data dir?)", dir, err)
	}
	return f, nil
}

// openStores opens the log, stable and snapshot stores: in memory, or the
// chosen log store (raft-wal or bolt) and files under DataDir, sealed below
// raft when DataKeys are set (whichever log store).
func (c *Cluster) openStores() error {
	cfg := c.cfg
	if cfg.InMemory {
		m := raft.NewInmemStore()
		c.logs, c.stable, c.snaps = m, m, raft.NewInmemSnapshotStore()
		c.closeStore = func() error { return nil }
		return nil
	}
	kind, err := chooseLogStore(cfg)
	if err != nil {
		return err
	}
	store, err := c.openLogStore(kind)
	if err != nil {
		return err
	}
	c.logStore = kind
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, newHCLogger(c.log, "snapshot"))
	if err != nil {
		store.Close()
		return fmt.Errorf("cluster: open snapshot store: %w", err)
	}
	c.logs, c.stable, c.snaps, c.closeStore = store, store, snaps, store.Close
	if len(cfg.DataKeys) > 0 {
		s, err := atrest.NewSealer(cfg.DataKeys)
		if err != nil {
			store.Close()
			return err
		}
		c.logs = s.LogStore(store)
		c.snaps = s.SnapshotStore(snaps)
	}
	// The newest entries are served from memory: replication to a follower that
	// is a few entries behind and the read path's look at entries just applied
	// would otherwise read them back from disk (and unseal them). Entries are at
	// most MaxBatchBytes, so the cache holds at most logCacheEntries of those.
	cached, err := raft.NewLogCache(logCacheEntries, c.logs)
	if err != nil {
		store.Close()
		return fmt.Errorf("cluster: log cache: %w", err)
	}
	c.logs = cached
	return nil
}

// logCacheEntries is the number of newest log entries kept in memory.
const logCacheEntries = 64

package cluster

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/distcache-replicated/distcache/cluster/atrest"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
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

// openStores opens the log, stable and snapshot stores: in memory, or bolt
// and files under DataDir, sealed below raft when DataKeys are set.
func (c *Cluster) openStores() error {
	cfg := c.cfg
	if cfg.InMemory {
		m := raft.NewInmemStore()
		c.logs, c.stable, c.snaps = m, m, raft.NewInmemSnapshotStore()
		c.closeStore = func() error { return nil }
		return nil
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
		return fmt.Errorf("cluster: open raft.db: %w: another process holds %s (is a dcnode already running on this data dir?)", err, cfg.DataDir)
	}
	if err != nil {
		return fmt.Errorf("cluster: open raft.db: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, newHCLogger(c.log, "snapshot"))
	if err != nil {
		bolt.Close()
		return fmt.Errorf("cluster: open snapshot store: %w", err)
	}
	c.logs, c.stable, c.snaps, c.closeStore = bolt, bolt, snaps, bolt.Close
	if len(cfg.DataKeys) > 0 {
		s, err := atrest.NewSealer(cfg.DataKeys)
		if err != nil {
			bolt.Close()
			return err
		}
		c.logs = s.LogStore(bolt)
		c.snaps = s.SnapshotStore(snaps)
	}
	// The newest entries are served from memory: replication to a follower that
	// is a few entries behind and the read path's look at entries just applied
	// would otherwise read them back from bolt (and unseal them). Entries are at
	// most MaxBatchBytes, so the cache holds at most logCacheEntries of those.
	cached, err := raft.NewLogCache(logCacheEntries, c.logs)
	if err != nil {
		bolt.Close()
		return fmt.Errorf("cluster: log cache: %w", err)
	}
	c.logs = cached
	return nil
}

// logCacheEntries is the number of newest log entries kept in memory.
const logCacheEntries = 64

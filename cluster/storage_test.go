package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/cluster/atrest"
	"github.com/hashicorp/raft-wal/metadb"
)

// dirContains reports the files under dir whose bytes contain needle.
func dirContains(t testing.TB, dir string, needle []byte) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, needle) {
			hits = append(hits, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

// TestEncryptedClusterAtRest: a three-node cluster with data keys replicates,
// installs a snapshot on a node that fell behind, and never writes a session
// value in plaintext to any data dir, with either log store.
func TestEncryptedClusterAtRest(t *testing.T) {
	for _, store := range []string{LogStoreWAL, LogStoreBolt} {
		t.Run(store, func(t *testing.T) { testEncryptedClusterAtRest(t, store) })
	}
}

func testEncryptedClusterAtRest(t *testing.T, store string) {
	key := atrest.DataKey{ID: "k1", Key: randomKey(t)}
	nodes := newTestCluster(t, 3, func(c *Config) {
		c.LogStore = store
		c.DataKeys = []atrest.DataKey{key}
		c.SnapshotThreshold = 50
		c.SnapshotInterval = 100 * time.Millisecond
		c.TrailingLogs = 10
	})
	leader, followers := leaderAndFollowers(t, nodes)
	const marker = "Pl41nT3xtM4sterSecret"
	lagging := followers[1]
	lagging.kill()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < 200; i += 8 {
				k := fmt.Sprintf("key-%d", i)
				if got, err := followers[0].c.Propose(context.Background(), addCmd(k, marker)); err != nil || string(got) != "ok:"+k {
					t.Errorf("propose %s = %q, %v", k, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	eventually(t, 10*time.Second, "leader log compacted", func() bool {
		first, err := leader.c.logs.FirstIndex()
		return err == nil && first > 20
	})
	lagging.start()
	eventually(t, 20*time.Second, "the lagging node caught up from a snapshot", func() bool {
		v, ok := lagging.fsm.get("key-199")
		return ok && v == marker && lagging.fsm.restoreCount() > 0
	})
	for _, n := range nodes {
		n.close()
		if hits := dirContains(t, n.dir, []byte(marker)); len(hits) > 0 {
			t.Errorf("%s: plaintext session value in %v", n.id, hits)
		}
	}
}

// TestInMemoryNodeRejoinsAsNewMember: an in-memory node writes nothing to
// disk, and after a crash comes back under a new id, is added, catches up,
// and its old identity is dropped from the configuration.
func TestInMemoryNodeRejoinsAsNewMember(t *testing.T) {
	nodes := newTestCluster(t, 3, func(c *Config) {
		if c.NodeID == "n3" {
			c.InMemory, c.NodeID = true, ""
		}
	})
	var mem *testNode
	for _, n := range nodes {
		if n.id == "n3" {
			mem = n
		}
	}
	if entries, _ := os.ReadDir(mem.dir); len(entries) != 0 {
		t.Fatalf("in-memory node wrote %d files", len(entries))
	}
	oldID := mem.c.ID()
	if oldID == "n3" || !strings.HasPrefix(oldID, "node-") {
		t.Fatalf("in-memory node id %q", oldID)
	}
	leader, _ := leaderAndFollowers(t, nodes)
	if leader == mem {
		if err := leader.c.TransferLeadership(context.Background(), ""); err != nil {
			t.Fatal(err)
		}
		leader = waitStableLeader(t, nodes, 3)
	}
	propose(t, leader, "before", "crash")
	mem.kill()
	mem.start()
	newID := mem.c.ID()
	if newID == oldID {
		t.Fatal("restarted in-memory node kept its id")
	}
	eventually(t, 20*time.Second, "new identity is a voter, old one gone, data caught up", func() bool {
		ids := configIDs(t, leader)
		_, ok := mem.fsm.get("before")
		return ids[newID] && !ids[oldID] && len(ids) == 3 && ok
	})
	if entries, _ := os.ReadDir(mem.dir); len(entries) != 0 {
		t.Fatalf("in-memory node wrote %d files", len(entries))
	}
}

// TestSealedSnapshotSaveRestore: an operator's backup of a sealed cluster is
// plaintext (it restores anywhere), and restoring it goes through the sealed
// snapshot store on every node.
func TestSealedSnapshotSaveRestore(t *testing.T) {
	key := atrest.DataKey{ID: "k1", Key: randomKey(t)}
	nodes := newTestCluster(t, 3, func(c *Config) { c.DataKeys = []atrest.DataKey{key} })
	leader, followers := leaderAndFollowers(t, nodes)
	propose(t, followers[0], "a", "backed-up-secret")
	var buf bytes.Buffer
	if err := followers[1].c.SnapshotSave(context.Background(), &buf); err != nil {
		t.Fatalf("save: %v", err)
	}
	if !bytes.Contains(buf.Bytes(), []byte("backed-up-secret")) {
		t.Fatal("the backup is not the plaintext FSM snapshot")
	}
	propose(t, leader, "b", "later")
	if err := leader.c.SnapshotRestore(context.Background(), bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatalf("restore: %v", err)
	}
	for _, n := range nodes {
		eventually(t, 10*time.Second, "restored state on "+n.id, func() bool {
			_, hasB := n.fsm.get("b")
			a, hasA := n.fsm.get("a")
			return !hasB && hasA && a == "backed-up-secret"
		})
	}
	for _, n := range nodes {
		if hits := dirContains(t, n.dir, []byte("backed-up-secret")); len(hits) > 0 {
			t.Errorf("%s: plaintext in %v", n.id, hits)
		}
	}
}

// TestLogStoreChoice: a new data dir gets raft-wal, a data dir keeps the
// store its Raft state is in, and asking for the other one is refused rather
// than starting from an empty log.
func TestLogStoreChoice(t *testing.T) {
	empty, bolt, walDirOnly := t.TempDir(), t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(bolt, "raft.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(walDirOnly, walDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(walDirOnly, walDir, metadb.FileName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir, asked, want string
		fails            bool
	}{
		{empty, "", LogStoreWAL, false},
		{empty, LogStoreBolt, LogStoreBolt, false},
		{bolt, "", LogStoreBolt, false},
		{bolt, LogStoreBolt, LogStoreBolt, false},
		{bolt, LogStoreWAL, "", true},
		{walDirOnly, "", LogStoreWAL, false},
		{walDirOnly, LogStoreBolt, "", true},
	} {
		got, err := chooseLogStore(Config{DataDir: tc.dir, LogStore: tc.asked})
		if (err != nil) != tc.fails || got != tc.want {
			t.Errorf("dir %s, asked %q: %q, %v; want %q (fails %v)", filepath.Base(tc.dir), tc.asked, got, err, tc.want, tc.fails)
		}
	}
}

package cluster

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/cluster/gossip"
)

// randomKey returns 32 random bytes: a gossip key or a data key.
func randomKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestGossipKeyringRotation: an encrypted cluster keeps a node with another
// key out, rotates its key with install/use/remove through any node, refuses
// to remove the primary, and a node restarted with the old key on its
// command line rejoins thanks to the persisted ring.
func TestGossipKeyringRotation(t *testing.T) {
	k1, k2 := randomKey(t), randomKey(t)
	fp := gossip.KeyFingerprint
	nodes := newTestCluster(t, 3, func(c *Config) { c.GossipKeys = [][]byte{k1} })
	leader, followers := leaderAndFollowers(t, nodes)

	// A node with the wrong key cannot join gossip.
	rec := newLogRecorder()
	intruder := &testNode{t: t, dir: t.TempDir(), id: "intruder", raft: freeAddr(t), gossip: freeAddr(t),
		join: []string{leader.gossip}, tune: func(c *Config) { c.GossipKeys = [][]byte{randomKey(t)}; c.Logger = slog.New(rec) }}
	intruder.start()
	t.Cleanup(func() {
		if !intruder.stopped {
			intruder.kill()
		}
	})
	eventually(t, 10*time.Second, "the intruder's join attempt failed", func() bool {
		return len(rec.find("gossip join attempt", "err=")) > 0
	})
	for _, n := range nodes {
		if _, ok := n.c.gossip.Members()["intruder"]; ok {
			t.Fatalf("%s sees the intruder in gossip", n.id)
		}
	}
	intruder.kill()

	check := func(rows []NodeKeyring, primary []byte, n int) {
		t.Helper()
		if len(rows) != 3 {
			t.Fatalf("%d rows, want 3: %+v", len(rows), rows)
		}
		for _, r := range rows {
			if r.Err != "" || r.Primary != fp(primary) || len(r.Keys) != n {
				t.Fatalf("row %+v: want primary %s and %d keys", r, fp(primary), n)
			}
		}
	}
	ctx := context.Background()
	rows, err := followers[0].c.Keyring(ctx, KeyringInstall, k2)
	if err != nil {
		t.Fatalf("install: %v (%+v)", err, rows)
	}
	check(rows, k1, 2)
	if rows, err = leader.c.Keyring(ctx, KeyringUse, k2); err != nil {
		t.Fatalf("use: %v (%+v)", err, rows)
	}
	check(rows, k2, 2)
	if rows, err = followers[1].c.Keyring(ctx, KeyringRemove, k2); err == nil || !strings.Contains(rows[0].Err, "primary") {
		t.Fatalf("removing the primary: %v (%+v)", err, rows)
	}
	if rows, err = followers[1].c.Keyring(ctx, KeyringRemove, k1); err != nil {
		t.Fatalf("remove: %v (%+v)", err, rows)
	}
	check(rows, k2, 1)
	if rows, err = followers[1].c.Keyring(ctx, KeyringList, nil); err != nil {
		t.Fatal(err)
	}
	check(rows, k2, 1)
	st, err := os.Stat(filepath.Join(followers[0].dir, keyringFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("keyring file: %v, %v", st, err)
	}
	for _, r := range rows {
		for _, k := range r.Keys {
			if strings.Contains(k, base64.StdEncoding.EncodeToString(k2)[:8]) {
				t.Fatalf("keyring answer reveals the key: %+v", r)
			}
		}
	}

	// Restart a follower whose configuration still names only k1.
	f := followers[0]
	f.close()
	f.start()
	eventually(t, 20*time.Second, "the restarted node is back in gossip and Raft", func() bool {
		m, ok := leader.c.gossip.Members()[f.id]
		lid, _ := f.c.Leader()
		return ok && m.Status == gossip.StatusAlive && configIDs(t, leader)[f.id] && lid != ""
	})
	if got := propose(t, f, "after-rotation", "v"); got != "ok:after-rotation" {
		t.Fatalf("propose through the restarted node: %q", got)
	}
}

// TestKeyringWithoutEncryption: a plaintext cluster answers keyring calls
// with gossip.ErrNoEncryption on every node.
func TestKeyringWithoutEncryption(t *testing.T) {
	nodes := newTestCluster(t, 1, nil)
	rows, err := nodes[0].c.Keyring(context.Background(), KeyringList, nil)
	if err == nil || len(rows) != 1 || !strings.Contains(rows[0].Err, "not enabled") {
		t.Fatalf("Keyring on a plaintext cluster: %v, %+v", err, rows)
	}
	if _, err := nodes[0].c.Keyring(context.Background(), KeyringInstall, []byte("short")); err == nil {
		t.Fatal("a 5-byte key was accepted")
	}
}

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writePeersFile(t *testing.T, dir string, peers ...*testNode) {
	t.Helper()
	var entries []peerEntry
	for _, p := range peers {
		entries = append(entries, peerEntry{ID: p.id, Address: p.raft})
	}
	b, err := json.Marshal(entries)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, PeersFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Two of three servers are gone for good: the survivor, restarted with a
// peers.json naming only itself, elects itself, keeps every committed write,
// takes new ones, and new nodes can join it. The file is applied once.
func TestRecoverSurvivorFromPeersFile(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	leader, _ := leaderAndFollowers(t, nodes)
	for i := range 20 {
		proposeEventually(t, leader, fmt.Sprintf("k%02d", i), "v")
	}
	survivor := nodes[0]
	eventually(t, 10*time.Second, "the survivor has applied every write", func() bool { return survivor.fsm.size() == 20 })
	for _, n := range nodes {
		n.kill()
	}

	writePeersFile(t, survivor.dir, survivor)
	survivor.start()
	eventually(t, 10*time.Second, "the survivor leads alone", func() bool { return survivor.c.IsLeader() })
	if survivor.fsm.size() != 20 {
		t.Fatalf("recovered survivor holds %d of 20 sessions", survivor.fsm.size())
	}
	if ids := configIDs(t, survivor); len(ids) != 1 || !ids[survivor.id] {
		t.Fatalf("configuration after recovery: %v, want only %s", ids, survivor.id)
	}
	if _, err := os.Stat(filepath.Join(survivor.dir, PeersFile)); !os.IsNotExist(err) {
		t.Fatalf("%s still in the data dir after the recovery: %v", PeersFile, err)
	}
	if _, err := os.Stat(filepath.Join(survivor.dir, peersApplied)); err != nil {
		t.Fatalf("%s not kept after the recovery: %v", peersApplied, err)
	}
	proposeEventually(t, survivor, "after", "1")

	fresh := &testNode{t: t, dir: t.TempDir(), id: "n4", raft: freeAddr(t), gossip: freeAddr(t), join: []string{survivor.gossip}}
	fresh.start()
	t.Cleanup(func() {
		if !fresh.stopped {
			fresh.close()
		}
	})
	waitStableLeader(t, []*testNode{survivor, fresh}, 2)
	eventually(t, 10*time.Second, "the new node has every session", func() bool { return fresh.fsm.size() == 21 })

	// The next start is a normal one: the survivor keeps the new configuration.
	survivor.close()
	survivor.start()
	waitStableLeader(t, []*testNode{survivor, fresh}, 2)
}

// A recovery is refused, loudly and before raft starts, when there is
// nothing to recover or the file does not describe this node.
func TestRecoverRefusals(t *testing.T) {
	fresh := &testNode{t: t, dir: t.TempDir(), id: "n1", raft: freeAddr(t), gossip: freeAddr(t), expect: 1}
	writePeersFile(t, fresh.dir, fresh)
	fresh.fsm = newKV()
	if c, err := Open(context.Background(), fresh.config()); err == nil || !strings.Contains(err.Error(), "no Raft state") {
		if c != nil {
			c.Close(context.Background())
		}
		t.Fatalf("recovery without state: %v, want a refusal saying there is no Raft state", err)
	}

	nodes := newTestCluster(t, 1, nil)
	n := nodes[0]
	n.kill()
	other := &testNode{id: "n9", raft: "127.0.0.1:1"}
	for _, c := range []struct {
		peers []*testNode
		want  string
	}{
		{[]*testNode{other}, "does not list this node"},
		{[]*testNode{{id: n.id, raft: "127.0.0.1:2"}}, "advertises"},
	} {
		writePeersFile(t, n.dir, c.peers...)
		n.fsm = newKV()
		cl, err := Open(context.Background(), n.config())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			if cl != nil {
				cl.Close(context.Background())
			}
			t.Fatalf("recovery with %v: %v, want an error saying %q", c.peers, err, c.want)
		}
	}
	if err := os.WriteFile(filepath.Join(n.dir, PeersFile), []byte(`{"id": "n1"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), n.config()); err == nil || !strings.Contains(err.Error(), "want [") {
		t.Fatalf("recovery with a malformed file: %v, want an error showing the format", err)
	}
	// Nothing was changed: without the file the node starts as before.
	os.Remove(filepath.Join(n.dir, PeersFile))
	n.start()
	waitStableLeader(t, nodes, 1)
}

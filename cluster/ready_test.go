package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readyWithin fails the test unless every running node is Ready within d,
// and returns how long it took.
func readyWithin(t *testing.T, nodes []*testNode, d time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	for {
		var why []string
		for _, n := range nodes {
			if n.stopped {
				continue
			}
			if err := n.c.Ready(); err != nil {
				why = append(why, n.id+": "+err.Error())
			}
		}
		if len(why) == 0 {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not ready within %v: %s", what, d, strings.Join(why, "; "))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An idle cluster is ready without any client write: Raft's own entries (the
// bootstrap configuration, each leader's no-op and barrier) count as applied,
// at first and again after a leadership transfer.
func TestReadyOnIdleClusterAndAfterTransfer(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	took := readyWithin(t, nodes, 2*time.Second, "fresh idle cluster")
	t.Logf("fresh idle cluster ready %v after its leader was agreed", took)
	for _, n := range nodes {
		if st := n.c.Status(); st.AppliedIndex < st.CommitIndex {
			t.Errorf("%s: status says applied %d of %d on an idle cluster", n.id, st.AppliedIndex, st.CommitIndex)
		}
	}

	leader, followers := leaderAndFollowers(t, nodes)
	if err := leader.c.TransferLeadership(context.Background(), followers[0].id); err != nil {
		t.Fatalf("transfer: %v", err)
	}
	eventually(t, 5*time.Second, "every node knows the new leader", func() bool {
		for _, n := range nodes {
			if id, _ := n.c.Leader(); id != followers[0].id {
				return false
			}
		}
		return true
	})
	took = readyWithin(t, nodes, 2*time.Second, "after a transfer without writes")
	t.Logf("ready again %v after the transfer", took)

	followers[1].kill()
	eventually(t, 5*time.Second, "a killed node's peer is not ready... of the killed node itself", func() bool {
		return followers[1].c.Ready() != nil
	})
	if err := followers[1].c.Ready(); !strings.Contains(err.Error(), "shutting down") {
		t.Errorf("killed node: Ready = %v, want shutting down", err)
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a fresh directory, unmounted when
// the test ends (after everything registered later has been cleaned up).
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Skipf("skipped: this test puts a node's data dir on a small tmpfs and fills it, which needs mount -t tmpfs (root, as in CI): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes into path until the file system has no space left, and returns
// the bytes written.
func fill(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("create %s: %v", path, err)
	}
	defer f.Close()
	var n int64
	for _, chunk := range []int{1 << 20, 4096, 1} {
		buf := make([]byte, chunk)
		for {
			w, err := f.Write(buf)
			n += int64(w)
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				t.Fatalf("fill %s: %v", path, err)
			}
		}
	}
	return n
}

// A follower whose data dir fills up turns not-ready (it can take no writes
// and falls behind), and ready again, caught up, once space returns.
func TestNotReadyWhileDataDirIsFull(t *testing.T) {
	tmpfs := mountTmpfs(t, 40<<20) // raft-wal preallocates a 16 MiB segment
	nodes := newTestCluster(t, 3, func(c *Config) {
		if c.NodeID == "n3" {
			c.DataDir = filepath.Join(tmpfs, "n3")
		}
	})
	var n3 *testNode
	for _, n := range nodes {
		if n.id == "n3" {
			n3 = n
		}
	}
	if n3.c.IsLeader() {
		if err := n3.c.TransferLeadership(context.Background(), "n1"); err != nil {
			t.Fatalf("transfer away from n3: %v", err)
		}
		eventually(t, 5*time.Second, "n3 follows", func() bool { id, _ := n3.c.Leader(); return id != "" && id != "n3" })
	}
	readyWithin(t, nodes, 5*time.Second, "before the disk fills")
	leader, _ := leaderAndFollowers(t, nodes)

	filler := filepath.Join(tmpfs, "filler")
	t.Logf("filled the tmpfs with %d bytes", fill(t, filler))
	// Idle, it notices by its probe write.
	eventually(t, 5*time.Second, "idle n3 not ready with its disk full", func() bool {
		err := n3.c.Ready()
		return err != nil && strings.Contains(err.Error(), "data dir not writable")
	})
	value := strings.Repeat("v", 1000)
	for i := range 50 {
		proposeEventually(t, leader, fmt.Sprintf("full-%02d", i), value)
	}
	eventually(t, 10*time.Second, "n3 not ready with its disk full after writes", func() bool {
		err := n3.c.Ready()
		return err != nil && strings.Contains(err.Error(), "not writable")
	})
	t.Logf("disk full: n3 says %q", n3.c.Ready())
	for _, n := range nodes {
		if n != n3 {
			if err := n.c.Ready(); err != nil {
				t.Errorf("%s is not ready while only n3's disk is full: %v", n.id, err)
			}
		}
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "n3 ready again once space returns", func() bool { return n3.c.Ready() == nil })
	// Ready allows ReadyMaxLag (1s) to apply what the leader has committed.
	eventually(t, 2*time.Second, "n3 catches up", func() bool {
		_, ok := n3.fsm.get("full-49")
		return ok && n3.fsm.size() == 50
	})
}

// A follower that falls behind the leader's commit index for longer than
// ReadyMaxLag is not ready (a follower 14,710 entries behind used to say
// "ready"), and is again once it has caught up.
func TestNotReadyWhileBehind(t *testing.T) {
	nodes := newTestCluster(t, 3, func(c *Config) { c.ReadyMaxLag = 500 * time.Millisecond })
	readyWithin(t, nodes, 5*time.Second, "at start")
	leader, followers := leaderAndFollowers(t, nodes)
	slow := followers[0]

	slow.fsm.mu.Lock() // its FSM stalls: raft stores and commits, nothing is applied
	stalled := true
	defer func() {
		if stalled {
			slow.fsm.mu.Unlock()
		}
	}()
	start := time.Now()
	for i := range 20 {
		proposeEventually(t, leader, fmt.Sprintf("behind-%02d", i), "v")
	}
	eventually(t, 5*time.Second, slow.id+" not ready while behind", func() bool {
		err := slow.c.Ready()
		return err != nil && strings.Contains(err.Error(), "catching up")
	})
	t.Logf("%s not ready %v after the first write it could not apply: %v", slow.id, time.Since(start).Round(time.Millisecond), slow.c.Ready())
	if err := leader.c.Ready(); err != nil {
		t.Errorf("leader %s not ready: %v", leader.id, err)
	}
	slow.fsm.mu.Unlock()
	stalled = false
	readyWithin(t, nodes, 2*time.Second, "once the slow follower applies again")
	if _, ok := slow.fsm.get("behind-19"); !ok {
		t.Fatalf("%s ready but misses behind-19", slow.id)
	}
}

// proposeEventually adds key through n, retrying while an election (a loaded
// test host makes spurious ones) leaves no leader or the outcome unknown. An
// add that an earlier, unanswered attempt committed answers "exists:", which
// counts as done.
func proposeEventually(t testing.TB, n *testNode, key, value string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := n.c.Propose(context.Background(), addCmd(key, value))
		if err == nil {
			if s := string(res); s != "ok:"+key && s != "exists:"+key {
				t.Fatalf("propose %s via %s = %q", key, n.id, s)
			}
			return
		}
		retry := errors.Is(err, ErrNoLeader) || errors.Is(err, ErrNotLeader) || errors.Is(err, ErrLeadershipLost) || errors.Is(err, ErrTimeout)
		if !retry || time.Now().After(deadline) {
			t.Fatalf("propose %s via %s: %v", key, n.id, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

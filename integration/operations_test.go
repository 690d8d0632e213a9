package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Day-one operations against real processes: leaving, rolling restarts,
// recovery from a lost quorum, and logs an operator can trust.

// readyz returns the node's /readyz status code and body.
func (nd *testNode) readyz() (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+nd.adminAddr+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// waitReady waits until /readyz on nd answers 200.
func waitReady(t testing.TB, nd *testNode, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, nd.id+" is ready", func() (bool, string) {
		code, body := nd.readyz()
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
}

// member returns the row of id in nd's members view.
func (nd *testNode) member(id string) (member, error) {
	ms, err := nd.members()
	if err != nil {
		return member{}, err
	}
	for _, m := range ms {
		if m.ID == id {
			return m, nil
		}
	}
	return member{}, fmt.Errorf("%s is not in %s's members", id, nd.id)
}

// waitExit waits until nd's process has exited on its own and reports whether
// it did within timeout.
func (nd *testNode) waitExit(timeout time.Duration) bool {
	nd.mu.Lock()
	cmd, done := nd.cmd, nd.done
	nd.mu.Unlock()
	if cmd == nil {
		return true
	}
	select {
	case <-done:
	case <-time.After(timeout):
		return false
	}
	fmt.Fprintf(nd.log, "===== %s exited at %s: %v\n", nd.id, time.Now().Format("15:04:05.000"), cmd.ProcessState)
	nd.mu.Lock()
	nd.cmd = nil
	nd.mu.Unlock()
	return true
}

// TestDcctlLeaveAnyNode: dcctl leave against the leader (which hands
// leadership over first) and then against a follower completes, exits 0, and
// the node is out of the configuration and gone. A node started with
// -leave-on-terminate leaves the same way on SIGTERM.
func TestDcctlLeaveAnyNode(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 4, clusterOptions{})
	// left waits until nd's process is gone and the others' voters are the
	// nodes still running.
	left := func(nd *testNode, how string) {
		t.Helper()
		if !nd.waitExit(15 * time.Second) {
			t.Fatalf("%s still runs 15s after %s", nd.id, how)
		}
		rest := ids(c.live())
		waitVoters(t, c.waitLeader(10*time.Second), rest...)
		t.Logf("%s left by %s; voters now %v", nd.id, how, rest)
	}

	leader := c.waitLeader(10 * time.Second)
	out, err := leader.dcctl("leave")
	if err != nil {
		t.Fatalf("dcctl leave on the leader %s: %v\n%s", leader.id, err, out)
	}
	left(leader, "dcctl leave on the leader")

	f := c.followers(c.waitLeader(10 * time.Second))[0]
	if out, err := f.dcctl("leave"); err != nil {
		t.Fatalf("dcctl leave on the follower %s: %v\n%s", f.id, err, out)
	}
	left(f, "dcctl leave on a follower")

	// Restarted with -leave-on-terminate (a graceful stop keeps it a voter),
	// then SIGTERM.
	g := c.followers(c.waitLeader(10 * time.Second))[0]
	stopWithin(t, g, 10*time.Second)
	g.extra = append(g.extra, "-leave-on-terminate")
	g.restart()
	waitReady(t, g, 20*time.Second)
	g.signal(syscall.SIGTERM)
	left(g, "SIGTERM with -leave-on-terminate")

	last := c.live()[0]
	waitReady(t, last, 10*time.Second)
	mustAdd(t, dial(t, last), "after-leaves", "a session value", time.Minute)
}

// TestRollingRestartUnderLoad: each node in turn is stopped with SIGTERM,
// restarted from its data dir and waited for until ready, under load. No
// acknowledged write is lost and the configuration never changes: a node
// stopped gracefully stays a voter (it does not leave), and comes back as one.
func TestRollingRestartUnderLoad(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, clusterOptions{})
	all := ids(c.all())
	for _, nd := range c.all() {
		waitReady(t, nd, 10*time.Second)
	}
	w := startWorkload(t, c, workloadConfig{})
	w.waitAcked(30, 20*time.Second)
	for _, nd := range c.all() {
		stopWithin(t, nd, 10*time.Second)
		// While it is down, the others see it failed (not left) and still
		// count it as a voter.
		nl := c.waitLeader(15 * time.Second)
		waitFor(t, 20*time.Second, fmt.Sprintf("%s sees the stopped %s as a failed voter", nl.id, nd.id), func() (bool, string) {
			m, err := nl.member(nd.id)
			return err == nil && m.Status == "failed" && m.Suffrage == "voter", fmt.Sprintf("%+v %v", m, err)
		})
		if got, err := voters(nl); err != nil || !slices.Equal(got, all) {
			t.Fatalf("with %s stopped, voters on %s are %v (%v); want %v", nd.id, nl.id, got, err, all)
		}
		w.waitAcked(20, 20*time.Second)
		nd.restart()
		waitReady(t, nd, 20*time.Second)
		w.waitAcked(20, 20*time.Second)
		t.Logf("%s restarted and ready; %d writes acknowledged so far", nd.id, w.acked())
	}
	for _, nd := range c.all() {
		waitReady(t, nd, 10*time.Second)
		waitVoters(t, nd, all...)
	}
	w.check()
}

// TestRecoverLostQuorum: two of three nodes are gone for good. The survivor,
// stopped and started again with a peers.json naming only itself, elects
// itself and serves every acknowledged session; new nodes then join it.
func TestRecoverLostQuorum(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, clusterOptions{})
	w := startWorkload(t, c, workloadConfig{})
	w.runFor(loadPhase(t))
	w.waitAcked(50, 20*time.Second)
	w.stop()
	leader := c.waitLeader(10 * time.Second)
	c.waitConverged(leader, c.all(), 30*time.Second) // the survivor holds every acknowledged write

	survivor := c.followers(leader)[0]
	for _, nd := range c.all() {
		if nd != survivor {
			nd.kill()
		}
	}
	waitFor(t, 15*time.Second, "the survivor alone is not ready", func() (bool, string) {
		code, body := survivor.readyz()
		return code == http.StatusServiceUnavailable, fmt.Sprintf("%d %s", code, body)
	})
	survivor.kill()

	peers, _ := json.Marshal([]map[string]string{{"id": survivor.id, "address": survivor.advertise}})
	if err := os.WriteFile(filepath.Join(survivor.dataDir, "peers.json"), peers, 0o600); err != nil {
		t.Fatal(err)
	}
	survivor.restart()
	c.leaderAmong([]*testNode{survivor}, 15*time.Second)
	waitReady(t, survivor, 10*time.Second)
	waitVoters(t, survivor, survivor.id)
	if _, err := os.Stat(filepath.Join(survivor.dataDir, "peers.json")); !os.IsNotExist(err) {
		t.Errorf("peers.json is still in the data dir after the recovery: %v", err)
	}
	if !strings.Contains(survivor.log.String(), "RECOVERING from a lost quorum") {
		t.Errorf("the survivor's log does not say loudly that it recovered")
	}

	// New nodes join the survivor the usual way.
	n4 := c.addNode("n4", true)
	waitVoters(t, survivor, survivor.id, n4.id)
	n5 := c.addNode("n5", true)
	waitVoters(t, survivor, survivor.id, n4.id, n5.id)
	c.waitConverged(survivor, c.live(), 30*time.Second)
	for _, nd := range c.live() {
		waitReady(t, nd, 10*time.Second)
	}
	mustAdd(t, dial(t, n5), "after-recovery", "a session value", time.Minute)
	w.check() // every acknowledged session, on the survivor and the new nodes
}

// TestLogLevelsAudit: a cluster started, made to transfer leadership, with a
// follower stopped for a while, and then stopped cleanly logs no ERROR: ERROR
// is for what needs a person, and none of this does.
func TestLogLevelsAudit(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, clusterOptions{})
	leader := c.waitLeader(10 * time.Second)
	for _, nd := range c.all() {
		waitReady(t, nd, 10*time.Second)
	}
	mustAdd(t, dial(t, leader), "audit-1", "a session value", time.Minute)
	target := c.followers(leader)[0]
	if out, err := leader.dcctl("transfer-leader", target.id); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	nl := c.waitLeader(10 * time.Second)
	for _, nd := range c.all() {
		waitReady(t, nd, 10*time.Second)
	}
	// A follower down for a few seconds: the leader keeps failing to reach it.
	down := c.followers(nl)[0]
	stopWithin(t, down, 10*time.Second)
	mustAdd(t, dial(t, nl), "audit-2", "a session value", time.Minute)
	waitFor(t, 10*time.Second, "the leader notices "+down.id+" is down", func() (bool, string) {
		m, err := nl.member(down.id)
		return err == nil && m.Status == "failed", fmt.Sprintf("%+v %v", m, err)
	})
	down.restart()
	for _, nd := range c.all() {
		waitReady(t, nd, 15*time.Second)
	}
	for _, nd := range c.all() {
		stopWithin(t, nd, 10*time.Second)
	}
	for _, nd := range c.all() {
		var errs []string
		for _, l := range strings.Split(nd.log.String(), "\n") {
			if strings.Contains(l, "level=ERROR") {
				errs = append(errs, l)
			}
		}
		if len(errs) > 0 {
			t.Errorf("%s logged %d ERROR lines in a clean run:\n%s", nd.id, len(errs), strings.Join(errs, "\n"))
		}
		if n := strings.Count(nd.log.String(), `msg="failed to heartbeat to"`); n > 2 {
			t.Errorf("%s logged %d heartbeat failures; want them collapsed to one line per peer per minute", nd.id, n)
		}
	}
}

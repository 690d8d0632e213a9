package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// loadPhase is how long each load phase of a scenario lasts; DCINT_SOAK=<duration>
// stretches it for longer runs.
func loadPhase(t testing.TB) time.Duration {
	if s := os.Getenv("DCINT_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("DCINT_SOAK=%q: %v", s, err)
		}
		return d
	}
	return 1500 * time.Millisecond
}

// dial connects a test client to nd's distcache listener.
func dial(t testing.TB, nd *testNode) *distcache.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := distcache.Dial(ctx, nd.clientAddr)
	if err != nil {
		t.Fatalf("dial %s: %v", nd.id, err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// mustAdd stores a session through nd, retrying while the cluster is unavailable
// (0x02) until timeout, and returns the call and return times of the successful try.
func mustAdd(t testing.TB, cl *distcache.Client, key, value string, ttl time.Duration) (call, ret time.Time) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		call = time.Now()
		err := cl.Add(ctx, []byte(key), []byte(value), ttl)
		ret = time.Now()
		cancel()
		if err == nil {
			return call, ret
		}
		if errors.Is(err, distcache.ErrExists) || time.Now().After(deadline) {
			t.Fatalf("ADD %s: %v", key, err)
		}
		pollPause()
	}
}

// have asks HAVE until it gets a definite answer (an error is retried until timeout).
func have(t testing.TB, cl *distcache.Client, key string) bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ok, err := cl.Have(ctx, []byte(key))
		cancel()
		if err == nil {
			return ok
		}
		if time.Now().After(deadline) {
			t.Fatalf("HAVE %s: no answer: %v", key, err)
		}
		pollPause()
	}
}

// voters returns the ids of the voters alive in nd's members view.
func voters(nd *testNode) ([]string, error) {
	ms, err := nd.members()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.Suffrage == "voter" {
			out = append(out, m.ID)
		}
	}
	slices.Sort(out)
	return out, nil
}

// waitVoters waits until nd's view has exactly the given voters.
func waitVoters(t testing.TB, nd *testNode, want ...string) {
	t.Helper()
	slices.Sort(want)
	waitFor(t, 20*time.Second, fmt.Sprintf("voters on %s are %v", nd.id, want), func() (bool, string) {
		got, err := voters(nd)
		if err != nil {
			return false, err.Error()
		}
		return slices.Equal(got, want), fmt.Sprintf("voters %v", got)
	})
}

// Scenario 1: three nodes started in random order with -bootstrap-expect 3 form one
// cluster (one leader, three voters seen by everyone), which then serves a workload.
// Reads are local here, so the local-read checks run.
func TestBootstrapRandomOrder(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, clusterOptions{ReadConsistency: "local"})
	leader := c.waitLeader(10 * time.Second)
	for _, nd := range c.all() {
		waitVoters(t, nd, "n1", "n2", "n3")
	}
	st, err := leader.status()
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range c.all() {
		s, err := nd.status()
		if err != nil {
			t.Fatal(err)
		}
		if s.Term != st.Term || s.LeaderID != leader.id {
			t.Errorf("%s: term %d leader %q; leader %s says term %d", nd.id, s.Term, s.LeaderID, leader.id, st.Term)
		}
	}
	w := startWorkload(t, c, workloadConfig{})
	w.runFor(loadPhase(t))
	w.waitAcked(50, 20*time.Second)
	w.check()
}

// Scenario 2: SIGKILL the leader under load. The survivors elect a leader, writes
// resume (the write unavailability is measured and logged), and the killed node
// restarts from its data dir and catches up.
func TestLeaderKill(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, clusterOptions{})
	w := startWorkload(t, c, workloadConfig{})
	w.runFor(loadPhase(t))
	w.waitAcked(50, 20*time.Second)

	old := c.waitLeader(10 * time.Second)
	killedAt := time.Now()
	old.kill()
	survivors := c.followers(old)
	nl := c.leaderAmong(survivors, 15*time.Second)
	if nl == old {
		t.Fatalf("killed leader %s still leads", old.id)
	}
	w.waitAcked(50, 20*time.Second)
	unavail := w.firstAckAfter(killedAt)
	if unavail < 0 {
		t.Fatal("no write acknowledged after the kill")
	}
	t.Logf("MEASURE write-unavailability after leader SIGKILL: %v (new leader %s)", unavail.Round(time.Millisecond), nl.id)
	if unavail > 5*time.Second {
		t.Errorf("write unavailability %v after leader SIGKILL, want well under 5s", unavail)
	}

	old.restart()
	c.waitConverged(nl, c.all(), 30*time.Second)
	w.runFor(loadPhase(t))
	w.check()
}

// Scenario 3: SIGSTOP the leader past the election timeout, then SIGCONT. The others
// elect a new leader meanwhile; the paused one steps down when it resumes and never
// answers a linearizable read with stale data: a session added and one removed through
// the new leader while it slept are seen correctly by it at once.
func TestLeaderPause(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, clusterOptions{})
	old := c.waitLeader(10 * time.Second)
	cl := dial(t, old)
	mustAdd(t, cl, "pause-removed", "value-before-pause", time.Hour)
	w := startWorkload(t, c, workloadConfig{})
	w.runFor(loadPhase(t))

	old.pause()
	others := c.followers(old)
	nl := c.leaderAmong(others, 15*time.Second)
	ncl := dial(t, nl)
	mustAdd(t, ncl, "pause-added", "value-while-paused", time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := ncl.Remove(ctx, []byte("pause-removed"))
	cancel()
	if err != nil {
		t.Fatalf("REMOVE through the new leader %s: %v", nl.id, err)
	}
	w.waitAcked(30, 20*time.Second)

	old.resume()
	// Right away: the old leader may still believe it leads, but a linearizable read
	// must not answer from its stale state.
	if !have(t, cl, "pause-added") {
		t.Errorf("stale read on resumed leader %s: HAVE pause-added = no, though acknowledged by %s", old.id, nl.id)
	}
	if have(t, cl, "pause-removed") {
		t.Errorf("stale read on resumed leader %s: HAVE pause-removed = yes, though removed through %s", old.id, nl.id)
	}
	waitFor(t, 10*time.Second, old.id+" steps down", func() (bool, string) {
		st, err := old.status()
		if err != nil {
			return false, err.Error()
		}
		return st.State == "Follower" && st.LeaderID != old.id, fmt.Sprintf("state %s leader %s", st.State, st.LeaderID)
	})
	w.runFor(loadPhase(t))
	w.check()
}

// Scenario 4: partition the leader from the others (a fault-injecting proxy in front
// of each node's cluster port). The minority side refuses writes fast, the majority
// elects a leader and keeps serving; after healing, everything converges.
func TestPartitionLeader(t *testing.T) {
	t.Parallel()
	if !dcnodeHasFlag("raft-advertise") {
		t.Skip("dcnode has no -raft-advertise flag yet (requested in /work/briefs/requests.md): cannot route peers through the fault proxy")
	}
	c := startCluster(t, 3, clusterOptions{Proxy: true})
	w := startWorkload(t, c, workloadConfig{})
	w.runFor(loadPhase(t))
	w.waitAcked(50, 20*time.Second)

	old := c.waitLeader(10 * time.Second)
	majority := c.followers(old)
	partition([]*testNode{old}, majority)
	nl := c.leaderAmong(majority, 15*time.Second)

	// The minority refuses writes, and fast: never later than the write timeout.
	cl := dial(t, old)
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		err := cl.Add(ctx, []byte("minority-"+strconv.Itoa(i)), []byte("never-acknowledged"), time.Hour)
		took := time.Since(start)
		cancel()
		if err == nil {
			t.Errorf("write acknowledged by %s, cut off from the majority", old.id)
		}
		t.Logf("minority write %d on %s failed after %v: %v", i, old.id, took.Round(time.Millisecond), err)
		if limit := c.opts.WriteTimeout + 500*time.Millisecond; took > limit {
			t.Errorf("minority write took %v to fail, want under %v", took, limit)
		}
	}
	waitFor(t, 10*time.Second, old.id+" steps down in the minority", func() (bool, string) {
		st, err := old.status()
		if err != nil {
			return false, err.Error()
		}
		return st.State != "Leader", "state " + st.State
	})
	w.waitAcked(50, 20*time.Second) // the majority keeps serving

	c.healAll()
	leader := c.waitLeader(20 * time.Second)
	c.waitConverged(leader, c.all(), 30*time.Second)
	t.Logf("partition: old leader %s, majority leader %s, leader after heal %s", old.id, nl.id, leader.id)
	w.runFor(loadPhase(t))
	w.check()
}

// Scenario 5: full cluster restart with data. Every node is SIGKILLed (a power cut,
// so only fsynced state survives) and restarted in a random order; every acknowledged
// session is there, with its absolute expiry: short-lived sessions are still present
// before their expiry and gone right after it.
func TestFullRestart(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, clusterOptions{})
	leader := c.waitLeader(10 * time.Second)
	w := startWorkload(t, c, workloadConfig{})
	const shortTTL = 8 * time.Second
	cl := dial(t, leader)
	type timed struct{ call, ret time.Time }
	short := map[string]timed{}
	for i := range 10 {
		k := fmt.Sprintf("short-%02d", i)
		call, ret := mustAdd(t, cl, k, "short-lived-"+strconv.Itoa(i), shortTTL)
		short[k] = timed{call, ret}
	}
	w.runFor(loadPhase(t))
	w.waitAcked(50, 20*time.Second)
	w.stop()

	for _, nd := range c.all() {
		nd.kill()
	}
	for _, i := range rand.Perm(len(c.all())) {
		c.all()[i].restart()
	}
	leader = c.waitLeader(20 * time.Second)

	// Before expiry: present on every node (checked only while there is a margin left).
	for _, nd := range c.all() {
		ncl := dial(t, nd)
		for k, tm := range short {
			if time.Until(tm.call.Add(shortTTL)) < time.Second {
				t.Logf("restart took too long to check %s before its expiry", k)
				continue
			}
			if !have(t, ncl, k) {
				t.Errorf("%s lost %s (ttl %v, acknowledged %v ago) in the restart", nd.id, k, shortTTL, time.Since(tm.ret).Round(time.Millisecond))
			}
		}
	}
	// After expiry: gone everywhere, within a small margin of the expiry fixed when the
	// leader accepted the write (not re-based on the restart).
	for _, nd := range c.all() {
		ncl := dial(t, nd)
		for k, tm := range short {
			expiry := tm.ret.Add(shortTTL)
			waitFor(t, time.Until(expiry)+1500*time.Millisecond, fmt.Sprintf("%s expires on %s", k, nd.id), func() (bool, string) {
				return !have(t, ncl, k), "still present"
			})
			if time.Now().Before(tm.call.Add(shortTTL)) {
				t.Errorf("%s expired on %s before its ttl", k, nd.id)
			}
		}
	}
	w.check()
}

// snapshotMeta is the part of a file snapshot's meta.json the test reads.
type snapshotMeta struct {
	Index uint64 `json:"Index"`
}

// latestSnapshot returns the highest snapshot index in a node's data dir (0: none).
func latestSnapshot(nd *testNode) uint64 {
	metas, _ := filepath.Glob(filepath.Join(nd.dataDir, "snapshots", "*", "meta.json"))
	var best uint64
	for _, m := range metas {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		var sm snapshotMeta
		if json.Unmarshal(b, &sm) == nil && sm.Index > best {
			best = sm.Index
		}
	}
	return best
}

// Scenario 6: a follower falls so far behind that the leader has compacted the log
// entries it needs, so it must be sent a snapshot; it then catches up. Reads are
// local, so the local-read checks run.
func TestSnapshotCatchUp(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"snapshot-threshold", "snapshot-interval", "trailing-logs"} {
		if !dcnodeHasFlag(f) {
			t.Skipf("dcnode has no -%s flag yet (requested in /work/briefs/requests.md): cannot force log compaction quickly", f)
		}
	}
	const trailing = 16
	c := startCluster(t, 3, clusterOptions{ReadConsistency: "local", ExtraArgs: []string{
		"-snapshot-threshold", "32", "-snapshot-interval", "200ms", "-trailing-logs", strconv.Itoa(trailing)}})
	leader := c.waitLeader(10 * time.Second)
	lag := c.followers(leader)[0]
	w := startWorkload(t, c, workloadConfig{})
	w.waitAcked(20, 20*time.Second)

	lag.kill()
	st, err := leader.status()
	if err != nil {
		t.Fatal(err)
	}
	// Everything the lagging node has is at most the leader's last index now.
	behind := st.LastIndex
	waitFor(t, 30*time.Second, "the leader compacts its log past the stopped follower", func() (bool, string) {
		s := latestSnapshot(leader)
		return s > behind+trailing+64, fmt.Sprintf("leader snapshot at %d, follower stopped at <= %d", s, behind)
	})
	leaderSnap := latestSnapshot(leader)

	lag.restart()
	c.waitConverged(leader, c.all(), 30*time.Second)
	got := latestSnapshot(lag)
	if got < leaderSnap {
		t.Errorf("%s caught up without installing the leader's snapshot: its latest snapshot is %d, the leader's was %d", lag.id, got, leaderSnap)
	}
	t.Logf("%s stopped at log index <= %d; leader compacted through snapshot %d (keeping %d entries); %s caught up, latest snapshot %d",
		lag.id, behind, leaderSnap, trailing, lag.id, got)
	w.runFor(loadPhase(t))
	w.check()
}

// Scenario 7: membership under load. dcctl removes a follower, a fresh node is added
// with dcctl join, leadership is transferred to it; no acknowledged write is lost.
func TestMembershipChange(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, clusterOptions{})
	w := startWorkload(t, c, workloadConfig{})
	w.runFor(loadPhase(t))
	leader := c.waitLeader(10 * time.Second)
	gone := c.followers(leader)[0]

	if out, err := leader.dcctl("remove-node", gone.id, "--yes"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var rest []string
	for _, nd := range c.all() {
		if nd != gone {
			rest = append(rest, nd.id)
		}
	}
	waitVoters(t, leader, rest...)
	stopWithin(t, gone, 10*time.Second) // decommission it gracefully
	w.waitAcked(30, 20*time.Second)

	fresh := c.addNode("n4", false)
	if out, err := fresh.dcctl("join", leader.gossipAddr); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	waitVoters(t, leader, append(rest, fresh.id)...)
	c.waitConverged(leader, []*testNode{fresh}, 30*time.Second)
	w.waitAcked(30, 20*time.Second)

	if out, err := leader.dcctl("transfer-leader", fresh.id); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if nl := c.waitLeader(15 * time.Second); nl != fresh {
		t.Errorf("leadership went to %s, want %s", nl.id, fresh.id)
	}
	w.waitAcked(30, 20*time.Second)
	w.check()
}

// Scenario 8: a node's data dir is wiped and it comes back, on the same addresses, as
// a new member, with no operator step: once gossip has marked the old identity
// failed, the leader replaces it with the new member that now holds its address (Raft
// refuses two servers on one address). The old identity then does not disturb
// elections: the leader and term stay put under load, and when the leader is killed,
// the two remaining voters (one of them the new member) elect a new one.
func TestWipedNodeRejoins(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, clusterOptions{})
	w := startWorkload(t, c, workloadConfig{})
	w.runFor(loadPhase(t))
	leader := c.waitLeader(10 * time.Second)
	nd := c.followers(leader)[0]
	oldID := nd.id

	nd.kill()
	nd.wipe()
	var others []string
	for _, o := range c.all() {
		if o != nd {
			others = append(others, o.id)
		}
	}
	nd.rename(oldID + "b")
	nd.expect = 0
	nd.restart()
	waitVoters(t, leader, append(others, nd.id)...)
	c.waitConverged(leader, c.all(), 30*time.Second)

	before, err := leader.status()
	if err != nil {
		t.Fatal(err)
	}
	w.runFor(loadPhase(t))
	w.waitAcked(30, 20*time.Second)
	if l := c.waitLeader(10 * time.Second); l != leader {
		t.Errorf("leader changed from %s to %s with no fault injected", leader.id, l.id)
	}
	after, err := leader.status()
	if err != nil {
		t.Fatal(err)
	}
	if after.Term != before.Term {
		t.Errorf("term moved from %d to %d with no fault injected: the old identity disturbs elections", before.Term, after.Term)
	}

	leader.kill()
	nl := c.leaderAmong(c.followers(leader), 15*time.Second)
	t.Logf("after wipe: leader %s killed, %s elected by %v", leader.id, nl.id, ids(c.followers(leader)))
	w.waitAcked(30, 20*time.Second)
	leader.restart()
	c.waitConverged(nl, c.all(), 30*time.Second)
	w.check()
}

// TestGracefulStop: SIGTERM stops a follower, the leader and a node removed by the
// operator cleanly and promptly (leadership transfer, leave, clean close); the rest of
// the cluster keeps serving and the stopped nodes restart from their data.
func TestGracefulStop(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, clusterOptions{})
	w := startWorkload(t, c, workloadConfig{})
	w.runFor(loadPhase(t))
	leader := c.waitLeader(10 * time.Second)
	f := c.followers(leader)[0]
	stopWithin(t, f, 10*time.Second)
	f.restart()
	c.waitConverged(leader, c.all(), 30*time.Second)

	stopWithin(t, leader, 10*time.Second)
	nl := c.waitLeader(10 * time.Second)
	w.waitAcked(30, 20*time.Second)
	leader.restart()
	c.waitConverged(nl, c.all(), 30*time.Second)

	gone := c.followers(nl)[0]
	if out, err := nl.dcctl("remove-node", gone.id, "--yes"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	stopWithin(t, gone, 10*time.Second)
	w.check()
}

// stopWithin SIGTERMs nd and fails the test if it takes longer than limit to exit.
func stopWithin(t *testing.T, nd *testNode, limit time.Duration) {
	t.Helper()
	start := time.Now()
	nd.stop()
	if took := time.Since(start); took > limit {
		t.Errorf("%s took %v to stop on SIGTERM, want under %v", nd.id, took, limit)
	}
}

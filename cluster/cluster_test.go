package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/cluster/gossip"
	"github.com/distcache-replicated/distcache/cluster/mux"
	"github.com/distcache-replicated/distcache/internal/testport"
)

// testNode is one in-process cluster node with its own data dir and fixed
// addresses (so it can be restarted in place).
type testNode struct {
	t       testing.TB
	dir     string
	id      string
	raft    string
	gossip  string
	join    []string
	expect  int
	tune    func(*Config)
	fsm     *kvFSM
	c       *Cluster
	stopped bool
}

func testLogger() *slog.Logger {
	if os.Getenv("CLUSTER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// freeAddr returns a loopback address for a node's raft or gossip listener.
func freeAddr(t testing.TB) string { return testport.Addr(t) }

func (n *testNode) config() Config {
	cfg := Config{
		NodeID:              n.id,
		DataDir:             n.dir,
		RaftAddr:            n.raft,
		GossipAddr:          n.gossip,
		Join:                n.join,
		BootstrapExpect:     n.expect,
		Meta:                map[string]string{"client": "127.0.0.1:1"},
		StateMachine:        n.fsm,
		Logger:              testLogger(),
		HeartbeatTimeout:    500 * time.Millisecond,
		ElectionTimeout:     500 * time.Millisecond,
		LeaderLeaseTimeout:  250 * time.Millisecond,
		WriteTimeout:        2 * time.Second,
		ReconcileInterval:   300 * time.Millisecond,
		GossipProbeInterval: 200 * time.Millisecond,
		GossipProbeTimeout:  100 * time.Millisecond,
	}
	if n.tune != nil {
		n.tune(&cfg)
	}
	return cfg
}

// start opens (or re-opens) the node with a fresh FSM, as a process would.
func (n *testNode) start() {
	n.t.Helper()
	n.fsm = newKV()
	c, err := Open(context.Background(), n.config())
	if err != nil {
		n.t.Fatalf("open %s: %v", n.id, err)
	}
	n.c, n.stopped = c, false
}

func (n *testNode) kill() {
	n.t.Helper()
	if err := n.c.Kill(); err != nil {
		n.t.Errorf("kill %s: %v", n.id, err)
	}
	n.stopped = true
}

func (n *testNode) close() {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.c.Close(ctx); err != nil {
		n.t.Errorf("close %s: %v", n.id, err)
	}
	n.stopped = true
}

// newTestCluster starts size nodes with bootstrap-expect=size, each joining
// all the others, in a shuffled order, and waits for one leader.
func newTestCluster(t testing.TB, size int, tune func(*Config)) []*testNode {
	t.Helper()
	nodes := make([]*testNode, size)
	var gossips []string
	for i := range nodes {
		nodes[i] = &testNode{t: t, dir: t.TempDir(), id: fmt.Sprintf("n%d", i+1), raft: freeAddr(t), gossip: freeAddr(t), expect: size, tune: tune}
		gossips = append(gossips, nodes[i].gossip)
	}
	for _, n := range nodes {
		n.join = gossips
	}
	order := rand.Perm(size)
	for _, i := range order {
		nodes[i].start()
	}
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, n := range nodes {
			if !n.stopped {
				wg.Add(1)
				go func(n *testNode) { defer wg.Done(); n.close() }(n)
			}
		}
		wg.Wait()
	})
	waitStableLeader(t, nodes, size)
	return nodes
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// holdsFor polls cond for d (several reconcile rounds, say) and fails the
// test as soon as it does not hold: for what must not happen.
func holdsFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if !cond() {
			t.Fatalf("no longer true: %s", what)
		}
	}
}

// waitStableLeader waits until every running node agrees on one leader and
// sees a configuration of voters voters.
func waitStableLeader(t testing.TB, nodes []*testNode, voters int) *testNode {
	t.Helper()
	var leader *testNode
	eventually(t, 20*time.Second, fmt.Sprintf("one leader agreed by all, %d voters", voters), func() bool {
		leader = nil
		var lid string
		for _, n := range nodes {
			if n.stopped {
				continue
			}
			st := n.c.Status()
			if st.LeaderID == "" || (lid != "" && st.LeaderID != lid) || st.Voters != voters {
				return false
			}
			lid = st.LeaderID
		}
		for _, n := range nodes {
			if !n.stopped && n.id == lid && n.c.IsLeader() {
				leader = n
			}
		}
		return leader != nil
	})
	return leader
}

func leaderAndFollowers(t testing.TB, nodes []*testNode) (*testNode, []*testNode) {
	t.Helper()
	var leader *testNode
	var followers []*testNode
	for _, n := range nodes {
		if n.stopped {
			continue
		}
		if n.c.IsLeader() {
			leader = n
		} else {
			followers = append(followers, n)
		}
	}
	if leader == nil {
		t.Fatal("no leader among running nodes")
	}
	return leader, followers
}

func propose(t testing.TB, n *testNode, key, value string) string {
	t.Helper()
	res, err := n.c.Propose(context.Background(), addCmd(key, value))
	if err != nil {
		t.Fatalf("propose %s via %s: %v", key, n.id, err)
	}
	return string(res)
}

func TestReplicationFailoverAndCatchUpFromSnapshot(t *testing.T) {
	nodes := newTestCluster(t, 3, func(c *Config) {
		c.SnapshotThreshold = 50
		c.SnapshotInterval = 100 * time.Millisecond
		c.TrailingLogs = 10
	})
	leader, followers := leaderAndFollowers(t, nodes)
	f := followers[0]

	// A write through a follower is answered after LOCAL apply: readable at
	// once on that follower, and soon on every node.
	if got := propose(t, f, "k1", "v1"); got != "ok:k1" {
		t.Fatalf("propose via follower = %q, want ok:k1", got)
	}
	if v, ok := f.fsm.get("k1"); !ok || v != "v1" {
		t.Fatalf("follower %s does not see its own acknowledged write: %q %v", f.id, v, ok)
	}
	for _, n := range nodes {
		eventually(t, 5*time.Second, "k1 on "+n.id, func() bool { v, ok := n.fsm.get("k1"); return ok && v == "v1" })
	}
	if got := propose(t, leader, "k1", "other"); got != "exists:k1" {
		t.Fatalf("second ADD of k1 = %q, want exists:k1", got)
	}

	// Crash the leader: the survivors elect a new one and accept writes.
	oldLeader := leader
	oldLast := oldLeader.c.Status().LastIndex
	oldLeader.kill()
	leader = waitStableLeader(t, nodes, 3)
	if leader == oldLeader {
		t.Fatal("killed node still leader")
	}
	_, followers = leaderAndFollowers(t, nodes)
	// Enough writes (through the surviving follower) to snapshot and
	// compact the log past what the dead node has.
	for i := 0; i < 300; i++ {
		k := "after-" + strconv.Itoa(i)
		if got := propose(t, followers[0], k, "x"); got != "ok:"+k {
			t.Fatalf("propose %s = %q", k, got)
		}
	}
	eventually(t, 10*time.Second, "leader log compacted past the dead node", func() bool {
		first, err := leader.c.logs.FirstIndex()
		return err == nil && first > oldLast+1
	})

	// Restart the old leader in place: it must catch up, which now needs a
	// snapshot install since the entries it lacks are gone from the log.
	oldLeader.start()
	want := leader.fsm.size()
	eventually(t, 15*time.Second, "restarted node caught up", func() bool { return oldLeader.fsm.size() == want })
	if oldLeader.fsm.restoreCount() == 0 {
		t.Fatal("restarted node caught up without restoring a snapshot")
	}
	for i := 0; i < 300; i += 37 {
		if _, ok := oldLeader.fsm.get("after-" + strconv.Itoa(i)); !ok {
			t.Fatalf("restarted node lacks after-%d", i)
		}
	}
	// And it takes writes again.
	if got := propose(t, oldLeader, "back", "1"); got != "ok:back" {
		t.Fatalf("propose via restarted node = %q", got)
	}
}

func TestConcurrentProposeThroughFollower(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	_, followers := leaderAndFollowers(t, nodes)
	f := followers[0]
	const workers, per = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*per)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				k := fmt.Sprintf("w%d-%d", w, i)
				res, err := f.c.Propose(context.Background(), addCmd(k, k))
				if err != nil {
					errs <- err
					return
				}
				if string(res) != "ok:"+k {
					errs <- fmt.Errorf("caller %s got result %q", k, res)
					return
				}
				if v, ok := f.fsm.get(k); !ok || v != k {
					errs <- fmt.Errorf("%s not applied locally when acknowledged", k)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := f.fsm.size(); got != workers*per {
		t.Fatalf("follower has %d keys, want %d", got, workers*per)
	}
	// Many commands per log entry: group commit must have packed them.
	if last := f.c.Status().LastIndex; last >= workers*per {
		t.Errorf("last index %d for %d writes: no group commit", last, workers*per)
	}
}

func TestConcurrentAddSameKeyExactlyOneWins(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	for round := 0; round < 20; round++ {
		k := "race-" + strconv.Itoa(round)
		var wg sync.WaitGroup
		results := make([]string, len(nodes))
		for i, n := range nodes {
			wg.Add(1)
			go func(i int, n *testNode) {
				defer wg.Done()
				res, err := n.c.Propose(context.Background(), addCmd(k, n.id))
				if err != nil {
					results[i] = "err:" + err.Error()
					return
				}
				results[i] = string(res)
			}(i, n)
		}
		wg.Wait()
		ok := 0
		for _, r := range results {
			switch r {
			case "ok:" + k:
				ok++
			case "exists:" + k:
			default:
				t.Fatalf("round %d: unexpected result %q", round, r)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d ADDs succeeded, want exactly 1: %v", round, ok, results)
		}
	}
}

func TestLinearizableReadBarrierOnFollower(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	leader, followers := leaderAndFollowers(t, nodes)
	writers := []*testNode{leader, followers[1]}
	for i := 0; i < 50; i++ {
		k := "lin-" + strconv.Itoa(i)
		propose(t, writers[i%2], k, "v")
		if err := followers[0].c.ReadBarrier(context.Background()); err != nil {
			t.Fatalf("read barrier: %v", err)
		}
		if _, ok := followers[0].fsm.get(k); !ok {
			t.Fatalf("after ReadBarrier follower misses %s acknowledged by %s", k, writers[i%2].id)
		}
	}
	// Leader-on-miss query reaches the leader's state.
	v, err := followers[0].c.QueryLeader(context.Background(), []byte("lin-0"))
	if err != nil || string(v) != "v" {
		t.Fatalf("QueryLeader = %q, %v", v, err)
	}
	// Barrier right after a leadership change (the read index may point at
	// the new leader's no-op, which the FSM never sees).
	if err := leader.c.TransferLeadership(context.Background(), ""); err != nil {
		t.Fatalf("transfer: %v", err)
	}
	waitStableLeader(t, nodes, 3)
	for _, n := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err := n.c.ReadBarrier(ctx)
		cancel()
		if err != nil {
			t.Fatalf("read barrier on %s after leader change: %v", n.id, err)
		}
	}
}

// TestConcurrentReadBarriersShareRounds: many concurrent linearizable reads,
// each right after its own acknowledged write, all see their write, and they
// cost far fewer quorum checks (leader) and round trips (follower) than reads.
func TestConcurrentReadBarriersShareRounds(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	leader, followers := leaderAndFollowers(t, nodes)
	const n = 400
	for _, reader := range []*testNode{leader, followers[0]} {
		g := reader.c.forwardedReads
		if reader == leader {
			g = reader.c.leaderReads
		}
		before := g.rounds.Load()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				k := fmt.Sprintf("rb-%s-%d", reader.id, i)
				if err := proposeAcrossElections(followers[1].c, addCmd(k, "v")); err != nil {
					errs <- fmt.Errorf("propose %s: %w", k, err)
					return
				}
				if err := reader.c.ReadBarrier(context.Background()); err != nil {
					errs <- fmt.Errorf("read barrier on %s: %w", reader.id, err)
					return
				}
				if _, ok := reader.fsm.get(k); !ok {
					errs <- fmt.Errorf("after ReadBarrier %s misses %s, acknowledged before", reader.id, k)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		rounds := g.rounds.Load() - before
		t.Logf("%s: %d reads in %d read-index rounds", reader.id, n, rounds)
		if rounds == 0 || rounds > n/4 {
			t.Errorf("%s: %d reads took %d read-index rounds; want between 1 and %d", reader.id, n, rounds, n/4)
		}
	}
}

// proposeAcrossElections proposes cmd, again while the answer says leadership
// moved (a loaded CI machine under -race can miss the 250 ms leader lease), for
// up to 20 s: for tests of something else than elections. cmd must be
// idempotent in effect (an ADD answered "exists" the second time is).
func proposeAcrossElections(c *Cluster, cmd []byte) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := c.Propose(context.Background(), cmd)
		moved := errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoLeader) || errors.Is(err, ErrLeadershipLost)
		if !moved || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond) // back-off between attempts, not synchronisation
	}
}

func TestNoQuorumFailsFast(t *testing.T) {
	nodes := newTestCluster(t, 3, func(c *Config) { c.WriteTimeout = time.Second })
	_, followers := leaderAndFollowers(t, nodes)
	survivor := followers[0]
	for _, n := range nodes {
		if n != survivor {
			n.kill()
		}
	}
	for i := 0; i < 3; i++ {
		start := time.Now()
		_, err := survivor.c.Propose(context.Background(), addCmd("nq"+strconv.Itoa(i), "v"))
		el := time.Since(start)
		if err == nil {
			t.Fatal("write without quorum succeeded")
		}
		if !errors.Is(err, ErrNoLeader) && !errors.Is(err, ErrTimeout) {
			t.Fatalf("write without quorum: %v, want ErrNoLeader or ErrTimeout", err)
		}
		if el > 1500*time.Millisecond {
			t.Fatalf("write without quorum took %v, write timeout is 1s", el)
		}
	}
	// Once the node knows there is no leader, failure is immediate.
	eventually(t, 5*time.Second, "survivor notices no leader", func() bool { id, _ := survivor.c.Leader(); return id == "" })
	start := time.Now()
	if _, err := survivor.c.Propose(context.Background(), addCmd("nq", "v")); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("write with no leader: %v, want ErrNoLeader", err)
	}
	if el := time.Since(start); el > 100*time.Millisecond {
		t.Fatalf("write with no known leader took %v", el)
	}
	if _, err := survivor.c.QueryLeader(context.Background(), []byte("x")); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("query with no leader: %v", err)
	}
}

func configIDs(t testing.TB, n *testNode) map[string]bool {
	t.Helper()
	f := n.c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, s := range f.Configuration().Servers {
		ids[string(s.ID)] = true
	}
	return ids
}

func TestRemoveServerAndJoinBack(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	leader, followers := leaderAndFollowers(t, nodes)
	victim, other := followers[0], followers[1]
	// Forwarded from a follower to the leader.
	if err := other.c.RemoveServer(context.Background(), victim.id); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if configIDs(t, leader)[victim.id] {
		t.Fatal("victim still in configuration after RemoveServer returned")
	}
	eventually(t, 5*time.Second, "removed node leaves gossip", func() bool { return victim.c.gossip.Left() })
	eventually(t, 5*time.Second, "leader sees removed node as left", func() bool {
		return leader.c.gossip.Members()[victim.id].Status == gossip.StatusLeft
	})
	// Several reconcile rounds later it is still out.
	rounds := 0
	eventually(t, 5*time.Second, "reconcile rounds", func() bool {
		rounds++
		if configIDs(t, leader)[victim.id] {
			t.Fatal("removed node re-added while it had not joined again")
		}
		return rounds > 100 // ~1s of 10ms polls, >3 reconcile intervals
	})
	if err := other.c.RemoveServer(context.Background(), "no-such-node"); err == nil {
		t.Fatal("removing an unknown server succeeded")
	}

	n, err := victim.c.Join(context.Background(), []string{leader.c.GossipAddr()})
	if err != nil || n < 1 {
		t.Fatalf("join: n=%d err=%v", n, err)
	}
	eventually(t, 10*time.Second, "rejoined node re-added", func() bool { return configIDs(t, leader)[victim.id] })
	waitStableLeader(t, nodes, 3)
	if got := propose(t, victim, "rejoined", "1"); got != "ok:rejoined" {
		t.Fatalf("write via rejoined node = %q", got)
	}
	ms, err := victim.c.Members(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("members: %+v", ms)
	}
	leaders := 0
	for _, m := range ms {
		if m.Suffrage != "voter" || m.Status != gossip.StatusAlive || m.Lag < 0 || m.Meta["client"] != "127.0.0.1:1" {
			t.Errorf("member %+v", m)
		}
		if m.Leader {
			leaders++
		}
	}
	if leaders != 1 {
		t.Errorf("%d leaders in members", leaders)
	}
}

func TestTransferLeadership(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	leader, followers := leaderAndFollowers(t, nodes)
	target := followers[1]
	// Asked of a follower: forwarded to the leader.
	if err := followers[0].c.TransferLeadership(context.Background(), target.id); err != nil {
		t.Fatalf("transfer: %v", err)
	}
	eventually(t, 5*time.Second, "target leads", func() bool { return target.c.IsLeader() })
	if leader.c.IsLeader() {
		t.Fatal("old leader still leads")
	}
	if err := target.c.TransferLeadership(context.Background(), "nobody"); err == nil {
		t.Fatal("transfer to unknown node succeeded")
	}
}

func TestSnapshotSaveRestore(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	leader, followers := leaderAndFollowers(t, nodes)
	propose(t, followers[0], "a", "1")
	propose(t, leader, "b", "2")
	var buf bytes.Buffer
	if err := followers[0].c.SnapshotSave(context.Background(), &buf); err != nil {
		t.Fatalf("save: %v", err)
	}
	propose(t, leader, "c", "3")
	if err := followers[0].c.SnapshotRestore(context.Background(), bytes.NewReader(buf.Bytes())); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("restore on follower: %v, want ErrNotLeader", err)
	}
	if err := leader.c.SnapshotRestore(context.Background(), bytes.NewReader([]byte("garbage-not-a-snapshot"))); err == nil {
		t.Fatal("restore of garbage succeeded")
	}
	if err := leader.c.SnapshotRestore(context.Background(), bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatalf("restore: %v", err)
	}
	for _, n := range nodes {
		eventually(t, 10*time.Second, "restored state on "+n.id, func() bool {
			_, hasC := n.fsm.get("c")
			a, hasA := n.fsm.get("a")
			return !hasC && hasA && a == "1" && n.fsm.size() == 2
		})
	}
	// The cluster keeps working after the restore, through any node.
	if got := propose(t, followers[1], "c", "again"); got != "ok:c" {
		t.Fatalf("write after restore = %q", got)
	}
}

func TestGracefulCloseLeaderAndRestart(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		nodes := newTestCluster(t, 3, nil)
		leader, _ := leaderAndFollowers(t, nodes)
		leader.close()
		// Transferred leadership and stayed a voter: the others lead with a
		// configuration of three.
		newLeader := waitStableLeader(t, nodes, 3)
		if got := propose(t, newLeader, "x", "1"); got != "ok:x" {
			t.Fatalf("write after graceful leader close = %q", got)
		}
		holdsFor(t, 3*newLeader.config().ReconcileInterval, leader.id+", stopped gracefully, stays in the configuration", func() bool {
			return configIDs(t, newLeader)[leader.id]
		})
		// Same command line again: it resumes.
		leader.start()
		waitStableLeader(t, nodes, 3)
		eventually(t, 10*time.Second, "restarted node has x", func() bool { _, ok := leader.fsm.get("x"); return ok })
		if err := leader.c.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := leader.c.Close(context.Background()); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := leader.c.Propose(context.Background(), addCmd("y", "1")); !errors.Is(err, ErrClosed) {
			t.Fatalf("propose after close: %v", err)
		}
		leader.stopped = true
		for _, n := range nodes {
			if !n.stopped {
				n.close()
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+2 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines not released after Close: %d, before %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBadForwardingFramesCloseConnection(t *testing.T) {
	nodes := newTestCluster(t, 1, nil)
	n := nodes[0]
	for _, payload := range [][]byte{
		{byte(mux.KindForward), 'P', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 3, 232, 0xff, 0xff, 0xff, 0xff}, // oversized
		{byte(mux.KindForward), 'P', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},               // no deadline
		{'Z', 1, 2, 3}, // unknown kind
	} {
		conn, err := net.Dial("tcp", n.c.RaftAddr())
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(payload)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Errorf("payload %x: read %v, want the connection closed", payload[:2], err)
		}
		conn.Close()
	}
	if got := propose(t, n, "still", "ok"); got != "ok:still" {
		t.Fatalf("node unhealthy after bad frames: %q", got)
	}
}

// TestDataDirInUse: a second node on a data dir that a running node holds
// fails to start with an error that says so, instead of waiting forever on
// bolt's file lock.
func TestDataDirInUse(t *testing.T) {
	nodes := newTestCluster(t, 1, nil)
	second := &testNode{t: t, dir: nodes[0].dir, id: "n1", raft: freeAddr(t), gossip: freeAddr(t), expect: 1}
	second.fsm = newKV()
	start := time.Now()
	c, err := Open(context.Background(), second.config())
	if err == nil {
		c.Close(context.Background())
		t.Fatal("a second node opened a data dir in use")
	}
	if !strings.Contains(err.Error(), "already running on this data dir") {
		t.Fatalf("error %q does not say the data dir is in use", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("refusal took %v", el)
	}
}

// Leave works on any node, the leader included: leadership is handed over
// first, and the removal waits for the new leader instead of failing with
// "no leader".
func TestLeaveLeaderThenFollower(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	leader, followers := leaderAndFollowers(t, nodes)
	if err := leader.c.Leave(context.Background()); err != nil {
		t.Fatalf("leave on the leader %s: %v", leader.id, err)
	}
	if leader.c.IsLeader() {
		t.Fatalf("%s still leads after Leave", leader.id)
	}
	leader.close()
	rest := []*testNode{followers[0], followers[1]}
	newLeader := waitStableLeader(t, rest, 2)
	if configIDs(t, newLeader)[leader.id] {
		t.Fatalf("%s still in the configuration after Leave", leader.id)
	}
	holdsFor(t, 3*newLeader.config().ReconcileInterval, leader.id+" stays out", func() bool {
		return !configIDs(t, newLeader)[leader.id]
	})

	f := followers[0]
	if f == newLeader {
		f = followers[1]
	}
	if err := f.c.Leave(context.Background()); err != nil {
		t.Fatalf("leave on the follower %s: %v", f.id, err)
	}
	f.close()
	waitStableLeader(t, []*testNode{newLeader}, 1)
	proposeEventually(t, newLeader, "alone", "1")
}

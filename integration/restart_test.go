package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// TestRestartedNodeServesNoOlderState (issue 18): a node restarted after a
// SIGKILL must not answer from a state older than what it acknowledged before
// it died. A session is added through a follower, the follower takes a
// snapshot holding it, the session is REMOVEd through that follower
// (acknowledged), the follower is killed and restarted cut off from its peers,
// so it knows only its snapshot and its log, not the commit index. Before the
// fix it found the removed session again (local and leader-on-miss reads: its
// snapshot's state); now every read through it fails with the protocol's error
// until it has caught up, in every read mode, and /readyz says why; once the
// cut heals it answers "not found".
func TestRestartedNodeServesNoOlderState(t *testing.T) {
	for _, mode := range []string{"local", "leader-on-miss", "linearizable"} {
		t.Run(mode, func(t *testing.T) { testRestartedNodeServesNoOlderState(t, mode) })
	}
}

func testRestartedNodeServesNoOlderState(t *testing.T, mode string) {
	c := startCluster(t, 3, clusterOptions{ReadConsistency: mode, Proxy: true,
		ExtraArgs: []string{"-snapshot-threshold", "50", "-snapshot-interval", "1s"}})
	leader := c.waitLeader(30 * time.Second)
	others := c.followers(leader)
	f := others[0]
	cl := dial(t, f)
	const victim = "victim"
	mustAdd(t, cl, victim, "the victim's session data", 10*time.Minute)
	// The victim's entry is at or below what the leader has applied once the
	// ADD is acknowledged; the fillers make the follower snapshot past it. Any
	// snapshot from there on holds the victim (raft snapshots once 50 entries
	// pile up, so the last few fillers may stay in the log, which is fine).
	lst, err := leader.status()
	if err != nil {
		t.Fatal(err)
	}
	victimIdx := lst.AppliedIndex
	for i := range 60 {
		mustAdd(t, cl, fmt.Sprintf("filler-%02d", i), "filler session data", 10*time.Minute)
	}
	c.waitConverged(leader, []*testNode{f}, 20*time.Second)
	waitFor(t, 30*time.Second, fmt.Sprintf("%s snapshots index %d (the victim's ADD) or later", f.id, victimIdx), func() (bool, string) {
		idx := latestSnapshot(f)
		return idx >= victimIdx, fmt.Sprintf("latest snapshot at index %d", idx)
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Remove(ctx, []byte(victim)); err != nil {
		t.Fatalf("REMOVE through %s: %v", f.id, err)
	}
	if _, err := cl.Get(ctx, []byte(victim)); !errors.Is(err, distcache.ErrNotFound) {
		t.Fatalf("GET through %s after its REMOVE: %v, want not found", f.id, err)
	}

	f.kill()
	rest := []*testNode{leader, others[1]}
	partition([]*testNode{f}, rest)
	f.restart()
	cl2 := dial(t, f)
	var reads, failures int
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		// A read waits up to the node's write timeout (1s) before it fails.
		rctx, rcancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, gerr := cl2.Get(rctx, []byte(victim))
		rcancel()
		rctx, rcancel = context.WithTimeout(context.Background(), 3*time.Second)
		yes, herr := cl2.Have(rctx, []byte(victim))
		rcancel()
		reads += 2
		if gerr == nil || yes {
			t.Fatalf("restarted %s, cut off, found the session it had REMOVEd (GET err %v, HAVE %v err %v)", f.id, gerr, yes, herr)
		}
		for _, err := range []error{gerr, herr} {
			if err != nil && !errors.Is(err, distcache.ErrUnavailable) {
				t.Fatalf("restarted %s, cut off: %v, want the protocol's error (ErrUnavailable)", f.id, err)
			}
			if err != nil {
				failures++
			}
		}
	}
	t.Logf("%s cut off after restart: %d reads, %d answered unavailable", f.id, reads, failures)
	if failures != reads {
		t.Errorf("%d of %d reads on the cut-off restarted node were answered (a miss cannot be known there)", reads-failures, reads)
	}
	if code, why := f.readyz(); code == 200 || !strings.Contains(why, "catching up after restart") && !strings.Contains(why, "no leader") {
		t.Errorf("/readyz of the cut-off restarted node: %d %q, want 503 catching up (or no leader)", code, why)
	}

	c.healAll()
	waitFor(t, 30*time.Second, f.id+" answers the REMOVEd session as not found", func() (bool, string) {
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer rcancel()
		v, err := cl2.Get(rctx, []byte(victim))
		switch {
		case err == nil:
			t.Fatalf("%s found the REMOVEd session after healing (%d bytes)", f.id, len(v))
		case errors.Is(err, distcache.ErrNotFound):
			return true, ""
		}
		return false, err.Error()
	})
	waitReady(t, f, 30*time.Second)
}

package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestLeaderHistoryRing: the ring keeps the newest changes, oldest first, and
// since filters by time.
func TestLeaderHistoryRing(t *testing.T) {
	var h leaderHistory
	t0 := time.Unix(1_700_000_000, 0)
	if got := h.since(time.Time{}); len(got) != 0 {
		t.Fatalf("empty history: %v", got)
	}
	total := leaderHistorySize + 5
	for i := range total {
		h.add(LeaderChange{At: t0.Add(time.Duration(i) * time.Second), LeaderID: fmt.Sprint(i), Term: uint64(i)})
	}
	all := h.since(time.Time{})
	if len(all) != leaderHistorySize || all[0].Term != 5 || all[len(all)-1].Term != uint64(total-1) {
		t.Fatalf("after %d adds: %d kept, first term %d, last term %d", total, len(all), all[0].Term, all[len(all)-1].Term)
	}
	for i := 1; i < len(all); i++ {
		if all[i].At.Before(all[i-1].At) {
			t.Fatalf("not oldest first at %d: %v after %v", i, all[i].At, all[i-1].At)
		}
	}
	recent := h.since(t0.Add(time.Duration(total-3) * time.Second))
	if len(recent) != 3 || recent[0].LeaderID != fmt.Sprint(total-3) {
		t.Fatalf("since the last three: %+v", recent)
	}
}

// TestLeaderChangesOnTransfer: every node records the first election and a
// transfer, with the new leader and a term that grows.
func TestLeaderChangesOnTransfer(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	leader, followers := leaderAndFollowers(t, nodes)
	start := time.Now()
	for _, n := range nodes {
		chs := n.c.LeaderChanges(time.Time{})
		if len(chs) == 0 || chs[len(chs)-1].LeaderID != leader.id {
			t.Fatalf("%s recorded %+v; want the election of %s last", n.id, chs, leader.id)
		}
	}
	target := followers[0]
	if err := leader.c.TransferLeadership(context.Background(), target.id); err != nil {
		t.Fatalf("transfer: %v", err)
	}
	for _, n := range nodes {
		eventually(t, 5*time.Second, n.id+" records the transfer to "+target.id, func() bool {
			chs := n.c.LeaderChanges(start)
			return len(chs) > 0 && chs[len(chs)-1].LeaderID == target.id
		})
		chs := n.c.LeaderChanges(time.Time{})
		last := chs[len(chs)-1]
		if last.Term <= chs[0].Term || last.At.Before(start) {
			t.Errorf("%s: transfer recorded as %+v after %+v", n.id, last, chs[0])
		}
	}
}

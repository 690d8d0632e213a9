package cluster

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// LeaderChange is one change of leader as this node saw it. Operators read a run
// of them as a sign of trouble: a healthy cluster elects a leader once and keeps
// it until a node stops.
type LeaderChange struct {
	At       time.Time // when this node learned of the change
	LeaderID string    // the new leader; "" when the node lost its leader (an election is under way)
	Term     uint64    // this node's Raft term just after the change
}

// leaderHistorySize bounds the changes kept: an hour of a healthy cluster holds a
// handful, and a flapping one is already shown by a full ring.
const leaderHistorySize = 128

// leaderHistory is a bounded ring of LeaderChange, fed by a Raft observer.
type leaderHistory struct {
	mu   sync.Mutex
	ring [leaderHistorySize]LeaderChange
	next int // index of the next write
	n    int // entries held, at most leaderHistorySize
}

func (h *leaderHistory) add(ch LeaderChange) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ring[h.next] = ch
	h.next = (h.next + 1) % len(h.ring)
	h.n = min(h.n+1, len(h.ring))
}

// since returns the changes at or after t, oldest first.
func (h *leaderHistory) since(t time.Time) []LeaderChange {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []LeaderChange
	for i := range h.n {
		ch := h.ring[(h.next-h.n+i+len(h.ring))%len(h.ring)]
		if !ch.At.Before(t) {
			out = append(out, ch)
		}
	}
	return out
}

// LeaderChanges returns the changes of leader this node saw at or after since,
// oldest first; at most the last 128 are kept. Nothing is sampled for it: Raft
// reports each change as it happens.
func (c *Cluster) LeaderChanges(since time.Time) []LeaderChange {
	return c.leaders.since(since)
}

// watchLeaders records every change of leader Raft reports until the cluster
// closes. The observer does not block Raft: should the recorder fall 16 changes
// behind, Raft drops the surplus (and the ring would have cycled anyway).
func (c *Cluster) watchLeaders() {
	ch := make(chan raft.Observation, 16)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	c.raft.RegisterObserver(obs)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer c.raft.DeregisterObserver(obs)
		for {
			select {
			case <-c.done:
				return
			case o := <-ch:
				lo := o.Data.(raft.LeaderObservation)
				c.leaders.add(LeaderChange{At: time.Now(), LeaderID: string(lo.LeaderID), Term: c.raft.CurrentTerm()})
			}
		}
	}()
}

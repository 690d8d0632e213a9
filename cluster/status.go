package cluster

import (
	"context"
	"encoding/binary"
	"sort"
	"strconv"
	"time"

	"github.com/distcache-replicated/distcache/cluster/gossip"
	"github.com/hashicorp/raft"
)

// Status is a point-in-time view of this node's Raft state.
type Status struct {
	ID           string
	RaftAddr     string
	GossipAddr   string
	State        string // Follower, Candidate, Leader, Shutdown
	LeaderID     string
	LeaderAddr   string
	Term         uint64
	LastIndex    uint64
	CommitIndex  uint64
	AppliedIndex uint64    // applied by the FSM (no-ops and barriers passed once waited for, as readiness does); not raft's dispatch index
	LastContact  time.Time // last contact with a leader (zero if leader or never)
	Voters       int
	NumPeers     int // other servers in the configuration
	Member       bool
}

// Status reports this node's state, for health checks and dcctl.
func (c *Cluster) Status() Status {
	applied, _ := c.fsm.appliedIndex()
	lid, laddr := c.Leader()
	st := Status{
		ID: c.id, RaftAddr: c.RaftAddr(), GossipAddr: c.GossipAddr(),
		State: c.raft.State().String(), LeaderID: lid, LeaderAddr: laddr,
		LastIndex: c.raft.LastIndex(), CommitIndex: c.raft.CommitIndex(), AppliedIndex: applied,
		LastContact: c.raft.LastContact(),
	}
	st.Term, _ = strconv.ParseUint(c.raft.Stats()["term"], 10, 64)
	if f := c.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				st.Voters++
			}
			if string(s.ID) == c.id {
				st.Member = true
			} else {
				st.NumPeers++
			}
		}
	}
	return st
}

// MemberStatus is a member's gossip state (gossip.StatusAlive, ...), or
// StatusUnknown.
type MemberStatus = gossip.Status

// StatusUnknown is the status of a server of the Raft configuration that
// gossip has never seen.
const StatusUnknown MemberStatus = "unknown"

// Member is one node as seen through gossip joined with the Raft
// configuration.
type Member struct {
	ID           string
	GossipAddr   string
	RaftAddr     string
	Meta         map[string]string // user metadata (client addresses)
	Status       MemberStatus
	Suffrage     string // "voter", "nonvoter" or "none"
	Leader       bool
	LastIndex    uint64        // 0 if unreachable
	Lag          int64         // entries behind the leader's last index; -1 unknown
	SinceContact time.Duration // since the member last heard from a leader; -1 unknown/leader
}

// Members lists the gossip view joined with Raft suffrage, asking every
// member for its last log index to report lag behind the leader.
func (c *Cluster) Members(ctx context.Context) ([]Member, error) {
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, mapRaftErr(err)
	}
	byID := map[string]*Member{}
	for id, g := range c.peers() {
		byID[id] = &Member{ID: id, GossipAddr: g.Addr, RaftAddr: g.raftAddr, Meta: g.userMeta(), Status: g.Status, Suffrage: "none"}
	}
	for _, s := range f.Configuration().Servers {
		m, ok := byID[string(s.ID)]
		if !ok {
			m = &Member{ID: string(s.ID), RaftAddr: string(s.Address), Status: StatusUnknown}
			byID[string(s.ID)] = m
		}
		m.RaftAddr = string(s.Address)
		m.Suffrage = "nonvoter"
		if s.Suffrage == raft.Voter {
			m.Suffrage = "voter"
		}
	}
	lid, _ := c.Leader()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	type res struct {
		id   string
		last uint64
		lc   int64
		ok   bool
	}
	ch := make(chan res, len(byID))
	for id, m := range byID {
		go func(id, addr string) {
			if id == c.id {
				lc := int64(-1)
				if t := c.raft.LastContact(); !t.IsZero() && !c.IsLeader() {
					lc = time.Since(t).Milliseconds()
				}
				ch <- res{id, c.raft.LastIndex(), lc, true}
				return
			}
			out, err := c.client.call(ctx, addr, rpcStatus, nil)
			if err != nil || len(out) != 16 || addr == "" {
				ch <- res{id: id}
				return
			}
			ch <- res{id, binary.BigEndian.Uint64(out), int64(binary.BigEndian.Uint64(out[8:])), true}
		}(id, m.RaftAddr)
	}
	for range byID {
		r := <-ch
		m := byID[r.id]
		m.Lag, m.SinceContact = -1, -1
		if r.ok {
			m.LastIndex = r.last
			if r.lc >= 0 {
				m.SinceContact = time.Duration(r.lc) * time.Millisecond
			}
		}
		m.Leader = r.id == lid
	}
	var leaderLast uint64
	if lm, ok := byID[lid]; ok {
		leaderLast = lm.LastIndex
	}
	out := make([]Member, 0, len(byID))
	for _, m := range byID {
		if m.LastIndex > 0 && leaderLast > 0 {
			m.Lag = int64(leaderLast) - int64(m.LastIndex)
			if m.Lag < 0 {
				m.Lag = 0
			}
		}
		if m.Leader {
			m.SinceContact = -1
		}
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// MemberMeta returns, by id, the metadata each member gossip knows announced
// (its Config.Meta), without asking anyone: for callers that reach members
// through addresses of their own while Members asks for log positions.
func (c *Cluster) MemberMeta() map[string]map[string]string {
	peers := c.peers()
	out := make(map[string]map[string]string, len(peers))
	for id, p := range peers {
		out[id] = p.userMeta()
	}
	return out
}

// LeaderMeta returns the gossip metadata of the current leader (for example its
// admin address), or nil when no leader is known or it is not in gossip.
func (c *Cluster) LeaderMeta() map[string]string {
	id, _ := c.Leader()
	if id == "" {
		return nil
	}
	m, ok := c.peers()[id]
	if !ok {
		return nil
	}
	return m.userMeta()
}

package cluster

import (
	"strconv"

	"github.com/distcache-replicated/distcache/cluster/gossip"
)

// Gossip metadata keys the cluster announces for itself; Config.Meta
// travels alongside.
const (
	metaRaftAddr  = "raft"
	metaExpect    = "expect"
	metaInCluster = "incluster" // "1" once the node is part of a Raft configuration
)

// peer is a gossip member with the cluster's own metadata decoded.
type peer struct {
	gossip.Member
	raftAddr  string
	expect    int
	inCluster bool
}

// peers returns every member gossip knows, by id.
func (c *Cluster) peers() map[string]peer {
	members := c.gossip.Members()
	out := make(map[string]peer, len(members))
	for id, m := range members {
		p := peer{Member: m, raftAddr: m.Meta[metaRaftAddr], inCluster: m.Meta[metaInCluster] == "1"}
		p.expect, _ = strconv.Atoi(m.Meta[metaExpect])
		out[id] = p
	}
	return out
}

// userMeta is the metadata a member's Config.Meta announced: its gossip
// metadata without the cluster's own keys.
func (p peer) userMeta() map[string]string {
	out := make(map[string]string, len(p.Meta))
	for k, v := range p.Meta {
		switch k {
		case metaRaftAddr, metaExpect, metaInCluster:
		default:
			out[k] = v
		}
	}
	return out
}

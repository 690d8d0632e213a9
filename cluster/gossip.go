package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Reserved metadata keys; user keys from Config.Meta travel alongside.
const (
	metaRaftAddr  = "raft"
	metaExpect    = "expect"
	metaInCluster = "incluster" // "1" once the node is part of a Raft configuration
	// metaLeaving is announced just before a graceful leave: memberlist's
	// leave event does not say whether a node left or died (Node.State is
	// not updated), so the intent travels in metadata, as Serf does.
	metaLeaving = "leaving"
	metaVersion = 1
)

// encodeMeta packs metadata compactly: version byte, then pairs of
// uvarint-length-prefixed key and value, sorted by key for determinism.
func encodeMeta(m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b := []byte{metaVersion}
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(m[k])))
		b = append(b, m[k]...)
	}
	return b
}

func decodeMeta(b []byte) (map[string]string, error) {
	if len(b) == 0 || b[0] != metaVersion {
		return nil, errors.New("unknown metadata version")
	}
	b = b[1:]
	m := make(map[string]string)
	next := func() (string, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return "", errors.New("truncated metadata")
		}
		s := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return s, nil
	}
	for len(b) > 0 {
		k, err := next()
		if err != nil {
			return nil, err
		}
		v, err := next()
		if err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, nil
}

// MemberStatus is a node's state as seen in gossip.
type MemberStatus string

// Gossip states of a member.
const (
	StatusAlive   MemberStatus = "alive"
	StatusSuspect MemberStatus = "suspect"
	StatusFailed  MemberStatus = "failed"
	StatusLeft    MemberStatus = "left"
	StatusUnknown MemberStatus = "unknown" // in the Raft configuration but never seen in gossip
)

// gossipMember is what the cluster remembers of a gossip node.
type gossipMember struct {
	id         string
	gossipAddr string
	raftAddr   string
	expect     int
	inCluster  bool
	leaving    bool
	meta       map[string]string // user metadata only
	status     MemberStatus
	since      time.Time
}

// gossip wraps memberlist: it publishes this node's metadata, tracks every
// member's state from events (memberlist.Members hides left/dead nodes, and
// reconciliation needs to tell them apart) and signals changes.
type gossip struct {
	log     *slog.Logger
	mlConf  *memberlist.Config
	changed chan struct{} // capacity 1: "something changed, reconcile"

	mu      sync.Mutex
	ml      *memberlist.Memberlist
	left    bool
	leaves  uint64 // number of leaves so far (a generation for callers)
	meta    map[string]string
	members map[string]*gossipMember
}

type gossipDelegate struct{ g *gossip }

func (d gossipDelegate) NodeMeta(limit int) []byte {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	b := encodeMeta(d.g.meta)
	if len(b) > limit {
		// Checked at Open; a later oversize update keeps only reserved keys.
		b = encodeMeta(map[string]string{metaRaftAddr: d.g.meta[metaRaftAddr], metaExpect: d.g.meta[metaExpect],
			metaInCluster: d.g.meta[metaInCluster], metaLeaving: d.g.meta[metaLeaving]})
	}
	return b
}
func (gossipDelegate) NotifyMsg([]byte)                           {}
func (gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (gossipDelegate) LocalState(join bool) []byte                { return nil }
func (gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}

func (d gossipDelegate) NotifyJoin(n *memberlist.Node)   { d.g.update(n, StatusAlive) }
func (d gossipDelegate) NotifyUpdate(n *memberlist.Node) { d.g.update(n, StatusAlive) }
func (d gossipDelegate) NotifyLeave(n *memberlist.Node) {
	st := StatusFailed
	if n.State == memberlist.StateLeft {
		st = StatusLeft
	}
	d.g.update(n, st)
}

func (g *gossip) update(n *memberlist.Node, st MemberStatus) {
	m := &gossipMember{id: n.Name, gossipAddr: n.Address(), status: st, since: time.Now(), meta: map[string]string{}}
	if md, err := decodeMeta(n.Meta); err == nil {
		for k, v := range md {
			switch k {
			case metaRaftAddr:
				m.raftAddr = v
			case metaExpect:
				m.expect, _ = strconv.Atoi(v)
			case metaInCluster:
				m.inCluster = v == "1"
			case metaLeaving:
				m.leaving = v == "1"
			default:
				m.meta[k] = v
			}
		}
	} else if st == StatusAlive {
		g.log.Warn("gossip: member with undecodable metadata", "member", n.Name, "err", err)
	}
	g.mu.Lock()
	if old, ok := g.members[n.Name]; ok && st != StatusAlive {
		// Leave events may carry no metadata: keep what we knew.
		if m.raftAddr == "" {
			m.raftAddr, m.expect, m.meta = old.raftAddr, old.expect, old.meta
		}
		if st == StatusFailed && (old.leaving || m.leaving) {
			m.status = StatusLeft
		}
		if old.status == m.status {
			m.since = old.since
		}
	}
	g.members[n.Name] = m
	g.mu.Unlock()
	g.signal()
}

func (g *gossip) signal() {
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

func newGossip(id, addr string, meta map[string]string, keyring *memberlist.Keyring, cfg Config, log *slog.Logger) (*gossip, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip port %q: %w", portStr, err)
	}
	if b := encodeMeta(meta); len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("cluster: gossip metadata is %d bytes, limit %d", len(b), memberlist.MetaMaxSize)
	}
	g := &gossip{log: log, changed: make(chan struct{}, 1), meta: meta, members: make(map[string]*gossipMember)}
	mc := memberlist.DefaultLANConfig()
	mc.Name = id
	mc.BindAddr = host
	mc.BindPort = port
	mc.AdvertisePort = port
	mc.ProbeInterval = cfg.GossipProbeInterval
	mc.ProbeTimeout = cfg.GossipProbeTimeout
	mc.GossipInterval = 100 * time.Millisecond
	mc.PushPullInterval = 15 * time.Second
	mc.Delegate = gossipDelegate{g}
	mc.Events = gossipDelegate{g}
	mc.Logger = newStdLogger(log, "memberlist")
	if keyring != nil {
		// Every packet and stream is sealed with the primary key; anything
		// not sealed with a key of the ring is dropped (and logged).
		mc.Keyring = keyring
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	g.mlConf = mc
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: start gossip on %s: %w", addr, err)
	}
	// With port 0 memberlist picked a port: pin it so a re-created
	// memberlist (after leaving) comes back on the same address.
	ln := ml.LocalNode()
	mc.BindPort = int(ln.Port)
	mc.AdvertisePort = int(ln.Port)
	g.ml = ml
	return g, nil
}

func (g *gossip) localAddr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return net.JoinHostPort(g.mlConf.BindAddr, strconv.Itoa(g.mlConf.BindPort))
}

// setMeta changes one metadata key and re-announces the node.
func (g *gossip) setMeta(k, v string) {
	g.mu.Lock()
	if g.meta[k] == v {
		g.mu.Unlock()
		return
	}
	g.meta[k] = v
	ml, left := g.ml, g.left
	g.mu.Unlock()
	if !left {
		if err := ml.UpdateNode(time.Second); err != nil {
			g.log.Warn("gossip: metadata update not fully propagated", "err", err)
		}
	}
}

// join contacts the given addresses; after a previous leave, memberlist is
// re-created first (a left memberlist cannot rejoin).
func (g *gossip) join(addrs []string) (int, error) {
	g.mu.Lock()
	ml, left := g.ml, g.left
	g.mu.Unlock()
	if left {
		g.mu.Lock()
		delete(g.meta, metaLeaving)
		g.mu.Unlock()
		// Not under the lock: Create fires a join event for this node.
		nml, err := memberlist.Create(g.mlConf)
		if err != nil {
			return 0, fmt.Errorf("cluster: restart gossip: %w", err)
		}
		g.mu.Lock()
		if !g.left { // lost a race with another join
			g.mu.Unlock()
			nml.Shutdown()
		} else {
			g.ml, g.left = nml, false
			g.mu.Unlock()
		}
		g.mu.Lock()
		ml = g.ml
		g.mu.Unlock()
	}
	if len(addrs) == 0 {
		return 0, nil
	}
	return ml.Join(addrs)
}

// leave announces a graceful departure and stops gossip. The lock is not
// held across memberlist calls: they fire events back into update.
func (g *gossip) leave(timeout time.Duration) error {
	g.mu.Lock()
	if g.left {
		g.mu.Unlock()
		return nil
	}
	g.left = true
	g.leaves++
	g.meta[metaLeaving] = "1"
	ml := g.ml
	g.mu.Unlock()
	if err := ml.UpdateNode(timeout); err != nil {
		g.log.Debug("gossip: leave intent not fully propagated", "err", err)
	}
	err := ml.Leave(timeout)
	if serr := ml.Shutdown(); err == nil {
		err = serr
	}
	return err
}

// kill stops gossip without a leave message: peers see a failure.
func (g *gossip) kill() {
	g.mu.Lock()
	if g.left {
		g.mu.Unlock()
		return
	}
	g.left = true
	ml := g.ml
	g.mu.Unlock()
	ml.Shutdown()
}

// snapshot returns a copy of every member known, by id.
func (g *gossip) snapshot() map[string]gossipMember {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]gossipMember, len(g.members))
	for id, m := range g.members {
		out[id] = *m
	}
	return out
}

// leaveCount returns how many times this node has left gossip, so a caller
// can tell whether a leave happened since it last looked.
func (g *gossip) leaveCount() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.leaves
}

// isLeft reports whether this node has left gossip (until the next join).
func (g *gossip) isLeft() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.left
}

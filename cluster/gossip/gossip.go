package gossip

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config describes this node's part in gossip.
type Config struct {
	// NodeID names this node among the members.
	NodeID string
	// BindAddr is host:port for memberlist, TCP and UDP. Port 0 picks one,
	// which is then kept when gossip is restarted by a Join after a Leave.
	BindAddr string
	// Meta is announced to every member. Encoded, it must fit in 512 bytes.
	Meta map[string]string
	// EssentialMeta names the keys of Meta still announced if a SetMeta
	// makes the metadata outgrow 512 bytes; the others are then left out.
	EssentialMeta []string
	// Keyring encrypts gossip when it holds keys (see OpenKeyring); nil or
	// an empty ring means plaintext.
	Keyring *Keyring
	// ProbeInterval and ProbeTimeout tune failure detection; zero keeps
	// memberlist's LAN defaults (1s and 500ms).
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// Logger receives gossip's own logs and memberlist's. nil = slog.Default().
	Logger *slog.Logger
}

// Status is a member's state as seen in gossip.
type Status string

// Gossip states of a member.
const (
	StatusAlive   Status = "alive"
	StatusSuspect Status = "suspect"
	StatusFailed  Status = "failed"
	StatusLeft    Status = "left"
)

// Member is what this node knows of another (or of itself).
type Member struct {
	ID     string
	Addr   string            // gossip address
	Meta   map[string]string // as the member announced it; never modified
	Status Status
	Since  time.Time // when Status last changed, as seen here
}

// member is a Member with its announced leave intent.
type member struct {
	Member
	leaving bool
}

// Gossip wraps memberlist: it publishes this node's metadata, tracks every
// member's state from events (memberlist's own list hides left and dead
// nodes, which callers need to tell apart) and signals changes.
type Gossip struct {
	log       *slog.Logger
	mlConf    *memberlist.Config
	essential []string
	changed   chan struct{} // capacity 1: "something changed"

	mu      sync.Mutex
	ml      *memberlist.Memberlist
	left    bool
	leaves  uint64 // number of leaves so far (a generation for callers)
	meta    map[string]string
	members map[string]*member
}

type delegate struct{ g *Gossip }

func (d delegate) NodeMeta(limit int) []byte {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	b := encodeMeta(d.g.meta)
	if len(b) > limit {
		// Checked in New; a later oversize update keeps the essential keys.
		keep := map[string]string{metaLeaving: d.g.meta[metaLeaving]}
		for _, k := range d.g.essential {
			keep[k] = d.g.meta[k]
		}
		b = encodeMeta(keep)
	}
	return b
}
func (delegate) NotifyMsg([]byte)                           {}
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d delegate) NotifyJoin(n *memberlist.Node)   { d.g.update(n, StatusAlive) }
func (d delegate) NotifyUpdate(n *memberlist.Node) { d.g.update(n, StatusAlive) }
func (d delegate) NotifyLeave(n *memberlist.Node) {
	st := StatusFailed
	if n.State == memberlist.StateLeft {
		st = StatusLeft
	}
	d.g.update(n, st)
}

func (g *Gossip) update(n *memberlist.Node, st Status) {
	m := &member{Member: Member{ID: n.Name, Addr: n.Address(), Status: st, Since: time.Now(), Meta: map[string]string{}}}
	if md, err := decodeMeta(n.Meta); err == nil {
		for k, v := range md {
			if k == metaLeaving {
				m.leaving = v == "1"
				continue
			}
			m.Meta[k] = v
		}
	} else if st == StatusAlive {
		g.log.Warn("gossip: member with undecodable metadata", "member", n.Name, "err", err)
	}
	g.mu.Lock()
	if old, ok := g.members[n.Name]; ok && st != StatusAlive {
		// Leave events may carry no metadata: keep what we knew.
		if len(m.Meta) == 0 {
			m.Meta = old.Meta
		}
		if st == StatusFailed && (old.leaving || m.leaving) {
			m.Status = StatusLeft
		}
		if old.Status == m.Status {
			m.Since = old.Since
		}
	}
	g.members[n.Name] = m
	g.mu.Unlock()
	g.signal()
}

func (g *Gossip) signal() {
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// New starts gossip on cfg.BindAddr. It contacts nobody: see Join.
func New(cfg Config) (*Gossip, error) {
	host, portStr, err := net.SplitHostPort(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip: address %q: %w", cfg.BindAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("gossip: port %q: %w", portStr, err)
	}
	meta := make(map[string]string, len(cfg.Meta))
	for k, v := range cfg.Meta {
		meta[k] = v
	}
	if b := encodeMeta(meta); len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip: metadata is %d bytes, limit %d", len(b), memberlist.MetaMaxSize)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	g := &Gossip{log: log, essential: cfg.EssentialMeta, changed: make(chan struct{}, 1), meta: meta, members: make(map[string]*member)}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeID
	mc.BindAddr = host
	mc.BindPort = port
	mc.AdvertisePort = port
	if cfg.ProbeInterval > 0 {
		mc.ProbeInterval = cfg.ProbeInterval
	}
	if cfg.ProbeTimeout > 0 {
		mc.ProbeTimeout = cfg.ProbeTimeout
	}
	mc.GossipInterval = 100 * time.Millisecond
	mc.PushPullInterval = 15 * time.Second
	mc.Delegate = delegate{g}
	mc.Events = delegate{g}
	mc.Logger = newStdLogger(log, "memberlist")
	if ring := cfg.Keyring.shared(); ring != nil {
		// Every packet and stream is sealed with the primary key; anything
		// not sealed with a key of the ring is dropped (and logged).
		mc.Keyring = ring
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	g.mlConf = mc
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip: start on %s: %w", cfg.BindAddr, err)
	}
	// With port 0 memberlist picked a port: pin it so a re-created
	// memberlist (after leaving) comes back on the same address.
	ln := ml.LocalNode()
	mc.BindPort = int(ln.Port)
	mc.AdvertisePort = int(ln.Port)
	g.ml = ml
	return g, nil
}

// LocalAddr is the bound gossip address (with the port memberlist picked
// when 0 was asked for), for others' Join lists.
func (g *Gossip) LocalAddr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return net.JoinHostPort(g.mlConf.BindAddr, strconv.Itoa(g.mlConf.BindPort))
}

// Changed receives a value after member changes (coalesced: one value may
// stand for several changes).
func (g *Gossip) Changed() <-chan struct{} { return g.changed }

// SetMeta changes one metadata key and re-announces the node.
func (g *Gossip) SetMeta(k, v string) {
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

// Join contacts the given addresses and returns how many answered; after a
// Leave, memberlist is re-created first (a left memberlist cannot rejoin).
// With no addresses it only restarts gossip.
func (g *Gossip) Join(addrs []string) (int, error) {
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
			return 0, fmt.Errorf("gossip: restart: %w", err)
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

// Leave announces a graceful departure and stops gossip: other members see
// this node as left, not failed. The lock is not held across memberlist
// calls: they fire events back into update.
func (g *Gossip) Leave(timeout time.Duration) error {
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

// Kill stops gossip without a leave message: peers see a failure.
func (g *Gossip) Kill() {
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

// Members returns a copy of every member known, by id, including those
// that failed or left.
func (g *Gossip) Members() map[string]Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]Member, len(g.members))
	for id, m := range g.members {
		out[id] = m.Member
	}
	return out
}

// Leaves returns how many times this node has left gossip, so a caller
// can tell whether a leave happened since it last looked.
func (g *Gossip) Leaves() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.leaves
}

// Left reports whether this node has left gossip (until the next Join).
func (g *Gossip) Left() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.left
}

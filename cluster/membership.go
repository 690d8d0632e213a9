package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/distcache-replicated/distcache/cluster/gossip"
	"github.com/hashicorp/raft"
)

// leaderLoop follows leadership changes: on gaining it, commit a barrier so
// the commit index covers every earlier entry (the read index is valid only
// after that), then reconcile membership.
func (c *Cluster) leaderLoop() {
	for {
		select {
		case <-c.done:
			return
		case isLeader := <-c.raft.LeaderCh():
			if !isLeader {
				c.ready.Store(nil)
				continue
			}
			rd := &leaderReady{ch: make(chan struct{})}
			c.ready.Store(rd)
			c.log.Info("became leader")
			if err := c.await(c.raft.Barrier(c.cfg.WriteTimeout)); err != nil {
				lv := slog.LevelWarn
				if errors.Is(err, ErrClosed) {
					lv = slog.LevelDebug // shutting down
				}
				c.log.Log(context.Background(), lv, "leader barrier failed", "err", err)
				continue
			}
			close(rd.ch)
			c.reconcileSoon()
		}
	}
}

// reconcileSoon asks reconcileLoop for a round now.
func (c *Cluster) reconcileSoon() {
	select {
	case c.reconcileNow <- struct{}{}:
	default:
	}
}

// joinLoop contacts cfg.Join until some other member is seen, then (for a
// node without Raft state) takes part in bootstrap-expect: when enough
// servers with the same expect value are alive and none of them already
// belongs to a cluster, the one with the lowest id bootstraps all of them.
// While joining fails or bootstrap waits, it says so every few seconds.
func (c *Cluster) joinLoop(hasState bool) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	var lastJoin time.Time
	var joinFails int
	var joinErr error
	var joinPace, bootPace pacer
	bootstrapDone := hasState || c.cfg.BootstrapExpect == 0
	for {
		members := c.peers()
		alive := 0
		for _, m := range members {
			if m.Status == gossip.StatusAlive || m.Status == gossip.StatusSuspect {
				alive++
			}
		}
		if len(c.cfg.Join) > 0 && alive <= 1 && time.Since(lastJoin) > time.Second && !c.gossip.Left() {
			lastJoin = time.Now()
			if n, err := c.gossip.Join(c.cfg.Join); err != nil {
				joinFails, joinErr = joinFails+1, err
				c.log.Debug("gossip join attempt", "contacted", n, "err", err)
			} else {
				c.log.Info("joined gossip", "contacted", n)
				joinFails, joinErr = 0, nil
				joinPace = pacer{}
			}
		}
		if joinErr != nil && joinPace.due(time.Now()) {
			c.log.Warn("cannot join the cluster yet: no -join address answers; retrying every second",
				"join", c.cfg.Join, "attempts", joinFails, "err", joinErr)
		}
		if !bootstrapDone {
			var waiting string
			bootstrapDone, waiting = c.tryBootstrap(members)
			if !bootstrapDone && bootPace.due(time.Now()) {
				c.log.Info("waiting to bootstrap the cluster: "+waiting, "bootstrap_expect", c.cfg.BootstrapExpect)
			}
		}
		if bootstrapDone && (len(c.cfg.Join) == 0 || alive > 1) {
			return
		}
		select {
		case <-c.done:
			return
		case <-t.C:
		}
	}
}

// pacer spaces out the log lines of a condition that lasts: the first once
// it has lasted two seconds (a normal start passes through it quietly), then
// every five seconds for a minute, then once a minute. The zero value starts
// counting at its first call.
type pacer struct{ since, next time.Time }

func (p *pacer) due(now time.Time) bool {
	if p.since.IsZero() {
		p.since, p.next = now, now.Add(2*time.Second)
	}
	if now.Before(p.next) {
		return false
	}
	every := 5 * time.Second
	if now.Sub(p.since) > time.Minute {
		every = time.Minute
	}
	p.next = now.Add(every)
	return true
}

// tryBootstrap reports whether bootstrapping is settled (done here, or not
// this node's job because a cluster already exists) and, while it is not,
// what it waits for, in words.
func (c *Cluster) tryBootstrap(members map[string]peer) (bool, string) {
	if f := c.raft.GetConfiguration(); f.Error() == nil && len(f.Configuration().Servers) > 0 {
		return true, "" // added by a leader or bootstrapped before
	}
	var peers []peer
	var seen, others []string
	for _, m := range members {
		if m.Status != gossip.StatusAlive {
			continue
		}
		if m.inCluster && m.ID != c.id {
			return false, fmt.Sprintf("%s already belongs to a cluster; waiting for its leader to add this node", m.ID)
		}
		if m.expect == c.cfg.BootstrapExpect && m.raftAddr != "" {
			peers = append(peers, m)
			seen = append(seen, m.ID)
		} else if m.ID != c.id {
			others = append(others, fmt.Sprintf("%s (bootstrap-expect %d)", m.ID, m.expect))
		}
	}
	sort.Strings(seen)
	if len(peers) < c.cfg.BootstrapExpect {
		w := fmt.Sprintf("seen %d of %d servers: %s", len(peers), c.cfg.BootstrapExpect, strings.Join(seen, ", "))
		if len(others) > 0 {
			sort.Strings(others)
			w += "; not counted, another bootstrap-expect: " + strings.Join(others, ", ")
		}
		return false, w
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].ID < peers[j].ID })
	if peers[0].ID != c.id {
		return false, fmt.Sprintf("all %d servers seen; %s (the lowest id) bootstraps them", len(peers), peers[0].ID)
	}
	for _, p := range peers {
		if p.ID != c.id && !c.peerAuthenticated(p.ID, p.raftAddr) {
			// with mutual TLS, only peers that pass the handshake
			return false, fmt.Sprintf("%s fails mutual TLS on its cluster port", p.ID)
		}
	}
	var conf raft.Configuration
	for _, p := range peers {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.raftAddr)})
	}
	if err := c.await(c.raft.BootstrapCluster(conf)); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		c.log.Error("bootstrap failed", "err", err)
		return false, "bootstrap failed: " + err.Error()
	}
	c.log.Info("bootstrapped cluster", "servers", len(conf.Servers))
	c.gossip.SetMeta(metaInCluster, "1")
	return true, ""
}

// reconcileLoop runs reconciliation on the leader on every gossip event and
// every ReconcileInterval; on followers it keeps the in-cluster flag current
// and notices a removal of this node.
func (c *Cluster) reconcileLoop() {
	t := time.NewTicker(c.cfg.ReconcileInterval)
	defer t.Stop()
	follow := time.NewTicker(500 * time.Millisecond)
	defer follow.Stop()
	wasMember := false
	var memberGen uint64 // gossip leave count when last seen in the configuration
	for {
		select {
		case <-c.done:
			return
		case <-c.gossip.Changed():
		case <-c.reconcileNow:
		case <-t.C:
		case <-follow.C:
		}
		f := c.raft.GetConfiguration()
		if f.Error() != nil {
			continue
		}
		member := false
		for _, s := range f.Configuration().Servers {
			if string(s.ID) == c.id {
				member = true
			}
		}
		switch {
		case member:
			wasMember, memberGen = true, c.gossip.Leaves()
			c.gossip.SetMeta(metaInCluster, "1")
		case wasMember && len(f.Configuration().Servers) > 0:
			wasMember = false
			// Only if nobody left gossip meanwhile (the leader's notice, or
			// Leave): a Join after that must not be undone here.
			if c.gossip.Leaves() == memberGen && !c.gossip.Left() {
				c.log.Warn("this node is no longer in the raft configuration; leaving gossip (Join to come back)")
				c.gossip.Leave(time.Second)
			}
		}
		if rd := c.ready.Load(); rd != nil && c.IsLeader() {
			select {
			case <-rd.ch:
				c.reconcile(f.Configuration())
			default:
			}
		}
	}
}

func (c *Cluster) reconcile(conf raft.Configuration) {
	servers := make(map[string]raft.Server, len(conf.Servers))
	voters := 0
	for _, s := range conf.Servers {
		servers[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	minVoters := c.cfg.BootstrapExpect/2 + 1
	if c.cfg.BootstrapExpect == 0 {
		minVoters = voters/2 + 1
	}
	members := c.peers()
	for id, m := range members {
		if id == c.id {
			continue
		}
		srv, in := servers[id]
		switch m.Status {
		case gossip.StatusAlive, gossip.StatusSuspect:
			if c.tombstoned(id) || m.raftAddr == "" {
				continue
			}
			if in && string(srv.Address) == m.raftAddr {
				continue
			}
			if !c.peerAuthenticated(id, m.raftAddr) {
				continue
			}
			// A configured server with another id at this address is an old identity
			// of the node now there (its data dir was wiped): two servers cannot
			// listen on one address, so the old one is gone for good. Raft refuses a
			// duplicate address, so it must go first. Only when that is certain: the
			// newcomer is alive, the old id is not itself alive in gossip at that
			// address (both claiming it is ambiguous), and it is not this node.
			if m.Status == gossip.StatusAlive {
				for sid, s := range servers {
					if sid == id || sid == c.id || string(s.Address) != m.raftAddr {
						continue
					}
					if old, ok := members[sid]; ok && old.raftAddr == m.raftAddr && (old.Status == gossip.StatusAlive || old.Status == gossip.StatusSuspect) {
						continue
					}
					c.log.Info("removing stale server whose address a new node now holds", "stale_id", sid, "new_id", id, "raft_addr", m.raftAddr)
					if err := c.await(c.raft.RemoveServer(s.ID, 0, c.cfg.WriteTimeout)); err != nil {
						c.log.Warn("remove stale server failed", "id", sid, "err", err)
					}
					delete(servers, sid)
				}
			}
			c.log.Info("adding server seen in gossip", "id", id, "raft_addr", m.raftAddr)
			if err := c.await(c.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(m.raftAddr), 0, c.cfg.WriteTimeout)); err != nil {
				c.log.Warn("add voter failed", "id", id, "err", err)
			}
		case gossip.StatusLeft:
			c.clearTombstone(id)
			if in {
				c.log.Info("removing server that left the cluster", "id", id)
				if err := c.await(c.raft.RemoveServer(raft.ServerID(id), 0, c.cfg.WriteTimeout)); err != nil {
					c.log.Warn("remove server failed", "id", id, "err", err)
				}
			}
		case gossip.StatusFailed:
			c.clearTombstone(id)
			if !in || c.cfg.DeadServerTimeout <= 0 || time.Since(m.Since) < c.cfg.DeadServerTimeout {
				continue
			}
			if srv.Suffrage == raft.Voter && voters-1 < minVoters {
				c.log.Warn("not removing dead server: would leave fewer voters than a majority", "id", id, "voters", voters)
				continue
			}
			c.log.Info("removing server dead longer than DeadServerTimeout", "id", id, "dead_for", time.Since(m.Since))
			if err := c.await(c.raft.RemoveServer(raft.ServerID(id), 0, c.cfg.WriteTimeout)); err != nil {
				c.log.Warn("remove server failed", "id", id, "err", err)
				continue
			}
			if srv.Suffrage == raft.Voter {
				voters--
			}
		}
	}
}

func (c *Cluster) tombstoned(id string) bool {
	c.tombMu.Lock()
	defer c.tombMu.Unlock()
	_, ok := c.tombstones[id]
	return ok
}

func (c *Cluster) clearTombstone(id string) {
	c.tombMu.Lock()
	delete(c.tombstones, id)
	c.tombMu.Unlock()
}

// Join contacts the given gossip addresses (after a removal this restarts
// gossip); the leader then adds this node to Raft. It returns how many nodes
// were contacted, and fails visibly if none could be.
func (c *Cluster) Join(ctx context.Context, gossipAddrs []string) (int, error) {
	if c.closing.Load() {
		return 0, ErrClosed
	}
	if len(gossipAddrs) == 0 {
		return 0, errors.New("cluster: join: no addresses")
	}
	n, err := c.gossip.Join(gossipAddrs)
	if err != nil && n == 0 {
		return 0, fmt.Errorf("%w at %v: %w", ErrJoinUnreachable, gossipAddrs, err)
	}
	if err != nil {
		return n, fmt.Errorf("cluster: join %v: %w", gossipAddrs, err)
	}
	return n, nil
}

// RemoveServer removes a server from the Raft configuration (an operator
// action, run on the leader or forwarded to it). The removed node is told to
// leave gossip and is not re-added while it stays alive.
func (c *Cluster) RemoveServer(ctx context.Context, id string) error {
	if c.closing.Load() {
		return ErrClosed
	}
	ctx, cancel := c.writeCtx(ctx)
	defer cancel()
	if c.IsLeader() {
		return c.removeOnLeader(ctx, id)
	}
	return c.callLeader(ctx, rpcRemove, []byte(id))
}

func (c *Cluster) removeOnLeader(ctx context.Context, id string) error {
	if !c.IsLeader() {
		return ErrNotLeader
	}
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return mapRaftErr(err)
	}
	var addr string
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			addr = string(s.Address)
		}
	}
	if addr == "" {
		return fmt.Errorf("cluster: remove %q: %w", id, ErrUnknownServer)
	}
	c.tombMu.Lock()
	c.tombstones[id] = time.Now()
	c.tombMu.Unlock()
	if err := waitFuture(ctx, c.raft.RemoveServer(raft.ServerID(id), 0, c.cfg.WriteTimeout)); err != nil {
		c.clearTombstone(id)
		return fmt.Errorf("cluster: remove %q: %w", id, err)
	}
	c.log.Info("server removed by operator", "id", id)
	if id != c.id {
		// Best effort: the removed node will not hear of it through raft.
		nctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := c.client.call(nctx, addr, rpcRemoved, nil); err != nil {
			c.log.Debug("could not notify removed server", "id", id, "err", err)
		}
	}
	return nil
}

// TransferLeadership hands leadership to the voter id ("" = any voter), on
// the leader or forwarded to it.
func (c *Cluster) TransferLeadership(ctx context.Context, id string) error {
	if c.closing.Load() {
		return ErrClosed
	}
	ctx, cancel := c.writeCtx(ctx)
	defer cancel()
	if c.IsLeader() {
		return c.transferOnLeader(ctx, id)
	}
	return c.callLeader(ctx, rpcTransfer, []byte(id))
}

func (c *Cluster) transferOnLeader(ctx context.Context, id string) error {
	if !c.IsLeader() {
		return ErrNotLeader
	}
	if id == "" {
		return waitFuture(ctx, c.raft.LeadershipTransfer())
	}
	if id == c.id {
		return nil // it leads already
	}
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return mapRaftErr(err)
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			if s.Suffrage != raft.Voter {
				return fmt.Errorf("cluster: transfer to %q: %w", id, ErrNotVoter)
			}
			return waitFuture(ctx, c.raft.LeadershipTransferToServer(s.ID, s.Address))
		}
	}
	return fmt.Errorf("cluster: transfer to %q: %w", id, ErrUnknownServer)
}

// peerAuthenticated is asked before a member seen in gossip is added to the
// Raft configuration. Gossip membership only proves the gossip key; with
// mutual TLS configured the member must also complete a handshake on its
// cluster port (its certificate chains to the cluster CA and names the
// address it advertises), or anyone holding the gossip key could add voters
// until the cluster loses its quorum. Without TLS there is nothing to check.
func (c *Cluster) peerAuthenticated(id, raftAddr string) bool {
	if c.cfg.TLS == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(2*time.Second, c.cfg.WriteTimeout))
	defer cancel()
	if _, err := c.client.call(ctx, raftAddr, rpcStatus, nil); err != nil {
		c.log.Warn("not adding a member seen in gossip: its cluster port fails mutual TLS", "id", id, "raft_addr", raftAddr, "err", err)
		return false
	}
	return true
}

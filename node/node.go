package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distcache-replicated/distcache/cluster"
	"github.com/distcache-replicated/distcache/fsm"
	"github.com/distcache-replicated/distcache/internal/version"
	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// Config is everything a node needs. The zero value of an optional field means its
// documented default; cmd/dcnode maps flags onto it one to one.
type Config struct {
	NodeID          string
	DataDir         string
	RaftAddr        string   // host:port of the cluster port (Raft and forwarding)
	GossipAddr      string   // host:port for memberlist gossip, TCP and UDP
	Join            []string // gossip addresses of other nodes
	BootstrapExpect int
	AdminAddr       string // host:port of the admin HTTP endpoint; "" disables it
	AdminToken      string // required for mutating admin calls when set

	// Client listeners, in the original address syntax (IP:host:port, UNIX:/path) for
	// distcache and host:port for the others.
	Listen         []string
	MemcacheListen []string
	RESPListen     []string
	SessiondListen []string
	Socket         distcache.ListenOptions // owner, group and permissions of unix sockets
	Limits         ClientLimits            // the same bounds on every client listener
	// ClientTLS, when set, wraps the TCP client listeners (distcache IP:, memcache,
	// RESP) in TLS; unix sockets (protected by file permissions) and sessiond (UDP)
	// stay as they are. See ClientTLS in tls.go.
	ClientTLS *tls.Config

	ReadConsistency ReadConsistency
	MaxSessions     int
	MaxBytes        int64
	WriteTimeout    time.Duration // bound on every write (and leader-on-miss read); default 2s
	ExpireInterval  time.Duration // how often the leader purges expired sessions; default 1s
	Progress        int           // print an activity line every N operations (0: on change only)
	ProgressLines   bool          // print the once-a-second activity line at all

	// Tickets configures the TLS session-ticket keys: their rotation schedule and
	// the files this node writes for the servers on its host (tickets.go).
	Tickets TicketConfig

	// Cluster tunables, passed through (zero means the cluster's LAN defaults).
	Tune cluster.Config

	Logger *slog.Logger
}

// ClientLimits bound what one client can cost a node, on every listener. Zero
// fields take the defaults below.
type ClientLimits struct {
	// MaxConns caps concurrent connections per listener; more are accepted and
	// closed at once with a log line.
	MaxConns int
	// ReadTimeout bounds how long a request that has started to arrive may take to
	// arrive completely (slowloris).
	ReadTimeout time.Duration
	// IdleTimeout closes connections that send nothing for this long; 0 keeps idle
	// connections open, as Apache's pooled connections expect.
	IdleTimeout time.Duration
	// MaxValueSize is the largest value accepted by the memcache and RESP
	// front-ends (distcache's own limit is fixed by its framing at 32 KiB).
	MaxValueSize int
}

// Defaults for client limits.
const (
	DefaultMaxConns     = 4096
	DefaultReadTimeout  = 10 * time.Second
	DefaultMaxValueSize = 64 << 10
)

// Defaults for a node that says nothing else.
const (
	DefaultMaxSessions    = 1_000_000
	DefaultMaxBytes       = 1 << 30
	DefaultWriteTimeout   = 2 * time.Second
	DefaultExpireInterval = time.Second
)

// Node is one running member of the cache: its store, its share of the cluster and
// every listener clients use.
type Node struct {
	cfg     Config
	log     *slog.Logger
	store   *fsm.Store
	cluster *cluster.Cluster
	svc     *Service
	tickets *tickets
	metrics *metrics
	started time.Time

	mu        sync.Mutex
	closers   []func(context.Context) error // listeners and servers, closed in reverse
	listeners map[string][]string           // protocol -> bound addresses, for status
	conns     []func() int                  // open connection counters
	pend      *pending                      // listeners bound but not yet served
	adminLn   net.Listener                  // bound admin listener
	adminAddr string                        // its address
	peerHTTP  *http.Client                  // admin calls to other members (status, forwarded restores)

	stop      context.CancelFunc
	bg        sync.WaitGroup
	closing   atomic.Bool // set first thing in Close: servers' exit errors are expected then
	closeOnce sync.Once
	closeErr  error
	leaveCh   chan struct{} // closed when an operator asked this node to leave
}

func (c *Config) setDefaults() {
	if c.ReadConsistency == "" {
		c.ReadConsistency = ReadLeaderOnMiss
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.ExpireInterval <= 0 {
		c.ExpireInterval = DefaultExpireInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if c.Limits.MaxConns <= 0 {
		c.Limits.MaxConns = DefaultMaxConns
	}
	if c.Limits.ReadTimeout <= 0 {
		c.Limits.ReadTimeout = DefaultReadTimeout
	}
	if c.Limits.MaxValueSize <= 0 || c.Limits.MaxValueSize > fsm.MaxValueLen {
		c.Limits.MaxValueSize = min(DefaultMaxValueSize, fsm.MaxValueLen)
	}
}

// Start opens the store and the cluster and binds every listener. It returns once the
// node serves; it does not wait for a leader (reads are served locally meanwhile and
// writes fail fast until one is elected).
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	cfg.setDefaults()
	n := &Node{
		cfg:       cfg,
		log:       cfg.Logger,
		metrics:   newMetrics(),
		started:   time.Now(),
		listeners: map[string][]string{},
		leaveCh:   make(chan struct{}),
	}
	n.store = fsm.New(fsm.Config{Logger: cfg.Logger})
	if n.tickets, err = newTickets(cfg.Tickets, n.store, cfg.WriteTimeout, cfg.Logger); err != nil {
		return nil, fmt.Errorf("ticket keys: %w", err)
	}
	defer func() {
		if err != nil {
			n.closeAll(context.Background())
		}
	}()

	// Bind client listeners first: a typo in an address should fail before the node
	// joins a cluster, and their addresses travel in gossip metadata.
	if err := n.listenAll(); err != nil {
		return nil, err
	}
	if cfg.AdminAddr != "" {
		if err := n.bindAdmin(cfg.AdminAddr); err != nil {
			return nil, err
		}
	}

	cc := cfg.Tune
	cc.NodeID = cfg.NodeID
	cc.DataDir = cfg.DataDir
	cc.RaftAddr = cfg.RaftAddr
	cc.GossipAddr = cfg.GossipAddr
	cc.Join = cfg.Join
	cc.BootstrapExpect = cfg.BootstrapExpect
	cc.StateMachine = replica{Store: n.store, limits: fsm.Limits{MaxSessions: cfg.MaxSessions, MaxBytes: cfg.MaxBytes}}
	cc.Logger = cfg.Logger
	if cc.WriteTimeout == 0 {
		cc.WriteTimeout = cfg.WriteTimeout
	}
	cc.Meta = n.gossipMeta()
	cl, err := cluster.Open(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("start cluster: %w", err)
	}
	n.cluster = cl
	n.tickets.cluster = cl
	n.addCloser(cl.Close)
	// From here on every line says which node it is about (the dev cluster runs
	// several in one process), as the cluster's own lines do.
	n.log = n.log.With("node", cl.ID())
	n.svc = newService(n.store, cl, cfg.ReadConsistency, cfg.WriteTimeout)
	n.registerMetrics()

	if n.adminLn != nil {
		n.serveAdmin()
	}
	bgctx, stop := context.WithCancel(context.Background())
	n.stop = stop
	n.startServing()
	n.bg.Add(1)
	go func() { defer n.bg.Done(); n.expireLoop(bgctx) }()
	n.tickets.start(bgctx, &n.bg)
	if cfg.ProgressLines {
		n.bg.Add(1)
		go func() { defer n.bg.Done(); n.progressLoop(bgctx) }()
	}
	v := version.Get()
	n.log.Info("node started", "version", v.Version, "revision", v.Revision, "go", v.Go,
		"raft", cfg.RaftAddr, "gossip", cfg.GossipAddr, "admin", cfg.AdminAddr, "read_consistency", cfg.ReadConsistency)
	return n, nil
}

// ID is this node's cluster id.
func (n *Node) ID() string { return n.cluster.Status().ID }

// Cluster exposes the node's cluster membership for tests and tools in this module.
func (n *Node) Cluster() *cluster.Cluster { return n.cluster }

// Listeners returns the bound client addresses by protocol (distcache, memcache, resp,
// sessiond), in each protocol's own address syntax.
func (n *Node) Listeners() map[string][]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string][]string, len(n.listeners))
	for k, v := range n.listeners {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// Ready returns nil when this node serves current reads and can take writes, or an
// error saying why not in words. It is cheap (no round trip): /readyz answers with it,
// and a service manager's readiness notification should too. The cluster decides it
// (cluster.Ready): a known leader, this node keeping up with it, writable storage.
func (n *Node) Ready() error { return n.cluster.Ready() }

// Leave departs the cluster for good (see cluster.Leave): leadership is handed over,
// the leader removes this node from the Raft configuration and it leaves gossip.
// Close the node afterwards.
func (n *Node) Leave(ctx context.Context) error {
	return n.cluster.Leave(ctx)
}

// LeaveRequested is closed when an operator asked this node, through the admin
// endpoint, to leave the cluster; the process should then shut down.
func (n *Node) LeaveRequested() <-chan struct{} { return n.leaveCh }

// expireLoop makes the leader propose EXPIRE now and then, so expired sessions are
// freed on every replica at the same log position (reads already hide them).
func (n *Node) expireLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.ExpireInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !n.cluster.IsLeader() {
			continue
		}
		if next, ok := n.store.NextExpiry(); !ok || next.After(time.Now()) {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, n.cfg.WriteTimeout)
		_, err := n.cluster.Propose(pctx, fsm.AppendExpire(nil))
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			n.log.Debug("expire proposal failed", "err", err)
		}
	}
}

// Close shuts the node down gracefully: listeners stop accepting, in-flight requests
// finish, a leader hands leadership over and the stores close. The node stays a
// member of the cluster (a voter stays a voter) and resumes when started again from
// its data dir; Leave first to depart for good.
func (n *Node) Close(ctx context.Context) error {
	n.closeOnce.Do(func() {
		n.closing.Store(true)
		if n.stop != nil {
			n.stop()
		}
		n.closeErr = n.closeAll(ctx)
		n.bg.Wait()
	})
	return n.closeErr
}

func (n *Node) addCloser(f func(context.Context) error) {
	n.mu.Lock()
	n.closers = append(n.closers, f)
	n.mu.Unlock()
}

// closeAll runs the closers in reverse order of registration: front-ends before the
// cluster, so in-flight requests can still commit.
func (n *Node) closeAll(ctx context.Context) error {
	n.mu.Lock()
	closers := n.closers
	n.closers = nil
	n.mu.Unlock()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](ctx); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

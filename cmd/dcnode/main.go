// Command dcnode runs one node of a replicated distcache session cache, or with
// -dev-cluster a whole local cluster in one process for trying it out.
//
// It keeps the original dc_server's flags where they still mean something (-listen,
// -sessions, -pidfile, -user, -sockowner, -sockgroup, -sockperms, -progress,
// -killable) and adds the cluster's own. Run `dcnode -help` for the list.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/distcache-replicated/distcache/cluster/atrest"
	"github.com/distcache-replicated/distcache/cluster/gossip"
	"github.com/distcache-replicated/distcache/internal/version"
	"github.com/distcache-replicated/distcache/node"
	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// defaultDataDir is -data-dir's default; -dev-cluster uses a temporary
// directory unless the operator changed it.
const defaultDataDir = "dcnode-data"

// shutdownTimeout bounds a graceful stop (leaving first, with -leave-on-terminate).
const shutdownTimeout = 15 * time.Second

// Exit statuses: unlike the original (which exited 0 on start-up failures), every
// failure is non-zero.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// listFlag is a repeatable flag that also accepts comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

type options struct {
	listen, memcache, resp, sessiond, join listFlag

	nodeID, dataDir, raftAddr, gossipAddr, adminAddr, adminTokenFile string
	bootstrapExpect                                                  int
	readConsistency                                                  string
	sessions                                                         int
	maxBytes                                                         string
	writeTimeout                                                     time.Duration
	progress                                                         int
	quiet                                                            bool
	pidfile, runAs                                                   string
	sockOwner, sockGroup, sockPerms                                  string
	killable, daemon, leaveOnTerminate                               bool
	devCluster                                                       int
	logLevel, logFormat                                              string
	version                                                          bool

	raftAdvertise                       string
	heartbeat, election, lease          time.Duration
	snapshotThreshold, trailingLogs     uint64
	snapshotInterval, deadServerTimeout time.Duration

	maxConns, maxValueSize   int
	readTimeout, idleTimeout time.Duration

	tlsCert, tlsKey, tlsCA                   string
	clientTLSCert, clientTLSKey, clientTLSCA string
	gossipKey, dataKeyFile                   string
	inMemory                                 bool

	// keyPairs are the certificates loaded by nodeConfig, reloaded on SIGHUP.
	keyPairs []*node.KeyPair
}

const usageHead = `dcnode: one node of a replicated distcache TLS session cache.

Clients speak the distcache protocol (and optionally memcache, Redis RESP and stunnel
sessiond) to any node; writes go through Raft, reads are served locally.

Try it (three nodes in one process, loopback only, throwaway data):
  dcnode -dev-cluster 3

One node per machine (run the same command on each, with its own addresses):
  dcnode -data-dir /var/lib/dcnode -listen IP:10.0.0.1:9100 \
         -raft-addr 10.0.0.1:9200 -gossip-addr 10.0.0.1:9300 \
         -bootstrap-expect 3 -join 10.0.0.2:9300,10.0.0.3:9300

Addresses: distcache listeners use the original syntax (IP:host:port, IP:port for all
interfaces, UNIX:/path); every other address is host:port. Defaults are loopback-only.

Flags:
`

func newFlagSet(o *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("dcnode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var(&o.listen, "listen", "distcache `address` to serve (repeatable; default IP:127.0.0.1:9100)")
	fs.Var(&o.memcache, "memcache-listen", "memcached text protocol `host:port` (repeatable; off by default)")
	fs.Var(&o.resp, "resp-listen", "Redis RESP2 `host:port` (repeatable; off by default)")
	fs.Var(&o.sessiond, "sessiond-listen", "stunnel sessiond UDP `host:port` (repeatable; off by default)")
	fs.Var(&o.join, "join", "gossip `addresses` of other nodes to join (comma-separated or repeated)")
	fs.StringVar(&o.nodeID, "node-id", "", "node `id` (default: generated once and kept in the data dir; never the hostname)")
	fs.StringVar(&o.dataDir, "data-dir", defaultDataDir, "`directory` for the Raft log, snapshots and node id")
	fs.StringVar(&o.raftAddr, "raft-addr", "127.0.0.1:9200", "cluster `host:port` for Raft and write forwarding")
	fs.StringVar(&o.gossipAddr, "gossip-addr", "127.0.0.1:9300", "gossip `host:port` (memberlist, TCP and UDP)")
	fs.StringVar(&o.adminAddr, "admin-addr", "127.0.0.1:9400", "admin HTTP `host:port` for dcctl, /metrics, /healthz, /readyz (\"\" disables)")
	fs.StringVar(&o.adminTokenFile, "admin-token-file", "", "`file` holding the token that mutating admin calls must present (required off loopback)")
	fs.IntVar(&o.bootstrapExpect, "bootstrap-expect", -1, "bootstrap a new cluster once `N` servers are seen (default: 1 without -join, 0 with it: join only)")
	fs.StringVar(&o.readConsistency, "read-consistency", string(node.ReadLeaderOnMiss), "`mode` of reads: local, leader-on-miss or linearizable")
	fs.IntVar(&o.sessions, "sessions", node.DefaultMaxSessions, "maximum number of sessions; beyond it the soonest to expire are evicted (`N`)")
	fs.StringVar(&o.maxBytes, "max-bytes", "1GiB", "maximum key+value `bytes` held (suffixes KiB, MiB, GiB)")
	fs.DurationVar(&o.writeTimeout, "write-timeout", node.DefaultWriteTimeout, "longest a write waits for the cluster before the client gets an error")
	fs.IntVar(&o.maxConns, "max-conns", node.DefaultMaxConns, "maximum concurrent client connections per listener (`N`)")
	fs.DurationVar(&o.readTimeout, "read-timeout", node.DefaultReadTimeout, "a request that has started to arrive must arrive completely within this (slowloris)")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", 0, "close client connections idle this long (0: never; Apache pools idle connections)")
	fs.IntVar(&o.maxValueSize, "max-value-size", node.DefaultMaxValueSize, "largest value the memcache and RESP front-ends accept, in `bytes` (at most 65536; distcache's framing fixes 32 KiB)")
	fs.IntVar(&o.progress, "progress", 0, "also print the activity line every `N` operations")
	fs.BoolVar(&o.quiet, "quiet", false, "no once-a-second activity line")
	fs.StringVar(&o.pidfile, "pidfile", "", "write the process id to `file`")
	fs.StringVar(&o.runAs, "user", "", "switch to this `user` after binding listeners")
	fs.StringVar(&o.sockOwner, "sockowner", "", "owner `user` of unix sockets")
	fs.StringVar(&o.sockGroup, "sockgroup", "", "`group` of unix sockets")
	fs.StringVar(&o.sockPerms, "sockperms", "", "octal `mode` of unix sockets, e.g. 660")
	fs.BoolVar(&o.killable, "killable", false, "exit cleanly on SIGUSR1/SIGUSR2 (otherwise ignored)")
	fs.BoolVar(&o.leaveOnTerminate, "leave-on-terminate", false, "on SIGTERM/SIGINT leave the cluster for good (removed from the Raft configuration) instead of stopping as a member that resumes when restarted; dcctl leave does this on demand")
	fs.BoolVar(&o.daemon, "daemon", false, "not supported: run dcnode under systemd or another supervisor")
	fs.BoolVar(&o.version, "version", false, "print the version (module version, VCS revision and time, Go toolchain) and exit")
	fs.IntVar(&o.devCluster, "dev-cluster", 0, "run `N` nodes in this process on loopback with throwaway data, for trying dcnode out")
	fs.StringVar(&o.logLevel, "log-level", "info", "`level`: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "`format`: text or json")
	fs.StringVar(&o.raftAdvertise, "raft-advertise", "", "`host:port` other nodes use to reach -raft-addr, if it differs (NAT, proxies)")
	fs.DurationVar(&o.heartbeat, "heartbeat-timeout", 0, "Raft heartbeat timeout (default 500ms, tuned for a LAN)")
	fs.DurationVar(&o.election, "election-timeout", 0, "Raft election timeout (default 500ms, tuned for a LAN)")
	fs.DurationVar(&o.lease, "leader-lease-timeout", 0, "Raft leader lease (default: half the heartbeat timeout)")
	fs.Uint64Var(&o.snapshotThreshold, "snapshot-threshold", 0, "take a snapshot after this many new log entries (default 16384)")
	fs.DurationVar(&o.snapshotInterval, "snapshot-interval", 0, "how often to check -snapshot-threshold (default 30s)")
	fs.Uint64Var(&o.trailingLogs, "trailing-logs", 0, "log entries kept after a snapshot, for followers that lag a little (default 10240)")
	fs.DurationVar(&o.deadServerTimeout, "dead-server-timeout", 0, "remove a failed server from the configuration after this long (default 0: never; never below a majority)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM `file` of this node's certificate for mutual TLS on the cluster port (with -tls-key and -tls-ca)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM `file` of the private key of -tls-cert")
	fs.StringVar(&o.clientTLSCert, "client-tls-cert", "", "PEM `file` of the certificate served to clients: the distcache (IP:), memcache and RESP listeners then speak TLS only (unix sockets and sessiond UDP stay plaintext)")
	fs.StringVar(&o.clientTLSKey, "client-tls-key", "", "PEM `file` of the private key of -client-tls-cert")
	fs.StringVar(&o.clientTLSCA, "client-tls-ca", "", "PEM `file` of a CA: clients must then present a certificate it signed")
	fs.StringVar(&o.gossipKey, "gossip-key", "", "base64 `key` of 16, 24 or 32 bytes encrypting gossip, or @FILE holding it (keeps it out of ps); same on every node; rotate with dcctl keyring, the ring is kept in the data dir")
	fs.StringVar(&o.dataKeyFile, "data-key-file", "", "`file` (mode 600) of lines id:base64-32-byte-key; session values in the Raft log and snapshots are sealed with the first, all open old data")
	fs.BoolVar(&o.inMemory, "in-memory", false, "keep the Raft log and snapshots in memory only: nothing at rest, but a restarted node rejoins as a new member with a fresh id (no -node-id)")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "PEM `file` of the CA that signs every node's cluster certificate; peers without one are refused")
	// On a parse error the flag package prints its message and calls Usage: a
	// one-line hint reads better there than the whole list.
	fs.Usage = func() { fmt.Fprintln(fs.Output(), "Run 'dcnode -help' for the list of flags.") }
	return fs
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := newFlagSet(&o, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fmt.Fprint(stdout, usageHead)
			fs.PrintDefaults()
			return exitOK
		}
		return exitUsage
	}
	if o.version {
		fmt.Fprintln(stdout, "dcnode", version.Get())
		return exitOK
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if err := o.validate(fs.Args(), set); err != nil {
		fmt.Fprintf(stderr, "dcnode: %v\n", err)
		return exitUsage
	}
	logger, err := newLogger(stderr, o.logLevel, o.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "dcnode: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go handleUSR(o.killable, stop, logger)
	if o.devCluster > 0 {
		return runDevCluster(ctx, o, stdout, logger)
	}
	return runNode(ctx, o, logger)
}

// validate rejects unknown positional arguments and contradictory flags with a
// message that says what to do instead.
func (o *options) validate(rest []string, set map[string]bool) error {
	if len(rest) > 0 {
		return fmt.Errorf("unexpected argument %q: every setting is a flag (see dcnode -help)", rest[0])
	}
	if o.daemon {
		return errors.New("-daemon is not supported: run dcnode in the foreground under systemd (Type=simple) or another supervisor")
	}
	if o.devCluster < 0 || o.devCluster > 9 {
		return errors.New("-dev-cluster takes 1 to 9 nodes")
	}
	if o.devCluster > 0 {
		for _, f := range []string{"listen", "memcache-listen", "resp-listen", "sessiond-listen", "join", "node-id", "raft-addr", "gossip-addr", "admin-addr", "bootstrap-expect", "pidfile", "user"} {
			if set[f] {
				return fmt.Errorf("-%s cannot be combined with -dev-cluster, which picks every address itself; drop one of them", f)
			}
		}
	}
	if o.sessions < 1 {
		return fmt.Errorf("-sessions must be at least 1, got %d", o.sessions)
	}
	if o.maxConns < 1 {
		return fmt.Errorf("-max-conns must be at least 1, got %d", o.maxConns)
	}
	if o.maxValueSize < 1 || o.maxValueSize > node.DefaultMaxValueSize {
		return fmt.Errorf("-max-value-size must be 1 to %d bytes, got %d", node.DefaultMaxValueSize, o.maxValueSize)
	}
	if o.readTimeout <= 0 || o.idleTimeout < 0 {
		return errors.New("-read-timeout must be positive and -idle-timeout 0 or positive")
	}
	if _, err := parseBytes(o.maxBytes); err != nil {
		return fmt.Errorf("-max-bytes: %w", err)
	}
	if _, err := node.ParseReadConsistency(o.readConsistency); err != nil {
		return fmt.Errorf("-read-consistency: %w", err)
	}
	if o.bootstrapExpect < -1 {
		return fmt.Errorf("-bootstrap-expect must be 0 or more, got %d", o.bootstrapExpect)
	}
	if o.bootstrapExpect == 1 && len(o.join) > 0 {
		return errors.New("-bootstrap-expect 1 with -join would start a second one-node cluster; to join an existing cluster drop -bootstrap-expect, to form a new one give the cluster size")
	}
	if o.sockPerms != "" {
		if _, err := strconv.ParseUint(o.sockPerms, 8, 32); err != nil {
			return fmt.Errorf("-sockperms %q is not an octal mode like 660", o.sockPerms)
		}
	}
	for _, a := range o.listen {
		if _, err := distcache.ParseAddress(a); err != nil {
			return fmt.Errorf("-listen %q: %w", a, err)
		}
	}
	if n := countSet(o.tlsCert, o.tlsKey, o.tlsCA); n != 0 && n != 3 {
		return errors.New("-tls-cert, -tls-key and -tls-ca go together: give all three for mutual TLS on the cluster port, or none")
	}
	if (o.clientTLSCert == "") != (o.clientTLSKey == "") || (o.clientTLSCA != "" && o.clientTLSCert == "") {
		return errors.New("-client-tls-cert and -client-tls-key go together (and -client-tls-ca needs them): give both for TLS on the client listeners, or none")
	}
	if o.inMemory && o.dataKeyFile != "" {
		return errors.New("-in-memory stores nothing at rest, so -data-key-file does not apply: choose one")
	}
	if o.inMemory && o.nodeID != "" {
		return errors.New("-in-memory cannot be combined with -node-id: an in-memory node must rejoin under a new id at every start (it has lost its log)")
	}
	if o.gossipKey != "" {
		if _, err := readGossipKey(o.gossipKey); err != nil {
			return fmt.Errorf("-gossip-key: %w (make one with: head -c32 /dev/urandom | base64)", err)
		}
	}
	if o.adminAddr != "" && o.adminTokenFile == "" && !isLoopback(o.adminAddr) {
		return fmt.Errorf("-admin-addr %s is not a loopback address: give -admin-token-file too, so that only operators can change the cluster", o.adminAddr)
	}
	return nil
}

// readGossipKey decodes -gossip-key: the base64 key itself, or @FILE.
func readGossipKey(v string) ([]byte, error) {
	if path, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		v = strings.TrimSpace(string(b))
	}
	return gossip.ParseKey(v)
}

// countSet counts the non-empty values.
func countSet(vals ...string) int {
	n := 0
	for _, v := range vals {
		if v != "" {
			n++
		}
	}
	return n
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseBytes reads sizes such as 1073741824, 512MiB or 1GiB.
func parseBytes(s string) (int64, error) {
	mult := int64(1)
	num := strings.TrimSpace(s)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000_000}, {"GB", 1000_000_000}, {"B", 1}} {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q is not a positive size like 512MiB", s)
	}
	return v * mult, nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: want text or json", format)
}

// handleUSR keeps the original's contract: SIGUSR1/SIGUSR2 are ignored unless
// -killable, in which case they stop the node cleanly.
func handleUSR(killable bool, stop context.CancelFunc, log *slog.Logger) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1, syscall.SIGUSR2)
	for sig := range ch {
		if killable {
			log.Info("stopping on signal", "signal", sig.String())
			stop()
			return
		}
		log.Debug("ignoring signal (see -killable)", "signal", sig.String())
	}
}

// nodeConfig maps flags onto a node configuration.
func (o *options) nodeConfig(logger *slog.Logger) (node.Config, error) {
	rc, _ := node.ParseReadConsistency(o.readConsistency)
	maxBytes, _ := parseBytes(o.maxBytes)
	listen := o.listen
	if len(listen) == 0 {
		listen = []string{"IP:127.0.0.1:9100"}
	}
	expect := o.bootstrapExpect
	if expect < 0 {
		expect = 0
		if len(o.join) == 0 {
			expect = 1
		}
	}
	cfg := node.Config{
		NodeID: o.nodeID, DataDir: o.dataDir, RaftAddr: o.raftAddr, GossipAddr: o.gossipAddr,
		Join: o.join, BootstrapExpect: expect, AdminAddr: o.adminAddr,
		Listen: listen, MemcacheListen: o.memcache, RESPListen: o.resp, SessiondListen: o.sessiond,
		ReadConsistency: rc, MaxSessions: o.sessions, MaxBytes: maxBytes, WriteTimeout: o.writeTimeout,
		Progress: o.progress, ProgressLines: !o.quiet, Logger: logger,
		Limits: node.ClientLimits{MaxConns: o.maxConns, ReadTimeout: o.readTimeout, IdleTimeout: o.idleTimeout, MaxValueSize: o.maxValueSize},
	}
	cfg.Tune.AdvertiseRaftAddr = o.raftAdvertise
	cfg.Tune.HeartbeatTimeout = o.heartbeat
	cfg.Tune.ElectionTimeout = o.election
	cfg.Tune.LeaderLeaseTimeout = o.lease
	cfg.Tune.SnapshotThreshold = o.snapshotThreshold
	cfg.Tune.SnapshotInterval = o.snapshotInterval
	cfg.Tune.TrailingLogs = o.trailingLogs
	cfg.Tune.DeadServerTimeout = o.deadServerTimeout
	sock, err := socketOptions(o.sockOwner, o.sockGroup, o.sockPerms)
	if err != nil {
		return cfg, err
	}
	cfg.Socket = sock
	cfg.Tune.InMemory = o.inMemory
	if o.gossipKey != "" {
		key, err := readGossipKey(o.gossipKey)
		if err != nil {
			return cfg, err
		}
		cfg.Tune.GossipKeys = [][]byte{key}
	}
	if o.dataKeyFile != "" {
		if cfg.Tune.DataKeys, err = atrest.LoadDataKeyFile(o.dataKeyFile); err != nil {
			return cfg, err
		}
	}
	if o.clientTLSCert != "" {
		var kp *node.KeyPair
		if cfg.ClientTLS, kp, err = node.ClientTLS(o.clientTLSCert, o.clientTLSKey, o.clientTLSCA); err != nil {
			return cfg, err
		}
		o.keyPairs = append(o.keyPairs, kp)
	}
	if o.tlsCert != "" {
		var kp *node.KeyPair
		if cfg.Tune.TLS, kp, err = node.ClusterTLS(o.tlsCert, o.tlsKey, o.tlsCA); err != nil {
			return cfg, err
		}
		o.keyPairs = append(o.keyPairs, kp)
	}
	if o.adminTokenFile != "" {
		b, err := os.ReadFile(o.adminTokenFile)
		if err != nil {
			return cfg, fmt.Errorf("admin token: %w", err)
		}
		cfg.AdminToken = strings.TrimSpace(string(b))
		if cfg.AdminToken == "" {
			return cfg, fmt.Errorf("admin token file %s is empty", o.adminTokenFile)
		}
	}
	return cfg, nil
}

func runNode(ctx context.Context, o options, logger *slog.Logger) int {
	cfg, err := o.nodeConfig(logger)
	if err != nil {
		logger.Error("invalid configuration", "err", err)
		return exitUsage
	}
	if !cfg.Tune.InMemory {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			logger.Error("cannot create the data directory", "dir", cfg.DataDir, "err", err)
			return exitFail
		}
	}
	warnInsecure(o, cfg, logger)
	n, err := node.Start(ctx, cfg)
	if err != nil {
		logger.Error("cannot start", "err", err)
		return exitFail
	}
	if o.runAs != "" {
		if err := dropPrivileges(o.runAs); err != nil {
			logger.Error("cannot switch user", "user", o.runAs, "err", err)
			n.Close(context.Background())
			return exitFail
		}
	}
	if len(o.keyPairs) > 0 {
		go reloadOnHUP(ctx, o.keyPairs, logger)
	}
	if o.pidfile != "" {
		if err := os.WriteFile(o.pidfile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			logger.Error("cannot write pidfile", "file", o.pidfile, "err", err)
			n.Close(context.Background())
			return exitFail
		}
		defer os.Remove(o.pidfile)
	}
	leave := false
	select {
	case <-ctx.Done():
		leave = o.leaveOnTerminate
		if leave {
			logger.Info("shutting down and leaving the cluster (-leave-on-terminate)")
		} else {
			logger.Info("shutting down; staying a member of the cluster (dcctl leave departs for good)")
		}
	case <-n.LeaveRequested(): // it has left already
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if leave {
		if err := n.Leave(sctx); err != nil {
			logger.Warn("could not leave the cluster; stopping as a member", "err", err)
		}
	}
	if err := n.Close(sctx); err != nil {
		logger.Error("unclean shutdown", "err", err)
		return exitFail
	}
	logger.Info("stopped")
	return exitOK
}

// reloadOnHUP re-reads the TLS certificates and keys on SIGHUP (renewal
// without a restart); a file that fails to load keeps the previous one.
func reloadOnHUP(ctx context.Context, kps []*node.KeyPair, log *slog.Logger) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		failed := 0
		for _, kp := range kps {
			if err := kp.Reload(); err != nil {
				log.Error("certificate reload failed; keeping the previous one", "err", err)
				failed++
			}
		}
		log.Info("certificates reloaded on SIGHUP", "reloaded", len(kps)-failed, "failed", failed)
	}
}

// warnInsecure logs, once at start, each protection a node reachable from
// other machines runs without. Loopback-only nodes (tests, trials) stay quiet.
func warnInsecure(o options, cfg node.Config, logger *slog.Logger) {
	if isLoopback(o.raftAddr) && isLoopback(o.gossipAddr) && (o.raftAdvertise == "" || isLoopback(o.raftAdvertise)) {
		return
	}
	if cfg.Tune.TLS == nil {
		logger.Warn("cluster traffic (Raft log with session values, forwarded writes) is plaintext: give -tls-cert, -tls-key and -tls-ca")
	}
	if len(cfg.Tune.GossipKeys) == 0 {
		logger.Warn("gossip is not encrypted unless a keyring file exists in the data dir: give -gossip-key")
	}
	if !cfg.Tune.InMemory && len(cfg.Tune.DataKeys) == 0 {
		logger.Warn("session values are stored in plaintext in the Raft log and snapshots: give -data-key-file, or run -in-memory", "dir", cfg.DataDir)
	}
}

// socketOptions maps -sockowner, -sockgroup and -sockperms (names or numeric ids are
// resolved by the listener).
func socketOptions(owner, group, perms string) (distcache.ListenOptions, error) {
	lo := distcache.ListenOptions{Owner: owner, Group: group}
	if perms != "" {
		m, err := strconv.ParseUint(perms, 8, 32)
		if err != nil {
			return lo, fmt.Errorf("-sockperms %q is not an octal mode", perms)
		}
		lo.Perm = os.FileMode(m)
	}
	return lo, nil
}

// dropPrivileges switches to the given user after the listeners exist, as the
// original's -user did (it also changes the group, which the original forgot).
func dropPrivileges(name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	return nil
}

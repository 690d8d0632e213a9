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
	"github.com/distcache-replicated/distcache/ticketkeys"
)

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
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

// run is the whole program: settings from args (after the program name), the
// environment (environ, as os.Environ) and the config file; then the node or the
// dev cluster until a signal. It returns the exit status.
func run(args, environ []string, stdout, stderr io.Writer) int {
	var o options
	if err := o.load(args, environ); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			o.printHelp(stdout)
			return exitOK
		}
		fmt.Fprintf(stderr, "dcnode: %v\nRun 'dcnode -help' for the list of settings.\n", err)
		return exitUsage
	}
	if o.version {
		fmt.Fprintln(stdout, "dcnode", version.Get())
		return exitOK
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "dcnode: %v\n", err)
		return exitUsage
	}
	if o.printConfig {
		if err := o.writeConfig(stdout); err != nil {
			fmt.Fprintf(stderr, "dcnode: %v\n", err)
			return exitFail
		}
		return exitOK
	}
	logger := newLogger(stderr, o.logLevel, o.logFormat)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go handleUSR(o.killable, stop, logger)
	gcPolicyFor(environ, o.maxBytes, o.sessions, max(1, o.devCluster)).apply(logger)
	if o.devCluster > 0 {
		return runDevCluster(ctx, o, stdout, logger)
	}
	return runNode(ctx, o, environ, logger)
}

// validate rejects contradictory settings with a message that says what to do
// instead; each value alone was checked as it was read (see values.go). Settings
// are named as the operator gave them (flag, variable or config line).
func (o *options) validate() error {
	l := func(name string) string { return o.lookup(name).label() }
	if o.daemon {
		return fmt.Errorf("%s is not supported: run dcnode in the foreground under systemd (Type=simple) or another supervisor", l("daemon"))
	}
	if o.devCluster > 0 {
		for _, f := range []string{"listen", "memcache-listen", "resp-listen", "sessiond-listen", "join", "node-id", "raft-addr", "gossip-addr", "admin-addr", "bootstrap-expect", "pidfile", "user", "ticket-dir"} {
			if o.given(f) {
				return fmt.Errorf("%s cannot be combined with %s, which picks every address itself; drop one of them", l(f), l("dev-cluster"))
			}
		}
	}
	if len(o.listen) == 0 {
		return fmt.Errorf("%s is empty: give at least one distcache address, e.g. IP:127.0.0.1:9100", l("listen"))
	}
	if o.bootstrapExpect == 1 && len(o.join) > 0 {
		return fmt.Errorf("%s 1 with %s would start a second one-node cluster; to join an existing cluster drop %s, to form a new one give the cluster size", l("bootstrap-expect"), l("join"), l("bootstrap-expect"))
	}
	if n := countSet(o.tlsCert, o.tlsKey, o.tlsCA); n != 0 && n != 3 {
		return errors.New("-tls-cert, -tls-key and -tls-ca go together: give all three for mutual TLS on the cluster port, or none")
	}
	if (o.clientTLSCert == "") != (o.clientTLSKey == "") || (o.clientTLSCA != "" && o.clientTLSCert == "") {
		return errors.New("-client-tls-cert and -client-tls-key go together (and -client-tls-ca needs them): give both for TLS on the client listeners, or none")
	}
	if o.inMemory && o.dataKeyFile != "" {
		return fmt.Errorf("%s stores nothing at rest, so %s does not apply: choose one", l("in-memory"), l("data-key-file"))
	}
	if o.inMemory && o.nodeID != "" {
		return fmt.Errorf("%s cannot be combined with %s: an in-memory node must rejoin under a new id at every start (it has lost its log)", l("in-memory"), l("node-id"))
	}
	for _, s := range o.settings {
		path, isFile := s.value.String(), s.secretFile
		if s.secret {
			path, isFile = strings.CutPrefix(path, "@") // a secret given as @FILE
		}
		if isFile && path != "" {
			if err := checkSecretFile(s.label(), path); err != nil {
				return err
			}
		}
	}
	if o.gossipKey != "" {
		if _, err := readGossipKey(o.gossipKey); err != nil {
			return fmt.Errorf("%s: %w (make one with: head -c32 /dev/urandom | base64)", l("gossip-key"), err)
		}
	}
	if err := o.validateTickets(); err != nil {
		return err
	}
	if o.adminAddr != "" && o.adminTokenFile == "" && !isLoopback(o.adminAddr) {
		return fmt.Errorf("%s %s is not a loopback address: give -admin-token-file too, so that only operators can change the cluster", l("admin-addr"), o.adminAddr)
	}
	return nil
}

// validateTickets checks the ticket key settings together: the outputs need
// -ticket-dir, and -ticket-dir needs to know what to write.
func (o *options) validateTickets() error {
	l := func(name string) string { return o.lookup(name).label() }
	if o.ticketRotate > 0 && o.ticketRotate < time.Second {
		return fmt.Errorf("%s %v: want 0 (off) or at least 1s", l("ticket-rotate"), o.ticketRotate)
	}
	if o.ticketDir == "" {
		for _, f := range []string{"ticket-formats", "ticket-nginx-keys", "ticket-owner", "ticket-reload", "ticket-reload-timeout", "ticket-haproxy-socket"} {
			if o.given(f) {
				return fmt.Errorf("%s needs %s, the directory the ticket keys are written to", l(f), l("ticket-dir"))
			}
		}
		return nil
	}
	if o.ticketFormats == "" {
		return fmt.Errorf("%s needs %s: the servers on this host (nginx, haproxy, apache, go)", l("ticket-dir"), l("ticket-formats"))
	}
	if o.ticketHAProxySocket != "" && !strings.Contains(o.ticketFormats, string(ticketkeys.HAProxy)) {
		return fmt.Errorf("%s needs haproxy in %s: HAProxy loads haproxy.keys when it starts", l("ticket-haproxy-socket"), l("ticket-formats"))
	}
	return nil
}

// ticketOutput maps the ticket settings onto the node's outputs; nil without
// -ticket-dir. Each value was checked as it was read.
func (o *options) ticketOutput() (*ticketkeys.Config, error) {
	if o.ticketDir == "" {
		return nil, nil
	}
	formats, err := ticketkeys.ParseFormats(o.ticketFormats)
	if err != nil {
		return nil, err
	}
	out := &ticketkeys.Config{
		Dir: o.ticketDir, Formats: formats, NginxKeys: o.ticketNginxKeys,
		Reload: o.ticketReload, ReloadTimeout: o.ticketReloadTimeout, HAProxySocket: o.ticketHAProxySocket,
	}
	if o.ticketOwner != "" {
		if out.Owner, err = ticketkeys.ParseOwner(o.ticketOwner); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// checkSecretFile refuses a file of secrets that its group or others may read:
// a key or token there is as good as published on a shared machine.
func checkSecretFile(label, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s %s has mode %04o: its group or others can read the secret in it; run: chmod 600 %s", label, path, perm, path)
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

// newLogger builds the process's logger; -log-level and -log-format were
// checked when they were read.
func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
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
		Listen: o.listen, MemcacheListen: o.memcache, RESPListen: o.resp, SessiondListen: o.sessiond,
		ReadConsistency: rc, MaxSessions: o.sessions, MaxBytes: o.maxBytes, WriteTimeout: o.writeTimeout,
		Progress: o.progress, ProgressLines: !o.quiet, Logger: logger,
		Limits: node.ClientLimits{MaxConns: o.maxConns, ReadTimeout: o.readTimeout, IdleTimeout: o.idleTimeout, MaxValueSize: o.maxValueSize},
	}
	cfg.Tune.AdvertiseRaftAddr = o.raftAdvertise
	cfg.Tune.HeartbeatTimeout = o.heartbeat
	cfg.Tune.ElectionTimeout = o.election
	cfg.Tune.LeaderLeaseTimeout = o.lease
	cfg.Tune.CommitTimeout = o.commitTimeout
	cfg.Tune.LogStore = o.logStore
	cfg.Tune.SnapshotThreshold = o.snapshotThreshold
	cfg.Tune.SnapshotInterval = o.snapshotInterval
	cfg.Tune.TrailingLogs = o.trailingLogs
	cfg.Tune.DeadServerTimeout = o.deadServerTimeout
	cfg.Tune.ReadyMaxLag = o.readyMaxLag
	sock, err := socketOptions(o.sockOwner, o.sockGroup, o.sockPerms)
	if err != nil {
		return cfg, err
	}
	cfg.Socket = sock
	cfg.Tune.InMemory = o.inMemory
	cfg.Tickets = node.TicketConfig{Rotate: o.ticketRotate, Lifetime: o.ticketLifetime}
	if cfg.Tickets.Output, err = o.ticketOutput(); err != nil {
		return cfg, err
	}
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

// runNode runs one node until ctx ends or it has left; environ (as os.Environ)
// may name systemd's notification socket.
func runNode(ctx context.Context, o options, environ []string, logger *slog.Logger) int {
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
	// Always: SIGHUP's default action ends the process, and the packaged
	// unit's ExecReload (systemctl reload) sends it.
	reloadOnHUP(ctx, o.keyPairs, logger)
	if o.pidfile != "" {
		if err := os.WriteFile(o.pidfile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			logger.Error("cannot write pidfile", "file", o.pidfile, "err", err)
			n.Close(context.Background())
			return exitFail
		}
		defer os.Remove(o.pidfile)
	}
	sd, err := newNotifier(environ, os.Getpid())
	if err != nil {
		logger.Warn("cannot notify systemd; continuing without", "err", err)
	}
	defer sd.close()
	nctx, stopNotify := context.WithCancel(ctx)
	notifyDone := make(chan struct{})
	go func() { sd.run(nctx, n, logger); close(notifyDone) }()
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
	stopNotify() // no status of a node being closed
	<-notifyDone
	sd.report(sd.send("STOPPING=1\nSTATUS=stopping"), logger)
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
// without a restart); a file that fails to load keeps the previous one. It
// catches SIGHUP before it returns, and until ctx ends, even with no
// certificates to reload: a reload must never stop the node.
func reloadOnHUP(ctx context.Context, kps []*node.KeyPair, log *slog.Logger) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
			if len(kps) == 0 {
				log.Info("SIGHUP: nothing to reload (no TLS certificates configured)")
				continue
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
	}()
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

package main

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/distcache-replicated/distcache/fsm"
	"github.com/distcache-replicated/distcache/node"
	"github.com/distcache-replicated/distcache/protocol/distcache"
	"github.com/distcache-replicated/distcache/ticketkeys"
)

// options is dcnode's configuration once every source has been read. Its
// fields are bound to settings by registry; nothing else sets them (except
// runDevCluster, which derives each node's copy).
type options struct {
	listen, memcache, resp, sessiond, join []string

	nodeID, dataDir, raftAddr, gossipAddr, adminAddr, adminTokenFile string
	bootstrapExpect                                                  int
	readConsistency                                                  string
	sessions                                                         int
	maxBytes                                                         int64
	writeTimeout                                                     time.Duration
	progress                                                         int
	quiet                                                            bool
	pidfile, runAs                                                   string
	sockOwner, sockGroup, sockPerms                                  string
	killable, daemon, leaveOnTerminate                               bool
	devCluster                                                       int
	logLevel, logFormat                                              string

	raftAdvertise                       string
	heartbeat, election, lease          time.Duration
	commitTimeout                       time.Duration
	logStore                            string
	snapshotThreshold, trailingLogs     uint64
	snapshotInterval, deadServerTimeout time.Duration
	readyMaxLag                         time.Duration

	maxConns, maxValueSize   int
	readTimeout, idleTimeout time.Duration

	tlsCert, tlsKey, tlsCA                   string
	clientTLSCert, clientTLSKey, clientTLSCA string
	gossipKey, dataKeyFile                   string
	inMemory                                 bool

	ticketRotate, ticketLifetime, ticketReloadTimeout   time.Duration
	ticketDir, ticketFormats, ticketOwner, ticketReload string
	ticketHAProxySocket                                 string
	ticketNginxKeys                                     int

	configFile  string
	printConfig bool
	version     bool

	// settings are the registry bound to this value's fields, with where each
	// value came from (see load).
	settings []*setting

	// keyPairs are the certificates loaded by nodeConfig, reloaded on SIGHUP.
	keyPairs []*node.KeyPair
}

// defaultDataDir is -data-dir's default; -dev-cluster uses a temporary
// directory unless the operator changed it.
const defaultDataDir = "dcnode-data"

// Groups of settings, in the order -help and the README list them.
const (
	groupClients  = "Client listeners"
	groupCluster  = "Cluster"
	groupSessions = "Sessions"
	groupSecurity = "Security"
	groupTickets  = "TLS session-ticket keys"
	groupRaft     = "Raft tuning"
	groupProcess  = "Process"
)

var groupOrder = []string{groupClients, groupCluster, groupSessions, groupSecurity, groupTickets, groupRaft, groupProcess}

// registry is the one place where dcnode's settings are declared: each entry
// yields the flag, the DCNODE_* environment variable, the config-file key, the
// default, the -help line and the README's row. To add a setting, add a field
// to options and one entry here (see doc.go).
func (o *options) registry() []*setting {
	readConsistencies := []string{string(node.ReadLocal), string(node.ReadLeaderOnMiss), string(node.ReadLinearizable)}
	return []*setting{
		// Client listeners.
		{name: "listen", group: groupClients, example: "IP:10.0.0.1:9100",
			value: newListValue(&o.listen, []string{"IP:127.0.0.1:9100"}, parses(distcache.ParseAddress)),
			usage: "distcache `address` to serve, repeatable or comma-separated: IP:host:port, IP:port (all interfaces) or UNIX:/path"},
		{name: "memcache-listen", group: groupClients, example: "127.0.0.1:9500",
			value: newListValue(&o.memcache, nil, checkHostPort),
			usage: "memcached text protocol `host:port` (repeatable; off by default)"},
		{name: "resp-listen", group: groupClients, example: "127.0.0.1:9600",
			value: newListValue(&o.resp, nil, checkHostPort),
			usage: "Redis RESP2 `host:port` (repeatable; off by default)"},
		{name: "sessiond-listen", group: groupClients, example: "127.0.0.1:9700",
			value: newListValue(&o.sessiond, nil, checkHostPort),
			usage: "stunnel sessiond UDP `host:port` (repeatable; off by default)"},
		{name: "sockowner", group: groupClients, example: "dcnode", value: stringValue{p: &o.sockOwner},
			usage: "owner `user` of unix sockets"},
		{name: "sockgroup", group: groupClients, example: "www-data", value: stringValue{p: &o.sockGroup},
			usage: "`group` of unix sockets"},
		{name: "sockperms", group: groupClients, example: "660", value: stringValue{p: &o.sockPerms, check: optional(checkOctalMode)},
			usage: "octal `mode` of unix sockets"},
		{name: "max-conns", group: groupClients, example: "4096", value: intValue{p: setInt(&o.maxConns, node.DefaultMaxConns), min: 1, max: int(maxInt)},
			usage: "maximum concurrent client `connections` per listener"},
		{name: "read-timeout", group: groupClients, example: "10s", value: durationValue{p: setDuration(&o.readTimeout, node.DefaultReadTimeout), min: time.Millisecond},
			usage: "a request that has started to arrive must arrive completely within this `duration` (slowloris)"},
		{name: "idle-timeout", group: groupClients, example: "10m", value: durationValue{p: &o.idleTimeout},
			usage: "close client connections idle this `duration` (0: never; Apache pools idle connections)"},
		{name: "max-value-size", group: groupClients, example: "65536",
			value: intValue{p: setInt(&o.maxValueSize, node.DefaultMaxValueSize), min: 1, max: node.DefaultMaxValueSize},
			usage: "largest value the memcache and RESP front-ends accept, in `bytes` (distcache's framing fixes 32 KiB)"},

		// Cluster.
		{name: "node-id", group: groupCluster, example: "node1", value: stringValue{p: &o.nodeID},
			usage: "node `id` (default: generated once and kept in the data dir; never the hostname)"},
		{name: "data-dir", group: groupCluster, example: "/var/lib/dcnode", value: stringValue{p: setString(&o.dataDir, defaultDataDir), check: nonEmpty},
			usage: "`directory` for the Raft log, snapshots and node id"},
		{name: "raft-addr", group: groupCluster, example: "10.0.0.1:9200", value: stringValue{p: setString(&o.raftAddr, "127.0.0.1:9200"), check: checkHostPort},
			usage: "cluster `host:port` for Raft and write forwarding"},
		{name: "raft-advertise", group: groupCluster, example: "203.0.113.7:9200", value: stringValue{p: &o.raftAdvertise, check: optional(checkHostPort)},
			usage: "`host:port` other nodes use to reach -raft-addr, if it differs (NAT, proxies)"},
		{name: "gossip-addr", group: groupCluster, example: "10.0.0.1:9300", value: stringValue{p: setString(&o.gossipAddr, "127.0.0.1:9300"), check: checkHostPort},
			usage: "gossip `host:port` (memberlist, TCP and UDP)"},
		{name: "join", group: groupCluster, example: "10.0.0.2:9300,10.0.0.3:9300", value: newListValue(&o.join, nil, checkHostPort),
			usage: "gossip `addresses` of other nodes to join (comma-separated or repeated)"},
		{name: "bootstrap-expect", group: groupCluster, example: "3", value: intValue{p: setInt(&o.bootstrapExpect, -1), min: -1, max: int(maxInt)},
			usage: "bootstrap a new cluster once `N` servers are seen (-1: 1 without -join, 0 with it, i.e. join only)"},
		{name: "admin-addr", group: groupCluster, example: "127.0.0.1:9400", value: stringValue{p: setString(&o.adminAddr, "127.0.0.1:9400"), check: optional(checkHostPort)},
			usage: "admin HTTP `host:port` for dcctl, /metrics, /healthz, /readyz (\"\" disables)"},
		{name: "leave-on-terminate", group: groupCluster, value: boolValue{&o.leaveOnTerminate},
			usage: "on SIGTERM/SIGINT leave the cluster for good (removed from the Raft configuration) instead of stopping as a member that resumes when restarted; dcctl leave does this on demand"},
		{name: "in-memory", group: groupCluster, value: boolValue{&o.inMemory},
			usage: "keep the Raft log and snapshots in memory only: nothing at rest, but a restarted node rejoins as a new member with a fresh id (no -node-id)"},

		// Sessions.
		{name: "sessions", group: groupSessions, example: "1000000", value: intValue{p: setInt(&o.sessions, node.DefaultMaxSessions), min: 1, max: int(maxInt)},
			usage: "maximum number of sessions (`N`); beyond it the soonest to expire are evicted (at 200 bytes a session, 1M take about 300 MB)"},
		{name: "max-bytes", group: groupSessions, example: "512MiB", value: bytesValue{setInt64(&o.maxBytes, node.DefaultMaxBytes)},
			usage: "maximum key+value `bytes` held, evicting the same way (suffixes KiB, MiB, GiB)"},
		{name: "read-consistency", group: groupSessions, example: "linearizable",
			value: stringValue{p: setString(&o.readConsistency, string(node.ReadLeaderOnMiss)), check: oneOf(readConsistencies...)},
			usage: "`mode` of reads: local (pure local reads), leader-on-miss (a local miss is re-asked of the leader) or linearizable (a quorum round trip per read, never stale)"},
		{name: "write-timeout", group: groupSessions, example: "2s", value: durationValue{p: setDuration(&o.writeTimeout, node.DefaultWriteTimeout), min: time.Millisecond},
			usage: "longest a write waits for the cluster (`duration`) before the client gets the protocol's error"},

		// Security.
		{name: "tls-cert", group: groupSecurity, example: "/etc/distcache/node1.pem", value: stringValue{p: &o.tlsCert},
			usage: "PEM `file` of this node's certificate for mutual TLS on the cluster port (with -tls-key and -tls-ca)"},
		{name: "tls-key", group: groupSecurity, example: "/etc/distcache/node1.key", value: stringValue{p: &o.tlsKey}, secretFile: true,
			usage: "PEM `file` of the private key of -tls-cert (mode 600)"},
		{name: "tls-ca", group: groupSecurity, example: "/etc/distcache/ca.pem", value: stringValue{p: &o.tlsCA},
			usage: "PEM `file` of the CA that signs every node's cluster certificate; peers without one are refused"},
		{name: "client-tls-cert", group: groupSecurity, example: "/etc/distcache/client.pem", value: stringValue{p: &o.clientTLSCert},
			usage: "PEM `file` of the certificate served to clients: the distcache (IP:), memcache and RESP listeners then speak TLS only (unix sockets and sessiond UDP stay plaintext)"},
		{name: "client-tls-key", group: groupSecurity, example: "/etc/distcache/client.key", value: stringValue{p: &o.clientTLSKey}, secretFile: true,
			usage: "PEM `file` of the private key of -client-tls-cert (mode 600)"},
		{name: "client-tls-ca", group: groupSecurity, example: "/etc/distcache/clients-ca.pem", value: stringValue{p: &o.clientTLSCA},
			usage: "PEM `file` of a CA: clients must then present a certificate it signed"},
		{name: "gossip-key", group: groupSecurity, example: "@/etc/distcache/gossip.key", value: stringValue{p: &o.gossipKey}, secret: true,
			usage: "base64 `key` of 16, 24 or 32 bytes encrypting gossip, or @FILE holding it (mode 600; keeps it out of ps); same on every node; rotate with dcctl keyring, the ring is kept in the data dir"},
		{name: "data-key-file", group: groupSecurity, example: "/etc/distcache/data.keys", value: stringValue{p: &o.dataKeyFile}, secretFile: true,
			usage: "`file` (mode 600) of lines id:base64-32-byte-key; session values in the Raft log and snapshots are sealed with the first, all open old data"},
		{name: "admin-token-file", group: groupSecurity, example: "/etc/distcache/admin.token", value: stringValue{p: &o.adminTokenFile}, secretFile: true,
			usage: "`file` (mode 600) holding the token that mutating admin calls must present (required off loopback)"},

		// TLS session-ticket keys.
		{name: "ticket-rotate", group: groupTickets, example: "1h", value: durationValue{p: &o.ticketRotate},
			usage: "rotate the session-ticket keys every `duration`, on the leader, counted from the last rotation (0: only by dcctl tickets rotate)"},
		{name: "ticket-lifetime", group: groupTickets, example: "25h", value: durationValue{p: setDuration(&o.ticketLifetime, node.DefaultTicketLifetime), min: time.Second},
			usage: "keep a key this `duration` after it stopped encrypting: the servers' ticket lifetime plus the time they take to pick up a rotation"},
		{name: "ticket-dir", group: groupTickets, example: "/run/dcnode/tickets", value: stringValue{p: &o.ticketDir},
			usage: "`directory` where this node writes the ticket keys for the TLS servers on its host (created 0711; files 0600)"},
		{name: "ticket-formats", group: groupTickets, example: "nginx,go", value: stringValue{p: &o.ticketFormats, check: optional(parses(ticketkeys.ParseFormats))},
			usage: "`formats` to write in -ticket-dir: nginx (nginx.1.key..N, 1 encrypts), haproxy (haproxy.keys), apache (apache.key), go (go.keys, for tlscache)"},
		{name: "ticket-nginx-keys", group: groupTickets, example: "4", value: intValue{p: setInt(&o.ticketNginxKeys, ticketkeys.DefaultNginxKeys), min: 2, max: fsm.MaxTicketKeys},
			usage: "number of nginx key `files`, one ssl_session_ticket_key directive each (current, next, then past keys)"},
		{name: "ticket-owner", group: groupTickets, example: "www-data:www-data", value: stringValue{p: &o.ticketOwner, check: optional(parses(ticketkeys.ParseOwner))},
			usage: "`user[:group]` owning the ticket key files (default: the node's user; another user needs dcnode to run as root, without -user)"},
		{name: "ticket-reload", group: groupTickets, example: "nginx -s reload", value: stringValue{p: &o.ticketReload},
			usage: "shell `command` run after the ticket key files changed (it gets DISTCACHE_TICKET_GENERATION and DISTCACHE_TICKET_DIR)"},
		{name: "ticket-reload-timeout", group: groupTickets, example: "30s", value: durationValue{p: setDuration(&o.ticketReloadTimeout, ticketkeys.DefaultReloadTimeout), min: time.Millisecond},
			usage: "longest -ticket-reload may run (`duration`) before it is killed"},
		{name: "ticket-haproxy-socket", group: groupTickets, example: "/run/haproxy/admin.sock", value: stringValue{p: &o.ticketHAProxySocket},
			usage: "HAProxy runtime API (unix socket `path` or host:port, admin level): push the keys there, with no reload"},

		// Raft tuning.
		{name: "heartbeat-timeout", group: groupRaft, example: "500ms", value: durationValue{p: &o.heartbeat},
			usage: "Raft heartbeat timeout (`duration`; 0: 500ms, tuned for a LAN)"},
		{name: "election-timeout", group: groupRaft, example: "500ms", value: durationValue{p: &o.election},
			usage: "Raft election timeout (`duration`; 0: 500ms, tuned for a LAN)"},
		{name: "leader-lease-timeout", group: groupRaft, example: "250ms", value: durationValue{p: &o.lease},
			usage: "Raft leader lease (`duration`; 0: half the heartbeat timeout)"},
		{name: "commit-timeout", group: groupRaft, example: "50ms", value: durationValue{p: &o.commitTimeout},
			usage: "how often the leader tells idle followers the commit index (`duration`; 0: 50ms): how long a follower's replica may trail once writes stop, never the latency of a write"},
		{name: "log-store", group: groupRaft, example: "wal",
			value: stringValue{p: &o.logStore, check: optional(oneOf("wal", "bolt"))},
			usage: "Raft log `store`: wal (raft-wal, one fsync per batch) or bolt (raft-boltdb); default: what the data dir holds, wal for a new one"},
		{name: "snapshot-threshold", group: groupRaft, example: "16384", value: uint64Value{&o.snapshotThreshold},
			usage: "take a snapshot after this many new log entries (`N`; 0: 16384)"},
		{name: "snapshot-interval", group: groupRaft, example: "30s", value: durationValue{p: &o.snapshotInterval},
			usage: "how often to check -snapshot-threshold (`duration`; 0: 30s)"},
		{name: "trailing-logs", group: groupRaft, example: "10240", value: uint64Value{&o.trailingLogs},
			usage: "log entries kept after a snapshot, for followers that lag a little (`N`; 0: 10240)"},
		{name: "dead-server-timeout", group: groupRaft, example: "72h", value: durationValue{p: &o.deadServerTimeout},
			usage: "remove a failed server from the configuration after this long (`duration`; 0: never; never below a majority)"},

		// Process.
		{name: "log-level", group: groupProcess, example: "debug", value: stringValue{p: setString(&o.logLevel, "info"), check: oneOf("debug", "info", "warn", "error")},
			usage: "`level`: debug, info, warn or error"},
		{name: "ready-max-lag", group: groupProcess, example: "3s", value: durationValue{p: &o.readyMaxLag},
			usage: "how long /readyz (and systemd readiness) allows this node to take to apply what the leader has committed before it says not ready (`duration`; 0: 1s)"},
		{name: "log-format", group: groupProcess, example: "json", value: stringValue{p: setString(&o.logFormat, "text"), check: oneOf("text", "json")},
			usage: "`format`: text or json"},
		{name: "quiet", group: groupProcess, value: boolValue{&o.quiet},
			usage: "no once-a-second activity line"},
		{name: "progress", group: groupProcess, example: "10000", value: intValue{p: &o.progress, min: 0, max: int(maxInt)},
			usage: "also print the activity line every `N` operations (0: off)"},
		{name: "pidfile", group: groupProcess, example: "/run/dcnode/dcnode.pid", value: stringValue{p: &o.pidfile},
			usage: "write the process id to `file`"},
		{name: "user", group: groupProcess, example: "dcnode", value: stringValue{p: &o.runAs},
			usage: "switch to this `user` after binding listeners"},
		{name: "killable", group: groupProcess, value: boolValue{&o.killable},
			usage: "exit cleanly on SIGUSR1/SIGUSR2 (otherwise ignored)"},
		{name: "daemon", group: groupProcess, value: boolValue{&o.daemon},
			usage: "not supported: run dcnode under systemd or another supervisor"},
		{name: "dev-cluster", group: groupProcess, example: "3", value: intValue{p: &o.devCluster, min: 0, max: 9},
			usage: "run `N` (1 to 9) nodes in this process on loopback with throwaway data, for trying dcnode out"},
		{name: "config", group: groupProcess, example: "/etc/distcache/dcnode.conf", value: stringValue{p: &o.configFile}, from: fromFlag | fromEnv,
			usage: "read settings from this `file` of name = value lines (see below)"},
		{name: "print-config", group: groupProcess, value: boolValue{&o.printConfig}, from: fromFlag,
			usage: "print the effective configuration, each setting with where it came from, and exit"},
		{name: "version", group: groupProcess, value: boolValue{&o.version}, from: fromFlag,
			usage: "print the version (module version, VCS revision and time, Go toolchain) and exit"},
	}
}

func setInt(p *int, v int) *int                                    { *p = v; return p }
func setInt64(p *int64, v int64) *int64                            { *p = v; return p }
func setString(p *string, v string) *string                        { *p = v; return p }
func setDuration(p *time.Duration, v time.Duration) *time.Duration { *p = v; return p }

// Checks of single values shared by several settings.

func checkHostPort(s string) error {
	if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
		return errors.New("not a host:port address")
	}
	return nil
}

// parses checks a value with the parser that will read it (an address, a list
// of formats, a user), so the check and the use cannot disagree.
func parses[T any](parse func(string) (T, error)) func(string) error {
	return func(s string) error {
		_, err := parse(s)
		return err
	}
}

func checkOctalMode(s string) error {
	if _, err := strconv.ParseUint(s, 8, 32); err != nil {
		return errors.New("not an octal mode")
	}
	return nil
}

func nonEmpty(s string) error {
	if strings.TrimSpace(s) == "" {
		return errors.New("must not be empty")
	}
	return nil
}

// optional lets "" through (a feature turned off) and checks anything else.
func optional(check func(string) error) func(string) error {
	return func(s string) error {
		if s == "" {
			return nil
		}
		return check(s)
	}
}

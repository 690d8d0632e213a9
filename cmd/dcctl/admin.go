package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/distcache-replicated/distcache/internal/version"
	"github.com/distcache-replicated/distcache/node/adminapi"
)

const (
	defaultAdminAddr    = "127.0.0.1:9400"
	defaultAdminTimeout = 10 * time.Second
)

// adminOptions are the flags every admin-API command shares.
type adminOptions struct {
	addr      string
	tokenFile string
	timeout   time.Duration
	json      bool
}

// adminAddr is --addr's default: DCCTL_ADDR, or node 1 of the dev cluster.
func (a *app) adminAddr() string {
	if addr := a.getenv("DCCTL_ADDR"); addr != "" {
		return addr
	}
	return defaultAdminAddr
}

func (o *adminOptions) register(a *app, inv *invocation) {
	inv.fs.StringVar(&o.addr, "addr", a.adminAddr(), "admin HTTP `address` of the node (host:port or URL; env DCCTL_ADDR)")
	inv.fs.StringVar(&o.tokenFile, "token-file", a.getenv("DCCTL_TOKEN_FILE"), "`file` holding the admin bearer token (env DCCTL_TOKEN_FILE)")
	inv.fs.DurationVar(&o.timeout, "timeout", defaultAdminTimeout, "deadline for the whole call")
	inv.fs.BoolVar(&o.json, "json", false, "print JSON instead of a table")
}

// client builds the admin client after flags were parsed; --timeout bounds each
// call. A bad address is a usage error, reported before an unreadable token file.
func (o *adminOptions) client() (*adminapi.Client, error) {
	token, tokenErr := readTokenFile(o.tokenFile)
	c, err := adminapi.New(adminapi.Config{Addr: o.addr, Token: token, Timeout: o.timeout})
	if err != nil {
		return nil, &usageError{msg: err.Error()}
	}
	if tokenErr != nil {
		return nil, tokenErr
	}
	return c, nil
}

// start registers the admin flags, parses the command line (min to max
// positional arguments; max -1 for any number) and builds the client.
func (o *adminOptions) start(a *app, inv *invocation, min, max int) (*adminapi.Client, []string, error) {
	o.register(a, inv)
	pos, err := inv.parse(min, max)
	if err != nil {
		return nil, nil, err
	}
	c, err := o.client()
	return c, pos, err
}

// readTokenFile returns the bearer token held in file, or "" for no file.
func readTokenFile(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// answered does what every admin command does with an answer before rendering
// it: a failed call ends the command with its error, and with --json the node's
// answer is printed as sent (re-indented), so fields a newer node adds survive.
// It reports whether the command is done.
func (o *adminOptions) answered(a *app, ans interface{ JSON() json.RawMessage }, err error) (bool, error) {
	if err != nil {
		return true, err
	}
	if o.json {
		return true, writeJSONRaw(a.stdout, ans.JSON())
	}
	return false, nil
}

func adminCommands() []*command {
	const group = "Cluster membership (admin HTTP API, --addr)"
	return []*command{
		{
			name: "status", group: group,
			summary: "Show this node: id, role, leader, term, raft indexes, sessions, bytes.",
			example: "dcctl status --addr 127.0.0.1:9400\ndcctl status --json | jq .state",
			run:     runStatus,
		},
		{
			name: "members", group: group,
			summary: "List cluster members: gossip state joined with raft suffrage, last contact and lag.",
			detail:  "LAG is how many log entries the member trails the leader (\"?\" when unknown).",
			example: "dcctl members\ndcctl members --json",
			run:     runMembers,
		},
		{
			name: "join", group: group, args: "ADDR [ADDR...]",
			summary: "Ask the node to join the cluster that the given gossip address(es) belong to.",
			example: "dcctl join 127.0.0.1:9302 --addr 127.0.0.1:9410",
			run:     runJoin,
		},
		{
			name: "remove-node", aliases: []string{"remove-peer"}, group: group, args: "NODE-ID",
			summary: "Remove a node from the cluster (raft configuration and gossip).",
			detail:  "Named remove-node because `remove ID` is the distcache REMOVE of a session.\nA node that is alive is removed only with --yes (on a terminal dcctl asks): to retire a running node, run `dcctl leave` against it instead.",
			example: "dcctl remove-node node-3",
			run:     runRemoveNode,
		},
		{
			name: "leave", group: group,
			summary: "Make the node at --addr leave the cluster gracefully and exit.",
			example: "dcctl leave --addr 127.0.0.1:9420",
			run:     runLeave,
		},
		{
			name: "transfer-leader", group: group, args: "[NODE-ID]",
			summary: "Transfer raft leadership to NODE-ID, or to any up-to-date voter.",
			example: "dcctl transfer-leader node-2\ndcctl transfer-leader",
			run:     runTransferLeader,
		},
		{
			name: "snapshot", group: group, args: "save|restore FILE",
			summary: "Save the session store to FILE, or restore it from FILE through raft (every node gets it).",
			detail:  "FILE \"-\" means stdout (save) or stdin (restore). save writes a temporary file and renames it, so FILE is never half-written.\nrestore replaces every session on every node: it needs --yes (on a terminal dcctl asks).",
			example: "dcctl snapshot save /var/backups/distcache.snap\ndcctl snapshot restore /var/backups/distcache.snap --yes",
			run:     runSnapshot,
		},
		keyringCommand(),
		ticketsCommand(),
		{
			name: "version", group: group,
			summary: "Print dcctl's version and, when the node at --addr answers, the node's.",
			detail:  "A node that cannot be reached is reported on stderr; dcctl's own version is printed anyway and the exit status is 0.",
			example: "dcctl version\ndcctl version --json",
			run:     runVersion,
		},
	}
}

// versionAnswer is what `dcctl version --json` prints.
type versionAnswer struct {
	DCCTL     versionJSON  `json:"dcctl"`
	Node      *versionJSON `json:"node,omitempty"`
	NodeError string       `json:"node_error,omitempty"`
}

// versionJSON is one build in `dcctl version --json`.
type versionJSON struct {
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go,omitempty"`
	ID       string `json:"id,omitempty"`   // the node's id
	Addr     string `json:"addr,omitempty"` // the node's admin address
}

func runVersion(ctx context.Context, a *app, inv *invocation) error {
	var o adminOptions
	o.register(a, inv)
	o.timeout = 2 * time.Second
	inv.fs.Lookup("timeout").DefValue = o.timeout.String()
	if _, err := inv.parse(0, 0); err != nil {
		return err
	}
	own := version.Get()
	ans := versionAnswer{DCCTL: versionJSON{Version: own.Version, Revision: own.Revision, Modified: own.Modified, Go: own.Go}}
	if !own.Time.IsZero() {
		ans.DCCTL.Time = own.Time.UTC().Format(time.RFC3339)
	}
	c, err := o.client()
	if err == nil {
		var st adminapi.Status
		if st, err = c.Status(ctx); err == nil {
			ans.Node = &versionJSON{Version: st.Version, ID: st.ID, Addr: o.addr}
		}
	}
	if err != nil {
		ans.NodeError = err.Error()
	}
	if o.json {
		return writeJSON(a.stdout, ans)
	}
	fmt.Fprintf(a.stdout, "dcctl %s\n", own)
	if ans.Node != nil {
		fmt.Fprintf(a.stdout, "node  %s (%s at %s)\n", ans.Node.Version, orDash(ans.Node.ID), o.addr)
	} else {
		fmt.Fprintf(a.stderr, "dcctl version: no answer from the node at %s: %s\n", o.addr, ans.NodeError)
	}
	return nil
}

func runStatus(ctx context.Context, a *app, inv *invocation) error {
	var o adminOptions
	c, _, err := o.start(a, inv, 0, 0)
	if err != nil {
		return err
	}
	st, err := c.Status(ctx)
	if done, err := o.answered(a, st, err); done {
		return err
	}
	t := newKVTable(a.stdout)
	t.row("ID", st.ID)
	t.row("State", st.State)
	leader := st.LeaderID
	if st.LeaderAddr != "" {
		leader = fmt.Sprintf("%s (%s)", orDash(st.LeaderID), st.LeaderAddr)
	}
	t.row("Leader", orDash(leader))
	t.row("Term", st.Term)
	t.row("Last index", st.LastIndex)
	t.row("Commit index", st.CommitIndex)
	t.row("Applied index", st.AppliedIndex)
	t.row("Last contact", formatMS(st.LastContactMS))
	t.row("Sessions", st.Sessions)
	t.row("Payload bytes", fmt.Sprintf("%d (%s)", st.PayloadBytes, humanBytes(st.PayloadBytes)))
	t.row("Read consistency", orDash(st.ReadConsistency))
	t.row("Raft address", orDash(st.RaftAddr))
	t.row("Gossip address", orDash(st.GossipAddr))
	t.row("Admin address", orDash(st.AdminAddr))
	for _, k := range sortedKeys(st.Listeners) {
		t.row("Listeners ("+k+")", orDash(strings.Join(st.Listeners[k], ", ")))
	}
	t.row("Version", orDash(st.Version))
	return t.flush()
}

func runMembers(ctx context.Context, a *app, inv *invocation) error {
	var o adminOptions
	c, _, err := o.start(a, inv, 0, 0)
	if err != nil {
		return err
	}
	ms, err := c.Members(ctx)
	if done, err := o.answered(a, ms, err); done {
		return err
	}
	sortMembers(ms.Members)
	t := newTable(a.stdout, "ID", "STATUS", "SUFFRAGE", "LEADER", "GOSSIP", "RAFT", "DISTCACHE", "LAST CONTACT", "LAG", "VERSION")
	for _, m := range ms.Members {
		leader := ""
		if m.Leader {
			leader = "*"
		}
		lag := "?"
		if m.Lag >= 0 {
			lag = fmt.Sprint(m.Lag)
		}
		t.row(m.ID, orDash(m.Status), orDash(m.Suffrage), leader, orDash(m.GossipAddr), orDash(m.RaftAddr),
			orDash(m.Meta["distcache"]), formatMS(m.LastContactMS), lag, orDash(m.Version))
	}
	return t.flush()
}

func runJoin(ctx context.Context, a *app, inv *invocation) error {
	var o adminOptions
	c, addrs, err := o.start(a, inv, 1, -1)
	if err != nil {
		return err
	}
	r, err := c.Join(ctx, addrs)
	if done, err := o.answered(a, r, err); done {
		return err
	}
	fmt.Fprintf(a.stdout, "joined %d node(s)\n", r.Joined)
	if r.Joined == 0 {
		return errors.New("no node could be contacted")
	}
	return nil
}

func runRemoveNode(ctx context.Context, a *app, inv *invocation) error {
	var o adminOptions
	var yes bool
	inv.fs.BoolVar(&yes, "yes", false, "remove the node even if it is alive (without it dcctl refuses, or asks on a terminal)")
	c, pos, err := o.start(a, inv, 1, 1)
	if err != nil {
		return err
	}
	if !yes {
		if err := confirmRemove(ctx, a, c, pos[0]); err != nil {
			return err
		}
	}
	ack, err := c.Remove(ctx, pos[0])
	if done, err := o.answered(a, ack, err); done {
		return err
	}
	fmt.Fprintln(a.stdout, "removed "+pos[0])
	return nil
}

// confirmRemove asks for --yes before a live member is removed: it is still
// serving, and `dcctl leave` is the way to retire a running node.
func confirmRemove(ctx context.Context, a *app, c *adminapi.Client, id string) error {
	ms, err := c.Members(ctx)
	if err != nil {
		return fmt.Errorf("check whether %s is alive (--yes skips the check): %w", id, err)
	}
	voters := 0
	var target *adminapi.Member
	for i, m := range ms.Members {
		if m.ID == id {
			target = &ms.Members[i]
		} else if m.Suffrage == "voter" {
			voters++
		}
	}
	if target == nil || target.Status != "alive" {
		return nil // a failed node is what remove-node is for; an unknown id is the node's to refuse
	}
	leave := "dcctl leave --addr ADMIN-ADDRESS"
	if addr := target.Meta["admin"]; addr != "" {
		leave = "dcctl leave --addr " + addr
	}
	return a.confirm(false, fmt.Sprintf("%s is alive: removing it takes a running node out of the cluster, leaving %d voter(s); to retire it cleanly run '%s' instead", id, voters, leave))
}

func runLeave(ctx context.Context, a *app, inv *invocation) error {
	var o adminOptions
	c, _, err := o.start(a, inv, 0, 0)
	if err != nil {
		return err
	}
	ack, err := c.Leave(ctx)
	if done, err := o.answered(a, ack, err); done {
		return err
	}
	fmt.Fprintln(a.stdout, "node is leaving the cluster")
	return nil
}

func runTransferLeader(ctx context.Context, a *app, inv *invocation) error {
	var o adminOptions
	c, pos, err := o.start(a, inv, 0, 1)
	if err != nil {
		return err
	}
	id := ""
	if len(pos) == 1 {
		id = pos[0]
	}
	r, err := c.TransferLeader(ctx, id)
	if done, err := o.answered(a, r, err); done {
		return err
	}
	fmt.Fprintf(a.stdout, "leadership transferred to %s\n", orDash(r.LeaderID))
	return nil
}

func runSnapshot(ctx context.Context, a *app, inv *invocation) error {
	var o adminOptions
	var yes bool
	inv.fs.BoolVar(&yes, "yes", false, "restore without asking: a restore replaces every session in the cluster")
	o.register(a, inv)
	o.timeout = time.Minute
	inv.fs.Lookup("timeout").DefValue = o.timeout.String()
	pos, err := inv.parse(2, 2)
	if err != nil {
		return err
	}
	verb, file := pos[0], pos[1]
	if verb != "save" && verb != "restore" {
		return usagef("unknown snapshot action %q (want save or restore)", verb)
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	start := time.Now()
	var n int64
	if verb == "save" {
		n, err = snapshotSave(ctx, c, file, a.stdout)
	} else {
		if err := confirmRestore(ctx, a, c, file, yes); err != nil {
			return err
		}
		n, err = snapshotRestore(ctx, c, file, a.stdin)
	}
	if err != nil {
		return err
	}
	if file == "-" && verb == "save" {
		return nil // stdout carries the snapshot itself
	}
	res := map[string]any{"action": verb, "file": file, "bytes": n, "seconds": time.Since(start).Seconds()}
	if o.json {
		return writeJSON(a.stdout, res)
	}
	if verb == "save" {
		fmt.Fprintf(a.stdout, "saved snapshot to %s (%s)\n", file, humanBytes(n))
	} else {
		fmt.Fprintf(a.stdout, "restored snapshot from %s (%s)\n", file, humanBytes(n))
	}
	return nil
}

// snapshotSave downloads the snapshot to file, or to stdout for "-". A file is
// written under a temporary name and renamed once complete, so it is never
// half-written.
func snapshotSave(ctx context.Context, c *adminapi.Client, file string, stdout io.Writer) (int64, error) {
	if file == "-" {
		return c.SnapshotSave(ctx, stdout)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("create snapshot file: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	n, err := c.SnapshotSave(ctx, tmp)
	if err != nil {
		return n, err
	}
	if err := tmp.Sync(); err != nil {
		return n, fmt.Errorf("sync snapshot file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return n, fmt.Errorf("close snapshot file: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return n, fmt.Errorf("rename snapshot file: %w", err)
	}
	ok = true
	return n, nil
}

// confirmRestore asks for --yes before a restore, which replaces every session
// on every node. A snapshot read from stdin leaves no terminal to ask on.
func confirmRestore(ctx context.Context, a *app, c *adminapi.Client, file string, yes bool) error {
	if yes {
		return nil
	}
	what := "a restore replaces every session on every node with those in " + file
	if file == "-" {
		what = "a restore replaces every session on every node with those in the snapshot on stdin"
	}
	if st, err := c.Status(ctx); err == nil {
		what += fmt.Sprintf(" (%s holds %d session(s) now)", orDash(st.ID), st.Sessions)
	}
	if file == "-" {
		return usagef("%s; add --yes to go ahead", what)
	}
	return a.confirm(false, what)
}

// snapshotRestore uploads file, or stdin for "-", and returns its size.
func snapshotRestore(ctx context.Context, c *adminapi.Client, file string, stdin io.Reader) (int64, error) {
	var body io.Reader
	var n int64
	if file == "-" {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return 0, fmt.Errorf("read snapshot from stdin: %w", err)
		}
		body, n = bytes.NewReader(b), int64(len(b))
	} else {
		f, err := os.Open(file)
		if err != nil {
			return 0, fmt.Errorf("open snapshot: %w", err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return 0, fmt.Errorf("stat snapshot: %w", err)
		}
		if st.Size() == 0 {
			return 0, fmt.Errorf("snapshot file %s is empty", file)
		}
		body, n = f, st.Size()
	}
	return n, c.SnapshotRestore(ctx, body)
}

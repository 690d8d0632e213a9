package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
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

func (o *adminOptions) register(a *app, inv *invocation) {
	addr := a.getenv("DCCTL_ADDR")
	if addr == "" {
		addr = defaultAdminAddr
	}
	inv.fs.StringVar(&o.addr, "addr", addr, "admin HTTP `address` of the node (host:port or URL; env DCCTL_ADDR)")
	inv.fs.StringVar(&o.tokenFile, "token-file", a.getenv("DCCTL_TOKEN_FILE"), "`file` holding the admin bearer token (env DCCTL_TOKEN_FILE)")
	inv.fs.DurationVar(&o.timeout, "timeout", defaultAdminTimeout, "deadline for the whole call")
	inv.fs.BoolVar(&o.json, "json", false, "print JSON instead of a table")
}

// client builds the admin client after flags were parsed.
func (o *adminOptions) client() (*adminClient, error) {
	base, err := adminBaseURL(o.addr)
	if err != nil {
		return nil, &usageError{msg: err.Error()}
	}
	c := &adminClient{base: base, http: &http.Client{}}
	if o.tokenFile != "" {
		b, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token file: %w", err)
		}
		c.token = strings.TrimSpace(string(b))
	}
	return c, nil
}

// adminBaseURL accepts "host:port" (http assumed) or a full http(s) URL.
func adminBaseURL(addr string) (string, error) {
	if addr == "" {
		return "", errors.New("empty admin address")
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return "", fmt.Errorf("bad admin address %q: %w", addr, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("bad admin address %q: want host:port or http(s)://host:port", addr)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// adminClient speaks the node's admin HTTP API (see node/ and the dcctl design note).
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

// apiError is a non-2xx answer of the admin API; Message is the body's "error" field.
type apiError struct {
	Status  int
	Message string
}

func (e *apiError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("admin API: HTTP %d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("admin API: HTTP %d: %s", e.Status, e.Message)
}

// do performs one call. body, when non-nil, is sent as-is with contentType. A 2xx
// response body is returned to the caller (who closes it).
func (c *adminClient) do(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var eb struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			msg = eb.Error
		}
		return nil, &apiError{Status: resp.StatusCode, Message: msg}
	}
	return resp, nil
}

// callJSON sends in (if non-nil) as JSON and returns the raw JSON answer.
func (c *adminClient) callJSON(ctx context.Context, method, path string, in any) (json.RawMessage, error) {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	resp, err := c.do(ctx, method, path, body, ct)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		b = []byte("{}")
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("%s %s: answer is not JSON", method, path)
	}
	return b, nil
}

// Status is the node's answer to GET /v1/status.
type nodeStatus struct {
	ID              string              `json:"id"`
	State           string              `json:"state"`
	LeaderID        string              `json:"leader_id"`
	LeaderAddr      string              `json:"leader_addr"`
	Term            uint64              `json:"term"`
	LastIndex       uint64              `json:"last_index"`
	CommitIndex     uint64              `json:"commit_index"`
	AppliedIndex    uint64              `json:"applied_index"`
	LastContactMS   int64               `json:"last_contact_ms"`
	Sessions        uint64              `json:"sessions"`
	PayloadBytes    uint64              `json:"payload_bytes"`
	ReadConsistency string              `json:"read_consistency"`
	Version         string              `json:"version"`
	Listeners       map[string][]string `json:"listeners"`
	RaftAddr        string              `json:"raft_addr"`
	GossipAddr      string              `json:"gossip_addr"`
	AdminAddr       string              `json:"admin_addr"`
}

// member is one row of GET /v1/members.
type member struct {
	ID            string            `json:"id"`
	GossipAddr    string            `json:"gossip_addr"`
	RaftAddr      string            `json:"raft_addr"`
	Status        string            `json:"status"`
	Suffrage      string            `json:"suffrage"`
	Leader        bool              `json:"leader"`
	LastContactMS int64             `json:"last_contact_ms"`
	Lag           int64             `json:"lag"`
	Meta          map[string]string `json:"meta"`
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
			detail:  "Named remove-node because `remove ID` is the distcache REMOVE of a session.",
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
			detail:  "FILE \"-\" means stdout (save) or stdin (restore). save writes a temporary file and renames it, so FILE is never half-written.",
			example: "dcctl snapshot save /var/backups/distcache.snap\ndcctl snapshot restore /var/backups/distcache.snap",
			run:     runSnapshot,
		},
		keyringCommand(),
	}
}

func runStatus(ctx context.Context, a *app, inv *invocation) error {
	var o adminOptions
	o.register(a, inv)
	if _, err := inv.parse(0, 0); err != nil {
		return err
	}
	raw, printed, err := o.call(ctx, a, http.MethodGet, "/v1/status", nil)
	if err != nil || printed {
		return err
	}
	var st nodeStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("decode status: %w", err)
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
	o.register(a, inv)
	if _, err := inv.parse(0, 0); err != nil {
		return err
	}
	raw, printed, err := o.call(ctx, a, http.MethodGet, "/v1/members", nil)
	if err != nil || printed {
		return err
	}
	var ms struct {
		Members []member `json:"members"`
	}
	if err := json.Unmarshal(raw, &ms); err != nil {
		return fmt.Errorf("decode members: %w", err)
	}
	sortMembers(ms.Members)
	t := newTable(a.stdout, "ID", "STATUS", "SUFFRAGE", "LEADER", "GOSSIP", "RAFT", "DISTCACHE", "LAST CONTACT", "LAG")
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
			orDash(m.Meta["distcache"]), formatMS(m.LastContactMS), lag)
	}
	return t.flush()
}

func runJoin(ctx context.Context, a *app, inv *invocation) error {
	var o adminOptions
	o.register(a, inv)
	addrs, err := inv.parse(1, -1)
	if err != nil {
		return err
	}
	raw, printed, err := o.call(ctx, a, http.MethodPost, "/v1/join", map[string]any{"addrs": addrs})
	if err != nil || printed {
		return err
	}
	var r struct {
		Joined int `json:"joined"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("decode join answer: %w", err)
	}
	fmt.Fprintf(a.stdout, "joined %d node(s)\n", r.Joined)
	if r.Joined == 0 {
		return errors.New("no node could be contacted")
	}
	return nil
}

func runRemoveNode(ctx context.Context, a *app, inv *invocation) error {
	var o adminOptions
	o.register(a, inv)
	pos, err := inv.parse(1, 1)
	if err != nil {
		return err
	}
	return simplePost(ctx, a, &o, "/v1/remove", map[string]any{"id": pos[0]}, "removed "+pos[0])
}

func runLeave(ctx context.Context, a *app, inv *invocation) error {
	var o adminOptions
	o.register(a, inv)
	if _, err := inv.parse(0, 0); err != nil {
		return err
	}
	return simplePost(ctx, a, &o, "/v1/leave", nil, "node is leaving the cluster")
}

func runTransferLeader(ctx context.Context, a *app, inv *invocation) error {
	var o adminOptions
	o.register(a, inv)
	pos, err := inv.parse(0, 1)
	if err != nil {
		return err
	}
	id := ""
	if len(pos) == 1 {
		id = pos[0]
	}
	raw, printed, err := o.call(ctx, a, http.MethodPost, "/v1/transfer-leader", map[string]any{"id": id})
	if err != nil || printed {
		return err
	}
	var r struct {
		LeaderID string `json:"leader_id"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("decode transfer answer: %w", err)
	}
	fmt.Fprintf(a.stdout, "leadership transferred to %s\n", orDash(r.LeaderID))
	return nil
}

func simplePost(ctx context.Context, a *app, o *adminOptions, path string, body any, human string) error {
	if body == nil {
		body = struct{}{}
	}
	_, printed, err := o.call(ctx, a, http.MethodPost, path, body)
	if err != nil || printed {
		return err
	}
	fmt.Fprintln(a.stdout, human)
	return nil
}

// call sends one admin request within --timeout. With --json it prints the
// answer itself and reports printed, so the caller renders only the human form.
func (o *adminOptions) call(ctx context.Context, a *app, method, path string, body any) (raw json.RawMessage, printed bool, err error) {
	c, err := o.client()
	if err != nil {
		return nil, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if raw, err = c.callJSON(ctx, method, path, body); err != nil {
		return nil, false, err
	}
	if o.json {
		return raw, true, writeJSONRaw(a.stdout, raw)
	}
	return raw, false, nil
}

func runSnapshot(ctx context.Context, a *app, inv *invocation) error {
	var o adminOptions
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
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	start := time.Now()
	var n int64
	if verb == "save" {
		n, err = snapshotSave(ctx, c, file, a.stdout)
	} else {
		n, err = snapshotRestore(ctx, c, file)
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
		fmt.Fprintf(a.stdout, "saved snapshot to %s (%s)\n", file, humanBytes(uint64(n)))
	} else {
		fmt.Fprintf(a.stdout, "restored snapshot from %s (%s)\n", file, humanBytes(uint64(n)))
	}
	return nil
}

func snapshotSave(ctx context.Context, c *adminClient, file string, stdout io.Writer) (int64, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/snapshot", nil, "")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if file == "-" {
		n, err := io.Copy(stdout, resp.Body)
		if err != nil {
			return n, fmt.Errorf("copy snapshot: %w", err)
		}
		return n, nil
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
	n, err := io.Copy(tmp, resp.Body)
	if err != nil {
		return n, fmt.Errorf("download snapshot: %w", err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("download snapshot: got %d of %d bytes", n, resp.ContentLength)
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

func snapshotRestore(ctx context.Context, c *adminClient, file string) (int64, error) {
	var body io.Reader
	var n int64
	if file == "-" {
		b, err := io.ReadAll(os.Stdin)
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
	resp, err := c.do(ctx, http.MethodPost, "/v1/snapshot", body, "application/octet-stream")
	if err != nil {
		return n, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return n, nil
}

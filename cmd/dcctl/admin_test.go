package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/distcache-replicated/distcache/internal/version"
	"github.com/distcache-replicated/distcache/node/adminapi"
)

// fakeAdmin implements the node admin HTTP API contract with recorded calls.
type fakeAdmin struct {
	token string

	mu       sync.Mutex
	calls    []string // "METHOD /path body"
	snapshot []byte
}

func (f *fakeAdmin) record(r *http.Request, body []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, strings.TrimSpace(r.Method+" "+r.URL.Path+" "+string(body)))
}

func (f *fakeAdmin) lastCall() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return ""
	}
	return f.calls[len(f.calls)-1]
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func (f *fakeAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Method == http.MethodPost && f.token != "" && r.Header.Get("Authorization") != "Bearer "+f.token {
		writeErr(w, http.StatusUnauthorized, "missing or bad token")
		return
	}
	if r.URL.Path != "/v1/snapshot" {
		f.record(r, body)
	} else {
		f.record(r, nil)
	}
	js := func(v string) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, v)
	}
	switch r.Method + " " + r.URL.Path {
	case "GET /v1/status":
		js(`{"id":"node-1","state":"Leader","leader_id":"node-1","leader_addr":"127.0.0.1:9300",
			"term":7,"last_index":120,"commit_index":120,"applied_index":119,"last_contact_ms":-1,
			"sessions":42,"payload_bytes":123456,"read_consistency":"leader-on-miss","version":"0.1.0",
			"listeners":{"distcache":["IP:127.0.0.1:9101"],"memcache":[]},
			"raft_addr":"127.0.0.1:9300","gossip_addr":"127.0.0.1:9301","admin_addr":"127.0.0.1:9400",
			"future_field":"kept"}`)
	case "GET /v1/members":
		js(`{"members":[
			{"id":"node-2","gossip_addr":"127.0.0.1:9311","raft_addr":"127.0.0.1:9310","status":"alive",
			 "suffrage":"voter","leader":false,"last_contact_ms":12,"lag":3,"version":"v1.2.0","meta":{"distcache":"IP:127.0.0.1:9111"}},
			{"id":"node-1","gossip_addr":"127.0.0.1:9301","raft_addr":"127.0.0.1:9300","status":"alive",
			 "suffrage":"voter","leader":true,"last_contact_ms":-1,"lag":0,"meta":{"distcache":"IP:127.0.0.1:9101"}},
			{"id":"node-3","gossip_addr":"127.0.0.1:9321","raft_addr":"127.0.0.1:9320","status":"dead",
			 "suffrage":"nonvoter","leader":false,"last_contact_ms":5000,"lag":-1,"meta":{}}]}`)
	case "POST /v1/join":
		var req struct{ Addrs []string }
		if json.Unmarshal(body, &req) != nil || len(req.Addrs) == 0 {
			writeErr(w, http.StatusBadRequest, "bad join request")
			return
		}
		if req.Addrs[0] == "127.0.0.1:1" {
			js(`{"joined":0}`)
			return
		}
		js(`{"joined":` + string(rune('0'+len(req.Addrs))) + `}`)
	case "POST /v1/remove":
		var req struct{ ID string }
		json.Unmarshal(body, &req)
		if req.ID != "node-3" {
			writeErr(w, http.StatusNotFound, "no such node: "+req.ID)
			return
		}
		js(`{}`)
	case "POST /v1/leave":
		js(`{}`)
	case "POST /v1/transfer-leader":
		var req struct{ ID string }
		json.Unmarshal(body, &req)
		if req.ID == "" {
			req.ID = "node-2"
		}
		js(`{"leader_id":"` + req.ID + `"}`)
	case "GET /v1/snapshot":
		f.mu.Lock()
		snap := f.snapshot
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(snap)
	case "POST /v1/snapshot":
		f.mu.Lock()
		f.snapshot = body
		f.mu.Unlock()
		js(`{}`)
	default:
		writeErr(w, http.StatusNotFound, "no route "+r.URL.Path)
	}
}

func startAdmin(t *testing.T, token string) (*fakeAdmin, map[string]string) {
	t.Helper()
	f := &fakeAdmin{token: token}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	env := map[string]string{"DCCTL_ADDR": strings.TrimPrefix(srv.URL, "http://")}
	if token != "" {
		tf := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tf, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		env["DCCTL_TOKEN_FILE"] = tf
	}
	return f, env
}

func TestStatus(t *testing.T) {
	_, env := startAdmin(t, "")
	r := runCLI(t, env, "status")
	if r.code != 0 {
		t.Fatalf("status: %+v", r)
	}
	// Compare each row with the column padding squeezed out.
	rows := map[string]bool{}
	for _, l := range strings.Split(r.stdout, "\n") {
		rows[strings.Join(strings.Fields(l), " ")] = true
	}
	for _, want := range []string{"ID node-1", "State Leader", "Leader node-1 (127.0.0.1:9300)", "Term 7",
		"Applied index 119", "Last contact -", "Sessions 42", "Payload bytes 123456 (120.6 KiB)",
		"Listeners (distcache) IP:127.0.0.1:9101", "Read consistency leader-on-miss"} {
		if !rows[want] {
			t.Errorf("status output lacks row %q:\n%s", want, r.stdout)
		}
	}
	r = runCLI(t, env, "status", "--json")
	var m map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil || r.code != 0 {
		t.Fatalf("status --json: %+v (%v)", r, err)
	}
	if m["term"] != float64(7) || m["future_field"] != "kept" {
		t.Fatalf("status --json lost fields: %v", m)
	}
	// The flag overrides the environment.
	r = runCLI(t, env, "status", "--addr", strings.TrimPrefix(deadAddr(t), "IP:"))
	if r.code != exitFailed || !strings.Contains(r.stderr, "connection refused") {
		t.Fatalf("status against dead address: %+v", r)
	}
}

func TestMembers(t *testing.T) {
	_, env := startAdmin(t, "")
	r := runCLI(t, env, "members")
	if r.code != 0 {
		t.Fatalf("members: %+v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 {
		t.Fatalf("want header + 3 rows, got:\n%s", r.stdout)
	}
	if !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "LAG") || !strings.HasSuffix(lines[0], "VERSION") {
		t.Errorf("header: %q", lines[0])
	}
	// Sorted by id; leader marked; unknown lag shown as "?".
	for i, want := range [][]string{
		{"node-1", "alive", "voter", "*", "IP:127.0.0.1:9101", " 0"},
		{"node-2", "alive", "voter", "12ms", " 3", "v1.2.0"},
		{"node-3", "dead", "nonvoter", "5s", "?"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i+1], w) {
				t.Errorf("row %d %q lacks %q", i+1, lines[i+1], w)
			}
		}
	}
	r = runCLI(t, env, "members", "--json")
	var ms adminapi.Members
	if err := json.Unmarshal([]byte(r.stdout), &ms); err != nil || len(ms.Members) != 3 {
		t.Fatalf("members --json: %+v (%v)", r, err)
	}
}

// TestVersion: dcctl prints its own version and the node's; an unreachable node
// is reported on stderr without failing the command.
func TestVersion(t *testing.T) {
	_, env := startAdmin(t, "")
	own := version.Get().Version
	r := runCLI(t, env, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "dcctl "+own) || !strings.Contains(r.stdout, "node  0.1.0 (node-1 at ") {
		t.Fatalf("version: %+v", r)
	}
	r = runCLI(t, env, "version", "--json")
	var ans versionAnswer
	if err := json.Unmarshal([]byte(r.stdout), &ans); err != nil || r.code != 0 {
		t.Fatalf("version --json: %+v (%v)", r, err)
	}
	if ans.DCCTL.Version != own || ans.Node == nil || ans.Node.Version != "0.1.0" || ans.Node.ID != "node-1" {
		t.Fatalf("version --json: %+v", ans)
	}
	dead := map[string]string{"DCCTL_ADDR": strings.TrimPrefix(deadAddr(t), "IP:")}
	r = runCLI(t, dead, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "dcctl "+own) || strings.Contains(r.stdout, "node") ||
		!strings.Contains(r.stderr, "no answer from the node") {
		t.Fatalf("version against a dead node: %+v", r)
	}
}

func TestMutatingAdminCommands(t *testing.T) {
	f, env := startAdmin(t, "s3cret")

	cases := []struct {
		args     []string
		code     int
		stdout   string
		lastCall string
	}{
		{[]string{"join", "127.0.0.1:9302", "127.0.0.1:9312"}, 0, "joined 2 node(s)\n", `POST /v1/join {"addrs":["127.0.0.1:9302","127.0.0.1:9312"]}`},
		{[]string{"join", "127.0.0.1:1"}, exitFailed, "joined 0 node(s)\n", `POST /v1/join {"addrs":["127.0.0.1:1"]}`},
		{[]string{"remove-node", "node-3"}, 0, "removed node-3\n", `POST /v1/remove {"id":"node-3"}`},
		{[]string{"remove-peer", "node-9"}, exitFailed, "", `POST /v1/remove {"id":"node-9"}`},
		{[]string{"leave"}, 0, "node is leaving the cluster\n", `POST /v1/leave {}`},
		{[]string{"transfer-leader"}, 0, "leadership transferred to node-2\n", `POST /v1/transfer-leader {"id":""}`},
		{[]string{"transfer-leader", "node-3", "--json"}, 0, "{\n  \"leader_id\": \"node-3\"\n}\n", `POST /v1/transfer-leader {"id":"node-3"}`},
	}
	for _, c := range cases {
		r := runCLI(t, env, c.args...)
		if r.code != c.code || r.stdout != c.stdout {
			t.Errorf("%v: got code %d stdout %q stderr %q; want %d %q", c.args, r.code, r.stdout, r.stderr, c.code, c.stdout)
		}
		if got := f.lastCall(); got != c.lastCall {
			t.Errorf("%v: server saw %q, want %q", c.args, got, c.lastCall)
		}
	}
	if r := runCLI(t, env, "remove-node", "node-9"); !strings.Contains(r.stderr, "HTTP 404: no such node: node-9") {
		t.Errorf("remove-node error message: %q", r.stderr)
	}

	// Without the token the node refuses (401): exit 1 with the server's message.
	noToken := map[string]string{"DCCTL_ADDR": env["DCCTL_ADDR"]}
	r := runCLI(t, noToken, "leave")
	if r.code != exitFailed || !strings.Contains(r.stderr, "HTTP 401: missing or bad token") {
		t.Fatalf("leave without token: %+v", r)
	}
	r = runCLI(t, noToken, "leave", "--token-file", filepath.Join(t.TempDir(), "missing"))
	if r.code != exitFailed || !strings.Contains(r.stderr, "read token file") {
		t.Fatalf("missing token file: %+v", r)
	}
}

func TestSnapshotSaveRestore(t *testing.T) {
	f, env := startAdmin(t, "tok")
	want := bytes.Repeat([]byte("snapshot\x00\xff"), 100_000)
	f.snapshot = want
	dir := t.TempDir()
	file := filepath.Join(dir, "backup.snap")

	r := runCLI(t, env, "snapshot", "save", file)
	if r.code != 0 || !strings.Contains(r.stdout, "saved snapshot to "+file) {
		t.Fatalf("save: %+v", r)
	}
	got, err := os.ReadFile(file)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("saved file differs (%d bytes, err %v)", len(got), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporary files left behind: %v", ents)
	}

	f.snapshot = nil
	r = runCLI(t, env, "snapshot", "restore", file, "--json", "--yes")
	var res struct {
		Action string
		Bytes  int
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 0 {
		t.Fatalf("restore: %+v (%v)", r, err)
	}
	if res.Action != "restore" || res.Bytes != len(want) || !bytes.Equal(f.snapshot, want) {
		t.Fatalf("restore sent %d bytes, report %+v", len(f.snapshot), res)
	}

	// A missing file is a failure, and a failed save leaves no file behind.
	if r := runCLI(t, env, "snapshot", "restore", filepath.Join(dir, "nope"), "--yes"); r.code != exitFailed {
		t.Fatalf("restore of missing file: %+v", r)
	}
	bad := map[string]string{"DCCTL_ADDR": env["DCCTL_ADDR"] + "/nonexistent"}
	if r := runCLI(t, bad, "snapshot", "save", filepath.Join(dir, "other.snap")); r.code != exitFailed {
		t.Fatalf("save from bad URL: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "other.snap")); !os.IsNotExist(err) {
		t.Fatalf("failed save left a file: %v", err)
	}
}

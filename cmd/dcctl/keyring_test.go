package main

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/distcache-replicated/distcache/node/adminapi"
)

// fakeKeyring implements the node's /v1/keyring contract for two nodes that
// share one ring; node "n2" can be made to fail.
type fakeKeyring struct {
	token string

	mu      sync.Mutex
	keys    []string // fingerprints, primary first
	n2Fails bool
	bodies  []string
}

func (f *fakeKeyring) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/keyring" {
		writeErr(w, http.StatusNotFound, "no such path")
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		writeErr(w, http.StatusUnauthorized, "missing or wrong admin token")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Method == http.MethodPost {
		body, _ := io.ReadAll(r.Body)
		f.bodies = append(f.bodies, string(body))
		var req adminapi.KeyringRequest
		json.Unmarshal(body, &req)
		key, _ := base64.StdEncoding.DecodeString(req.Key)
		fp := adminapi.KeyFingerprint(key)
		switch req.Op {
		case "install":
			f.keys = append(f.keys, fp)
		case "use":
			rest := []string{fp}
			for _, k := range f.keys {
				if k != fp {
					rest = append(rest, k)
				}
			}
			f.keys = rest
		case "remove":
			if f.keys[0] == fp {
				f.answer(w, "removing the primary key is not allowed", true)
				return
			}
			var rest []string
			for _, k := range f.keys {
				if k != fp {
					rest = append(rest, k)
				}
			}
			f.keys = rest
		}
	}
	f.answer(w, "", false)
}

func (f *fakeKeyring) answer(w http.ResponseWriter, nodeErr string, all bool) {
	var ans adminapi.KeyringAnswer
	for _, n := range []string{"n1", "n2"} {
		r := adminapi.KeyringNode{Node: n, Primary: f.keys[0], Keys: f.keys}
		if all || (n == "n2" && f.n2Fails) {
			r.Err = orString(nodeErr, "member is failed: not updated")
			ans.Error = "keyring failed on some nodes"
		}
		ans.Nodes = append(ans.Nodes, r)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(ans)
}

func orString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func TestKeyring(t *testing.T) {
	k1 := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	k2 := base64.StdEncoding.EncodeToString([]byte("fedcba9876543210"))
	raw1, _ := base64.StdEncoding.DecodeString(k1)
	raw2, _ := base64.StdEncoding.DecodeString(k2)
	f := &fakeKeyring{token: "tok", keys: []string{adminapi.KeyFingerprint(raw1)}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("tok\n"), 0o600)
	keyFile := filepath.Join(dir, "k2")
	os.WriteFile(keyFile, []byte(k2+"\n"), 0o600)
	env := map[string]string{"DCCTL_ADDR": strings.TrimPrefix(srv.URL, "http://"), "DCCTL_TOKEN_FILE": tokenFile}

	r := runCLI(t, env, "keyring", "list")
	if r.code != exitOK || strings.Count(r.stdout, adminapi.KeyFingerprint(raw1)) != 4 {
		t.Fatalf("list: %+v", r)
	}
	r = runCLI(t, env, "keyring", "install", "@"+keyFile)
	if r.code != exitOK || !strings.Contains(r.stdout, "install key "+adminapi.KeyFingerprint(raw2)) {
		t.Fatalf("install: %+v", r)
	}
	if strings.Contains(r.stdout, k2) {
		t.Fatal("install printed the key itself")
	}
	if last := f.bodies[len(f.bodies)-1]; !strings.Contains(last, `"op":"install"`) || !strings.Contains(last, k2) {
		t.Fatalf("install sent %s", last)
	}
	if r = runCLI(t, env, "keyring", "use", k2, "--json"); r.code != exitOK {
		t.Fatalf("use: %+v", r)
	}
	var ans adminapi.KeyringAnswer
	if err := json.Unmarshal([]byte(r.stdout), &ans); err != nil || ans.Nodes[0].Primary != adminapi.KeyFingerprint(raw2) {
		t.Fatalf("use --json: %s (%v)", r.stdout, err)
	}
	// Removing the primary fails on every node: exit 1 with the reason.
	r = runCLI(t, env, "keyring", "remove", k2)
	if r.code != exitFailed || !strings.Contains(r.stdout, "primary key is not allowed") || !strings.Contains(r.stderr, "failed") {
		t.Fatalf("remove primary: %+v", r)
	}
	// A node that could not be updated makes the command fail, naming it.
	f.mu.Lock()
	f.n2Fails = true
	f.mu.Unlock()
	r = runCLI(t, env, "keyring", "remove", k1)
	if r.code != exitFailed || !strings.Contains(r.stdout, "not updated") {
		t.Fatalf("remove with a node down: %+v", r)
	}

	// Usage errors exit 2 before any call; a missing token is the server's 401.
	calls := len(f.bodies)
	for _, args := range [][]string{
		{"keyring"}, {"keyring", "rotate", k1}, {"keyring", "install"}, {"keyring", "list", k1},
		{"keyring", "install", "not-base64!"}, {"keyring", "install", base64.StdEncoding.EncodeToString([]byte("short"))},
	} {
		if r := runCLI(t, env, args...); r.code != exitUsage {
			t.Errorf("dcctl %v: exit %d, want 2 (%s)", args, r.code, r.stderr)
		}
	}
	if len(f.bodies) != calls {
		t.Fatal("a usage error reached the server")
	}
	noToken := map[string]string{"DCCTL_ADDR": env["DCCTL_ADDR"]}
	if r := runCLI(t, noToken, "keyring", "list"); r.code != exitFailed || !strings.Contains(r.stderr, "401") {
		t.Fatalf("list without a token: %+v", r)
	}
	if r := runCLI(t, env, "keyring", "--help"); r.code != exitOK || !strings.Contains(r.stdout, "remove the old one") {
		t.Fatalf("keyring --help: %+v", r)
	}
}

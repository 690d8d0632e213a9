package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/cmd/dcctl/internal/dctest"
	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// TestDidYouMean: a mistyped command or flag is a usage error that names the
// one probably meant; a bad value says what a good one looks like.
func TestDidYouMean(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"stauts"}, `unknown command "stauts" (did you mean status?)`},
		{[]string{"memebrs"}, "(did you mean members?)"},
		{[]string{"help", "snapshots"}, "(did you mean snapshot?)"},
		{[]string{"remove-peers", "n1"}, "(did you mean remove-peer?)"},
		{[]string{"status", "--adr", "x"}, "unknown flag --adr (did you mean --addr?)"},
		{[]string{"add", "id", "value", "--tll", "5m"}, "(did you mean --ttl?)"},
		{[]string{"get", "id", "--timeout", "5"}, "want a duration with a unit"},
		{[]string{"bench", "--ops", "many"}, "want a whole number"},
	} {
		r := runCLI(t, nil, tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, r.code, r.stderr, exitUsage, tc.want)
		}
	}
	if r := runCLI(t, nil, "frobnicate"); strings.Contains(r.stderr, "did you mean") {
		t.Errorf("a far-off name got a suggestion: %q", r.stderr)
	}
}

// TestAddRefusesShortValues: a value under 5 bytes would be stored and never
// found (the protocol's client rule), so add refuses it unless --force.
func TestAddRefusesShortValues(t *testing.T) {
	ts := startServer(t, "tcp")
	env := map[string]string{"DCCTL_SERVER": ts.Addr}
	r := runCLI(t, env, "add", "k", "v")
	if r.code != exitUsage || !strings.Contains(r.stderr, "no distcache client returns an answer shorter than 5 bytes as data") || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("add of a 1-byte value: %+v", r)
	}
	if ts.Cache.Len() != 0 {
		t.Fatal("the refused value was stored")
	}
	if r := runCLI(t, env, "add", "k", "v", "--force"); r.code != exitOK {
		t.Fatalf("add --force: %+v", r)
	}
	if _, ok := ts.Cache.Lookup([]byte("k")); !ok {
		t.Fatal("add --force did not store the value")
	}
	if r := runCLI(t, env, "get", "k"); r.code != exitFailed || r.stdout != "" || !strings.Contains(r.stderr, "a value shorter than 5 bytes (stored with add --force)") {
		t.Fatalf("get of the short value: %+v (the rule --force warns about)", r)
	}
	if r := runCLI(t, env, "add", "k5", "12345"); r.code != exitOK {
		t.Fatalf("add of a 5-byte value: %+v", r)
	}
}

// TestRemoveNodeOfALiveMemberNeedsYes: the fake cluster has node-2 alive and
// node-3 dead; removing node-2 needs --yes (or a yes on a terminal).
func TestRemoveNodeOfALiveMemberNeedsYes(t *testing.T) {
	f, env := startAdmin(t, "")
	r := runCLI(t, env, "remove-node", "node-2")
	if r.code != exitUsage || !strings.Contains(r.stderr, "node-2 is alive") || !strings.Contains(r.stderr, "dcctl leave") || !strings.Contains(r.stderr, "--yes") {
		t.Fatalf("remove-node of a live node without --yes: %+v", r)
	}
	if got := f.lastCall(); strings.HasPrefix(got, "POST") {
		t.Fatalf("the node was asked to remove it anyway: %s", got)
	}
	if r := runCLITerminal(t, env, "n\n", "remove-node", "node-2"); r.code != exitFailed || !strings.Contains(r.stderr, "Go ahead? [y/N]") || !strings.Contains(r.stderr, "cancelled") {
		t.Fatalf("declined on a terminal: %+v", r)
	}
	if got := f.lastCall(); strings.HasPrefix(got, "POST") {
		t.Fatalf("a declined removal reached the node: %s", got)
	}
	if r := runCLITerminal(t, env, "y\n", "remove-node", "node-2"); r.code != exitFailed || f.lastCall() != `POST /v1/remove {"id":"node-2"}` {
		t.Fatalf("confirmed on a terminal: %+v, node saw %q", r, f.lastCall()) // the fake knows only node-3: 404
	}
	if r := runCLI(t, env, "remove-node", "node-2", "--yes"); f.lastCall() != `POST /v1/remove {"id":"node-2"}` {
		t.Fatalf("--yes: %+v, node saw %q", r, f.lastCall())
	}
	// A dead member needs no confirmation.
	if r := runCLI(t, env, "remove-node", "node-3"); r.code != exitOK || r.stdout != "removed node-3\n" {
		t.Fatalf("remove-node of a dead node: %+v", r)
	}
}

// TestSnapshotRestoreNeedsYes: a restore replaces every session, so it says so
// and needs --yes; from stdin it cannot ask.
func TestSnapshotRestoreNeedsYes(t *testing.T) {
	f, env := startAdmin(t, "")
	file := filepath.Join(t.TempDir(), "backup.snap")
	if err := os.WriteFile(file, []byte("a snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, env, "snapshot", "restore", file)
	if r.code != exitUsage || !strings.Contains(r.stderr, "replaces every session") || !strings.Contains(r.stderr, "node-1 holds 42 session(s) now") || !strings.Contains(r.stderr, "--yes") {
		t.Fatalf("restore without --yes: %+v", r)
	}
	if r := runCLITerminal(t, env, "\n", "snapshot", "restore", file); r.code != exitFailed || f.snapshot != nil {
		t.Fatalf("restore declined on a terminal: %+v, node got %q", r, f.snapshot)
	}
	if r := runCLITerminal(t, env, "yes\n", "snapshot", "restore", file); r.code != exitOK || string(f.snapshot) != "a snapshot" {
		t.Fatalf("restore confirmed on a terminal: %+v, node got %q", r, f.snapshot)
	}
	r = runApp(context.Background(), &app{stdin: strings.NewReader("another"), stdinTTY: true}, env, "snapshot", "restore", "-")
	if r.code != exitUsage || !strings.Contains(r.stderr, "snapshot on stdin") {
		t.Fatalf("restore from stdin without --yes: %+v", r)
	}
	r = runApp(context.Background(), &app{stdin: strings.NewReader("another")}, env, "snapshot", "restore", "-", "--yes")
	if r.code != exitOK || string(f.snapshot) != "another" {
		t.Fatalf("restore from stdin with --yes: %+v, node got %q", r, f.snapshot)
	}
}

// downCache answers every operation with an error, as a node without a leader
// does: the server sends DISCONNECTED.
type downCache struct{}

var errNoLeader = errors.New("no leader")

func (downCache) Add(context.Context, []byte, []byte, time.Duration) (distcache.Status, error) {
	return 0, errNoLeader
}
func (downCache) Get(context.Context, []byte) ([]byte, bool, error)  { return nil, false, errNoLeader }
func (downCache) Remove(context.Context, []byte) (bool, error)       { return false, errNoLeader }
func (downCache) Have(context.Context, []byte) (bool, error)         { return false, errNoLeader }
func (downCache) Take(context.Context, []byte) ([]byte, bool, error) { return nil, false, errNoLeader }

// TestUnavailableIsExplained: a DISCONNECTED answer is reported as "no leader /
// quorum lost" with what it means for the command and the node's own view from
// its admin endpoint, or a hint when that does not answer.
func TestUnavailableIsExplained(t *testing.T) {
	ts := dctest.StartServer(t, "tcp", distcache.NewCacheHandler(downCache{}))
	_, env := startAdmin(t, "")
	env["DCCTL_SERVER"] = ts.Addr
	for _, args := range [][]string{{"add", "s1", "session data"}, {"remove", "s1"}, {"have", "s1"}, {"get", "s1"}, {"take", "s1"}, {"get", "s1", "--json"}} {
		r := runCLI(t, env, args...)
		if r.code != exitFailed {
			t.Errorf("%v: exit %d, want %d", args, r.code, exitFailed)
		}
		// A failure is never printed as an answer.
		for _, answer := range []string{"not found", "not_found", "no\n"} {
			if strings.Contains(r.stdout, answer) || strings.Contains(r.stderr, answer) {
				t.Errorf("%v: output says %q:\nstdout %s\nstderr %s", args, answer, r.stdout, r.stderr)
			}
		}
		for _, w := range []string{
			"unavailable: no leader / quorum lost",
			"node-1's view (admin " + env["DCCTL_ADDR"] + "): Leader, leader node-1, term 7",
			"2 of 3 members alive (node-3 dead)",
			"what to do:",
		} {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%v: stderr lacks %q:\n%s", args, w, r.stderr)
			}
		}
		if (args[0] == "get" || args[0] == "have") && !strings.Contains(r.stderr, "it was not read") {
			t.Errorf("%v: stderr does not say the session was not read:\n%s", args, r.stderr)
		}
		if args[0] != "have" && args[0] != "get" && !strings.Contains(r.stderr, "the "+args[0]+" was not acknowledged") {
			t.Errorf("%v: stderr does not say the write was not acknowledged:\n%s", args, r.stderr)
		}
	}
	r := runCLI(t, env, "add", "s1", "session data", "--addr", strings.TrimPrefix(deadAddr(t), "IP:"))
	if r.code != exitFailed || !strings.Contains(r.stderr, "unavailable: no leader / quorum lost") || !strings.Contains(r.stderr, "no view of the node") || !strings.Contains(r.stderr, "give --addr") {
		t.Fatalf("without a reachable admin endpoint: %+v", r)
	}
}

// TestShortAnswerIsUnavailable: a GET or TAKE answered with a short status other
// than NOTOK (here 0x03, which no node sends) is reported as unavailable, not as
// "not found", while NOTOK still is "not found".
func TestShortAnswerIsUnavailable(t *testing.T) {
	var answer atomic.Value // []byte
	ts := dctest.StartServer(t, "tcp", distcache.HandlerFunc(func(context.Context, *distcache.Message) ([]byte, error) {
		return answer.Load().([]byte), nil
	}))
	env := map[string]string{"DCCTL_SERVER": ts.Addr, "DCCTL_ADDR": strings.TrimPrefix(deadAddr(t), "IP:")}
	answer.Store([]byte{0x03})
	for _, op := range []string{"get", "take"} {
		r := runCLI(t, env, op, "s1")
		if r.code != exitFailed || !strings.Contains(r.stderr, "unavailable: the node answered status 0x03, which is neither session data nor a miss") || strings.Contains(r.stdout, "not found") {
			t.Errorf("%s answered 0x03: %+v", op, r)
		}
	}
	answer.Store([]byte{0x01})
	for _, op := range []string{"get", "take"} {
		r := runCLI(t, env, op, "s1")
		if r.code != exitFailed || r.stdout != "not found\n" || strings.Contains(r.stderr, "unavailable") {
			t.Errorf("%s answered 0x01: %+v", op, r)
		}
	}
}

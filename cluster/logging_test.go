package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// bridgeTo returns raft's logger as the cluster builds it, writing to buf
// through a text or JSON handler at level.
func bridgeTo(buf *bytes.Buffer, format string, level slog.Level) hclog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(buf, opts)
	if format == "json" {
		h = slog.NewJSONHandler(buf, opts)
	}
	return newHCLogger(slog.New(h).With("node", "n1"), "raft")
}

func lines(buf *bytes.Buffer) []string {
	s := strings.TrimSpace(buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// Raft's own calls, as it makes them, render their values in text and JSON
// alike: hclog.Fmt is formatted (not "[%+v ...]"), structs and named types
// are their text, errors their message, an odd value goes under hclog's
// missing key, and raft's "node" does not collide with the node's own.
func TestHCLogBridgeRendersRaftArguments(t *testing.T) {
	servers := []raft.Server{{Suffrage: raft.Voter, ID: "n1", Address: "127.0.0.1:9200"}}
	logAll := func(l hclog.Logger) {
		l.Warn("initial configuration", "index", uint64(7), "servers", hclog.Fmt("%+v", servers))
		l.Warn("entering candidate state", "node", "Node at 127.0.0.1:9200 [Candidate]", "term", 3)
		l.Warn("failed to append to logs", "error", errors.New("disk full"), "last", raft.ServerID("n2"))
		l.Warn("odd", "flags", hclog.Hex(255), "dangling")
		l.With("peer", raft.ServerAddress("127.0.0.1:9201")).Warn("implied", "backoff", 250*time.Millisecond)
	}

	var text bytes.Buffer
	logAll(bridgeTo(&text, "text", slog.LevelInfo))
	got := lines(&text)
	want := []string{
		`level=WARN msg="initial configuration" node=n1 sub=raft index=7 servers="[{Suffrage:Voter ID:n1 Address:127.0.0.1:9200}]"`,
		`level=WARN msg="entering candidate state" node=n1 sub=raft raft_node="Node at 127.0.0.1:9200 [Candidate]" term=3`,
		`level=WARN msg="failed to append to logs" node=n1 sub=raft error="disk full" last=n2`,
		`level=WARN msg=odd node=n1 sub=raft flags=0xff EXTRA_VALUE_AT_END=dangling`,
		`level=WARN msg=implied node=n1 sub=raft peer=127.0.0.1:9201 backoff=250ms`,
	}
	if len(got) != len(want) {
		t.Fatalf("text: %d lines, want %d:\n%s", len(got), len(want), text.String())
	}
	for i := range want {
		if !strings.HasSuffix(got[i], want[i]) {
			t.Errorf("text line %d:\n got %s\nwant …%s", i, got[i], want[i])
		}
	}

	var js bytes.Buffer
	logAll(bridgeTo(&js, "json", slog.LevelInfo))
	wantJSON := []map[string]any{
		{"msg": "initial configuration", "node": "n1", "sub": "raft", "index": 7.0, "servers": "[{Suffrage:Voter ID:n1 Address:127.0.0.1:9200}]"},
		{"msg": "entering candidate state", "node": "n1", "raft_node": "Node at 127.0.0.1:9200 [Candidate]", "term": 3.0},
		{"msg": "failed to append to logs", "error": "disk full", "last": "n2"},
		{"msg": "odd", "flags": "0xff", "EXTRA_VALUE_AT_END": "dangling"},
		{"msg": "implied", "peer": "127.0.0.1:9201", "backoff": "250ms"},
	}
	jl := lines(&js)
	if len(jl) != len(wantJSON) {
		t.Fatalf("json: %d lines, want %d:\n%s", len(jl), len(wantJSON), js.String())
	}
	for i, w := range wantJSON {
		var m map[string]any
		if err := json.Unmarshal([]byte(jl[i]), &m); err != nil {
			t.Fatalf("json line %d: %v: %s", i, err, jl[i])
		}
		for k, v := range w {
			if m[k] != v {
				t.Errorf("json line %d: %s = %#v, want %#v (%s)", i, k, m[k], v, jl[i])
			}
		}
	}
}

// The levels say what needs a person: raft's INFO chatter is debug, a planned
// transfer's "peer has newer term" is INFO, a peer closing its connection is
// debug, a garbled command is WARN.
func TestHCLogBridgeLevels(t *testing.T) {
	closed := &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}
	cases := []struct {
		level hclog.Level
		msg   string
		args  []any
		want  string // "" = not logged at info
	}{
		{hclog.Info, "entering follower state", nil, ""},
		{hclog.Error, "peer has newer term, stopping replication", []any{"peer", "n3"}, "INFO"},
		{hclog.Error, "failed to decode incoming command", []any{"error", closed}, ""},
		{hclog.Error, "failed to decode incoming command", []any{"error", fmt.Errorf("msgpack: %s", closed)}, ""},
		{hclog.Error, "failed to decode incoming command", []any{"error", errors.New("unknown rpc type 9")}, "WARN"},
		{hclog.Warn, "appendEntries rejected, sending older logs", []any{"peer", "n2", "next", 1}, ""},
		{hclog.Error, "failed to append to logs", []any{"error", errors.New("no space left on device")}, "ERROR"},
	}
	for _, c := range cases {
		var buf bytes.Buffer
		bridgeTo(&buf, "text", slog.LevelInfo).Log(c.level, c.msg, c.args...)
		got := ""
		if l := lines(&buf); len(l) == 1 {
			got = strings.Fields(strings.SplitN(l[0], "level=", 2)[1])[0]
		} else if len(l) > 1 {
			t.Fatalf("%q logged %d lines", c.msg, len(l))
		}
		if got != c.want {
			t.Errorf("%v %q %v: logged at %q, want %q", c.level, c.msg, c.args, got, c.want)
		}
	}
	var buf bytes.Buffer
	l := bridgeTo(&buf, "text", slog.LevelInfo)
	if l.IsInfo() || !l.IsWarn() || l.GetLevel() != hclog.Warn {
		t.Errorf("at slog INFO: IsInfo %v, IsWarn %v, GetLevel %v; want false, true, warn", l.IsInfo(), l.IsWarn(), l.GetLevel())
	}
}

// A follower that stays down costs one WARN per minute per kind of failure,
// with the number held back, not three ERRORs a second; another peer's
// failures are counted apart.
func TestHCLogBridgeCollapsesPeerFailures(t *testing.T) {
	var buf bytes.Buffer
	l := bridgeTo(&buf, "text", slog.LevelInfo)
	now := time.Unix(1_000_000, 0)
	l.(*hclogBridge).now = func() time.Time { return now }
	refused := errors.New("dial tcp 127.0.0.1:9201: connect: connection refused")
	for i := range 3 * 60 {
		now = time.Unix(1_000_000, 0).Add(time.Duration(i) * time.Second / 3)
		l.Error("failed to heartbeat to", "peer", raft.ServerAddress("127.0.0.1:9201"), "backoff time", 10*time.Millisecond, "error", refused)
		if i%10 == 0 {
			l.Error("failed to heartbeat to", "peer", raft.ServerAddress("127.0.0.1:9202"), "error", refused)
		}
	}
	now = time.Unix(1_000_000, 0).Add(time.Minute)
	l.Error("failed to heartbeat to", "peer", raft.ServerAddress("127.0.0.1:9201"), "error", refused)
	l.Warn("failed to contact", "server-id", raft.ServerID("n2"), "time", time.Second)

	got := lines(&buf)
	want := []string{
		`level=WARN msg="failed to heartbeat to" node=n1 sub=raft peer=127.0.0.1:9201 backoff_time=10ms`,
		`level=WARN msg="failed to heartbeat to" node=n1 sub=raft peer=127.0.0.1:9202`,
		`level=WARN msg="failed to heartbeat to" node=n1 sub=raft peer=127.0.0.1:9201`,
		`level=WARN msg="failed to contact" node=n1 sub=raft server-id=n2`,
	}
	wantHeld := []string{"suppressed_since_last=0", "suppressed_since_last=0", "suppressed_since_last=179", "suppressed_since_last=0"}
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(got), len(want), buf.String())
	}
	for i := range want {
		w := want[i]
		if !strings.Contains(got[i], w) || !strings.Contains(got[i], wantHeld[i]) || !strings.Contains(got[i], "at_most_every=1m0s") {
			t.Errorf("line %d:\n got %s\nwant %s … %s at_most_every=1m0s", i, got[i], w, wantHeld[i])
		}
	}
}

// A node that waits says for what, every few seconds: a -join address that
// never answers is a WARN, and -bootstrap-expect names the servers seen.
func TestJoinFailuresAndBootstrapWaitAreLogged(t *testing.T) {
	rec := newLogRecorder()
	n := &testNode{t: t, dir: t.TempDir(), id: "n1", raft: freeAddr(t), gossip: freeAddr(t), expect: 3,
		join: []string{freeAddr(t)}, // nobody listens there
		tune: func(c *Config) { c.Logger = slog.New(rec) }}
	n.start()
	t.Cleanup(n.close)
	eventually(t, 10*time.Second, "join failure and bootstrap wait logged", func() bool {
		return len(rec.find("WARN cannot join the cluster yet", "attempts=")) > 0 &&
			len(rec.find("INFO waiting to bootstrap the cluster: seen 1 of 3 servers: n1", "bootstrap_expect=3")) > 0
	})
	for _, l := range rec.all() {
		if strings.HasPrefix(l, "ERROR") {
			t.Errorf("logged an ERROR while waiting: %s", l)
		}
	}
}

func TestPacerSpacesLines(t *testing.T) {
	var p pacer
	t0 := time.Unix(1_000_000, 0)
	var at []time.Duration
	for d := time.Duration(0); d <= 3*time.Minute; d += 100 * time.Millisecond {
		if p.due(t0.Add(d)) {
			at = append(at, d)
		}
	}
	if len(at) < 3 || at[0] != 2*time.Second || at[1] != 7*time.Second {
		t.Fatalf("lines at %v; want the first at 2s, the next at 7s", at)
	}
	last := at[len(at)-1]
	if prev := at[len(at)-2]; last-prev != time.Minute {
		t.Fatalf("lines at %v; want one a minute after the first minute", at)
	}
}

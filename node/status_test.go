package node

import (
	"context"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/internal/syncbuf"
	"github.com/distcache-replicated/distcache/internal/version"
	"github.com/distcache-replicated/distcache/node/adminapi"
)

// TestStatusForOperators: what the status page and dcctl show of a cluster
// comes from the admin answers: every node's version and caps, each member's
// own store figures as its node reports them, the changes of leader (a transfer
// included), and a member that stopped answering marked as not reached.
func TestStatusForOperators(t *testing.T) {
	nodes := startNodes(t, 3, ReadLeaderOnMiss)
	leader, _ := leaderAndFollower(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := version.Get().Version
	if want == "" {
		t.Fatal("no version")
	}
	clients := map[string]*adminapi.Client{}
	for _, nd := range nodes {
		st := nd.Status()
		if st.Version != want || st.MaxSessions != DefaultMaxSessions || st.MaxBytes != DefaultMaxBytes {
			t.Errorf("%s status: version %q, caps %d sessions / %d bytes; want %q, %d / %d",
				st.ID, st.Version, st.MaxSessions, st.MaxBytes, want, DefaultMaxSessions, DefaultMaxBytes)
		}
		if n := len(st.LeaderChanges); n == 0 || st.LeaderChanges[n-1].LeaderID != leader.ID() {
			t.Errorf("%s saw leader changes %+v; want the election of %s last", st.ID, st.LeaderChanges, leader.ID())
		}
		c, err := adminapi.New(adminapi.Config{Addr: st.AdminAddr, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		clients[st.ID] = c
	}

	// Sessions written through one node show in every member's row of every
	// node's members answer, with its role, caps and version.
	cl := dial(t, leader)
	for _, id := range []string{"s-one", "s-two", "s-three"} {
		if err := cl.Add(ctx, []byte(id), []byte("a master secret"), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for _, nd := range nodes {
		waitUntil(t, 10*time.Second, nd.ID()+" lists every member with 3 sessions", func() (bool, any) {
			ms, err := clients[nd.ID()].Members(ctx)
			if err != nil {
				return false, err
			}
			for _, m := range ms.Members {
				if !m.Reached || m.State == "" || m.Sessions != 3 || m.PayloadBytes == 0 || m.Version != want ||
					m.MaxSessions != DefaultMaxSessions || m.MaxBytes != DefaultMaxBytes {
					return false, ms.Members
				}
			}
			return len(ms.Members) == 3, ms.Members
		})
	}

	// A transfer is recorded by every node, after the election, with a newer term.
	start := time.Now()
	target := nodes[0]
	if target == leader {
		target = nodes[1]
	}
	if _, err := clients[leader.ID()].TransferLeader(ctx, target.ID()); err != nil {
		t.Fatalf("transfer to %s: %v", target.ID(), err)
	}
	for _, nd := range nodes {
		waitUntil(t, 10*time.Second, nd.ID()+" records the transfer to "+target.ID(), func() (bool, any) {
			chs := nd.Status().LeaderChanges
			last := chs[len(chs)-1]
			return last.LeaderID == target.ID() && !last.At.Before(start.Truncate(time.Millisecond)) && last.Term > chs[0].Term, chs
		})
	}

	// A member whose admin endpoint is gone is listed as not reached, with why.
	var gone *Node
	for _, nd := range nodes {
		if nd != target {
			gone = nd
			break
		}
	}
	goneID := gone.ID()
	cctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer ccancel()
	if err := gone.Close(cctx); err != nil {
		t.Fatalf("close %s: %v", goneID, err)
	}
	waitUntil(t, 10*time.Second, target.ID()+" lists "+goneID+" as not reached", func() (bool, any) {
		ms, err := clients[target.ID()].Members(ctx)
		if err != nil {
			return false, err
		}
		for _, m := range ms.Members {
			if m.ID == goneID {
				return !m.Reached && m.StatusError != "" && m.Sessions == 0, m
			}
		}
		return true, "gone from the list"
	})
}

// TestCapsAndBuildInfo: the caps a node was started with are in its status, and
// its start-up line and /metrics say which build runs.
func TestCapsAndBuildInfo(t *testing.T) {
	var logs syncbuf.Buffer
	nd := startOne(t, func(c *Config) {
		c.MaxSessions, c.MaxBytes = 1234, 5<<20
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	if line := grepLine(logs.String(), `msg="node started"`); !strings.Contains(line, " version="+version.Get().Version+" ") {
		t.Errorf("the start-up line does not name the version %q: %q", version.Get().Version, line)
	}
	if st := nd.Status(); st.MaxSessions != 1234 || st.MaxBytes != 5<<20 {
		t.Errorf("status caps: %d sessions, %d bytes; want 1234, %d", st.MaxSessions, st.MaxBytes, 5<<20)
	}
	ms := scrapeMetrics(t, nd)["distcache_build_info"].GetMetric()
	if len(ms) != 1 || ms[0].GetGauge().GetValue() != 1 {
		t.Fatalf("distcache_build_info: %v", ms)
	}
	labels := map[string]string{}
	for _, l := range ms[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	v := version.Get()
	if labels["version"] != v.Version || labels["revision"] != v.Revision || labels["go"] != runtime.Version() {
		t.Errorf("distcache_build_info labels %v; want version %q, revision %q, go %q", labels, v.Version, v.Revision, runtime.Version())
	}
}

// waitUntil polls cond until it holds or timeout passes; the test then fails
// with what and cond's last state.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() (bool, any)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s; last: %+v", timeout, what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStatusPageIsOpen: the page is served without the token, like the reads it
// makes, and /ui leads to it.
func TestStatusPageIsOpen(t *testing.T) {
	nd := startOne(t, func(c *Config) { c.AdminToken = "page-token" })
	base := "http://" + nd.Status().AdminAddr
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(base + adminapi.PathUI)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "ui/" {
		t.Errorf("GET %s: %s, Location %q; want a redirect to ui/", adminapi.PathUI, resp.Status, resp.Header.Get("Location"))
	}
	for _, path := range []string{adminapi.PathUI + "/", adminapi.PathUI + "/app.js", adminapi.PathStatus, adminapi.PathMembers, adminapi.PathMetrics} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without the token: %s", path, resp.Status)
		}
	}
}

// grepLine returns the first line of s that contains sub, or "".
func grepLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

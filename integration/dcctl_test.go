package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// TestDcctl drives the operator's tool against a real three-node cluster, the way an
// operator would: membership, leadership, backups, and the original toolkit's roles.
func TestDcctl(t *testing.T) {
	c := startCluster(t, 3, clusterOptions{})
	leader := c.waitLeader(20 * time.Second)
	fol := c.followers(leader)

	t.Run("members", func(t *testing.T) {
		out, err := fol[0].dcctl("members", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Members []member `json:"members"`
		}
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("members --json: %v: %s", err, out)
		}
		voters, leaders := 0, 0
		for _, x := range m.Members {
			if x.Suffrage == "voter" && x.Status == "alive" {
				voters++
			}
			if x.Leader {
				leaders++
			}
			if x.Lag < 0 {
				t.Errorf("member %s: lag unknown (%d); the leader should report it", x.ID, x.Lag)
			}
		}
		if voters != 3 || leaders != 1 {
			t.Fatalf("members: %d alive voters and %d leaders; want 3 and 1: %s", voters, leaders, out)
		}
		table, err := fol[0].dcctl("members")
		if err != nil || !strings.Contains(table, leader.id) {
			t.Fatalf("members table does not list the leader %s: %v\n%s", leader.id, err, table)
		}
	})

	t.Run("sessions", func(t *testing.T) {
		if _, err := fol[0].dcctl("add", "dcctl-1", "a session value", "--ttl", "5m"); err != nil {
			t.Fatal(err)
		}
		out, err := fol[1].dcctl("get", "dcctl-1")
		if err != nil || strings.TrimSpace(out) != "a session value" {
			t.Fatalf("get through another node: %q, %v", out, err)
		}
		if _, err := leader.dcctl("add", "dcctl-1", "again"); err == nil {
			t.Fatal("a second add of the same id succeeded")
		}
	})

	t.Run("remove-node and join", func(t *testing.T) {
		victim := fol[1]
		// An unknown id, through a follower (forwarded to the leader): the
		// operator's mistake is a 404 that says where the ids are.
		out, err := fol[0].dcctl("remove-node", "nosuch", "--yes")
		if err == nil || !strings.Contains(err.Error(), "HTTP 404") || !strings.Contains(err.Error(), "dcctl members") {
			t.Fatalf("remove-node of an unknown id: %q, %v", out, err)
		}
		out, err = leader.dcctl("remove-node", victim.id)
		if err == nil || !strings.Contains(err.Error(), victim.id+" is alive") || !strings.Contains(err.Error(), "--yes") {
			t.Fatalf("remove-node of a live node without --yes: %q, %v", out, err)
		}
		if _, err := leader.dcctl("remove-node", victim.id, "--yes"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 15*time.Second, "the removed node out of the configuration", func() (bool, string) {
			ms, err := leader.members()
			if err != nil {
				return false, err.Error()
			}
			for _, m := range ms {
				if m.ID == victim.id && m.Suffrage == "voter" {
					return false, fmt.Sprintf("%s still a voter", victim.id)
				}
			}
			return true, ""
		})
		if _, err := fol[0].dcctl("add", "while-removed", "still serving"); err != nil {
			t.Fatalf("the cluster stopped serving writes after a removal: %v", err)
		}
		if _, err := victim.dcctl("join", leader.gossipAddr); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "the node back as a voter", func() (bool, string) {
			ms, err := leader.members()
			if err != nil {
				return false, err.Error()
			}
			for _, m := range ms {
				if m.ID == victim.id && m.Suffrage == "voter" {
					return true, ""
				}
			}
			return false, fmt.Sprintf("%s not a voter yet", victim.id)
		})
		waitFor(t, 15*time.Second, "the rejoined node to serve what was written meanwhile", func() (bool, string) {
			out, err := victim.dcctl("get", "while-removed")
			return err == nil && strings.TrimSpace(out) == "still serving", fmt.Sprintf("%q %v", out, err)
		})
	})

	t.Run("transfer-leader", func(t *testing.T) {
		before := c.waitLeader(20 * time.Second)
		if _, err := before.dcctl("transfer-leader"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 15*time.Second, "a new leader", func() (bool, string) {
			st, err := before.status()
			if err != nil {
				return false, err.Error()
			}
			return st.LeaderID != "" && st.LeaderID != before.id, "leader " + st.LeaderID
		})
	})

	t.Run("snapshot save and restore", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "backup.snap")
		nd0 := c.live()[0]
		for i := range 20 {
			if _, err := nd0.dcctl("add", fmt.Sprintf("snap-%d", i), fmt.Sprintf("value %d", i), "--ttl", "10m"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := nd0.dcctl("snapshot", "save", file); err != nil {
			t.Fatal(err)
		}
		if _, err := nd0.dcctl("add", "after-backup", "gone after restore"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.live()[1].dcctl("snapshot", "restore", file, "--yes"); err != nil {
			t.Fatal(err)
		}
		for _, nd := range c.live() {
			waitFor(t, 15*time.Second, "the restored state on "+nd.id, func() (bool, string) {
				for i := range 20 {
					out, err := nd.dcctl("get", fmt.Sprintf("snap-%d", i))
					if err != nil || strings.TrimSpace(out) != fmt.Sprintf("value %d", i) {
						return false, fmt.Sprintf("snap-%d: %q %v", i, out, err)
					}
				}
				if _, err := nd.dcctl("have", "after-backup"); err == nil {
					return false, "a session written after the backup survived the restore"
				}
				return true, ""
			})
		}
	})

	t.Run("bench verifies every answer", func(t *testing.T) {
		out, err := fol[0].dcctl("bench", "--concurrency", "4", "--ops", "800", "--sessions", "40", "--json", "--progress=false")
		if err != nil {
			t.Fatalf("bench: %v\n%s", err, out)
		}
		var rep struct {
			Ops          int64 `json:"ops"`
			Errors       int64 `json:"errors"`
			VerifyErrors int64 `json:"verify_errors"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("bench --json: %v: %s", err, out)
		}
		if rep.Ops != 800 || rep.Errors != 0 || rep.VerifyErrors != 0 {
			t.Fatalf("bench: %d ops, %d errors, %d verification errors; want 800, 0, 0", rep.Ops, rep.Errors, rep.VerifyErrors)
		}
	})

	t.Run("proxy survives the loss of its node", func(t *testing.T) { testProxyFailover(t, c) })
}

// TestDcctlExplainsLostQuorum: with two of three nodes gone, a write through the
// survivor is answered DISCONNECTED; dcctl names it "no leader / quorum lost" and
// shows the survivor's own view of the cluster, not "not found" or a status byte.
func TestDcctlExplainsLostQuorum(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, clusterOptions{})
	leader := c.waitLeader(20 * time.Second)
	fol := c.followers(leader)
	if _, err := fol[0].dcctl("add", "before", "a session value"); err != nil {
		t.Fatal(err)
	}
	fol[1].kill()
	leader.kill()
	survivor := fol[0]
	waitFor(t, 30*time.Second, "dcctl add to explain the lost quorum", func() (bool, string) {
		out, err := survivor.dcctl("add", fmt.Sprintf("during-%d", time.Now().UnixNano()), "a session value")
		if err == nil {
			return false, "the write succeeded: " + out
		}
		msg := err.Error()
		for _, w := range []string{"unavailable: no leader / quorum lost", "was not acknowledged", survivor.id + "'s view", "no leader", "1 of 3 members alive", "what to do"} {
			if !strings.Contains(msg, w) {
				return false, fmt.Sprintf("no %q in %s", w, msg)
			}
		}
		return true, ""
	})
}

// testProxyFailover runs `dcctl proxy` in front of every node, stores a session
// through it, kills the node the proxy uses, and checks that the proxy keeps
// answering (failing over) and that the session is still there.
func testProxyFailover(t *testing.T, c *testCluster) {
	live := c.live()
	var servers []string
	for _, nd := range live {
		servers = append(servers, nd.clientAddr)
	}
	sock := filepath.Join(t.TempDir(), "scache")
	startDcctlProxy(t, "UNIX:"+sock, servers...)

	// Short-lived connections, as applications use the proxy.
	op := func(f func(ctx context.Context, cl *distcache.Client) error) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cl, err := distcache.Dial(ctx, "UNIX:"+sock)
		if err != nil {
			return err
		}
		defer cl.Close()
		return f(ctx, cl)
	}
	waitFor(t, 10*time.Second, "a write through the proxy", func() (bool, string) {
		err := op(func(ctx context.Context, cl *distcache.Client) error {
			return cl.Add(ctx, []byte("via-proxy"), []byte("stored through dc_client's heir"), 10*time.Minute)
		})
		return err == nil || errors.Is(err, distcache.ErrExists), fmt.Sprint(err)
	})

	// The proxy uses the first server of its list: kill that node.
	live[0].kill()
	waitFor(t, 20*time.Second, "the proxy to answer from another node", func() (bool, string) {
		var got []byte
		err := op(func(ctx context.Context, cl *distcache.Client) error {
			var err error
			got, err = cl.Get(ctx, []byte("via-proxy"))
			return err
		})
		return err == nil && string(got) == "stored through dc_client's heir", fmt.Sprintf("%q %v", got, err)
	})
	waitFor(t, 20*time.Second, "writes through the proxy after the failover", func() (bool, string) {
		err := op(func(ctx context.Context, cl *distcache.Client) error {
			return cl.Add(ctx, []byte(fmt.Sprintf("after-kill-%d", time.Now().UnixNano())), []byte("new session data"), time.Minute)
		})
		return err == nil, fmt.Sprint(err)
	})
}

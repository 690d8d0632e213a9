package cluster

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/cluster/mux"
	"github.com/distcache-replicated/distcache/internal/testpki"
)

// logRecorder is a slog handler that keeps every record's message and
// attributes as one line, for assertions on what was logged.
type logRecorder struct {
	mu    *sync.Mutex
	lines *[]string
	attrs string
}

func newLogRecorder() *logRecorder { return &logRecorder{mu: &sync.Mutex{}, lines: new([]string)} }

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Level.String() + " " + rec.Message + r.attrs)
	rec.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	r.mu.Lock()
	*r.lines = append(*r.lines, b.String())
	r.mu.Unlock()
	return nil
}
func (r *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *r
	for _, a := range as {
		c.attrs += " " + a.String()
	}
	return &c
}
func (r *logRecorder) WithGroup(string) slog.Handler { return r }

// find returns the logged lines containing every one of subs.
func (r *logRecorder) find(subs ...string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
next:
	for _, l := range *r.lines {
		for _, s := range subs {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// all returns every line logged so far.
func (r *logRecorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), *r.lines...)
}

// TestMutualTLSClusterRefusesStrangers: a cluster whose port requires mutual
// TLS replicates and forwards as usual, while a peer with a certificate from
// another CA, a peer without a certificate and a plaintext peer are refused
// at the handshake and each refusal is logged with the remote address.
func TestMutualTLSClusterRefusesStrangers(t *testing.T) {
	ca := testpki.NewCA(t, "cluster CA")
	conf := ca.MutualTLS(ca.Issue(t, "node", "127.0.0.1"))
	recs := map[string]*logRecorder{}
	var mu sync.Mutex
	nodes := newTestCluster(t, 3, func(c *Config) {
		c.TLS = conf
		rec := newLogRecorder()
		mu.Lock()
		recs[c.NodeID] = rec
		mu.Unlock()
		c.Logger = slog.New(rec)
	})
	leader, followers := leaderAndFollowers(t, nodes)
	if got := propose(t, followers[0], "k", "v"); got != "ok:k" {
		t.Fatalf("propose through a follower over TLS: %q", got)
	}
	eventually(t, 5*time.Second, "every node applied k", func() bool {
		for _, n := range nodes {
			if _, ok := n.fsm.get("k"); !ok {
				return false
			}
		}
		return true
	})

	other := testpki.NewCA(t, "another CA")
	for name, cfg := range map[string]*tls.Config{
		"foreign certificate": other.MutualTLS(other.Issue(t, "intruder", "127.0.0.1")),
		"no certificate":      {RootCAs: ca.Pool, MinVersion: tls.VersionTLS13},
	} {
		cfg.ServerName = "127.0.0.1"
		// The dial itself may succeed (TLS 1.3 client certificates are checked
		// after the client's Finished); the server must then close without a
		// byte of raft or forwarding traffic.
		d := &tls.Dialer{Config: cfg}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := d.DialContext(ctx, "tcp", leader.c.RaftAddr())
		cancel()
		if err == nil {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			conn.Write([]byte{byte(mux.KindForward)})
			_, err = conn.Read(make([]byte, 1))
			local := conn.LocalAddr().String()
			conn.Close()
			if err == nil {
				t.Fatalf("%s: the cluster port answered", name)
			}
			eventually(t, 5*time.Second, name+": refusal logged with the remote address", func() bool {
				return len(recs[leader.id].find("cluster connection refused", local)) == 1
			})
		}
	}

	// Plaintext: the kind byte is not a TLS ClientHello.
	conn, err := net.Dial("tcp", leader.c.RaftAddr())
	if err != nil {
		t.Fatal(err)
	}
	local := conn.LocalAddr().String()
	conn.Write([]byte{byte(mux.KindRaft), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("plaintext connection answered")
	}
	conn.Close()
	eventually(t, 5*time.Second, "plaintext refusal logged", func() bool {
		return len(recs[leader.id].find("cluster connection refused", local)) == 1
	})

	// The cluster is unaffected.
	if got := propose(t, followers[1], "k2", "v"); got != "ok:k2" {
		t.Fatalf("propose after the refusals: %q", got)
	}
}

// TestMutualTLSStrangerInGossipIsNotAdded: a node that shares gossip with the
// cluster but whose certificate comes from another CA is never added to the
// Raft configuration, and the leader says why.
func TestMutualTLSStrangerInGossipIsNotAdded(t *testing.T) {
	ca := testpki.NewCA(t, "cluster CA")
	conf := ca.MutualTLS(ca.Issue(t, "node", "127.0.0.1"))
	rec := newLogRecorder()
	nodes := newTestCluster(t, 1, func(c *Config) { c.TLS = conf; c.Logger = slog.New(rec) })
	leader := nodes[0]
	other := testpki.NewCA(t, "another CA")
	stranger := &testNode{t: t, dir: t.TempDir(), id: "stranger", raft: freeAddr(t), gossip: freeAddr(t),
		join: []string{leader.gossip}, tune: func(c *Config) { c.TLS = other.MutualTLS(other.Issue(t, "stranger", "127.0.0.1")) }}
	stranger.start()
	t.Cleanup(func() {
		if !stranger.stopped {
			stranger.kill()
		}
	})
	eventually(t, 10*time.Second, "the leader refuses to add the stranger", func() bool {
		return len(rec.find("not adding a member seen in gossip", "id=stranger")) > 0
	})
	if ids := configIDs(t, leader); len(ids) != 1 || !ids[leader.id] {
		t.Fatalf("configuration %v, want only %s", ids, leader.id)
	}
	if got := propose(t, leader, "k", "v"); got != "ok:k" {
		t.Fatalf("propose: %q", got)
	}
	if _, ok := stranger.fsm.get("k"); ok {
		t.Fatal("the stranger got data")
	}
}

// TestMutualTLSBootstrapSkipsStranger: bootstrap-expect counts only peers
// whose cluster port passes mutual TLS, so a stranger announcing the same
// expected size cannot become a founding voter.
func TestMutualTLSBootstrapSkipsStranger(t *testing.T) {
	ca, other := testpki.NewCA(t, "cluster CA"), testpki.NewCA(t, "another CA")
	rec := newLogRecorder()
	good := &testNode{t: t, dir: t.TempDir(), id: "n1", raft: freeAddr(t), gossip: freeAddr(t), expect: 2,
		tune: func(c *Config) { c.TLS = ca.MutualTLS(ca.Issue(t, "n1", "127.0.0.1")); c.Logger = slog.New(rec) }}
	stranger := &testNode{t: t, dir: t.TempDir(), id: "n2", raft: freeAddr(t), gossip: freeAddr(t), expect: 2,
		tune: func(c *Config) { c.TLS = other.MutualTLS(other.Issue(t, "n2", "127.0.0.1")) }}
	good.join, stranger.join = []string{stranger.gossip}, []string{good.gossip}
	good.start()
	stranger.start()
	t.Cleanup(func() { good.kill(); stranger.kill() })
	eventually(t, 10*time.Second, "n1 declines to bootstrap with the stranger", func() bool {
		return len(rec.find("fails mutual TLS", "id=n2")) > 0
	})
	for _, n := range []*testNode{good, stranger} {
		f := n.c.raft.GetConfiguration()
		if err := f.Error(); err != nil || len(f.Configuration().Servers) != 0 {
			t.Fatalf("%s has a configuration: %+v, %v", n.id, f.Configuration().Servers, err)
		}
	}
}

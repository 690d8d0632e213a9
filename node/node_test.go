package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/distcache-replicated/distcache/internal/testport"
	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// freeAddr returns a loopback host:port for a server the test starts.
func freeAddr(t *testing.T) string { return testport.Addr(t) }

// startNodes starts n real nodes in this process: real Raft with BoltDB files in a
// temp dir, real sockets on loopback, every front-end enabled.
func startNodes(t *testing.T, n int, rc ReadConsistency) []*Node {
	t.Helper()
	return startNodesConfig(t, n, rc, nil)
}

// startNodesConfig is startNodes with each node's configuration adjusted by
// mutate (node i from 0) before it starts.
func startNodesConfig(t *testing.T, n int, rc ReadConsistency, mutate func(i int, c *Config)) []*Node {
	t.Helper()
	dir := t.TempDir()
	gossip := make([]string, n)
	for i := range gossip {
		gossip[i] = freeAddr(t)
	}
	var nodes []*Node
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for _, nd := range nodes {
			nd.Close(ctx)
		}
	})
	for i := range n {
		var join []string
		for j, g := range gossip {
			if j != i {
				join = append(join, g)
			}
		}
		cfg := Config{
			NodeID: fmt.Sprintf("n%d", i+1), DataDir: filepath.Join(dir, fmt.Sprint(i)),
			RaftAddr: freeAddr(t), GossipAddr: gossip[i], Join: join, BootstrapExpect: n,
			AdminAddr: "127.0.0.1:0", Listen: []string{"IP:127.0.0.1:0"},
			MemcacheListen: []string{"127.0.0.1:0"}, RESPListen: []string{"127.0.0.1:0"},
			ReadConsistency: rc, ExpireInterval: 50 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		}
		// Slower failure detection than the LAN defaults: these nodes share two
		// cores with the race detector and other test packages.
		cfg.Tune.HeartbeatTimeout, cfg.Tune.ElectionTimeout = 500*time.Millisecond, 500*time.Millisecond
		if mutate != nil {
			mutate(i, &cfg)
		}
		nd, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatalf("start node %d: %v", i+1, err)
		}
		nodes = append(nodes, nd)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, nd := range nodes {
		if err := nd.Cluster().WaitForLeader(ctx); err != nil {
			t.Fatalf("no leader: %v", err)
		}
		// Reads wait for this after a start; a test that takes peers down
		// right away must not catch a node before it.
		if err := nd.Cluster().WaitCaughtUp(ctx); err != nil {
			t.Fatalf("%s not caught up: %v", nd.ID(), err)
		}
	}
	return nodes
}

func dial(t *testing.T, nd *Node) *distcache.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := distcache.Dial(ctx, nd.Listeners()["distcache"][0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// scrapeMetrics reads nd's /metrics, failing the test unless it parses.
func scrapeMetrics(t *testing.T, nd *Node) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + nd.Status().AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

func leaderAndFollower(t *testing.T, nodes []*Node) (leader, follower *Node) {
	t.Helper()
	for _, nd := range nodes {
		if nd.Cluster().IsLeader() {
			leader = nd
		} else {
			follower = nd
		}
	}
	if leader == nil || follower == nil {
		t.Fatal("no leader/follower pair")
	}
	return leader, follower
}

// TestSessionThroughAnyNode: a session written with the original protocol through
// one node is read through every other, with the spec's answers for duplicates and
// removal. Under linearizable reads a REMOVE is seen by every node at once; under
// leader-on-miss at once on the node that did it and soon on the others (a lagging
// follower may still hit for a moment: that is the mode's documented cost).
func TestSessionThroughAnyNode(t *testing.T) {
	for _, rc := range []ReadConsistency{ReadLinearizable, ReadLeaderOnMiss} {
		t.Run(string(rc), func(t *testing.T) { testSessionThroughAnyNode(t, rc) })
	}
}

func testSessionThroughAnyNode(t *testing.T, rc ReadConsistency) {
	nodes := startNodes(t, 3, rc)
	_, follower := leaderAndFollower(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	w := dial(t, follower)
	id, data := []byte("session-id-1"), []byte("master secret and more")
	if err := w.Add(ctx, id, data, time.Minute); err != nil {
		t.Fatalf("ADD through a follower: %v", err)
	}
	for _, nd := range nodes {
		got, err := dial(t, nd).Get(ctx, id)
		if err != nil || string(got) != string(data) {
			t.Fatalf("GET on %s: %q, %v; want %q", nd.ID(), got, err, data)
		}
	}
	// Of two ADDs of the same id on different nodes, exactly the first wins.
	if err := dial(t, nodes[2]).Add(ctx, id, []byte("other"), time.Minute); !errors.Is(err, distcache.ErrExists) {
		t.Fatalf("second ADD of the same id: %v; want ErrExists", err)
	}
	if err := dial(t, nodes[0]).Remove(ctx, id); err != nil {
		t.Fatalf("REMOVE: %v", err)
	}
	if ok, err := dial(t, nodes[0]).Have(ctx, id); err != nil || ok {
		t.Fatalf("HAVE on the removing node: %v, %v; want false", ok, err)
	}
	for _, nd := range nodes[1:] {
		c := dial(t, nd)
		deadline := time.Now().Add(5 * time.Second)
		for {
			ok, err := c.Have(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			if rc == ReadLinearizable || time.Now().After(deadline) {
				t.Fatalf("HAVE on %s after REMOVE: true; want false", nd.ID())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err := dial(t, nodes[1]).Remove(ctx, id); !errors.Is(err, distcache.ErrNotFound) {
		t.Fatalf("REMOVE of a removed id: %v; want ErrNotFound", err)
	}
}

// TestTakeIsSingleUse: of many concurrent TAKEs of one session through different
// nodes, exactly one gets it.
func TestTakeIsSingleUse(t *testing.T) {
	nodes := startNodes(t, 3, ReadLocal)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id := []byte("ticket")
	if err := dial(t, nodes[0]).Add(ctx, id, []byte("state-bytes"), time.Minute); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 9)
	for i := range 9 {
		c := dial(t, nodes[i%3])
		go func() {
			_, err := c.Take(ctx, id)
			got <- err
		}()
	}
	wins := 0
	for range 9 {
		switch err := <-got; {
		case err == nil:
			wins++
		case !errors.Is(err, distcache.ErrNotFound):
			t.Fatalf("TAKE: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d TAKEs got the session; want exactly 1", wins)
	}
}

// TestExpiryIsReplicated: a session expires on every node, and the leader's EXPIRE
// frees it everywhere (the session count drops to zero on every replica).
func TestExpiryIsReplicated(t *testing.T) {
	nodes := startNodes(t, 3, ReadLocal)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id := []byte("short-lived")
	if err := dial(t, nodes[1]).Add(ctx, id, []byte("some session"), 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, nd := range nodes {
		for nd.store.Stats().Sessions != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s still holds %d sessions long after expiry", nd.ID(), nd.store.Stats().Sessions)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := dial(t, nd).Get(ctx, id); !errors.Is(err, distcache.ErrNotFound) {
			t.Fatalf("GET of an expired session on %s: %v; want ErrNotFound", nd.ID(), err)
		}
	}
}

// TestFrontEndsShareOneKeyspace: a session stored over memcache is read over RESP
// and distcache on other nodes.
func TestFrontEndsShareOneKeyspace(t *testing.T) {
	nodes := startNodes(t, 3, ReadLeaderOnMiss)
	mc, err := net.Dial("tcp", nodes[0].Listeners()["memcache"][0])
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	mc.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(mc, "set mod_ssl-sess:0a0b 0 299 5 \r\nhello\r\n")
	line, err := bufio.NewReader(mc).ReadString('\n')
	if err != nil || line != "STORED\r\n" {
		t.Fatalf("memcache set: %q, %v", line, err)
	}
	rc, err := net.Dial("tcp", nodes[1].Listeners()["resp"][0])
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rc.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(rc, "GET mod_ssl-sess:0a0b\r\n")
	br := bufio.NewReader(rc)
	l1, _ := br.ReadString('\n')
	l2, _ := br.ReadString('\n')
	if l1 != "$5\r\n" || l2 != "hello\r\n" {
		t.Fatalf("RESP GET: %q %q", l1, l2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := dial(t, nodes[2]).Get(ctx, []byte("mod_ssl-sess:0a0b"))
	if err != nil || string(got) != "hello" {
		t.Fatalf("distcache GET: %q, %v", got, err)
	}
}

// TestNoQuorumFailsFast: with both peers crashed a write is answered with the
// protocol's error within the write timeout, and local reads keep working. (Peers that
// stop gracefully stay voters too, with the same result; only a node that leaves, with
// dcctl leave, shrinks the configuration.)
func TestNoQuorumFailsFast(t *testing.T) {
	nodes := startNodes(t, 3, ReadLocal)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := dial(t, nodes[0])
	if err := c.Add(ctx, []byte("kept"), []byte("session data"), time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, nd := range nodes[1:] {
		nd.Cluster().Kill()
	}
	start := time.Now()
	err := c.Add(ctx, []byte("lost"), []byte("session data"), time.Minute)
	var se *distcache.StatusError
	if !errors.As(err, &se) || se.Status != distcache.StatusDisconnected {
		t.Fatalf("ADD without quorum: %v; want status 0x02", err)
	}
	if took := time.Since(start); took > DefaultWriteTimeout+time.Second {
		t.Fatalf("ADD without quorum took %v; want at most the write timeout", took)
	}
	if got, err := c.Get(ctx, []byte("kept")); err != nil || string(got) != "session data" {
		t.Fatalf("local read without quorum: %q, %v", got, err)
	}
}

// TestAdminAndMetrics: the admin endpoint reports status, members and readiness, and
// /metrics parses and moves with traffic.
func TestAdminAndMetrics(t *testing.T) {
	nodes := startNodes(t, 3, ReadLeaderOnMiss)
	admin := "http://" + nodes[0].Status().AdminAddr
	scrape := func() float64 {
		fams := scrapeMetrics(t, nodes[0])
		var total float64
		for _, m := range fams["distcache_requests_total"].GetMetric() {
			total += m.GetCounter().GetValue()
		}
		if _, ok := fams["distcache_raft_term"]; !ok {
			t.Fatal("/metrics has no distcache_raft_term")
		}
		return total
	}
	before := scrape()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := dial(t, nodes[0])
	for i := range 5 {
		if err := c.Add(ctx, fmt.Appendf(nil, "m%d", i), []byte("session"), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if after := scrape(); after-before != 5 {
		t.Fatalf("requests_total moved by %v after 5 ADDs; want 5", after-before)
	}
	resp, err := http.Get(admin + "/v1/members")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Count(string(body), `"suffrage": "voter"`) != 3 {
		t.Fatalf("members does not list three voters: %s", body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(admin + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d", resp.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProgressLineMatchesOriginal(t *testing.T) {
	got := progressLine(1000, 995, 4, 3)
	want := "Info, total operations =    1000  (+   995), total sessions =     4  (+  3)"
	if got != want {
		t.Fatalf("progress line\n got %q\nwant %q", got, want)
	}
	if got := progressLine(5, 0, 2, -3); !strings.HasSuffix(got, "(-  3)") {
		t.Fatalf("negative change: %q", got)
	}

	// As a log line: the original's text, and the counters as fields next to node=.
	var buf bytes.Buffer
	logProgress(slog.New(slog.NewJSONHandler(&buf, nil)).With("node", "n1"), 1000, 995, 4, -3)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("activity line is not one JSON record: %v: %s", err, buf.Bytes())
	}
	wantFields := map[string]any{"msg": progressLine(1000, 995, 4, -3), "node": "n1",
		"operations": 1000.0, "operations_delta": 995.0, "sessions": 4.0, "sessions_delta": -3.0}
	for k, v := range wantFields {
		if rec[k] != v {
			t.Errorf("activity line: %s = %#v, want %#v (%s)", k, rec[k], v, buf.Bytes())
		}
	}
}

// TestSnapshotSaveRestoreThroughAnyNode: a backup taken through a follower's admin
// endpoint and restored through another follower brings every node back to it.
func TestSnapshotSaveRestoreThroughAnyNode(t *testing.T) {
	nodes := startNodes(t, 3, ReadLinearizable)
	_, follower := leaderAndFollower(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := dial(t, follower)
	if err := c.Add(ctx, []byte("kept"), []byte("in the backup"), time.Hour); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + follower.Status().AdminAddr + "/v1/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	backup, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || len(backup) == 0 {
		t.Fatalf("snapshot save: %d, %d bytes, %v", resp.StatusCode, len(backup), err)
	}
	if err := c.Add(ctx, []byte("later"), []byte("not in the backup"), time.Hour); err != nil {
		t.Fatal(err)
	}
	var other *Node
	for _, nd := range nodes {
		if nd != follower && !nd.Cluster().IsLeader() {
			other = nd
		}
	}
	resp, err = http.Post("http://"+other.Status().AdminAddr+"/v1/snapshot", "application/octet-stream", strings.NewReader(string(backup)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("snapshot restore through a follower: %d %s", resp.StatusCode, body)
	}
	for _, nd := range nodes {
		cl := dial(t, nd)
		if got, err := cl.Get(ctx, []byte("kept")); err != nil || string(got) != "in the backup" {
			t.Fatalf("%s after restore: kept = %q, %v", nd.ID(), got, err)
		}
		if _, err := cl.Get(ctx, []byte("later")); !errors.Is(err, distcache.ErrNotFound) {
			t.Fatalf("%s after restore: a session written after the backup survived: %v", nd.ID(), err)
		}
	}
}

// TestAdminConnectionLimit: past adminMaxConns the admin endpoint closes new
// connections at once instead of letting a flood exhaust the node, and frees a slot
// when a connection goes.
func TestAdminConnectionLimit(t *testing.T) {
	nodes := startNodes(t, 1, ReadLocal)
	addr := nodes[0].Status().AdminAddr
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range adminMaxConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// The server accepts in the background: poll until a new connection is the one
	// refused (read sees EOF at once, not a timeout).
	refused := func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return true
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		return errors.Is(err, io.EOF)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !refused() {
		if time.Now().After(deadline) {
			t.Fatalf("connection %d was not refused", adminMaxConns+1)
		}
	}
	held[0].Close()
	held = held[1:]
	deadline = time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no admin call served after a slot was freed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/internal/syncbuf"
	"github.com/distcache-replicated/distcache/internal/testport"
)

// binaries holds the paths of the dcnode and dcctl executables built once per test
// run by TestMain. It is written only in TestMain, before any test runs.
type binaries struct {
	dcnode, dcctl string
	// dcnodeHelp is `dcnode -help`, to tell which optional flags this build has.
	dcnodeHelp string
}

// dcnodeHasFlag reports whether the built dcnode accepts -name.
func dcnodeHasFlag(name string) bool {
	return strings.Contains(bin.dcnodeHelp, "-"+name+" ") || strings.Contains(bin.dcnodeHelp, "-"+name+"\n")
}

var bin binaries

// TestMain builds dcnode and dcctl once for the whole package. They are built without
// -race: the race detector belongs to the test process here, and a race-instrumented
// node is several times slower, which would make tuned election timeouts flaky on two
// cores. Set DCINT_RACE_BINARIES=1 to build them with -race anyway.
func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "dcint-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin = binaries{dcnode: filepath.Join(dir, "dcnode"), dcctl: filepath.Join(dir, "dcctl")}
	for name, out := range map[string]string{"./cmd/dcnode": bin.dcnode, "./cmd/dcctl": bin.dcctl} {
		args := []string{"build", "-o", out}
		if os.Getenv("DCINT_RACE_BINARIES") != "" {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, name)...)
		cmd.Dir = ".." // the module root
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: go build %s: %v\n%s", name, err, b)
			return 1
		}
	}
	help, _ := exec.Command(bin.dcnode, "-help").CombinedOutput()
	bin.dcnodeHelp = string(help)
	return m.Run()
}

// clusterOptions tunes a test cluster. The zero value gives a three-node-friendly
// configuration with linearizable reads and LAN timeouts tightened for loopback.
type clusterOptions struct {
	// ReadConsistency is passed as -read-consistency; "" means linearizable.
	ReadConsistency string
	// Heartbeat and Election are the Raft timeouts; zero means 500ms each (the LAN
	// defaults: tighter values cause spurious elections when two clusters and the
	// race-instrumented test process share two cores).
	Heartbeat, Election time.Duration
	// WriteTimeout is -write-timeout; zero means 1s.
	WriteTimeout time.Duration
	// Proxy puts a faultProxy in front of every node's cluster port, so that tests can
	// partition nodes (requires dcnode's -raft-advertise flag).
	Proxy bool
	// ExtraArgs are appended to every node's command line.
	ExtraArgs []string
	// NodeArgs, when set, gives each node arguments of its own (after ExtraArgs),
	// at every start.
	NodeArgs func(nd *testNode) []string
	// Ordered starts the nodes in index order instead of a random order.
	Ordered bool
}

func (o clusterOptions) withDefaults() clusterOptions {
	if o.ReadConsistency == "" {
		o.ReadConsistency = "linearizable"
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = 500 * time.Millisecond
	}
	if o.Election == 0 {
		o.Election = 500 * time.Millisecond
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = time.Second
	}
	return o
}

// testCluster is a set of dcnode processes started by one test. All of them are
// stopped, and their data removed, when the test ends; their logs are printed if it
// failed.
type testCluster struct {
	t     testing.TB
	opts  clusterOptions
	base  string // parent of every node's data dir
	nodes []*testNode
	mu    sync.Mutex // guards nodes for helpers called from workload goroutines
}

// testNode is one dcnode process (or the slot for one, while it is down). Its
// addresses stay fixed across restarts, as a real server's would.
type testNode struct {
	c       *testCluster
	id      string
	dataDir string
	// ClientAddr is the distcache listener in the original syntax (IP:127.0.0.1:P).
	clientAddr string
	raftAddr   string // where the node binds its cluster port
	advertise  string // what peers dial: raftAddr, or the proxy's address
	gossipAddr string
	adminAddr  string
	join       []string // gossip addresses given as -join
	expect     int      // -bootstrap-expect
	extra      []string
	proxy      *faultProxy

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the current process has exited
	log  *syncBuffer   // every incarnation's stderr, separated by a banner
	runs int
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of exec's copier and
// the reads of a failing test.
type syncBuffer = syncbuf.Buffer

// freePort returns a port on 127.0.0.1, free for TCP and UDP, never handed out twice
// (see internal/testport). The small race with other processes is handled by
// retrying a node whose start fails with "address already in use".
func freePort(t testing.TB) int { return testport.Port(t) }

// startCluster starts n dcnode processes with -bootstrap-expect n, each joining all
// the others, in a random order (unless opts.Ordered), and waits until they agree on
// one leader. Node ids are n1..nN.
func startCluster(t testing.TB, n int, opts clusterOptions) *testCluster {
	t.Helper()
	c := newTestCluster(t, opts)
	for i := range n {
		c.nodes = append(c.nodes, c.newNode(fmt.Sprintf("n%d", i+1)))
	}
	for _, nd := range c.nodes {
		nd.expect = n
		for _, o := range c.nodes {
			if o != nd {
				nd.join = append(nd.join, o.gossipAddr)
			}
		}
	}
	order := rand.Perm(n)
	if c.opts.Ordered {
		for i := range order {
			order[i] = i
		}
	}
	var ids []string
	for _, i := range order {
		ids = append(ids, c.nodes[i].id)
		c.nodes[i].start()
	}
	t.Logf("started %d nodes in order %v", n, ids)
	c.waitLeader(30 * time.Second)
	return c
}

// newTestCluster returns an empty cluster whose processes are killed, and logs
// printed on failure, when the test ends. Add nodes with newNode or addNode. The data
// directory is created before the cleanup that kills the nodes is registered:
// cleanups run last-in first-out, so the nodes are gone before it is removed.
func newTestCluster(t testing.TB, opts clusterOptions) *testCluster {
	c := &testCluster{t: t, opts: opts.withDefaults(), base: t.TempDir()}
	t.Cleanup(c.cleanup)
	return c
}

// newNode allocates the addresses and data directory of a node that is not started
// yet and registers it with the cluster (so cleanup covers it).
func (c *testCluster) newNode(id string) *testNode {
	c.t.Helper()
	nd := &testNode{c: c, id: id, log: &syncBuffer{}}
	base := c.base
	if base == "" { // a testCluster built without newTestCluster
		base = c.t.TempDir()
	}
	nd.dataDir = filepath.Join(base, id)
	nd.allocPorts()
	return nd
}

// addNode creates a node that joins the running cluster through gossip (no bootstrap),
// starts it, and returns it. The caller decides how it becomes a voter (automatic
// reconciliation or dcctl join).
func (c *testCluster) addNode(id string, join bool) *testNode {
	c.t.Helper()
	nd := c.newNode(id)
	if join {
		for _, o := range c.live() {
			nd.join = append(nd.join, o.gossipAddr)
		}
	}
	nd.expect = 0
	c.mu.Lock()
	c.nodes = append(c.nodes, nd)
	c.mu.Unlock()
	nd.start()
	return nd
}

func (nd *testNode) allocPorts() {
	t := nd.c.t
	nd.clientAddr = fmt.Sprintf("IP:127.0.0.1:%d", freePort(t))
	nd.raftAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	nd.advertise = nd.raftAddr
	nd.gossipAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	nd.adminAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	if nd.c.opts.Proxy {
		if nd.proxy != nil {
			nd.proxy.Close()
		}
		p, err := newFaultProxy(nd.id, nd.raftAddr, nd.c.pidOwner)
		if err != nil {
			t.Fatalf("proxy for %s: %v", nd.id, err)
		}
		nd.proxy = p
		nd.advertise = p.Addr()
	}
}

// args is the node's command line.
func (nd *testNode) args() []string {
	o := nd.c.opts
	a := []string{
		"-node-id", nd.id,
		"-data-dir", nd.dataDir,
		"-listen", nd.clientAddr,
		"-raft-addr", nd.raftAddr,
		"-gossip-addr", nd.gossipAddr,
		"-admin-addr", nd.adminAddr,
		"-bootstrap-expect", strconv.Itoa(nd.expect),
		"-read-consistency", o.ReadConsistency,
		"-heartbeat-timeout", o.Heartbeat.String(),
		"-election-timeout", o.Election.String(),
		"-write-timeout", o.WriteTimeout.String(),
		"-quiet",
		"-log-level", "info",
	}
	if nd.advertise != nd.raftAddr {
		a = append(a, "-raft-advertise", nd.advertise)
	}
	if len(nd.join) > 0 {
		a = append(a, "-join", strings.Join(nd.join, ","))
	}
	a = append(a, o.ExtraArgs...)
	if o.NodeArgs != nil {
		a = append(a, o.NodeArgs(nd)...)
	}
	return append(a, nd.extra...)
}

// start launches the node's process and waits until its admin endpoint answers
// /healthz. A first start that fails because a port was taken meanwhile is retried
// with fresh ports; a restart keeps its addresses (peers know them).
func (nd *testNode) start() {
	t := nd.c.t
	t.Helper()
	for attempt := 0; ; attempt++ {
		err := nd.startOnce()
		if err == nil {
			return
		}
		if attempt < 3 && nd.runs == 1 && strings.Contains(nd.log.String(), "address already in use") {
			t.Logf("%s: port taken, retrying with fresh ports: %v", nd.id, err)
			nd.runs = 0
			nd.allocPorts()
			continue
		}
		t.Fatalf("start %s: %v", nd.id, err)
	}
}

func (nd *testNode) startOnce() error {
	nd.mu.Lock()
	if nd.cmd != nil {
		nd.mu.Unlock()
		return fmt.Errorf("%s is already running", nd.id)
	}
	nd.runs++
	fmt.Fprintf(nd.log, "===== %s start #%d at %s: dcnode %s\n", nd.id, nd.runs,
		time.Now().Format("15:04:05.000"), strings.Join(nd.args(), " "))
	cmd := exec.Command(bin.dcnode, nd.args()...)
	cmd.Stdout = nd.log
	cmd.Stderr = nd.log
	// Its own process group, so a stray signal to the test does not hit it and the
	// node cannot outlive a killed test run by inheriting the terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		nd.mu.Unlock()
		return err
	}
	done := make(chan struct{})
	nd.cmd, nd.done = cmd, done
	nd.mu.Unlock()
	go func() {
		cmd.Wait()
		close(done)
	}()

	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-done:
			nd.mu.Lock()
			nd.cmd = nil
			nd.mu.Unlock()
			return fmt.Errorf("%s exited during start-up: %v", nd.id, cmd.ProcessState)
		default:
		}
		if nd.healthy() {
			return nil
		}
		if time.Now().After(deadline) {
			nd.kill()
			return fmt.Errorf("%s did not serve /healthz within 20s", nd.id)
		}
		pollPause()
	}
}

// pollPause is the interval between two polls of a condition; every use sits in a
// loop with a deadline.
func pollPause() { time.Sleep(20 * time.Millisecond) }

func (nd *testNode) healthy() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+nd.adminAddr+"/healthz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// ident returns the node's id, safely against rename from the test goroutine
// (workload goroutines read it while a scenario gives a wiped node a new id).
func (nd *testNode) ident() string {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.id
}

// rename gives the node a new id, for a wiped node that comes back as a new member.
func (nd *testNode) rename(id string) {
	nd.mu.Lock()
	nd.id = id
	nd.mu.Unlock()
}

// pid returns the running process id, or 0 when the node is down.
func (nd *testNode) pid() int {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd == nil {
		return 0
	}
	return nd.cmd.Process.Pid
}

// running reports whether the node's process is up (it may be paused).
func (nd *testNode) running() bool { return nd.pid() != 0 }

// signal sends sig to the node's process; it is a no-op when the node is down.
func (nd *testNode) signal(sig syscall.Signal) {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd != nil {
		nd.cmd.Process.Signal(sig)
	}
}

// kill SIGKILLs the node (a crash: nothing is flushed or said goodbye) and waits for
// the process to be gone.
func (nd *testNode) kill() { nd.stopWith(syscall.SIGKILL, 5*time.Second) }

// stop shuts the node down gracefully with SIGTERM (leadership transfer, leave, clean
// close), falling back to SIGKILL after 15s.
func (nd *testNode) stop() { nd.stopWith(syscall.SIGTERM, 15*time.Second) }

func (nd *testNode) stopWith(sig syscall.Signal, grace time.Duration) {
	nd.mu.Lock()
	cmd, done := nd.cmd, nd.done
	nd.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGCONT) // a paused process cannot handle SIGTERM
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		// SIGQUIT makes the Go runtime dump every goroutine into the node's log, which
		// is printed with the failure: the dump shows where shutdown is stuck.
		nd.c.t.Errorf("%s did not exit within %v of %v; dumping goroutines (SIGQUIT) and killing it", nd.id, grace, sig)
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	fmt.Fprintf(nd.log, "===== %s stopped by %v at %s: %v\n", nd.id, sig, time.Now().Format("15:04:05.000"), cmd.ProcessState)
	nd.mu.Lock()
	nd.cmd = nil
	nd.mu.Unlock()
}

// restart starts the node again from its data directory, with the same addresses.
func (nd *testNode) restart() {
	nd.c.t.Helper()
	nd.start()
}

// pause freezes the node with SIGSTOP (a long GC pause, a stuck VM); resume undoes it.
func (nd *testNode) pause()  { nd.signal(syscall.SIGSTOP) }
func (nd *testNode) resume() { nd.signal(syscall.SIGCONT) }

// wipe removes the node's data directory (node id file, Raft log and snapshots).
// The node must be down.
func (nd *testNode) wipe() {
	if nd.running() {
		nd.c.t.Fatalf("wipe %s while it runs", nd.id)
	}
	if err := os.RemoveAll(nd.dataDir); err != nil {
		nd.c.t.Fatalf("wipe %s: %v", nd.id, err)
	}
}

// nodeStatus is the subset of GET /v1/status the tests use.
type nodeStatus struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	LeaderID     string `json:"leader_id"`
	Term         uint64 `json:"term"`
	LastIndex    uint64 `json:"last_index"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	Sessions     int    `json:"sessions"`
}

// member is one row of GET /v1/members.
type member struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
	Lag      int64  `json:"lag"`
}

// getJSON fetches http://ADMIN/path into v with a short deadline.
func (nd *testNode) getJSON(path string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+nd.adminAddr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s on %s: %s: %s", path, nd.id, resp.Status, bytes.TrimSpace(body))
	}
	return json.Unmarshal(body, v)
}

// status returns the node's /v1/status.
func (nd *testNode) status() (nodeStatus, error) {
	var st nodeStatus
	err := nd.getJSON("/v1/status", &st)
	return st, err
}

// members returns the node's /v1/members view.
func (nd *testNode) members() ([]member, error) {
	var m struct {
		Members []member `json:"members"`
	}
	err := nd.getJSON("/v1/members", &m)
	return m.Members, err
}

// live returns the nodes whose process runs and is not paused... as far as the
// harness knows: paused nodes are included (they are running).
func (c *testCluster) live() []*testNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*testNode
	for _, nd := range c.nodes {
		if nd.running() {
			out = append(out, nd)
		}
	}
	return out
}

// all returns every node slot, up or down.
func (c *testCluster) all() []*testNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*testNode(nil), c.nodes...)
}

// node returns the node with the given id, or nil.
func (c *testCluster) node(id string) *testNode {
	for _, nd := range c.all() {
		if nd.id == id {
			return nd
		}
	}
	return nil
}

// leaderAmong polls the given nodes until every one of them reports the same leader,
// which must be one of them and say it is the leader itself, and returns it.
func (c *testCluster) leaderAmong(nodes []*testNode, timeout time.Duration) *testNode {
	c.t.Helper()
	var last string
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l, why := agreedLeader(nodes); l != nil {
			return l
		} else {
			last = why
		}
		pollPause()
	}
	c.t.Fatalf("no agreed leader among %v within %v: %s", ids(nodes), timeout, last)
	return nil
}

func agreedLeader(nodes []*testNode) (*testNode, string) {
	leader := ""
	var ln *testNode
	for _, nd := range nodes {
		st, err := nd.status()
		if err != nil {
			return nil, err.Error()
		}
		if st.LeaderID == "" {
			return nil, nd.id + " knows no leader"
		}
		if leader == "" {
			leader = st.LeaderID
		} else if leader != st.LeaderID {
			return nil, fmt.Sprintf("%s says %s, another says %s", nd.id, st.LeaderID, leader)
		}
		if st.ID == st.LeaderID {
			if st.State != "Leader" {
				return nil, fmt.Sprintf("%s names itself leader in state %s", nd.id, st.State)
			}
			ln = nd
		}
	}
	if ln == nil {
		return nil, fmt.Sprintf("leader %q is not among the polled nodes", leader)
	}
	return ln, ""
}

// waitLeader waits until all running nodes agree on a leader and returns it.
func (c *testCluster) waitLeader(timeout time.Duration) *testNode {
	c.t.Helper()
	return c.leaderAmong(c.live(), timeout)
}

// followers returns the running nodes other than leader.
func (c *testCluster) followers(leader *testNode) []*testNode {
	var out []*testNode
	for _, nd := range c.live() {
		if nd != leader {
			out = append(out, nd)
		}
	}
	return out
}

// waitConverged waits until every given node has applied at least the leader's
// commit index as read at the start (so each has every acknowledged write).
func (c *testCluster) waitConverged(leader *testNode, nodes []*testNode, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var target uint64
	for {
		st, err := leader.status()
		if err == nil {
			target = st.CommitIndex
			break
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("leader %s status: %v", leader.id, err)
		}
		pollPause()
	}
	for _, nd := range nodes {
		waitFor(c.t, timeout, fmt.Sprintf("%s applies index %d", nd.id, target), func() (bool, string) {
			st, err := nd.status()
			if err != nil {
				return false, err.Error()
			}
			return st.AppliedIndex >= target, fmt.Sprintf("applied %d", st.AppliedIndex)
		})
	}
}

// waitFor polls cond until it holds or timeout passes (then the test fails with what
// and cond's last explanation).
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var why string
	for {
		var ok bool
		ok, why = cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s: %s", timeout, what, why)
		}
		pollPause()
	}
}

func ids(nodes []*testNode) []string {
	var out []string
	for _, nd := range nodes {
		out = append(out, nd.id)
	}
	return out
}

// dcctl runs the dcctl binary with args against this node's admin endpoint
// (DCCTL_ADDR) and distcache listener (DCCTL_SERVER), returning stdout and an error
// that includes stderr when it exits non-zero.
func (nd *testNode) dcctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.dcctl, args...)
	cmd.Env = append(os.Environ(), "DCCTL_ADDR="+nd.adminAddr, "DCCTL_SERVER="+nd.clientAddr)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("dcctl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), nil
}

// pidOwner maps a process id to the id of the node running it ("" if none); the
// fault proxy uses it to tell which node dialed a connection.
func (c *testCluster) pidOwner(pid int) string {
	for _, nd := range c.all() {
		if nd.pid() == pid {
			return nd.id
		}
	}
	return ""
}

// cleanup stops every process (SIGKILL: the test is over), closes the proxies and
// prints every node's log when the test failed or DCINT_LOGS is set.
func (c *testCluster) cleanup() {
	for _, nd := range c.all() {
		nd.kill()
		if nd.proxy != nil {
			nd.proxy.Close()
		}
	}
	if c.t.Failed() || os.Getenv("DCINT_LOGS") != "" {
		for _, nd := range c.all() {
			c.t.Logf("----- log of %s -----\n%s", nd.id, tail(nd.log.String(), 200_000))
		}
	}
}

// tail keeps the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "[...]\n" + s[len(s)-n:]
}

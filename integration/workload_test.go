package integration

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// opKind is a distcache operation issued by the workload.
type opKind uint8

const (
	opAdd opKind = iota
	opGet
	opRemove
	opHave
	opTake
)

func (k opKind) String() string {
	return [...]string{"ADD", "GET", "REMOVE", "HAVE", "TAKE"}[k]
}

// outcome is what a client learned from one operation.
type outcome uint8

const (
	outOK      outcome = iota // ADD stored, REMOVE removed
	outExists                 // ADD: id already stored (0x65)
	outHit                    // GET/TAKE returned a value
	outMiss                   // GET/TAKE miss (which may also hide a failure), REMOVE of an absent id
	outYes                    // HAVE: present
	outNo                     // HAVE: absent
	outUnknown                // timeout, lost connection, 0x02: it may or may not have happened
)

func (o outcome) String() string {
	return [...]string{"ok", "exists", "hit", "miss", "yes", "no", "unknown"}[o]
}

// opRecord is one operation of the history: who issued it where, when it was called
// and returned (monotonic nanoseconds since the workload started) and what came back.
type opRecord struct {
	client  int
	node    string
	kind    opKind
	key     string
	value   string // ADD: the value written; GET/TAKE hit: the value read
	call    int64
	ret     int64
	out     outcome
	durable bool // an add-only key of the lost-write check, not a register key
}

func (r opRecord) String() string {
	return fmt.Sprintf("c%d@%s %s(%s,%q)=%s [%d..%d]", r.client, r.node, r.kind, r.key, r.value, r.out, r.call, r.ret)
}

// history collects the records of every client of a workload.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []opRecord
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(r opRecord) {
	h.mu.Lock()
	h.ops = append(h.ops, r)
	h.mu.Unlock()
}

func (h *history) snapshot() []opRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]opRecord(nil), h.ops...)
}

// workloadConfig shapes a workload. Zero values take the defaults.
type workloadConfig struct {
	ClientsPerNode int           // concurrent clients per node; default 2
	Keys           int           // register keys shared by all clients; default 12
	TTL            time.Duration // ttl of every ADD; default 10 minutes (no expiry during a test)
	OpTimeout      time.Duration // per-operation deadline; default 2s
}

func (c workloadConfig) withDefaults() workloadConfig {
	if c.ClientsPerNode <= 0 {
		c.ClientsPerNode = 2
	}
	if c.Keys <= 0 {
		c.Keys = 12
	}
	if c.TTL <= 0 {
		c.TTL = 10 * time.Minute
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = 2 * time.Second
	}
	return c
}

// workload runs concurrent distcache clients spread over the cluster's nodes until
// stopped, recording every operation in a history. A client whose node fails moves
// on to the next node, as a TLS server configured with several cache addresses does.
type workload struct {
	t      testing.TB
	c      *testCluster
	cfg    workloadConfig
	hist   *history
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startWorkload starts the clients at once; call stop (or let cleanup do it) before
// checking.
func startWorkload(t testing.TB, c *testCluster, cfg workloadConfig) *workload {
	t.Helper()
	w := &workload{t: t, c: c, cfg: cfg.withDefaults(), hist: &history{start: time.Now()}}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	nodes := c.all()
	nclients := w.cfg.ClientsPerNode * len(nodes)
	for i := range nclients {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.runClient(ctx, i, i%len(nodes))
		}()
	}
	t.Cleanup(w.stop)
	return w
}

// stop ends the workload and waits for every client to return. Idempotent.
func (w *workload) stop() {
	w.cancel()
	w.wg.Wait()
}

// runFor lets the workload run for d (a load phase of the scenario, not a wait for a
// condition).
func (w *workload) runFor(d time.Duration) {
	select {
	case <-time.After(d):
	case <-w.t.Context().Done():
	}
}

// waitOps waits until at least n more operations have completed after the call
// (progress, not time, is what a phase of a scenario needs), failing after timeout.
func (w *workload) waitOps(n int, timeout time.Duration) {
	w.t.Helper()
	base := w.count()
	waitFor(w.t, timeout, fmt.Sprintf("%d more workload operations", n), func() (bool, string) {
		got := w.count() - base
		return got >= n, fmt.Sprintf("%d done", got)
	})
}

// waitAcked waits until at least n more writes have been acknowledged.
func (w *workload) waitAcked(n int, timeout time.Duration) {
	w.t.Helper()
	base := w.acked()
	waitFor(w.t, timeout, fmt.Sprintf("%d more acknowledged writes", n), func() (bool, string) {
		got := w.acked() - base
		return got >= n, fmt.Sprintf("%d acknowledged", got)
	})
}

func (w *workload) count() int {
	w.hist.mu.Lock()
	defer w.hist.mu.Unlock()
	return len(w.hist.ops)
}

func (w *workload) acked() int {
	w.hist.mu.Lock()
	defer w.hist.mu.Unlock()
	n := 0
	for _, r := range w.hist.ops {
		if r.kind == opAdd && r.out == outOK {
			n++
		}
	}
	return n
}

// runClient is one sequential client: one operation at a time, on its current node.
func (w *workload) runClient(ctx context.Context, id, nodeIdx int) {
	rng := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	clients := map[string]*distcache.Client{}
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	seq := 0
	for ctx.Err() == nil {
		nodes := w.c.all()
		nd := nodes[nodeIdx%len(nodes)]
		ndID := nd.ident()
		cl := clients[ndID]
		if cl == nil || !nd.running() {
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			var err error
			cl, err = distcache.Dial(dctx, nd.clientAddr)
			cancel()
			if err != nil {
				nodeIdx++ // the node is down: try the next one
				backoff(ctx, 20*time.Millisecond)
				continue
			}
			if old := clients[ndID]; old != nil {
				old.Close()
			}
			clients[ndID] = cl
		}
		seq++
		r := w.pickOp(rng, id, seq)
		r.node = ndID
		if !w.do(ctx, cl, &r) {
			continue // never sent (or the workload is stopping)
		}
		w.hist.add(r)
		if r.out == outUnknown {
			// The node may be dead, paused or cut off: move on, without hammering.
			nodeIdx++
			backoff(ctx, 20*time.Millisecond)
		}
	}
}

// backoff pauses a load-generating client after a failure (pacing, not
// synchronisation); it returns early when ctx ends.
func backoff(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// pickOp chooses the next operation: a quarter are ADDs of fresh add-only keys (the
// lost-write check), the rest a mix over the shared register keys.
func (w *workload) pickOp(rng *rand.Rand, client, seq int) opRecord {
	val := fmt.Sprintf("v-c%02d-%06d", client, seq)
	if rng.IntN(4) == 0 {
		return opRecord{client: client, kind: opAdd, key: fmt.Sprintf("d-c%02d-%06d", client, seq), value: val, durable: true}
	}
	r := opRecord{client: client, key: fmt.Sprintf("k%02d", rng.IntN(w.cfg.Keys))}
	switch p := rng.IntN(100); {
	case p < 32:
		r.kind, r.value = opAdd, val
	case p < 55:
		r.kind = opGet
	case p < 78:
		r.kind = opHave
	case p < 93:
		r.kind = opRemove
	default:
		r.kind = opTake
	}
	return r
}

// do performs r on cl and fills in its times and outcome. It returns false when the
// request was certainly never sent (the node refused the connection), or the
// workload stopped while it was in flight.
func (w *workload) do(ctx context.Context, cl *distcache.Client, r *opRecord) bool {
	octx, cancel := context.WithTimeout(context.Background(), w.cfg.OpTimeout)
	defer cancel()
	id := []byte(r.key)
	r.call = w.hist.now()
	var err error
	switch r.kind {
	case opAdd:
		err = cl.Add(octx, id, []byte(r.value), w.cfg.TTL)
		r.out = outOK
		if errors.Is(err, distcache.ErrExists) {
			r.out, err = outExists, nil
		}
	case opGet, opTake:
		var v []byte
		if r.kind == opGet {
			v, err = cl.Get(octx, id)
		} else {
			v, err = cl.Take(octx, id)
		}
		r.out, r.value = outHit, string(v)
		if errors.Is(err, distcache.ErrNotFound) {
			r.out, err = outMiss, nil
		}
	case opRemove:
		err = cl.Remove(octx, id)
		r.out = outOK
		if errors.Is(err, distcache.ErrNotFound) {
			r.out, err = outMiss, nil
		}
	case opHave:
		var ok bool
		ok, err = cl.Have(octx, id)
		r.out = outNo
		if ok {
			r.out = outYes
		}
	}
	r.ret = w.hist.now()
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return false
		}
		r.out = outUnknown
		if r.kind == opGet || r.kind == opHave {
			r.value = ""
		}
	}
	return true
}

// modelInput and modelOutput are the porcupine operation payloads.
type modelInput struct {
	kind  opKind
	key   string
	value string
}

type modelOutput struct {
	out   outcome
	value string
}

// cacheModel is the sequential specification of one distcache key: the state is the
// stored value, "" when absent (the workload never writes an empty value). It is
// nondeterministic so that operations with an unknown outcome may or may not have
// taken effect.
var cacheModel = porcupine.NondeterministicModel{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(modelInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() []any { return []any{""} },
	Step: func(state, input, output any) []any {
		s, in, out := state.(string), input.(modelInput), output.(modelOutput)
		switch in.kind {
		case opAdd:
			switch out.out {
			case outOK:
				if s == "" {
					return []any{in.value}
				}
			case outExists:
				if s != "" {
					return []any{s}
				}
			case outUnknown:
				if s == "" {
					return []any{s, in.value}
				}
				return []any{s}
			}
		case opGet:
			if out.out == outHit && s == out.value {
				return []any{s}
			}
		case opHave:
			if (out.out == outYes) == (s != "") {
				return []any{s}
			}
		case opRemove:
			switch out.out {
			case outOK:
				if s != "" {
					return []any{""}
				}
			case outMiss:
				if s == "" {
					return []any{s}
				}
			case outUnknown:
				if s == "" {
					return []any{s}
				}
				return []any{s, ""}
			}
		case opTake:
			switch out.out {
			case outHit:
				if s == out.value {
					return []any{""}
				}
			case outMiss, outUnknown: // a miss may hide a failed write: maybe removed
				if s == "" {
					return []any{s}
				}
				return []any{s, ""}
			}
		}
		return nil
	},
	Hash: func(state any) uint64 {
		h := fnv.New64a()
		h.Write([]byte(state.(string)))
		return h.Sum64()
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(modelInput), output.(modelOutput)
		return fmt.Sprintf("%s(%s,%q) -> %s %q", in.kind, in.key, in.value, out.out, out.value)
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state) },
}

// porcupineOps turns the register-key records into porcupine operations. Operations
// whose effect is unknown get an infinite return time (they may take effect at any
// point after their call); reads with an unknown or ambiguous answer (a GET miss) say
// nothing and are left out.
func porcupineOps(recs []opRecord) []porcupine.Operation {
	var ops []porcupine.Operation
	for _, r := range recs {
		if r.durable {
			continue
		}
		ret := r.ret
		switch {
		case r.kind == opGet && r.out != outHit, r.kind == opHave && r.out == outUnknown:
			continue
		case r.out == outUnknown, r.kind == opTake && r.out == outMiss:
			ret = math.MaxInt64
		}
		in := modelInput{kind: r.kind, key: r.key}
		if r.kind == opAdd {
			in.value = r.value
		}
		ops = append(ops, porcupine.Operation{ClientId: r.client, Input: in, Call: r.call,
			Output: modelOutput{out: r.out, value: r.value}, Return: ret})
	}
	return ops
}

// checkStats summarises a history check for the scenario's report.
type checkStats struct {
	ops, unknown, durableAcked int
}

// check stops the workload, reads back every acknowledged add-only session from
// every running node, and checks the history: with porcupine under linearizable reads
// (after appending a final HAVE and GET of every register key on every node), and
// otherwise by checking that every value read was written by someone.
func (w *workload) check() checkStats {
	t := w.t
	t.Helper()
	w.stop()
	nodes := w.c.live()
	leader := w.c.leaderAmong(nodes, 30*time.Second)
	linearizable := w.c.opts.ReadConsistency == "linearizable"
	if !linearizable {
		// Local reads: first let every node catch up with what was acknowledged.
		w.c.waitConverged(leader, nodes, 30*time.Second)
	}
	recs := w.hist.snapshot()
	var st checkStats
	durable := map[string]string{}
	for _, r := range recs {
		if r.out == outUnknown {
			st.unknown++
		}
		if r.durable && r.out == outOK {
			durable[r.key] = r.value
		}
	}
	st.durableAcked = len(durable)
	w.verifyDurable(nodes, durable)

	// Final reads of the register keys, on every node, recorded like the workload's.
	for _, nd := range nodes {
		recs = append(recs, w.finalReads(nd)...)
	}
	st.ops = len(recs)
	if linearizable {
		ops := porcupineOps(recs)
		res, info := porcupine.CheckOperationsVerbose(cacheModel.ToModel(), ops, 60*time.Second)
		switch res {
		case porcupine.Illegal:
			path := writeVisualization(t, info)
			t.Errorf("history of %d operations is not linearizable (visualization: %s); records:\n%s", len(ops), path, describe(recs))
		case porcupine.Unknown:
			t.Logf("porcupine timed out on %d operations: linearizability not decided", len(ops))
		}
	} else {
		checkReadsWritten(t, recs)
		checkSameState(t, recs, nodes)
	}
	t.Logf("CHECKED %s: %d operations (%d unknown outcomes), %d acknowledged add-only sessions verified on %d nodes",
		t.Name(), st.ops, st.unknown, st.durableAcked, len(nodes))
	return st
}

// verifyDurable reads every acknowledged add-only session on every node: none may be
// lost and each must have the value written.
func (w *workload) verifyDurable(nodes []*testNode, durable map[string]string) {
	t := w.t
	t.Helper()
	keys := make([]string, 0, len(durable))
	for k := range durable {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, nd := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cl, err := distcache.Dial(ctx, nd.clientAddr)
		if err != nil {
			cancel()
			t.Fatalf("dial %s: %v", nd.id, err)
		}
		var mu sync.Mutex
		var lost []string
		var wg sync.WaitGroup
		work := make(chan string)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range work {
					v, err := readBack(ctx, cl, k)
					if err != nil || string(v) != durable[k] {
						mu.Lock()
						lost = append(lost, fmt.Sprintf("%s: got %q err %v, want %q", k, v, err, durable[k]))
						mu.Unlock()
					}
				}
			}()
		}
		for _, k := range keys {
			work <- k
		}
		close(work)
		wg.Wait()
		cl.Close()
		cancel()
		if len(lost) > 0 {
			sort.Strings(lost)
			t.Errorf("%s lost %d of %d acknowledged sessions, e.g. %v", nd.id, len(lost), len(keys), lost[:min(len(lost), 10)])
		}
	}
}

// readBack reads an acknowledged session. A GET miss is ambiguous (a failed read is
// answered as a miss), so a miss is confirmed with HAVE, which answers 0x02 on
// failure: only a definite "no" counts as lost. Failures are retried until ctx ends.
func readBack(ctx context.Context, cl *distcache.Client, key string) ([]byte, error) {
	var lastErr error
	for ctx.Err() == nil {
		octx, cancel := context.WithTimeout(ctx, 2*time.Second)
		v, err := cl.Get(octx, []byte(key))
		cancel()
		if err == nil {
			return v, nil
		}
		if errors.Is(err, distcache.ErrNotFound) {
			octx, cancel := context.WithTimeout(ctx, 2*time.Second)
			ok, herr := cl.Have(octx, []byte(key))
			cancel()
			if herr == nil && !ok {
				return nil, err // definitely absent
			}
			if herr != nil {
				err = herr
			}
		}
		lastErr = err
		backoff(ctx, 50*time.Millisecond)
	}
	return nil, fmt.Errorf("no definite answer: %w", lastErr)
}

// finalReads reads every register key on nd once with HAVE and once with GET, and
// returns the records (client id -1: the checker).
func (w *workload) finalReads(nd *testNode) []opRecord {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := distcache.Dial(ctx, nd.clientAddr)
	if err != nil {
		w.t.Fatalf("dial %s: %v", nd.id, err)
	}
	defer cl.Close()
	var out []opRecord
	for i := range w.cfg.Keys {
		for _, k := range []opKind{opHave, opGet} {
			r := opRecord{client: -1, node: nd.id, kind: k, key: fmt.Sprintf("k%02d", i)}
			w.do(ctx, cl, &r)
			out = append(out, r)
		}
	}
	return out
}

// checkReadsWritten is the local-read check: every value a GET or TAKE returned was
// written to that key by some ADD (acknowledged or not).
func checkReadsWritten(t testing.TB, recs []opRecord) {
	t.Helper()
	written := map[string]bool{}
	for _, r := range recs {
		if r.kind == opAdd {
			written[r.key+"\x00"+r.value] = true
		}
	}
	bad := 0
	for _, r := range recs {
		if r.out == outHit && !written[r.key+"\x00"+r.value] {
			bad++
			t.Errorf("read of a value never written: %v", r)
		}
	}
	if bad > 0 {
		t.Errorf("%d reads returned values never written", bad)
	}
}

// checkSameState checks that, after convergence, every node answered the final HAVE
// of each register key the same way.
func checkSameState(t testing.TB, recs []opRecord, nodes []*testNode) {
	t.Helper()
	answers := map[string]map[string]outcome{}
	for _, r := range recs {
		if r.client == -1 && r.kind == opHave && r.out != outUnknown {
			if answers[r.key] == nil {
				answers[r.key] = map[string]outcome{}
			}
			answers[r.key][r.node] = r.out
		}
	}
	for k, byNode := range answers {
		var first outcome
		i := 0
		for _, o := range byNode {
			if i > 0 && o != first {
				t.Errorf("replicas disagree on %s after convergence: %v", k, byNode)
				break
			}
			first = o
			i++
		}
	}
}

// firstAckAfter is the time from at until the first write issued after at was
// acknowledged (the write unavailability seen by clients), or -1 if none was.
func (w *workload) firstAckAfter(at time.Time) time.Duration {
	t0 := int64(at.Sub(w.hist.start))
	best := int64(-1)
	for _, r := range w.hist.snapshot() {
		if r.call >= t0 && r.kind == opAdd && r.out == outOK && (best < 0 || r.ret < best) {
			best = r.ret
		}
	}
	if best < 0 {
		return -1
	}
	return time.Duration(best - t0)
}

func describe(recs []opRecord) string {
	var b []byte
	for i, r := range recs {
		if i >= 400 {
			b = fmt.Appendf(b, "... %d more\n", len(recs)-i)
			break
		}
		b = fmt.Appendf(b, "%v\n", r)
	}
	return string(b)
}

// writeVisualization saves porcupine's HTML view of a failed check next to the test's
// temp files (kept: the path is in the failure message) and returns its path.
func writeVisualization(t testing.TB, info porcupine.LinearizationInfo) string {
	f, err := os.CreateTemp("", "dcint-porcupine-*.html")
	if err != nil {
		return "(not written: " + err.Error() + ")"
	}
	defer f.Close()
	if err := porcupine.Visualize(cacheModel.ToModel(), info, f); err != nil {
		return "(not written: " + err.Error() + ")"
	}
	return f.Name()
}

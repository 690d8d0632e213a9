package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Client is what the engine needs from a distcache client, in outcome terms: a
// negative answer ("exists", "not found", "no") is a result, not an error; err is for
// transport failures, timeouts and answers that say the server could not serve
// (never to be reported as "not found": the model would believe it). dcctl adapts
// distcache.Client to it; tests may use anything.
type Client interface {
	Add(ctx context.Context, id, data []byte, ttl time.Duration) (added bool, err error)
	Get(ctx context.Context, id []byte) (data []byte, found bool, err error)
	Remove(ctx context.Context, id []byte) (removed bool, err error)
	Have(ctx context.Context, id []byte) (found bool, err error)
	Take(ctx context.Context, id []byte) (data []byte, found bool, err error)
	Close() error
}

// DialFunc opens a connection to the target.
type DialFunc func(ctx context.Context) (Client, error)

// Op is one operation kind of the mix.
type Op int

// The operations, in the order of a -mix specification.
const (
	OpAdd Op = iota
	OpGet
	OpRemove
	OpHave
	OpTake
	numOps
)

var opNames = [numOps]string{"add", "get", "remove", "have", "take"}

func (o Op) String() string {
	if o >= 0 && o < numOps {
		return opNames[o]
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Mix holds the relative weight of each operation.
type Mix [numOps]int

// DefaultMix is dc_test's: ADD, GET, REMOVE and HAVE with equal probability.
var DefaultMix = Mix{1, 1, 1, 1, 0}

// ParseMix reads "add:get:remove:have[:take]" weights ("1:8:1:1") or a named list
// ("get=8,add=1,remove=1"; unnamed operations get weight 0).
func ParseMix(s string) (Mix, error) {
	var m Mix
	s = strings.TrimSpace(s)
	if strings.Contains(s, "=") {
		for _, part := range strings.Split(s, ",") {
			name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok {
				return m, fmt.Errorf("mix %q: %q is not name=weight", s, part)
			}
			i := -1
			for j, n := range opNames {
				if n == strings.ToLower(strings.TrimSpace(name)) {
					i = j
				}
			}
			if i < 0 {
				return m, fmt.Errorf("mix %q: unknown operation %q", s, name)
			}
			w, err := strconv.Atoi(strings.TrimSpace(val))
			if err != nil || w < 0 {
				return m, fmt.Errorf("mix %q: bad weight %q", s, val)
			}
			m[i] = w
		}
	} else {
		parts := strings.Split(s, ":")
		if len(parts) < 4 || len(parts) > int(numOps) {
			return m, fmt.Errorf("mix %q: want add:get:remove:have[:take] weights", s)
		}
		for i, p := range parts {
			w, err := strconv.Atoi(strings.TrimSpace(p))
			if err != nil || w < 0 {
				return m, fmt.Errorf("mix %q: bad weight %q", s, p)
			}
			m[i] = w
		}
	}
	total := 0
	for _, w := range m {
		total += w
	}
	if total == 0 {
		return m, fmt.Errorf("mix %q: all weights are zero", s)
	}
	return m, nil
}

func (m Mix) String() string {
	parts := make([]string, numOps)
	for i, w := range m {
		parts[i] = strconv.Itoa(w)
	}
	return strings.Join(parts, ":")
}

// Config describes one benchmark run. Sizes are inclusive ranges.
type Config struct {
	Dial        DialFunc
	Sessions    int           // distinct sessions, split disjointly between workers
	IDMin       int           // session id length range (1..64)
	IDMax       int           //
	DataMin     int           // session data length range; ≥ 5 when verifying (the "< 5 bytes ⇒ miss" rule)
	DataMax     int           //
	TTL         time.Duration // lifetime given to every ADD
	Ops         int64         // total operations; 0 = until Duration elapses
	Duration    time.Duration // run time limit; 0 = until Ops are done
	Mix         Mix
	Concurrency int           // workers, each with its own connection
	Persistent  bool          // one connection per worker, else one per operation
	Rate        float64       // total operations per second; 0 = unthrottled
	Timeout     time.Duration // per-operation deadline
	Verify      bool          // check every answer against an exact per-worker model
	Seed        uint64        // 0 = random
	// Progress, when non-nil, receives a one-line live status (with '\r') every
	// ProgressInterval. dcctl sets it only when stdout is a terminal.
	Progress         io.Writer
	ProgressInterval time.Duration
	Logger           *slog.Logger // error and verification details (never session data)
	// Unavailable, when set, tells which errors are the server's "cannot answer
	// now" (distcache.ErrUnavailable) rather than transport failures; they are
	// counted apart in the report. dcctl sets it.
	Unavailable func(error) bool
}

// Limits of the distcache protocol that bound the configuration.
const (
	maxIDLen     = 64
	maxPayload   = 32768
	addHeaderLen = 8
	minVerifyGet = 5 // the client library treats GET answers shorter than this as a miss
)

// Validate reports the first configuration mistake.
func (c *Config) Validate() error {
	switch {
	case c.Dial == nil:
		return errors.New("no dial function")
	case c.Sessions < 1:
		return fmt.Errorf("sessions must be ≥ 1 (got %d)", c.Sessions)
	case c.Concurrency < 1:
		return fmt.Errorf("concurrency must be ≥ 1 (got %d)", c.Concurrency)
	case c.Concurrency > c.Sessions:
		return fmt.Errorf("concurrency %d exceeds sessions %d: every worker needs sessions of its own", c.Concurrency, c.Sessions)
	case c.IDMin < 1 || c.IDMax > maxIDLen || c.IDMin > c.IDMax:
		return fmt.Errorf("id length range %d..%d must lie within 1..%d", c.IDMin, c.IDMax, maxIDLen)
	case c.DataMin < 1 || c.DataMin > c.DataMax:
		return fmt.Errorf("data length range %d..%d is empty or starts below 1", c.DataMin, c.DataMax)
	case addHeaderLen+c.IDMax+c.DataMax > maxPayload:
		return fmt.Errorf("id max %d + data max %d exceed the %d-byte ADD payload limit", c.IDMax, c.DataMax, maxPayload-addHeaderLen)
	case c.Verify && c.DataMin < minVerifyGet:
		return fmt.Errorf("data min %d: sessions shorter than %d bytes read back as a miss, so verification would fail", c.DataMin, minVerifyGet)
	case c.TTL < 0 || c.TTL > 7*24*time.Hour:
		return fmt.Errorf("ttl %v outside 0..168h", c.TTL)
	case c.Ops < 0:
		return fmt.Errorf("ops must be ≥ 0 (got %d)", c.Ops)
	case c.Duration < 0:
		return fmt.Errorf("duration must be ≥ 0 (got %v)", c.Duration)
	case c.Ops == 0 && c.Duration == 0:
		return errors.New("give a number of operations or a duration")
	case c.Rate < 0:
		return fmt.Errorf("rate must be ≥ 0 (got %v)", c.Rate)
	case c.Timeout <= 0:
		return fmt.Errorf("timeout must be > 0 (got %v)", c.Timeout)
	}
	total := 0
	for _, w := range c.Mix {
		if w < 0 {
			return errors.New("negative mix weight")
		}
		total += w
	}
	if total == 0 {
		return errors.New("operation mix is empty")
	}
	if c.IDMax < 4 && c.Sessions > 1<<(8*c.IDMax)/2 {
		return fmt.Errorf("%d sessions do not fit in ids of at most %d bytes", c.Sessions, c.IDMax)
	}
	return nil
}

// Latency summarises a histogram in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func latencyOf(h *Histogram) Latency {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return Latency{
		P50: ms(h.Quantile(0.50)), P90: ms(h.Quantile(0.90)), P99: ms(h.Quantile(0.99)),
		Max: ms(h.Max()), Mean: ms(h.Mean()),
	}
}

// OpReport is the outcome of one operation kind. Hits counts positive answers
// (added, found, removed, yes, taken); Misses the negative ones.
type OpReport struct {
	Ops          int64   `json:"ops"`
	Hits         int64   `json:"hits"`
	Misses       int64   `json:"misses"`
	Errors       int64   `json:"errors"`
	Unavailable  int64   `json:"unavailable"`
	VerifyErrors int64   `json:"verify_errors"`
	Latency      Latency `json:"latency_ms"`
}

// Report is the final result of a run; its JSON form is dcctl bench --json.
type Report struct {
	Ops       int64   `json:"ops"`
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"ops_per_sec"`
	Errors    int64   `json:"errors"`
	// Unavailable is the part of Errors that were answers saying the server
	// could not serve (no leader, quorum lost), as told by Config.Unavailable.
	// Like every error they are not checked against the model: a failed write
	// or TAKE makes its session unknown, a failed GET or HAVE leaves it as it was.
	Unavailable  int64               `json:"unavailable"`
	VerifyErrors int64               `json:"verify_errors"`
	Latency      Latency             `json:"latency_ms"`
	ByOp         map[string]OpReport `json:"by_op"`
	// Interrupted is set when the run was cancelled before its end.
	Interrupted bool `json:"interrupted,omitempty"`
	// FirstError describes the first transport error, if any (no session data).
	FirstError string `json:"first_error,omitempty"`
}

// session is one sample session owned by exactly one worker, so the worker's model
// of it is exact: nobody else touches that id.
type session struct {
	id, data []byte
	state    modelState
	// addSent/addDone bracket the ADD that stored the entry; the server stamped its
	// expiry somewhere between addSent+ttl and addDone+ttl.
	addSent, addDone time.Time
}

type modelState uint8

const (
	absent modelState = iota
	present
	unknown // an earlier write failed or disagreed; the next answer is believed
)

// expirySlack widens the window in which an entry may or may not have expired, to
// absorb clock differences between nodes.
const expirySlack = time.Second

// counters are shared with the progress printer.
type counters struct {
	ops, errors, verifyErrors atomic.Int64
}

type opStats struct {
	ops, hits, misses, errors, unavailable, verifyErrors int64
	hist                                                 Histogram
}

type worker struct {
	cfg      *Config
	id       int
	rng      *rand.Rand
	sessions []*session
	client   Client
	stats    [numOps]opStats
	shared   *counters
	firstErr string
	logged   *atomic.Int64
}

// Run executes the benchmark and returns its report. The error is non-nil only for
// an invalid configuration; failed operations are counted in the report. Cancelling
// ctx ends the run early with a partial report marked Interrupted.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = time.Second
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	master := rand.New(rand.NewPCG(seed, 0x6463637462656e63))
	all, err := makeSessions(master, &cfg)
	if err != nil {
		return nil, err
	}

	var shared counters
	var logged atomic.Int64
	workers := make([]*worker, cfg.Concurrency)
	for i := range workers {
		workers[i] = &worker{
			cfg: &cfg, id: i, shared: &shared, logged: &logged,
			rng: rand.New(rand.NewPCG(master.Uint64(), uint64(i))),
		}
	}
	for i, s := range all {
		w := workers[i%len(workers)]
		w.sessions = append(w.sessions, s)
	}

	var stop atomic.Bool
	var claimed atomic.Int64
	claim := func() bool {
		if stop.Load() || ctx.Err() != nil {
			return false
		}
		if cfg.Ops > 0 {
			return claimed.Add(1) <= cfg.Ops
		}
		return true
	}

	start := time.Now()
	if cfg.Duration > 0 {
		t := time.AfterFunc(cfg.Duration, func() { stop.Store(true) })
		defer t.Stop()
	}
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if cfg.Progress != nil {
		progressWG.Add(1)
		go func() {
			defer progressWG.Done()
			printProgress(cfg.Progress, cfg.ProgressInterval, start, &shared, progressDone)
		}()
	}

	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx, start, claim)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(progressDone)
	progressWG.Wait()

	rep := &Report{Seconds: elapsed.Seconds(), ByOp: map[string]OpReport{}, Interrupted: ctx.Err() != nil}
	var total Histogram
	for op := Op(0); op < numOps; op++ {
		var agg opStats
		for _, w := range workers {
			s := &w.stats[op]
			agg.ops += s.ops
			agg.hits += s.hits
			agg.misses += s.misses
			agg.errors += s.errors
			agg.unavailable += s.unavailable
			agg.verifyErrors += s.verifyErrors
			agg.hist.Merge(&s.hist)
		}
		total.Merge(&agg.hist)
		rep.Ops += agg.ops
		rep.Errors += agg.errors
		rep.Unavailable += agg.unavailable
		rep.VerifyErrors += agg.verifyErrors
		if cfg.Mix[op] > 0 || agg.ops > 0 {
			rep.ByOp[op.String()] = OpReport{
				Ops: agg.ops, Hits: agg.hits, Misses: agg.misses, Errors: agg.errors,
				Unavailable: agg.unavailable, VerifyErrors: agg.verifyErrors, Latency: latencyOf(&agg.hist),
			}
		}
	}
	for _, w := range workers {
		if w.firstErr != "" {
			rep.FirstError = w.firstErr
			break
		}
	}
	rep.Latency = latencyOf(&total)
	if elapsed > 0 {
		rep.OpsPerSec = float64(rep.Ops) / elapsed.Seconds()
	}
	return rep, nil
}

func makeSessions(rng *rand.Rand, cfg *Config) ([]*session, error) {
	seen := make(map[string]bool, cfg.Sessions)
	out := make([]*session, 0, cfg.Sessions)
	for len(out) < cfg.Sessions {
		id := randBytes(rng, cfg.IDMin+rng.IntN(cfg.IDMax-cfg.IDMin+1))
		if seen[string(id)] {
			if len(seen) > 1<<20 {
				return nil, errors.New("cannot generate distinct ids")
			}
			continue
		}
		seen[string(id)] = true
		out = append(out, &session{id: id, data: randBytes(rng, cfg.DataMin+rng.IntN(cfg.DataMax-cfg.DataMin+1))})
	}
	return out, nil
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func (w *worker) pickOp() Op {
	total := 0
	for _, wt := range w.cfg.Mix {
		total += wt
	}
	r := w.rng.IntN(total)
	for op, wt := range w.cfg.Mix {
		if r < wt {
			return Op(op)
		}
		r -= wt
	}
	return OpGet
}

func (w *worker) run(ctx context.Context, start time.Time, claim func() bool) {
	defer func() {
		if w.client != nil {
			w.client.Close()
		}
	}()
	var interval time.Duration
	if w.cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(w.cfg.Concurrency) / w.cfg.Rate)
	}
	// Stagger workers across one interval so a paced run does not send bursts.
	next := start.Add(interval * time.Duration(w.id) / time.Duration(w.cfg.Concurrency))
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for claim() {
		began := time.Now()
		if interval > 0 {
			if d := time.Until(next); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
					return
				}
			}
			// Latency counts from the scheduled time, so a slow answer that delays the
			// following requests shows up in their latency too (no coordinated omission).
			began = next
			next = next.Add(interval)
		}
		s := w.sessions[w.rng.IntN(len(w.sessions))]
		op := w.pickOp()
		w.do(ctx, op, s, began)
	}
}

// do runs one operation, records it and checks it against the model.
func (w *worker) do(ctx context.Context, op Op, s *session, began time.Time) {
	opCtx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	var (
		hit  bool
		data []byte
		err  error
	)
	sent := time.Now()
	c := w.client
	if c == nil {
		c, err = w.cfg.Dial(opCtx)
		if err == nil && w.cfg.Persistent {
			w.client = c
		}
	}
	if err == nil {
		switch op {
		case OpAdd:
			hit, err = c.Add(opCtx, s.id, s.data, w.cfg.TTL)
		case OpGet:
			data, hit, err = c.Get(opCtx, s.id)
		case OpRemove:
			hit, err = c.Remove(opCtx, s.id)
		case OpHave:
			hit, err = c.Have(opCtx, s.id)
		case OpTake:
			data, hit, err = c.Take(opCtx, s.id)
		}
		if err != nil && w.cfg.Persistent {
			// Start afresh on the next operation rather than trust a connection that
			// just failed; the dial then counts in that operation's latency.
			c.Close()
			w.client = nil
		} else if !w.cfg.Persistent {
			c.Close()
		}
	}
	done := time.Now()
	if err != nil && ctx.Err() != nil {
		return // interrupted by the caller: neither an answer nor a server error
	}
	st := &w.stats[op]
	st.ops++
	st.hist.Record(done.Sub(began))
	w.shared.ops.Add(1)
	if err != nil {
		st.errors++
		w.shared.errors.Add(1)
		if w.cfg.Unavailable != nil && w.cfg.Unavailable(err) {
			st.unavailable++
		}
		if w.firstErr == "" {
			w.firstErr = fmt.Sprintf("%s: %v", op, err)
		}
		w.logf("operation failed", "op", op.String(), "err", err)
		if op == OpAdd || op == OpRemove || op == OpTake {
			s.state = unknown // the write may or may not have happened
		}
		// A failed GET or HAVE read nothing and changed nothing: the model
		// stays as it was (it is never taken for a miss).
		return
	}
	if hit {
		st.hits++
	} else {
		st.misses++
	}
	if !w.cfg.Verify {
		return
	}
	if why := w.check(op, s, hit, data, sent, done); why != "" {
		st.verifyErrors++
		w.shared.verifyErrors.Add(1)
		w.logf("verification failed", "op", op.String(), "id_len", len(s.id), "problem", why)
	}
}

// check compares an answer with the model and advances the model. It returns a
// description of the mismatch, or "".
func (w *worker) check(op Op, s *session, hit bool, data []byte, sent, done time.Time) string {
	expect := s.state
	if expect == present {
		ttl := w.cfg.TTL
		switch {
		case sent.After(s.addDone.Add(ttl + expirySlack)):
			s.state, expect = absent, absent // certainly expired
		case !done.Before(s.addSent.Add(ttl - expirySlack)):
			expect = unknown // may be expiring right now
		}
	}
	mismatch := ""
	wantHit := expect == present
	if op == OpAdd {
		wantHit = expect == absent // ADD succeeds exactly when the id is not stored
	}
	if expect != unknown && hit != wantHit {
		mismatch = fmt.Sprintf("%s answered %s, model says session is %s", op, yesNo(op, hit), stateName(expect))
	}
	if hit && (op == OpGet || op == OpTake) && !bytes.Equal(data, s.data) {
		mismatch = fmt.Sprintf("%s returned %d bytes that differ from the %d stored", op, len(data), len(s.data))
	}
	switch op {
	case OpAdd:
		if hit {
			s.state, s.addSent, s.addDone = present, sent, done
		} else if mismatch != "" || expect == unknown {
			s.state = unknown // it exists, but we do not know since when
		}
	case OpRemove, OpTake:
		s.state = absent
	case OpGet, OpHave:
		if mismatch != "" {
			s.state = unknown // the model and the server disagree: believe neither
		}
	}
	return mismatch
}

func yesNo(op Op, hit bool) string {
	if op == OpAdd {
		if hit {
			return "added"
		}
		return "exists"
	}
	if hit {
		return "found"
	}
	return "not found"
}

func stateName(s modelState) string {
	switch s {
	case present:
		return "present"
	case absent:
		return "absent"
	}
	return "unknown"
}

// maxLogged bounds the error lines one run prints; the counts say the rest.
const maxLogged = 20

func (w *worker) logf(msg string, args ...any) {
	n := w.logged.Add(1)
	if n > maxLogged {
		return
	}
	if n == maxLogged {
		args = append(args, "note", "further errors are counted, not logged")
	}
	w.cfg.Logger.Warn(msg, append([]any{"worker", w.id}, args...)...)
}

func printProgress(out io.Writer, every time.Duration, start time.Time, c *counters, done <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	var lastOps int64
	last := start
	for {
		select {
		case <-done:
			fmt.Fprint(out, "\r\033[K")
			return
		case now := <-t.C:
			ops := c.ops.Load()
			rate := float64(ops-lastOps) / now.Sub(last).Seconds()
			lastOps, last = ops, now
			fmt.Fprintf(out, "\r\033[K%6.1fs  %10d ops  %9.0f ops/s  errors %d  verify errors %d",
				now.Sub(start).Seconds(), ops, rate, c.errors.Load(), c.verifyErrors.Load())
		}
	}
}

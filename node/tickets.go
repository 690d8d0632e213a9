package node

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distcache-replicated/distcache/fsm"
	"github.com/distcache-replicated/distcache/node/adminapi"
	"github.com/distcache-replicated/distcache/ticketkeys"
)

// Session-ticket keys for the TLS servers in front of the cluster. The ring lives
// in the replicated store (fsm/tickets.go); this file proposes rotations (on an
// operator's request, and on the leader by schedule) and hands the ring to the
// servers on this node's host (package ticketkeys) every time this replica of it
// changes, once the node has caught up with the cluster.

// TicketConfig configures the session-ticket keys. The zero value rotates only on
// an operator's request and writes nothing.
type TicketConfig struct {
	// Rotate is the interval of scheduled rotations, run by whichever node is
	// the leader, measured from the last rotation in the replicated ring (so a
	// change of leader neither skips nor repeats one); 0 rotates only on demand.
	// With a schedule and no ring yet, the leader creates the ring at once.
	Rotate time.Duration
	// Lifetime is how long a key keeps decrypting after it stopped encrypting:
	// the servers' longest ticket lifetime plus the time they take to pick up a
	// rotation. Rotations drop older past keys. DefaultTicketLifetime when 0.
	Lifetime time.Duration
	// Output, when set, is where this node writes the ring for the TLS servers
	// on its host, how it reloads them, and HAProxy's runtime API.
	Output *ticketkeys.Config
}

// DefaultTicketLifetime is the 5 minutes for which nginx, HAProxy and Apache let a
// session resume by default (ssl_session_timeout, tune.ssl.lifetime,
// SSLSessionCacheTimeout), plus a minute for every server to pick up a rotation.
const DefaultTicketLifetime = 6 * time.Minute

// ticketCluster is what the ticket keys need of the cluster.
type ticketCluster interface {
	IsLeader() bool
	Propose(ctx context.Context, cmd []byte) ([]byte, error)
	ReadBarrier(ctx context.Context) error
}

// tickets proposes rotations and delivers the ring to the local servers.
type tickets struct {
	cfg          TicketConfig
	store        *fsm.Store
	cluster      ticketCluster
	writer       *ticketkeys.Writer // nil: no outputs
	log          *slog.Logger
	writeTimeout time.Duration

	failures atomic.Uint64 // failed deliveries, for metrics

	mu          sync.Mutex
	caughtUp    bool
	delivered   uint64
	deliveredAt time.Time
	reloads     uint64
	lastErr     string
}

// newTickets checks cfg and prepares the outputs (the ticket directory is created
// here, so a bad path fails the start).
func newTickets(cfg TicketConfig, store *fsm.Store, writeTimeout time.Duration, log *slog.Logger) (*tickets, error) {
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = DefaultTicketLifetime
	}
	t := &tickets{cfg: cfg, store: store, log: log, writeTimeout: writeTimeout}
	if cfg.Output != nil {
		w, err := ticketkeys.New(*cfg.Output)
		if err != nil {
			return nil, err
		}
		t.writer = w
	}
	return t, nil
}

// start runs the schedule and the delivery until ctx ends.
func (t *tickets) start(ctx context.Context, wg *sync.WaitGroup) {
	if t.cfg.Rotate > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); t.scheduleLoop(ctx) }()
	}
	if t.writer != nil {
		wg.Add(1)
		go func() { defer wg.Done(); t.deliverLoop(ctx) }()
	}
}

// errRingBusy is the answer to a rotation that lost every race with others.
var errRingBusy = errors.New("the ticket key ring kept changing during the rotation; retry")

// propose draws the new key(s) from crypto/rand and proposes a rotation from
// generation expect. It reports false when the ring was no longer at expect
// (someone else rotated it meanwhile).
func (t *tickets) propose(ctx context.Context, expect uint64) (bool, error) {
	keys := make([][fsm.TicketKeyLen]byte, 1, 2)
	if expect == 0 {
		keys = keys[:2]
	}
	for i := range keys {
		if _, err := rand.Read(keys[i][:]); err != nil {
			return false, fmt.Errorf("draw a ticket key: %w", err)
		}
	}
	cmd := fsm.AppendRotateTickets(nil, expect, t.cfg.Lifetime, keys...)
	clear(keys)
	raw, err := t.cluster.Propose(ctx, cmd)
	clear(cmd)
	if err != nil {
		return false, err
	}
	res, err := fsm.DecodeResult(raw)
	if err != nil {
		return false, fmt.Errorf("decode store result: %w", err)
	}
	switch res.Status {
	case fsm.ResultOK:
		return true, nil
	case fsm.ResultExists:
		return false, nil
	}
	return false, fmt.Errorf("%w: ticket rotation answered %v", ErrWriteRejected, res.Status)
}

// rotate rotates the ring once, from whatever generation the cluster holds, and
// returns the ring as this node holds it afterwards.
func (t *tickets) rotate(ctx context.Context) (fsm.TicketRing, error) {
	for range 3 {
		// Read the generation linearizably, so a lagging follower does not
		// propose from a ring the cluster has left behind.
		if err := t.cluster.ReadBarrier(ctx); err != nil {
			return fsm.TicketRing{}, err
		}
		ring, _ := t.store.TicketRing()
		ok, err := t.propose(ctx, ring.Generation)
		if err != nil {
			return fsm.TicketRing{}, err
		}
		if ok {
			ring, _ = t.store.TicketRing() // applied here before Propose returned
			return ring, nil
		}
	}
	return fsm.TicketRing{}, errRingBusy
}

// nextRotation is when the schedule rotates ring next; false without a schedule.
// Without a ring it is due at once.
func (t *tickets) nextRotation(ring fsm.TicketRing) (time.Time, bool) {
	if t.cfg.Rotate <= 0 {
		return time.Time{}, false
	}
	if ring.Generation == 0 {
		return time.Now(), true
	}
	return time.UnixMilli(ring.RotatedAt).Add(t.cfg.Rotate), true
}

// scheduleLoop rotates the ring on the leader when the replicated last rotation
// is an interval old. A proposal that races with another (a former leader's) is
// refused by the store, so the ring rotates once.
func (t *tickets) scheduleLoop(ctx context.Context) {
	tick := time.NewTicker(max(min(t.cfg.Rotate/4, time.Second), 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !t.cluster.IsLeader() {
			continue
		}
		ring, _ := t.store.TicketRing()
		if due, _ := t.nextRotation(ring); time.Now().Before(due) {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, t.writeTimeout)
		ok, err := t.propose(pctx, ring.Generation)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			t.log.Warn("scheduled ticket key rotation failed; retrying", "generation", ring.Generation, "err", err)
		case ok:
			t.log.Info("ticket keys rotated on schedule", "generation", ring.Generation+1, "every", t.cfg.Rotate)
		}
	}
}

// Delivery retries back off from deliverRetryMin to deliverRetryMax.
const (
	deliverRetryMin = time.Second
	deliverRetryMax = time.Minute
	catchUpRetry    = 200 * time.Millisecond
)

// deliverLoop waits until this node has caught up with the cluster, then hands
// every new state of its replica of the ring to the local servers, retrying
// failures with backoff.
func (t *tickets) deliverLoop(ctx context.Context) {
	if !t.awaitCaughtUp(ctx) {
		return
	}
	var retry <-chan time.Time
	backoff := time.Duration(0)
	for {
		ring, changed := t.store.TicketRing()
		if err := t.deliver(ctx, ring); err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, deliverRetryMin), deliverRetryMax)
			t.log.Warn("ticket keys: delivery to the local servers failed; retrying", "generation", ring.Generation, "in", backoff, "err", err)
			retry = time.After(backoff)
		} else {
			backoff, retry = 0, nil
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-retry:
		}
	}
}

// awaitCaughtUp returns once a read index obtained from a leader after the node
// started has been applied here: a node that was down during rotations has then
// applied them, and never writes its servers a ring older than the one they
// hold. It reports false if ctx ended first.
func (t *tickets) awaitCaughtUp(ctx context.Context) bool {
	start := time.Now()
	for attempt := 0; ; attempt++ {
		bctx, cancel := context.WithTimeout(ctx, t.writeTimeout)
		err := t.cluster.ReadBarrier(bctx)
		cancel()
		if err == nil {
			break
		}
		if attempt == 0 {
			t.log.Info("ticket keys: catching up with the cluster before writing the servers' files", "err", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(catchUpRetry):
		}
	}
	t.mu.Lock()
	t.caughtUp = true
	t.mu.Unlock()
	ring, _ := t.store.TicketRing()
	t.log.Info("ticket keys: caught up; delivering to the local servers", "generation", ring.Generation, "took", time.Since(start).Round(time.Millisecond))
	return true
}

// deliver hands ring to the local servers and records the outcome.
func (t *tickets) deliver(ctx context.Context, ring fsm.TicketRing) error {
	r := ticketkeys.Ring{Generation: ring.Generation, Keys: make([]ticketkeys.Key, len(ring.Keys))}
	for i, k := range ring.Keys {
		r.Keys[i] = ticketkeys.Key(k.Material)
	}
	d, err := t.writer.Deliver(ctx, r)
	clear(r.Keys)
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.failures.Add(1)
		t.lastErr = err.Error()
		return err
	}
	t.lastErr = ""
	if ring.Generation == 0 {
		return nil
	}
	t.delivered, t.deliveredAt = ring.Generation, time.Now()
	if d.Reloaded {
		t.reloads++
	}
	if len(d.Written) > 0 || d.Pushed > 0 || d.Reloaded {
		t.log.Info("ticket keys delivered to the local servers", "generation", ring.Generation,
			"files", len(d.Written), "haproxy_pushed", d.Pushed, "reloaded", d.Reloaded, "reload_took", d.ReloadTook.Round(time.Millisecond))
	}
	return nil
}

// delivery is this node's TicketDelivery for its status.
func (t *tickets) delivery() *adminapi.TicketDelivery {
	ring, _ := t.store.TicketRing()
	d := &adminapi.TicketDelivery{Generation: ring.Generation, Outputs: []string{}}
	if t.writer == nil {
		d.CaughtUp = true // nothing waits for it
		return d
	}
	d.Outputs = t.writer.Outputs()
	t.mu.Lock()
	defer t.mu.Unlock()
	d.CaughtUp, d.Delivered, d.Reloads, d.Error = t.caughtUp, t.delivered, t.reloads, t.lastErr
	if !t.deliveredAt.IsZero() {
		at := t.deliveredAt.UTC().Truncate(time.Millisecond)
		d.DeliveredAt = &at
	}
	return d
}

// ringAnswer describes ring for the admin API: ids, roles and ages, no bytes.
func (t *tickets) ringAnswer(ring fsm.TicketRing) adminapi.TicketRing {
	now := time.Now()
	stamp := func(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
	a := adminapi.TicketRing{
		Generation: ring.Generation, RotateEverySeconds: t.cfg.Rotate.Seconds(),
		LifetimeSeconds: t.cfg.Lifetime.Seconds(), Keys: []adminapi.TicketKey{},
	}
	if ring.Generation > 0 {
		at := stamp(ring.RotatedAt)
		a.RotatedAt = &at
	}
	if next, ok := t.nextRotation(ring); ok {
		next = next.UTC().Truncate(time.Millisecond)
		a.NextRotation = &next
	}
	for i, k := range ring.Keys {
		role := adminapi.TicketPast
		switch i {
		case 0:
			role = adminapi.TicketCurrent
		case 1:
			role = adminapi.TicketNext
		}
		ak := adminapi.TicketKey{ID: k.ID, Role: role, CreatedAt: stamp(k.Created), AgeSeconds: now.Sub(stamp(k.Created)).Seconds()}
		if k.Retired != 0 {
			r := stamp(k.Retired)
			ak.RetiredAt = &r
		}
		a.Keys = append(a.Keys, ak)
	}
	return a
}

func (t *tickets) registerMetrics(m *metrics) {
	m.gauge("ticket_generation", "Generation of the session-ticket key ring this replica holds (0: no ring).", func() float64 {
		ring, _ := t.store.TicketRing()
		return float64(ring.Generation)
	})
	if t.writer == nil {
		return
	}
	m.gauge("ticket_delivered_generation", "Generation of the ring last delivered to this host's TLS servers.", func() float64 {
		t.mu.Lock()
		defer t.mu.Unlock()
		return float64(t.delivered)
	})
	m.counter("ticket_delivery_failures_total", "Failed deliveries of the ticket keys to this host's TLS servers (files, HAProxy, reload).", func() float64 {
		return float64(t.failures.Load())
	})
}

func (n *Node) handleTickets(w http.ResponseWriter, r *http.Request) {
	ring, _ := n.store.TicketRing()
	writeJSON(w, http.StatusOK, n.tickets.ringAnswer(ring))
}

func (n *Node) handleTicketsRotate(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*n.cfg.WriteTimeout)
	defer cancel()
	ring, err := n.tickets.rotate(ctx)
	if err != nil {
		code := statusFor(err)
		if errors.Is(err, errRingBusy) {
			code = http.StatusConflict
		}
		writeError(w, code, fmt.Errorf("rotate ticket keys: %w", err))
		return
	}
	n.log.Info("operator rotated the ticket keys", "generation", ring.Generation, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, n.tickets.ringAnswer(ring))
}

func (n *Node) handleTicketsStatus(w http.ResponseWriter, r *http.Request) {
	ring, _ := n.store.TicketRing()
	own := n.memberStatuses(r.Context(), n.cluster.MemberMeta())
	ids := make([]string, 0, len(own))
	for id := range own {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := adminapi.TicketsStatus{Generation: ring.Generation, Nodes: []adminapi.TicketNode{}}
	for _, id := range ids {
		st := own[id]
		tn := adminapi.TicketNode{Node: id}
		switch {
		case st.err != nil:
			tn.Err = st.err.Error()
		case st.Tickets == nil:
			tn.Err = "the member does not report ticket keys (an older version)"
		default:
			tn.Reached, tn.TicketDelivery = true, *st.Tickets
		}
		out.Nodes = append(out.Nodes, tn)
	}
	writeJSON(w, http.StatusOK, out)
}

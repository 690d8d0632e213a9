package node

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/distcache-replicated/distcache/cluster"
	"github.com/distcache-replicated/distcache/internal/version"
	"github.com/distcache-replicated/distcache/node/adminapi"
	"github.com/distcache-replicated/distcache/node/statuspage"
)

// The admin endpoint is versioned JSON over HTTP; dcctl is its main client. Status,
// members, metrics, health reads, the ticket keys' ids and the status page are open
// (loopback by default); every POST, the snapshot download (it holds every session value) and
// the keyring need the bearer token when one is set, and a non-loopback admin
// address without a token is refused at start (see cmd/dcnode). The paths and JSON
// shapes are node/adminapi's, which dcctl shares; this file maps the cluster's and
// the store's values onto them.

// Status reports this node's view of itself and the cluster.
func (n *Node) Status() adminapi.Status {
	cs := n.cluster.Status()
	st := n.store.Stats()
	now := time.Now()
	changes := []adminapi.LeaderChange{}
	for _, ch := range n.cluster.LeaderChanges(now.Add(-leaderChangesWindow)) {
		changes = append(changes, adminapi.LeaderChange{At: ch.At.UTC().Truncate(time.Millisecond), LeaderID: ch.LeaderID, Term: ch.Term})
	}
	return adminapi.Status{
		ID: cs.ID, State: cs.State, LeaderID: cs.LeaderID, LeaderAddr: cs.LeaderAddr,
		Term: cs.Term, LastIndex: cs.LastIndex, CommitIndex: cs.CommitIndex, AppliedIndex: cs.AppliedIndex,
		LastContactMS: sinceMS(cs.LastContact), Sessions: st.Sessions, PayloadBytes: st.PayloadBytes,
		MaxSessions: int64(n.cfg.MaxSessions), MaxBytes: n.cfg.MaxBytes,
		ReadConsistency: string(n.cfg.ReadConsistency), Version: version.Get().Version, Listeners: n.Listeners(),
		RaftAddr: cs.RaftAddr, GossipAddr: cs.GossipAddr, AdminAddr: n.adminAddr,
		UptimeSeconds: now.Sub(n.started).Seconds(), LeaderChanges: changes,
		Tickets: n.tickets.delivery(),
	}
}

// leaderChangesWindow is how far back Status reports changes of leader.
const leaderChangesWindow = time.Hour

// sinceMS is the time since t in milliseconds, or -1 for the zero time (a leader, or
// a node that never heard from one).
func sinceMS(t time.Time) int64 {
	if t.IsZero() {
		return -1
	}
	return time.Since(t).Milliseconds()
}

func durationMS(d time.Duration) int64 {
	if d < 0 {
		return -1
	}
	return d.Milliseconds()
}

// bindAdmin binds the admin listener early, so its address can travel in gossip
// (followers send operators' restores to the leader's admin endpoint).
func (n *Node) bindAdmin(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin listener %s: %w", addr, err)
	}
	n.adminLn = ln
	n.adminAddr = ln.Addr().String()
	n.addCloser(func(context.Context) error { return ln.Close() })
	return nil
}

// serveAdmin serves the bound admin listener, once the cluster is up.
func (n *Node) serveAdmin() {
	ln := n.adminLn
	peers := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute}
	n.peerHTTP = &http.Client{Transport: peers}
	n.addCloser(func(context.Context) error { peers.CloseIdleConnections(); return nil })
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+adminapi.PathStatus, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, n.Status()) })
	mux.HandleFunc("GET "+adminapi.PathMembers, n.handleMembers)
	mux.HandleFunc("POST "+adminapi.PathJoin, n.authorized(n.handleJoin))
	mux.HandleFunc("POST "+adminapi.PathRemove, n.authorized(n.handleRemove))
	mux.HandleFunc("POST "+adminapi.PathLeave, n.authorized(n.handleLeave))
	mux.HandleFunc("POST "+adminapi.PathTransferLeader, n.authorized(n.handleTransfer))
	mux.HandleFunc("GET "+adminapi.PathKeyring, n.authorized(n.handleKeyringList))
	mux.HandleFunc("POST "+adminapi.PathKeyring, n.authorized(n.handleKeyring))
	// Ticket keys by id and age only: their bytes never leave through this API.
	mux.HandleFunc("GET "+adminapi.PathTickets, n.handleTickets)
	mux.HandleFunc("GET "+adminapi.PathTicketsStatus, n.handleTicketsStatus)
	mux.HandleFunc("POST "+adminapi.PathTicketsRotate, n.authorized(n.handleTicketsRotate))
	// A snapshot holds every session value (and the ticket keys): it needs the
	// token like a write.
	mux.HandleFunc("GET "+adminapi.PathSnapshot, n.authorized(n.handleSnapshotSave))
	mux.HandleFunc("POST "+adminapi.PathSnapshot, n.authorized(n.handleSnapshotRestore))
	mux.Handle("GET "+adminapi.PathMetrics, promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET "+adminapi.PathHealthz, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET "+adminapi.PathReadyz, n.handleReady)
	// The status page reads the paths above from the browser; it is open like them.
	mux.Handle("GET "+adminapi.PathUI+"/", http.StripPrefix(adminapi.PathUI, statuspage.Handler()))
	mux.HandleFunc("GET "+adminapi.PathUI, func(w http.ResponseWriter, r *http.Request) {
		// Relative, so that the page also works behind a proxy that adds a prefix.
		w.Header().Set("Location", "ui/")
		w.WriteHeader(http.StatusFound)
	})
	// Profiles for finding where time and memory go on a live node. Behind the
	// token: the command line (which may carry -gossip-key) and stacks are there.
	mux.HandleFunc("GET /debug/pprof/", n.authorized(pprof.Index))
	mux.HandleFunc("GET /debug/pprof/cmdline", n.authorized(pprof.Cmdline))
	mux.HandleFunc("GET /debug/pprof/profile", n.authorized(pprof.Profile))
	mux.HandleFunc("GET /debug/pprof/symbol", n.authorized(pprof.Symbol))
	mux.HandleFunc("GET /debug/pprof/trace", n.authorized(pprof.Trace))
	// Bounded like the client listeners: a request must arrive promptly (a snapshot
	// restore body gets longer, see handleSnapshotRestore), idle connections go, and
	// the number of connections is capped so a flood cannot exhaust the node.
	srv := &http.Server{
		Handler: mux, ErrorLog: slogErrorLog(n.log), MaxHeaderBytes: 64 << 10,
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: adminReadTimeout, IdleTimeout: time.Minute,
	}
	ln = limitListener(ln, adminMaxConns, n.log)
	n.addCloser(srv.Shutdown)
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !n.closing.Load() {
			n.log.Error("admin endpoint stopped", "err", err)
		}
	}()
}

// authorized guards mutating calls. The comparison is constant-time so the token
// cannot be guessed byte by byte from response times.
func (n *Node) authorized(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if n.cfg.AdminToken != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), adminapi.BearerPrefix)
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(n.cfg.AdminToken)) != 1 {
				n.log.Warn("admin call refused: missing or wrong token", "path", r.URL.Path, "remote", r.RemoteAddr)
				writeError(w, http.StatusUnauthorized, errors.New("missing or wrong admin token"))
				return
			}
		}
		h(w, r)
	}
}

func (n *Node) handleMembers(w http.ResponseWriter, r *http.Request) {
	// Each member's own status is asked for while the cluster asks every member
	// for its log position: both wait at most about a second for a member that
	// does not answer, together rather than one after the other.
	ownc := make(chan map[string]peerStatus, 1)
	go func() { ownc <- n.memberStatuses(r.Context(), n.cluster.MemberMeta()) }()
	ms, err := n.cluster.Members(r.Context())
	own := <-ownc
	if err != nil {
		writeClusterError(w, err)
		return
	}
	out := make([]adminapi.Member, 0, len(ms))
	for _, m := range ms {
		am := adminapi.Member{
			ID: m.ID, GossipAddr: m.GossipAddr, RaftAddr: m.RaftAddr, Status: string(m.Status),
			Suffrage: m.Suffrage, Leader: m.Leader, LastContactMS: durationMS(m.SinceContact),
			Lag: m.Lag, Version: m.Meta[metaVersion], Meta: m.Meta,
		}
		switch st, ok := own[m.ID]; {
		case !ok:
			am.StatusError = "gossip has not seen it, so its admin address is unknown"
		case st.err != nil:
			am.StatusError = st.err.Error()
		default:
			am.Reached, am.State = true, st.State
			am.Sessions, am.PayloadBytes = st.Sessions, st.PayloadBytes
			am.MaxSessions, am.MaxBytes = st.MaxSessions, st.MaxBytes
		}
		out = append(out, am)
	}
	writeJSON(w, http.StatusOK, adminapi.Members{Members: out})
}

// peerStatus is a member's answer to GET PathStatus, or why there is none.
type peerStatus struct {
	adminapi.Status
	err error
}

// memberStatusTimeout bounds the wait for a member's own status, as the cluster
// bounds its ask for the member's log position.
const memberStatusTimeout = time.Second

// memberStatuses asks every member's admin endpoint (metas: gossip metadata by
// id) for its status, concurrently. So the figures only a member knows (its
// store and caps) reach every node's members answer without the cluster
// carrying them, at the cost of one small HTTP call per member per members
// request, and nothing when nobody asks.
func (n *Node) memberStatuses(ctx context.Context, metas map[string]map[string]string) map[string]peerStatus {
	ctx, cancel := context.WithTimeout(ctx, memberStatusTimeout)
	defer cancel()
	out := make(map[string]peerStatus, len(metas))
	var mu sync.Mutex
	var wg sync.WaitGroup
	set := func(id string, ps peerStatus) {
		mu.Lock()
		out[id] = ps
		mu.Unlock()
	}
	self := n.ID()
	for id, meta := range metas {
		addr := meta[metaAdmin]
		switch {
		case id == self:
			set(id, peerStatus{Status: n.Status()})
		case addr == "":
			set(id, peerStatus{err: errors.New("no admin address in its gossip metadata")})
		default:
			wg.Add(1)
			go func() {
				defer wg.Done()
				var ps peerStatus
				c, err := adminapi.New(adminapi.Config{Addr: addr, HTTP: n.peerHTTP})
				if err == nil {
					ps.Status, err = c.Status(ctx)
				}
				ps.err = err
				set(id, ps)
			}()
		}
	}
	wg.Wait()
	return out
}

func (n *Node) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req adminapi.JoinRequest
	if !n.readJSON(w, r, &req) {
		return
	}
	if len(req.Addrs) == 0 {
		writeError(w, http.StatusBadRequest, errors.New("no addresses to join"))
		return
	}
	joined, err := n.cluster.Join(r.Context(), req.Addrs)
	if err != nil {
		writeClusterError(w, err)
		return
	}
	n.log.Info("operator join", "addrs", req.Addrs, "joined", joined)
	writeJSON(w, http.StatusOK, adminapi.JoinAnswer{Joined: joined})
}

func (n *Node) handleRemove(w http.ResponseWriter, r *http.Request) {
	var req adminapi.RemoveRequest
	if !n.readJSON(w, r, &req) {
		return
	}
	if req.ID == "" {
		writeError(w, http.StatusBadRequest, errors.New("no node id to remove"))
		return
	}
	if err := n.cluster.RemoveServer(r.Context(), req.ID); err != nil {
		writeClusterError(w, err)
		return
	}
	n.log.Info("operator removed a server", "id", req.ID)
	writeJSON(w, http.StatusOK, adminapi.Ack{})
}

func (n *Node) handleLeave(w http.ResponseWriter, r *http.Request) {
	if err := n.Leave(r.Context()); err != nil {
		writeClusterError(w, err)
		return
	}
	n.log.Info("operator asked this node to leave; shutting down")
	writeJSON(w, http.StatusOK, adminapi.Ack{})
	n.mu.Lock()
	select {
	case <-n.leaveCh:
	default:
		close(n.leaveCh)
	}
	n.mu.Unlock()
}

func (n *Node) handleTransfer(w http.ResponseWriter, r *http.Request) {
	var req adminapi.TransferLeaderRequest
	if !n.readJSON(w, r, &req) {
		return
	}
	if err := n.cluster.TransferLeadership(r.Context(), req.ID); err != nil {
		writeClusterError(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	_ = n.cluster.WaitForLeader(ctx)
	id, _ := n.cluster.Leader()
	n.log.Info("operator transferred leadership", "to", id)
	writeJSON(w, http.StatusOK, adminapi.TransferLeaderAnswer{LeaderID: id})
}

func (n *Node) handleSnapshotSave(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", adminapi.ContentTypeSnapshot)
	if err := n.cluster.SnapshotSave(r.Context(), w); err != nil {
		// Headers may be gone already; the truncated body fails the client's checksum.
		n.log.Error("snapshot save failed", "err", err)
		writeClusterError(w, err)
	}
}

func (n *Node) handleSnapshotRestore(w http.ResponseWriter, r *http.Request) {
	// A backup of a million sessions is a few hundred megabytes: allow it time to
	// arrive, past the server's short read timeout for JSON calls.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(adminRestoreTimeout))
	if !n.cluster.IsLeader() {
		n.forwardToLeader(w, r)
		return
	}
	if err := n.cluster.SnapshotRestore(r.Context(), r.Body); err != nil {
		writeClusterError(w, err)
		return
	}
	n.log.Info("operator restored a snapshot")
	writeJSON(w, http.StatusOK, adminapi.Ack{})
}

// forwardToLeader relays an admin call that only the leader can serve (a restore
// streams the whole state into the leader's Raft) to the leader's admin endpoint,
// so an operator may point dcctl at any node.
func (n *Node) forwardToLeader(w http.ResponseWriter, r *http.Request) {
	addr := n.cluster.LeaderMeta()[metaAdmin]
	if addr == "" {
		writeError(w, http.StatusServiceUnavailable, errors.New("no leader with a known admin address; retry when the cluster has a leader"))
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+addr+r.URL.RequestURI(), r.Body)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
	req.Header.Set("Authorization", r.Header.Get("Authorization"))
	resp, err := n.peerHTTP.Do(req)
	if err != nil {
		writeError(w, http.StatusBadGateway, fmt.Errorf("forward to the leader's admin endpoint %s: %w", addr, err))
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// handleReady is for load balancers and probes: 200 "ready" when this node serves
// current reads and can take writes, else 503 with the reason in words.
func (n *Node) handleReady(w http.ResponseWriter, r *http.Request) {
	if err := n.Ready(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ready\n")
}

// Admin endpoint bounds.
const (
	adminReadTimeout    = 30 * time.Second
	adminRestoreTimeout = 10 * time.Minute
	adminMaxConns       = 64
)

// limitListener caps concurrent admin connections: past max, a new connection is
// closed at once with a log line (dcctl and Prometheus need only a handful).
func limitListener(ln net.Listener, max int, log *slog.Logger) net.Listener {
	return &limitedListener{Listener: ln, sem: make(chan struct{}, max), log: log}
}

type limitedListener struct {
	net.Listener
	sem chan struct{}
	log *slog.Logger
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &limitedConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
			l.log.Warn("admin connection refused: too many connections", "remote", c.RemoteAddr().String(), "max", cap(l.sem))
			c.Close()
		}
	}
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// writeClusterError answers a failed cluster call with its status and, for the
// causes an operator can act on, what to do.
func writeClusterError(w http.ResponseWriter, err error) {
	if hint := hintFor(err); hint != "" {
		err = fmt.Errorf("%w; %s", err, hint)
	}
	writeError(w, statusFor(err), err)
}

// hintFor says what to do about an error, or "".
func hintFor(err error) string {
	switch {
	case errors.Is(err, cluster.ErrUnknownServer):
		return "the node ids are those GET " + adminapi.PathMembers + " lists (dcctl members)"
	case errors.Is(err, cluster.ErrNotVoter):
		return "only a voter can lead: pick one whose suffrage is voter in GET " + adminapi.PathMembers + " (dcctl members)"
	case errors.Is(err, cluster.ErrBadSnapshot):
		return "restore a file written by GET " + adminapi.PathSnapshot + " (dcctl snapshot save)"
	case errors.Is(err, cluster.ErrJoinUnreachable):
		return "give the gossip address (host:port of -gossip) of a running member; check that this node can reach it and that both use the same gossip key"
	case errors.Is(err, cluster.ErrNoLeader):
		return "the cluster has no leader (an election, or quorum lost): retry once a majority of the voters is up"
	}
	return ""
}

// statusFor maps a cluster error onto the admin API's statuses (see
// adminapi.ErrorBody): an operator's mistake is 4xx, a failure 5xx.
func statusFor(err error) int {
	switch {
	case errors.Is(err, cluster.ErrUnknownServer):
		return http.StatusNotFound
	case errors.Is(err, cluster.ErrNotVoter):
		return http.StatusConflict
	case errors.Is(err, cluster.ErrBadSnapshot):
		return http.StatusBadRequest
	case errors.Is(err, cluster.ErrJoinUnreachable):
		return http.StatusBadGateway
	case errors.Is(err, cluster.ErrNoLeader), errors.Is(err, cluster.ErrNotLeader),
		errors.Is(err, cluster.ErrLeadershipLost), errors.Is(err, cluster.ErrClosed):
		return http.StatusServiceUnavailable
	case errors.Is(err, cluster.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

func (n *Node) readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		n.log.Info("admin call refused: bad request body", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
		writeError(w, http.StatusBadRequest, fmt.Errorf("bad request body: %w", err))
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", adminapi.ContentTypeJSON)
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, adminapi.ErrorBody{Error: err.Error()})
}

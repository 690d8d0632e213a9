package node

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/distcache-replicated/distcache/cluster"
	"github.com/distcache-replicated/distcache/fsm"
	"github.com/distcache-replicated/distcache/internal/version"
)

// Request labels. Every front-end reports through the same small table, so one query
// compares protocols.
const (
	protoDistcache = iota
	protoMemcache
	protoRESP
	protoSessiond
	numProtos
)

const (
	cmdAdd = iota
	cmdSet
	cmdGet
	cmdRemove
	cmdHave
	cmdTake
	numCmds
)

const (
	resOK = iota
	resMiss
	resExists
	resError
	numResults
)

var (
	protoNames  = [numProtos]string{"distcache", "memcache", "resp", "sessiond"}
	cmdNames    = [numCmds]string{"add", "set", "get", "remove", "have", "take"}
	resultNames = [numResults]string{"ok", "miss", "exists", "error"}
)

// metrics holds the node's Prometheus collectors in a registry of its own (several
// nodes can live in one process, as in -dev-cluster and tests). Request counters and
// histograms are resolved once at start so the hot path does no label lookups.
type metrics struct {
	reg      *prometheus.Registry
	requests [numProtos][numCmds][numResults]prometheus.Counter
	latency  [numProtos][numCmds]prometheus.Observer
	writeErr *prometheus.CounterVec
	ops      atomic.Int64 // answered requests, for the progress line
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "distcache", Name: "requests_total",
		Help: "Client requests by protocol, command and result.",
	}, []string{"protocol", "command", "result"})
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "distcache", Name: "request_duration_seconds",
		Help:    "Time to answer a client request, by protocol and command.",
		Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3, 500e-3, 2},
	}, []string{"protocol", "command"})
	m.writeErr = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "distcache", Name: "write_errors_total",
		Help: "Writes that could not be committed, by reason (unavailable: no leader, no quorum or timeout; other).",
	}, []string{"reason"})
	v := version.Get()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "distcache", Name: "build_info",
		Help:        "Always 1; the labels say which build runs (version, VCS revision, Go toolchain).",
		ConstLabels: prometheus.Labels{"version": v.Version, "revision": v.Revision, "go": v.Go},
	})
	build.Set(1)
	// Both reasons exist from the start at 0, so that rate() and the alert
	// rules see the first error as an increase rather than a new series.
	for _, reason := range []string{"unavailable", "other"} {
		m.writeErr.WithLabelValues(reason)
	}
	m.reg.MustRegister(reqs, lat, m.writeErr, build)
	for p := range numProtos {
		for c := range numCmds {
			m.latency[p][c] = lat.WithLabelValues(protoNames[p], cmdNames[c])
			for r := range numResults {
				m.requests[p][c][r] = reqs.WithLabelValues(protoNames[p], cmdNames[c], resultNames[r])
			}
		}
	}
	return m
}

// observe records one answered request.
func (m *metrics) observe(proto, cmd, res int, start time.Time) {
	m.ops.Add(1)
	m.requests[proto][cmd][res].Inc()
	m.latency[proto][cmd].Observe(time.Since(start).Seconds())
}

// gauge registers a gauge read from f at scrape time.
func (m *metrics) gauge(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "distcache", Name: name, Help: help}, f))
}

// counter registers a counter read from f at scrape time (for counts kept elsewhere,
// such as the store's eviction count).
func (m *metrics) counter(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "distcache", Name: name, Help: help}, f))
}

// registerMetrics exposes the store's and the cluster's own counters, read at scrape
// time so the hot paths pay nothing for them.
func (n *Node) registerMetrics() {
	m := n.metrics
	st := func(f func(s fsm.Stats) float64) func() float64 {
		return func() float64 { return f(n.store.Stats()) }
	}
	m.gauge("sessions", "Live sessions in this replica.", st(func(s fsm.Stats) float64 { return float64(s.Sessions) }))
	m.gauge("payload_bytes", "Key and value bytes held by this replica.", st(func(s fsm.Stats) float64 { return float64(s.PayloadBytes) }))
	m.counter("evictions_total", "Sessions evicted because a size cap was reached.", st(func(s fsm.Stats) float64 { return float64(s.Evictions) }))
	m.counter("expirations_total", "Sessions removed because they expired.", st(func(s fsm.Stats) float64 { return float64(s.Expirations) }))
	m.counter("store_hits_total", "Local reads that found a live session.", st(func(s fsm.Stats) float64 { return float64(s.Hits) }))
	m.counter("store_misses_total", "Local reads that found nothing.", st(func(s fsm.Stats) float64 { return float64(s.Misses) }))
	cs := func(f func(s cluster.Status) float64) func() float64 {
		return func() float64 { return f(n.cluster.Status()) }
	}
	m.gauge("raft_state", "Raft state: 0 follower, 1 candidate, 2 leader, 3 shutdown.", cs(func(s cluster.Status) float64 { return raftStateValue(s.State) }))
	m.gauge("raft_term", "Current Raft term.", cs(func(s cluster.Status) float64 { return float64(s.Term) }))
	m.gauge("raft_last_index", "Last index in this node's Raft log.", cs(func(s cluster.Status) float64 { return float64(s.LastIndex) }))
	m.gauge("raft_commit_index", "Highest Raft index known committed.", cs(func(s cluster.Status) float64 { return float64(s.CommitIndex) }))
	m.gauge("raft_applied_index", "Highest Raft index applied to this replica's store.", cs(func(s cluster.Status) float64 { return float64(s.AppliedIndex) }))
	m.gauge("raft_last_contact_seconds", "Time since this follower last heard from the leader (0 on the leader).", cs(func(s cluster.Status) float64 {
		if s.LastContact.IsZero() {
			return 0
		}
		return time.Since(s.LastContact).Seconds()
	}))
	m.gauge("open_connections", "Client connections open on every listener of this node.", func() float64 {
		n.mu.Lock()
		defer n.mu.Unlock()
		total := 0
		for _, c := range n.conns {
			total += c()
		}
		return float64(total)
	})
	m.gauge("ready", "1 when this node is ready by the /readyz check (known leader, caught up, writable storage), else 0.", func() float64 {
		return boolValue(n.Ready() == nil)
	})
	m.gauge("storage_writable", "1 while this node's data dir and Raft log take writes, 0 when a write failed (disk full, read-only, I/O error).", func() float64 {
		return boolValue(n.cluster.StorageWritable() == nil)
	})
	m.gauge("max_sessions", "The session cap (-sessions): past it the sessions due to expire soonest are evicted.", func() float64 { return float64(n.cfg.MaxSessions) })
	m.gauge("max_payload_bytes", "The byte cap on keys and values (-max-bytes), compared with distcache_payload_bytes.", func() float64 { return float64(n.cfg.MaxBytes) })
	m.reg.MustRegister(&peerLagCollector{n: n})
	n.tickets.registerMetrics(m)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func raftStateValue(s string) float64 {
	switch s {
	case "Follower":
		return 0
	case "Candidate":
		return 1
	case "Leader":
		return 2
	}
	return 3
}

var peerLagDesc = prometheus.NewDesc("distcache_raft_peer_lag_entries",
	"Entries each peer trails the leader's log by (reported by the leader only).", []string{"peer"}, nil)

// peerLagCollector asks the cluster for each peer's lag at scrape time; only the leader
// knows it, so followers report nothing.
type peerLagCollector struct{ n *Node }

func (c *peerLagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- peerLagDesc }

func (c *peerLagCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.n.cluster.IsLeader() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ms, err := c.n.cluster.Members(ctx)
	if err != nil {
		return
	}
	for _, m := range ms {
		if m.Lag >= 0 {
			ch <- prometheus.MustNewConstMetric(peerLagDesc, prometheus.GaugeValue, float64(m.Lag), m.ID)
		}
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/distcache-replicated/distcache/node"
)

// runDevCluster starts -dev-cluster nodes in this process on fixed loopback ports,
// with every front-end enabled, for trying dcnode out. Node i (from 0) listens on
// 9100+i (distcache), 9200+i (raft), 9300+i (gossip), 9400+i (admin), 9500+i
// (memcache), 9600+i (RESP) and 9700+i (sessiond, UDP): node 1 is on the single-node
// defaults, so dcctl needs no flags. Data lives in a temporary directory removed on
// exit, unless -data-dir was given. It returns the process exit status once ctx ends.
func runDevCluster(ctx context.Context, o options, stdout io.Writer, logger *slog.Logger) int {
	base := o.dataDir
	if !o.given("data-dir") {
		dir, err := os.MkdirTemp("", "dcnode-dev-")
		if err != nil {
			logger.Error("cannot create a data directory", "err", err)
			return exitFail
		}
		defer os.RemoveAll(dir)
		base = dir
	}
	var nodes []*node.Node
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		for i := len(nodes) - 1; i >= 0; i-- {
			nodes[i].Close(sctx)
		}
	}()
	gossip := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", 9300+i) }
	for i := range o.devCluster {
		oi := o
		oi.nodeID = fmt.Sprintf("node%d", i+1)
		oi.dataDir = filepath.Join(base, oi.nodeID)
		if o.inMemory {
			oi.nodeID = "" // a fresh id at every start
		}
		oi.listen = []string{fmt.Sprintf("IP:127.0.0.1:%d", 9100+i)}
		oi.raftAddr = fmt.Sprintf("127.0.0.1:%d", 9200+i)
		oi.gossipAddr = gossip(i)
		oi.adminAddr = fmt.Sprintf("127.0.0.1:%d", 9400+i)
		oi.memcache = []string{fmt.Sprintf("127.0.0.1:%d", 9500+i)}
		oi.resp = []string{fmt.Sprintf("127.0.0.1:%d", 9600+i)}
		oi.sessiond = []string{fmt.Sprintf("127.0.0.1:%d", 9700+i)}
		oi.bootstrapExpect = o.devCluster
		oi.join = nil
		for j := range o.devCluster {
			if j != i {
				oi.join = append(oi.join, gossip(j))
			}
		}
		oi.quiet = o.quiet || i > 0
		cfg, err := oi.nodeConfig(logger) // the cluster tags its lines with node=ID
		if err != nil {
			logger.Error("invalid configuration", "err", err)
			return exitUsage
		}
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			logger.Error("cannot create the data directory", "dir", cfg.DataDir, "err", err)
			return exitFail
		}
		n, err := node.Start(ctx, cfg)
		if err != nil {
			logger.Error("cannot start node", "node", oi.nodeID, "err", err,
				"hint", "another dcnode may hold the dev-cluster ports 9100-9708; stop it first")
			return exitFail
		}
		nodes = append(nodes, n)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := nodes[0].Cluster().WaitForLeader(wctx)
	cancel()
	if err != nil {
		logger.Error("no leader elected", "err", err)
		return exitFail
	}
	fmt.Fprintf(stdout, "dcnode dev cluster: %d nodes on loopback, data in %s (removed on exit)\n", len(nodes), base)
	for _, n := range nodes {
		l := n.Listeners()
		st := n.Status()
		fmt.Fprintf(stdout, "  %s  distcache %s  memcache %s  resp %s  sessiond udp %s  admin %s  raft %s  gossip %s\n",
			st.ID, strings.Join(l["distcache"], ","), strings.Join(l["memcache"], ","), strings.Join(l["resp"], ","),
			strings.Join(l["sessiond"], ","), st.AdminAddr, st.RaftAddr, st.GossipAddr)
	}
	fmt.Fprintln(stdout, "Try: go run ./cmd/dcctl members   (Ctrl-C stops the cluster)")
	<-ctx.Done()
	logger.Info("shutting down the dev cluster")
	return exitOK
}

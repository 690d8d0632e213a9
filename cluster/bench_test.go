package cluster

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// BenchmarkPropose measures durable replicated writes (fsync on, 3 nodes,
// real bolt and TCP on loopback) of 200-byte commands from 64 concurrent
// callers, through the leader and through a follower.
func BenchmarkPropose(b *testing.B) {
	for _, via := range []string{"leader", "follower"} {
		b.Run(via, func(b *testing.B) {
			nodes := newTestCluster(b, 3, benchTune)
			leader, followers := leaderAndFollowers(b, nodes)
			target := leader
			if via == "follower" {
				target = followers[0]
			}
			var seq atomic.Int64
			pad := strings.Repeat("v", 200)
			b.SetParallelism((64 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			b.SetBytes(200)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					k := fmt.Sprintf("k%012d", seq.Add(1))
					cmd := addCmd(k, pad[:200-len(k)-2])
					res, err := target.c.Propose(context.Background(), cmd)
					if err != nil {
						b.Error(err)
						return
					}
					if string(res) != "ok:"+k {
						b.Errorf("result %q for %s", res, k)
						return
					}
				}
			})
			b.StopTimer()
			st := target.c.Status()
			b.ReportMetric(float64(b.N)/float64(max(st.LastIndex, 1)), "cmds/entry")
		})
	}
}

// benchTune lets a run turn fsync off (BENCH_NOSYNC=1) to separate disk
// latency from the code path; reported figures use the default (fsync on).
func benchTune(c *Config) {
	if os.Getenv("BENCH_NOSYNC") != "" {
		c.NoSync, c.LogStore = true, LogStoreBolt // NoSync is bolt's
	}
	if v, err := strconv.Atoi(os.Getenv("BENCH_INFLIGHT")); err == nil {
		c.MaxInflight = v
	}
}

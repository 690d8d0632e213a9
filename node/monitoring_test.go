package node

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/distcache-replicated/distcache/ticketkeys"
)

// TestMonitoringUsesRealMetrics: every metric that the Grafana dashboard and
// the alert rules in monitoring/ name exists in a real node's /metrics, so a
// renamed metric cannot leave a panel empty or an alert silent. The leader of a
// three-node cluster is scraped, as it is the one that reports peer lag.
func TestMonitoringUsesRealMetrics(t *testing.T) {
	// Ticket outputs, for the delivery metrics that exist only with them.
	nodes := startNodesConfig(t, 3, ReadLocal, func(i int, c *Config) {
		c.Tickets.Output = &ticketkeys.Config{Dir: t.TempDir(), Formats: []ticketkeys.Format{ticketkeys.Go}}
	})
	leader, _ := leaderAndFollower(t, nodes)
	waitUntil(t, 10*time.Second, "the leader ready", func() (bool, any) { err := leader.Ready(); return err == nil, err })
	fams := scrapeMetrics(t, leader)

	known := map[string]bool{}
	for name, f := range fams {
		known[name] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				known[name+suffix] = true
			}
		}
	}
	// Metric names as PromQL writes them: a name followed by {, [, ) or
	// white space. Prometheus's own series (up) are not dcnode's.
	metric := regexp.MustCompile(`\b((?:distcache|process|go)_[a-z0-9_]+)\b`)
	for _, file := range []string{"grafana-dashboard.json", "alerts.yml", "alerts_test.yml"} {
		b, err := os.ReadFile(filepath.Join("..", "monitoring", file))
		if err != nil {
			t.Fatal(err)
		}
		used := map[string]bool{}
		for _, m := range metric.FindAllStringSubmatch(string(b), -1) {
			used[m[1]] = true
		}
		if len(used) < 5 {
			t.Fatalf("%s names only %d metrics: the pattern no longer finds them", file, len(used))
		}
		var missing []string
		for name := range used {
			if !known[name] {
				missing = append(missing, name)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("monitoring/%s uses metrics dcnode does not export: %s", file, strings.Join(missing, ", "))
		}
	}
	// The gauges the alerts rely on read 1 on a healthy leader.
	for _, name := range []string{"distcache_ready", "distcache_storage_writable"} {
		if ms := fams[name].GetMetric(); len(ms) != 1 || ms[0].GetGauge().GetValue() != 1 {
			t.Errorf("%s on a healthy leader: %v; want 1", name, ms)
		}
	}
	if n := len(fams["distcache_raft_peer_lag_entries"].GetMetric()); n != 3 {
		t.Errorf("the leader reports lag for %d servers; want 3 (itself at 0 and two peers)", n)
	}
}

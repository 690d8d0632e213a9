package resp

import (
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// info answers INFO with the fields Redis clients and mod_socache_redis's
// status page look for, plus the Cache's own figures under "# Cache". The
// section argument is ignored: everything is always returned.
func (c *conn) info() {
	s := c.s
	var b strings.Builder
	line := func(k, v string) {
		b.WriteString(k)
		b.WriteByte(':')
		b.WriteString(v)
		b.WriteString("\r\n")
	}
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	version := s.Version
	if version == "" {
		version = DefaultVersion
	}
	b.WriteString("# Server\r\n")
	line("redis_version", version)
	line("redis_mode", "standalone")
	line("arch_bits", strconv.Itoa(32<<(^uint(0)>>63)))
	line("process_id", strconv.Itoa(os.Getpid()))
	line("uptime_in_seconds", strconv.FormatInt(int64(time.Since(s.conns.Started())/time.Second), 10))
	b.WriteString("\r\n# Clients\r\n")
	line("connected_clients", strconv.Itoa(s.conns.Active()))
	line("blocked_clients", "0")
	b.WriteString("\r\n# Stats\r\n")
	line("total_connections_received", u(s.conns.Total()))
	line("total_commands_processed", u(s.commands.Load()))
	line("rejected_connections", u(s.conns.Rejected()))
	line("keyspace_hits", u(s.hits.Load()))
	line("keyspace_misses", u(s.misses.Load()))
	b.WriteString("\r\n# Replication\r\n")
	line("role", "master")
	line("connected_slaves", "0")
	b.WriteString("\r\n# Cluster\r\n")
	line("cluster_enabled", "0")
	if sp, ok := s.Cache.(StatsProvider); ok {
		extra := sp.Stats()
		b.WriteString("\r\n# Cache\r\n")
		for _, k := range slices.Sorted(maps.Keys(extra)) {
			line(clean(k), clean(extra[k]))
		}
	}
	c.writeBulk([]byte(b.String()))
}

// clean keeps a stats field on its line.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == ':' {
			return '_'
		}
		return r
	}, s)
}

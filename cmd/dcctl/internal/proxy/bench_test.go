package proxy

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/cmd/dcctl/internal/dctest"
	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// benchTarget returns the address to benchmark: the server itself (direct) or a
// proxy in front of it.
func benchTarget(b *testing.B, viaProxy bool) (string, *dctest.Server) {
	up := dctest.StartServer(b, "tcp", nil)
	if !viaProxy {
		return up.Addr, up
	}
	p, err := New(Config{Servers: []string{up.Addr}, Dial: distcache.DialConn, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	addr := "UNIX:" + filepath.Join(b.TempDir(), "scache")
	ln, err := distcache.Listen(addr, distcache.ListenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &distcache.Server{Handler: p, Logger: slog.New(slog.DiscardHandler)}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.Run(ctx) }()
	go func() { defer wg.Done(); srv.Serve(ln) }()
	b.Cleanup(func() { srv.Close(); cancel(); wg.Wait() })
	dctest.WaitFor(b, 5*time.Second, "upstream", func() bool { return p.Upstream() != "" })
	return addr, up
}

func benchmarkGet(b *testing.B, viaProxy bool, parallel bool) {
	addr, _ := benchTarget(b, viaProxy)
	ctx := context.Background()
	seed, err := distcache.Dial(ctx, addr)
	if err != nil {
		b.Fatal(err)
	}
	defer seed.Close()
	data := make([]byte, 200)
	if err := seed.Add(ctx, []byte("bench-id"), data, time.Hour); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	if !parallel {
		for b.Loop() {
			if _, err := seed.Get(ctx, []byte("bench-id")); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.RunParallel(func(pb *testing.PB) {
		// One persistent connection per goroutine, as separate applications would.
		c, err := distcache.Dial(ctx, addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		for pb.Next() {
			if _, err := c.Get(ctx, []byte("bench-id")); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// Sequential round trips: the latency the proxy adds to each request.
func BenchmarkGetDirect(b *testing.B)   { benchmarkGet(b, false, false) }
func BenchmarkGetViaProxy(b *testing.B) { benchmarkGet(b, true, false) }

// Many local clients multiplexed onto one upstream connection.
func BenchmarkGetViaProxyParallel(b *testing.B) {
	b.SetParallelism(8)
	benchmarkGet(b, true, true)
}

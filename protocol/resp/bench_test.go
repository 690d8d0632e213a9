package resp

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol/internal/frontendtest"
)

// benchConn returns a connection reading the repeated request and
// discarding answers, to measure parse+answer without the network.
func benchConn(b *testing.B, cache Cache, request string) *conn {
	s := &Server{Cache: cache, Logger: frontendtest.Logger(b)}
	c := s.newConn(nil)
	c.BR = bufio.NewReaderSize(&frontendtest.LoopReader{Data: []byte(request)}, 4096)
	c.BW = bufio.NewWriterSize(io.Discard, 4096)
	b.Cleanup(c.Req.Release)
	return c
}

var benchKey = "mod_ssl-sess:" + strings.Repeat("0123456789abcdef", 4)

func BenchmarkGetHit(b *testing.B) {
	mc := newMemCache()
	mc.Set(context.Background(), []byte(benchKey), bytes.Repeat([]byte{0xA5}, 181), time.Hour)
	c := benchConn(b, mc, cmd("GET", benchKey))
	b.ReportAllocs()
	for b.Loop() {
		if err := c.handle(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetMiss(b *testing.B) {
	c := benchConn(b, newMemCache(), cmd("GET", benchKey))
	b.ReportAllocs()
	for b.Loop() {
		if err := c.handle(); err != nil {
			b.Fatal(err)
		}
	}
}

// nopCache accepts writes without storing them, so the SETEX benchmark
// measures the front-end rather than the test map.
type nopCache struct{ memCache }

func (*nopCache) Set(context.Context, []byte, []byte, time.Duration) error { return nil }

func BenchmarkSetex(b *testing.B) {
	c := benchConn(b, &nopCache{}, cmd("SETEX", benchKey, "299", strings.Repeat("\xA5", 181)))
	b.ReportAllocs()
	for b.Loop() {
		if err := c.handle(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetTCP is one request/answer round trip over loopback TCP.
func BenchmarkGetTCP(b *testing.B) {
	mc := newMemCache()
	mc.Set(context.Background(), []byte(benchKey), bytes.Repeat([]byte{0xA5}, 181), time.Hour)
	addr := startServer(b, &Server{Cache: mc, Logger: frontendtest.Logger(b)})
	frontendtest.BenchmarkRoundTrip(b, addr, []byte(cmd("GET", benchKey)), len(bulk(strings.Repeat("x", 181))))
}

func FuzzHandle(f *testing.F) {
	for _, seed := range []string{
		cmd("SETEX", benchKey, "299", "abc") + cmd("GET", benchKey) + cmd("DEL", benchKey, "x"),
		cmd("SET", "a", "b", "EX", "10", "NX") + cmd("SET", "a", "b", "PX"),
		"PING\r\nping hi\r\n\r\nQUIT\r\n",
		"*2\r\n$3\r\nGET\r\n$-5\r\n",
		"*1\r\n$99999999999999999999\r\n",
		"*-1\r\n*0\r\n" + cmd("INFO") + cmd("CLIENT", "SETNAME", "x"),
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n" + strings.Repeat("v", 2000) + "\r\n",
		"\x00\xff\t\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &Server{Cache: newMemCache(), Logger: frontendtest.Logger(t), MaxValueSize: 1024, MaxArgs: 16}
		c := s.newConn(nil)
		defer c.Req.Release()
		var out bytes.Buffer
		c.BR = bufio.NewReaderSize(bytes.NewReader(in), 4096)
		c.BW = bufio.NewWriter(&out)
		for range len(in) + 1 { // every request consumes at least one byte
			if err := c.handle(); err != nil {
				break // end of input or a protocol violation: the connection closes
			}
		}
		c.BW.Flush()
		if out.Len() > 0 && !bytes.HasSuffix(out.Bytes(), []byte("\r\n")) {
			t.Fatalf("answer not CRLF-terminated: %q", out.Bytes())
		}
		if out.Len() > 0 && !bytes.ContainsAny(out.Bytes()[:1], "+-:$*") {
			t.Fatalf("answer is not RESP: %q", out.Bytes())
		}
	})
}

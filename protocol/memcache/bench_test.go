package memcache

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
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
	mc.Set(context.Background(), []byte(benchKey), bytes.Repeat([]byte{0xA5}, 181), 0, time.Hour)
	c := benchConn(b, mc, "get "+benchKey+"\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if err := c.handle(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetMiss(b *testing.B) {
	c := benchConn(b, newMemCache(), "get "+benchKey+"\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if err := c.handle(); err != nil {
			b.Fatal(err)
		}
	}
}

// nopCache accepts writes without storing them, so the Set benchmark
// measures the front-end rather than the test map.
type nopCache struct{ memCache }

func (*nopCache) Set(context.Context, []byte, []byte, uint32, time.Duration) error { return nil }

func BenchmarkSet(b *testing.B) {
	der := strings.Repeat("\xA5", 181)
	c := benchConn(b, &nopCache{}, fmt.Sprintf("set %s 0 299 181 \r\n%s\r\n", benchKey, der))
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
	mc.Set(context.Background(), []byte(benchKey), bytes.Repeat([]byte{0xA5}, 181), 0, time.Hour)
	addr := startServer(b, &Server{Cache: mc, Logger: frontendtest.Logger(b)})
	want := len(fmt.Sprintf("VALUE %s 0 181\r\n\r\nEND\r\n", benchKey)) + 181
	frontendtest.BenchmarkRoundTrip(b, addr, []byte("get "+benchKey+"\r\n"), want)
}

func FuzzHandle(f *testing.F) {
	for _, seed := range []string{
		"get a b\r\n",
		"set " + benchKey + " 0 299 3 \r\nabc\r\nget " + benchKey + "\r\n",
		"add a 1 -1 1\r\nz\r\ndelete a 0\r\ndelete a noreply\r\n",
		"set a 0 0 5\r\nab\r\n",
		"set a 0 99999999999 1\r\nz\r\n",
		"stats\r\nversion\r\nverbosity 1 noreply\r\nquit\r\n",
		"\x00\xff\r\n\n\n",
		strings.Repeat("x", 3000) + "\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &Server{Cache: newMemCache(), Logger: frontendtest.Logger(t), MaxValueSize: 1024}
		c := s.newConn(nil)
		defer c.Req.Release()
		var out bytes.Buffer
		c.BR = bufio.NewReaderSize(bytes.NewReader(in), 4096)
		c.BW = bufio.NewWriter(&out)
		for range len(in) + 1 { // every request consumes at least one byte
			// Any error (end of input, protocol violation) closes the connection.
			if err := c.handle(); err != nil {
				break
			}
		}
		c.BW.Flush()
		// Every answer is CRLF-terminated protocol text.
		if out.Len() > 0 && !bytes.HasSuffix(out.Bytes(), []byte("\r\n")) {
			t.Fatalf("answer not CRLF-terminated: %q", out.Bytes())
		}
	})
}

package distcache

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// loopReader replays the same bytes forever without allocating.
type loopReader struct {
	b   []byte
	off int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := copy(p, r.b[r.off:])
	r.off = (r.off + n) % len(r.b)
	return n, nil
}

func benchAdd(dataLen int) []byte {
	return AppendAddPayload(nil, 60000, bytes.Repeat([]byte("i"), 32), bytes.Repeat([]byte("d"), dataLen-8-32))
}

func benchEncode(b *testing.B, payload []byte) {
	m := &Message{UID: 1, Op: OpAdd, Payload: payload}
	buf := make([]byte, 0, EncodedLen(len(payload)))
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = AppendMessage(buf[:0], m); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDecode(b *testing.B, dir Direction, m *Message) {
	wire, _ := AppendMessage(nil, m)
	dec := NewDecoder(&loopReader{b: wire}, dir)
	b.SetBytes(int64(len(m.Payload)))
	b.ReportAllocs()
	var got Message
	for b.Loop() {
		if err := dec.Decode(&got); err != nil {
			b.Fatal(err)
		}
	}
	if !bytes.Equal(got.Payload, m.Payload) {
		b.Fatal("decoded payload differs")
	}
}

func BenchmarkEncodeAdd200(b *testing.B)   { benchEncode(b, benchAdd(200)) }
func BenchmarkEncodeAdd10KiB(b *testing.B) { benchEncode(b, benchAdd(10<<10)) }
func BenchmarkDecodeAdd200(b *testing.B) {
	benchDecode(b, Requests, &Message{UID: 1, Op: OpAdd, Payload: benchAdd(200)})
}
func BenchmarkDecodeAdd10KiB(b *testing.B) {
	benchDecode(b, Requests, &Message{UID: 1, Op: OpAdd, Payload: benchAdd(10 << 10)})
}

// BenchmarkDecodeGet must report 1 alloc/op: the returned payload.
func BenchmarkDecodeGet(b *testing.B) {
	benchDecode(b, Requests, &Message{UID: 7, Op: OpGet, Payload: bytes.Repeat([]byte("i"), 32)})
}

// BenchmarkRoundTrip measures a Client against a Server with an in-memory
// cache: Seq is one request in flight (dc_test's pattern, i.e. latency);
// Parallel pipelines GOMAXPROCS×8 goroutines over one connection.
func BenchmarkRoundTrip(b *testing.B) {
	for _, network := range []string{"tcp", "unix"} {
		for _, op := range []string{"get200", "add200"} {
			b.Run(fmt.Sprintf("%s/%s/seq", network, op), func(b *testing.B) { benchRoundTrip(b, network, op, false) })
			b.Run(fmt.Sprintf("%s/%s/parallel", network, op), func(b *testing.B) { benchRoundTrip(b, network, op, true) })
		}
	}
}

func benchRoundTrip(b *testing.B, network, op string, parallel bool) {
	cache := newMapCache()
	ts := startServer(b, network, NewCacheHandler(cache), nil)
	ctx := context.Background()
	c, err := Dial(ctx, ts.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	data := bytes.Repeat([]byte("d"), 200)
	if err := c.Add(ctx, []byte("hot"), data, time.Hour); err != nil {
		b.Fatal(err)
	}
	do := func(i int) error {
		if op == "get200" {
			_, err := c.Get(ctx, []byte("hot"))
			return err
		}
		id := fmt.Appendf(nil, "k%d", i)
		if err := c.Add(ctx, id, data, time.Hour); err != nil {
			return err
		}
		return nil
	}
	b.ReportAllocs()
	if !parallel {
		i := 0
		for b.Loop() {
			if err := do(i); err != nil {
				b.Fatal(err)
			}
			i++
		}
		return
	}
	b.SetParallelism(8)
	var seq atomicCounter
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := do(seq.next()); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) next() int { return int(c.n.Add(1)) }

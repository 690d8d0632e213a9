package distcache

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol/internal/frontendtest"
)

// quickMapCache answers reads at once (QuickCache), so the Server serves them
// on the connection's reading goroutine.
type quickMapCache struct {
	*mapCache
	now atomic.Int64 // GetNow and HaveNow calls
}

func (c *quickMapCache) GetNow(id []byte) ([]byte, bool, bool) {
	c.now.Add(1)
	d, ok, _ := c.Get(context.Background(), id)
	return d, ok, true
}

func (c *quickMapCache) HaveNow(id []byte) (bool, bool) {
	c.now.Add(1)
	ok, _ := c.Have(context.Background(), id)
	return ok, true
}

// TestQuickReadsShareWrites: 1,000 pipelined GETs and HAVEs that the cache
// answers at once are answered in order, correctly, in far fewer writes than
// requests (one write system call per answer cost 40 % of a node's CPU), and
// the write deadline is set once, not per write.
func TestQuickReadsShareWrites(t *testing.T) {
	cache := &quickMapCache{mapCache: newMapCache()}
	for i := range 10 {
		cache.Add(context.Background(), fmt.Appendf(nil, "id-%d", i), fmt.Appendf(nil, "data-%d", i), time.Hour)
	}
	srv := &Server{Handler: NewCacheHandler(cache)}
	if _, ok := srv.Handler.(QuickHandler); !ok {
		t.Fatal("NewCacheHandler of a QuickCache is not a QuickHandler")
	}
	ln := frontendtest.Listen(t)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	const n = 1000
	var req []byte
	for i := range n {
		op := OpGet
		if i%3 == 2 {
			op = OpHave
		}
		req, _ = AppendMessage(req, &Message{UID: uint32(i), Op: op, Payload: fmt.Appendf(nil, "id-%d", i%20)})
	}
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write(req); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	dec := NewDecoder(nc, Responses)
	for i := range n {
		var m Message
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		var want []byte
		switch k := i % 20; {
		case i%3 == 2 && k < 10:
			want = StatusOK.Payload()
		case k >= 10:
			want = StatusNotOK.Payload()
		default:
			want = fmt.Appendf(nil, "data-%d", k)
		}
		if m.UID != uint32(i) || !bytes.Equal(m.Payload, want) {
			t.Fatalf("answer %d: uid %d payload %q, want %q", i, m.UID, m.Payload, want)
		}
	}
	if got := cache.now.Load(); got != n {
		t.Errorf("%d of %d reads took the quick path", got, n)
	}
	if w := ln.Writes.Load(); w > n/10 {
		t.Errorf("%d answers took %d writes; want at most %d", n, w, n/10)
	} else {
		t.Logf("%d answers in %d writes", n, w)
	}
	if w := ln.WriteDeadlines.Load(); w != 1 {
		t.Errorf("%d answers set the write deadline %d times; want once", n, w)
	}
}

// blockingAddCache holds every ADD until release is closed.
type blockingAddCache struct {
	*quickMapCache
	entered chan struct{}
	release chan struct{}
}

func (c *blockingAddCache) Add(ctx context.Context, id, data []byte, timeout time.Duration) (Status, error) {
	close(c.entered)
	<-c.release
	return c.quickMapCache.Add(ctx, id, data, timeout)
}

// TestQuickReadWaitsForEarlierWrite: a GET pipelined behind an ADD of the same
// id is not answered from memory before the ADD has run: it sees the session.
func TestQuickReadWaitsForEarlierWrite(t *testing.T) {
	cache := &blockingAddCache{quickMapCache: &quickMapCache{mapCache: newMapCache()},
		entered: make(chan struct{}), release: make(chan struct{})}
	ts := startServer(t, "tcp", NewCacheHandler(cache), nil)
	nc := rawDial(t, ts.addr)
	req, _ := AppendMessage(nil, &Message{UID: 1, Op: OpAdd, Payload: AppendAddPayload(nil, 3600000, []byte("id"), []byte("the session"))})
	req, _ = AppendMessage(req, &Message{UID: 2, Op: OpGet, Payload: []byte("id")})
	if _, err := nc.Write(req); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cache.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("ADD never reached the cache")
	}
	// Give a wrong implementation the chance to answer the GET early.
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) && cache.now.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	close(cache.release)
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	dec := NewDecoder(nc, Responses)
	var m Message
	for _, want := range [][]byte{StatusOK.Payload(), []byte("the session")} {
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.Payload, want) {
			t.Fatalf("answer %d: %q, want %q", m.UID, m.Payload, want)
		}
	}
}

// TestQuickAnswerNotHeldForPartialMessage: a quick answer is written before the
// server waits for the rest of a message that has only partly arrived.
func TestQuickAnswerNotHeldForPartialMessage(t *testing.T) {
	cache := &quickMapCache{mapCache: newMapCache()}
	cache.Add(context.Background(), []byte("id"), []byte("the session"), time.Hour)
	ts := startServer(t, "tcp", NewCacheHandler(cache), func(s *Server) { s.ReadTimeout = time.Minute })
	nc := rawDial(t, ts.addr)
	req, _ := AppendMessage(nil, &Message{UID: 1, Op: OpGet, Payload: []byte("id")})
	next, _ := AppendMessage(nil, &Message{UID: 2, Op: OpGet, Payload: []byte("id")})
	if _, err := nc.Write(append(req, next[:5]...)); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m Message
	if err := NewDecoder(nc, Responses).Decode(&m); err != nil {
		t.Fatalf("answer to the complete request while the next is partial: %v", err)
	}
	if m.UID != 1 || string(m.Payload) != "the session" {
		t.Fatalf("got uid %d %q", m.UID, m.Payload)
	}
}

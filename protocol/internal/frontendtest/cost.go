package frontendtest

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// AnswersShareWrites pipelines 1,000 GETs that the cache answers at once: all
// are answered in order and from memory (Store.GetNow), in far fewer writes
// than requests (a write system call per answer is what a pipelining client
// would otherwise cost).
func AnswersShareWrites(t *testing.T, p LineProtocol) {
	store := NewStore()
	ln := Listen(t)
	addr := p.Start(t, Setup{Store: store, Listener: ln, Quick: true})
	const keys, n = 20, 1000
	for i := range keys {
		store.Set(fmt.Appendf(nil, "k%d", i), fmt.Appendf(nil, "value-%d", i), 0, time.Hour)
	}
	var req, want strings.Builder
	for i := range n {
		get, found := p.Get(fmt.Sprint("k", i%keys), fmt.Sprint("value-", i%keys))
		req.WriteString(get)
		want.WriteString(found)
	}
	c := Dial(t, addr)
	sent := make(chan error, 1)
	go func() { // the server answers while the requests are still being written
		_, err := io.WriteString(c.NC, req.String())
		sent <- err
	}()
	c.Expect(want.String())
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if got := store.QuickReads(); got != n {
		t.Errorf("%d of %d reads were answered at once", got, n)
	}
	if w := ln.Writes.Load(); w > n/10 {
		t.Errorf("%d pipelined answers took %d writes; want at most %d", n, w, n/10)
	} else {
		t.Logf("%d pipelined answers in %d writes", n, w)
	}
}

// WholeRequestsArmNoDeadline: answering requests that arrive whole sets no read
// deadline and the write deadline once, however many there are (each setting is
// a clock read and a timer update); a request that arrives in pieces arms the
// read deadline, and the wait for the next request disarms it.
func WholeRequestsArmNoDeadline(t *testing.T, p LineProtocol) {
	store := NewStore()
	store.Set([]byte("k"), []byte("v"), 0, time.Hour)
	ln := Listen(t)
	c := Dial(t, p.Start(t, Setup{Store: store, Listener: ln, Quick: true}))
	get, found := p.Get("k", "v")
	for range 100 {
		c.Send(get)
		c.Expect(found)
	}
	if r, w := ln.ReadDeadlines.Load(), ln.WriteDeadlines.Load(); r != 0 || w != 1 {
		t.Fatalf("100 requests that arrived whole set %d read and %d write deadlines; want 0 and 1", r, w)
	}
	c.Send(get[:2])
	WaitFor(t, "the read deadline of a partial request", func() bool { return ln.ReadDeadlines.Load() == 1 })
	c.Send(get[2:])
	c.Expect(found)
	WaitFor(t, "the idle wait to disarm the read deadline", func() bool { return ln.ReadDeadlines.Load() == 2 })
	for range 10 {
		c.Send(get)
		c.Expect(found)
	}
	if r := ln.ReadDeadlines.Load(); r != 2 {
		t.Fatalf("%d read deadlines set after 10 more whole requests; want still 2", r)
	}
}

// LargeAnswerAfterIdle: an answer larger than the write buffer (so that part of
// it is written before the final flush) still goes out after the connection has
// been idle for longer than the write timeout, whose last deadline has passed.
func LargeAnswerAfterIdle(t *testing.T, p LineProtocol) {
	store := NewStore()
	big := strings.Repeat("x", 20000)
	store.Set([]byte("big"), []byte(big), 0, time.Hour)
	c := Dial(t, p.Start(t, Setup{Store: store, WriteTimeout: 50 * time.Millisecond}))
	get, found := p.Get("big", big)
	c.Send(get)
	c.Expect(found)
	time.Sleep(150 * time.Millisecond) // the condition under test: idle past the write deadline
	c.Send(get)
	c.Expect(found)
}

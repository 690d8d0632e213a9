package distcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func dialClient(t *testing.T, addr string, opts ...ClientOption) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exerciseAll runs every command for one id and checks every answer.
func exerciseAll(ctx context.Context, c *Client, id []byte, data []byte) error {
	if err := c.Add(ctx, id, data, time.Minute); err != nil {
		return fmt.Errorf("add: %w", err)
	}
	if err := c.Add(ctx, id, []byte("other data"), time.Minute); !errors.Is(err, ErrExists) {
		return fmt.Errorf("duplicate add: %v", err)
	}
	if got, err := c.Get(ctx, id); err != nil || !bytes.Equal(got, data) {
		return fmt.Errorf("get: %q %v", got, err)
	}
	if ok, err := c.Have(ctx, id); err != nil || !ok {
		return fmt.Errorf("have: %v %v", ok, err)
	}
	if err := c.Remove(ctx, id); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	if err := c.Remove(ctx, id); !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("second remove: %v", err)
	}
	if ok, err := c.Have(ctx, id); err != nil || ok {
		return fmt.Errorf("have after remove: %v %v", ok, err)
	}
	if _, err := c.Get(ctx, id); !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("get after remove: %v", err)
	}
	if err := c.Add(ctx, id, data, time.Minute); err != nil {
		return fmt.Errorf("re-add: %w", err)
	}
	if got, err := c.Take(ctx, id); err != nil || !bytes.Equal(got, data) {
		return fmt.Errorf("take: %q %v", got, err)
	}
	if _, err := c.Take(ctx, id); !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("second take: %v", err)
	}
	return nil
}

func TestClientAllCommandsConcurrent(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			ts := startServer(t, network, NewCacheHandler(newMapCache()), nil)
			c := dialClient(t, ts.addr)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			const workers, rounds = 32, 20
			errs := make(chan error, workers)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for r := range rounds {
						id := fmt.Appendf(nil, "session-%02d-%03d", w, r)
						// Sizes from one frame to several.
						data := bytes.Repeat([]byte{byte(w)}, 5+(w*r*331)%9000)
						if err := exerciseAll(ctx, c, id, data); err != nil {
							errs <- fmt.Errorf("worker %d round %d: %w", w, r, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if n := ts.srv.ActiveConns(); n != 1 {
				t.Errorf("%d server connections, want the one persistent connection", n)
			}
		})
	}
}

func TestClientStatusMapping(t *testing.T) {
	ts := startServer(t, "tcp", NewCacheHandler(newMapCache()), nil)
	c := dialClient(t, ts.addr)
	ctx := context.Background()
	if err := c.Add(ctx, bytes.Repeat([]byte("A"), 65), []byte("x"), time.Second); !errors.Is(err, &StatusError{Status: StatusAddIDRange}) {
		t.Errorf("65-byte id: %v", err)
	}
	if err := c.Add(ctx, []byte("t"), []byte("x"), MaxTimeout+time.Millisecond); !errors.Is(err, &StatusError{Status: StatusAddTimeoutRange}) {
		t.Errorf("timeout: %v", err)
	}
	if err := c.Add(ctx, []byte("abc"), nil, time.Second); !errors.Is(err, &StatusError{Status: StatusAddCorrupt}) {
		t.Errorf("no data: %v", err)
	}
	var le *LimitError
	if err := c.Add(ctx, []byte("abc"), make([]byte, MaxPayload), time.Second); !errors.As(err, &le) {
		t.Errorf("oversize: %v", err)
	}
	// An answer shorter than 5 bytes is never data (the C library's rule),
	// but only NOTOK is a miss: a stored 4-byte session is neither.
	if err := c.Add(ctx, []byte("short"), []byte{1, 2, 3, 4}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, []byte("short")); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotFound) || got != nil {
		t.Errorf("4-byte session: %q %v, want ErrUnavailable", got, err)
	}
	// Timeout 0 is accepted and never visible.
	if err := c.Add(ctx, []byte("zero"), []byte("data!"), 0); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Have(ctx, []byte("zero")); ok || err != nil {
		t.Errorf("timeout-0 entry visible: %v %v", ok, err)
	}
	// Raw answers of a dc_client proxy: empty payload and DISCONNECTED.
	proxy := startServer(t, "tcp", HandlerFunc(func(_ context.Context, req *Message) ([]byte, error) {
		if req.Op == OpHave {
			return StatusDisconnected.Payload(), nil
		}
		return nil, nil
	}), nil)
	pc := dialClient(t, proxy.addr)
	if _, err := pc.Get(ctx, []byte("abc")); !errors.Is(err, ErrEmptyResponse) || !errors.Is(err, ErrUnavailable) {
		t.Errorf("empty GET answer: %v", err)
	}
	if _, err := pc.Have(ctx, []byte("abc")); !errors.Is(err, ErrDisconnected) || !errors.Is(err, ErrUnavailable) {
		t.Errorf("0x02 HAVE answer: %v", err)
	}
}

// failingCache is a mapCache that, while failing is set, cannot serve: every
// call returns errNoQuorum, as a node without a leader does.
type failingCache struct {
	*mapCache
	failing atomic.Bool
}

var errNoQuorum = errors.New("no leader")

func (c *failingCache) Add(ctx context.Context, id, data []byte, timeout time.Duration) (Status, error) {
	if c.failing.Load() {
		return 0, errNoQuorum
	}
	return c.mapCache.Add(ctx, id, data, timeout)
}

func (c *failingCache) Get(ctx context.Context, id []byte) ([]byte, bool, error) {
	if c.failing.Load() {
		return nil, false, errNoQuorum
	}
	return c.mapCache.Get(ctx, id)
}

func (c *failingCache) Take(ctx context.Context, id []byte) ([]byte, bool, error) {
	if c.failing.Load() {
		return nil, false, errNoQuorum
	}
	return c.mapCache.Take(ctx, id)
}

func (c *failingCache) Remove(ctx context.Context, id []byte) (bool, error) {
	if c.failing.Load() {
		return false, errNoQuorum
	}
	return c.mapCache.Remove(ctx, id)
}

func (c *failingCache) Have(ctx context.Context, id []byte) (bool, error) {
	if c.failing.Load() {
		return false, errNoQuorum
	}
	return c.mapCache.Have(ctx, id)
}

// TestClientUnavailableIsNotAMiss: a server whose store cannot serve answers
// DISCONNECTED, and the Client reports that as ErrUnavailable for every
// operation — never as ErrNotFound or "no" — and the session is still there
// once the store serves again.
func TestClientUnavailableIsNotAMiss(t *testing.T) {
	fc := &failingCache{mapCache: newMapCache()}
	ts := startServer(t, "tcp", NewCacheHandler(fc), nil)
	c := dialClient(t, ts.addr)
	ctx := context.Background()
	id, data := []byte("ticket-1"), []byte("master secret")
	if err := c.Add(ctx, id, data, time.Minute); err != nil {
		t.Fatal(err)
	}
	fc.failing.Store(true)
	unavailable := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrDisconnected) || errors.Is(err, ErrNotFound) {
			t.Errorf("%s while unavailable: %v, want ErrUnavailable (DISCONNECTED)", what, err)
		}
	}
	got, err := c.Get(ctx, id)
	unavailable("GET", err)
	if got != nil {
		t.Errorf("GET while unavailable returned %d bytes", len(got))
	}
	_, err = c.Take(ctx, id)
	unavailable("TAKE", err)
	ok, err := c.Have(ctx, id)
	unavailable("HAVE", err)
	if ok {
		t.Error("HAVE while unavailable said yes")
	}
	unavailable("REMOVE", c.Remove(ctx, id))
	unavailable("ADD", c.Add(ctx, []byte("ticket-2"), data, time.Minute))

	fc.failing.Store(false)
	if got, err := c.Take(ctx, id); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("TAKE once available: %q %v", got, err)
	}
	if _, err := c.Take(ctx, id); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnavailable) {
		t.Errorf("second TAKE: %v, want ErrNotFound", err)
	}
	if ok, err := c.Have(ctx, id); ok || err != nil {
		t.Errorf("HAVE after TAKE: %v %v, want a plain no", ok, err)
	}
}

// TestClientShortAnswers pins the classification of every answer shorter than
// 5 bytes to GET, TAKE and HAVE: NOTOK is the only miss, and the C library's
// "shorter than 5 bytes ⇒ miss" rule is not this Client's.
func TestClientShortAnswers(t *testing.T) {
	var answer atomic.Value // []byte
	ts := startServer(t, "tcp", HandlerFunc(func(_ context.Context, req *Message) ([]byte, error) {
		return answer.Load().([]byte), nil
	}), nil)
	c := dialClient(t, ts.addr)
	ctx := context.Background()
	cases := []struct {
		answer           []byte
		getMiss, haveYes bool // otherwise ErrUnavailable
	}{
		{answer: []byte{0x01}, getMiss: true},
		{answer: []byte{0x02}},
		{answer: []byte{0x00}, haveYes: true},
		{answer: []byte{0x64}},
		{answer: []byte{0xff}},
		{answer: []byte{0x01, 0x01}},
		{answer: []byte{0x02, 0x00, 0x00}},
		{answer: []byte("abcd")},
		{answer: []byte{}},
	}
	for _, tc := range cases {
		answer.Store(tc.answer)
		for _, op := range []Op{OpGet, OpTake} {
			var err error
			if op == OpGet {
				_, err = c.Get(ctx, []byte("id"))
			} else {
				_, err = c.Take(ctx, []byte("id"))
			}
			switch {
			case tc.getMiss && (!errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnavailable)):
				t.Errorf("%v answered %x: %v, want ErrNotFound", op, tc.answer, err)
			case !tc.getMiss && (!errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotFound)):
				t.Errorf("%v answered %x: %v, want ErrUnavailable", op, tc.answer, err)
			}
		}
		ok, err := c.Have(ctx, []byte("id"))
		switch {
		case tc.getMiss && (ok || err != nil):
			t.Errorf("HAVE answered %x: %v %v, want no", tc.answer, ok, err)
		case tc.haveYes && (!ok || err != nil):
			t.Errorf("HAVE answered %x: %v %v, want yes", tc.answer, ok, err)
		case !tc.getMiss && !tc.haveYes && (ok || !errors.Is(err, ErrUnavailable)):
			t.Errorf("HAVE answered %x: %v %v, want ErrUnavailable", tc.answer, ok, err)
		}
	}
	// Five bytes and more are data, whatever they look like.
	answer.Store([]byte{0x02, 0, 0, 0, 0})
	if got, err := c.Get(ctx, []byte("id")); err != nil || len(got) != 5 {
		t.Errorf("5-byte answer: %x %v, want data", got, err)
	}
}

func TestClientDeadlineAndLateAnswer(t *testing.T) {
	release := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, req *Message) ([]byte, error) {
		if string(req.Payload) == "slow" {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return StatusOK.Payload(), nil
	})
	ts := startServer(t, "unix", h, nil)
	c := dialClient(t, ts.addr, WithRequestTimeout(50*time.Millisecond))
	if _, err := c.Have(context.Background(), []byte("slow")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow request: %v", err)
	}
	close(release) // its late answer arrives and must be dropped
	for range 3 {
		if ok, err := c.Have(context.Background(), []byte("fast")); err != nil || !ok {
			t.Fatalf("after deadline: %v %v", ok, err)
		}
	}
}

func TestClientReconnects(t *testing.T) {
	ts := startServer(t, "tcp", NewCacheHandler(newMapCache()), nil)
	c := dialClient(t, ts.addr)
	ctx := context.Background()
	if err := c.Add(ctx, []byte("k"), []byte("value"), time.Minute); err != nil {
		t.Fatal(err)
	}
	// Break the connection from the server side.
	ts.ln.breakConns()
	// HAVE is retried on a fresh connection even before the client notices.
	if ok, err := c.Have(ctx, []byte("k")); err != nil || !ok {
		t.Fatalf("have after drop: %v %v", ok, err)
	}
	ts.ln.breakConns()
	deadline := time.Now().Add(10 * time.Second)
	for !c.cc.isBroken() {
		if time.Now().After(deadline) {
			t.Fatal("client never noticed the broken connection")
		}
		time.Sleep(time.Millisecond)
	}
	if err := c.Remove(ctx, []byte("k")); err != nil {
		t.Fatalf("remove after reconnect: %v", err)
	}
	c.Close()
	if _, err := c.Get(ctx, []byte("k")); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

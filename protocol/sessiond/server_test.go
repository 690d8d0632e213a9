package sessiond

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol/internal/frontendtest"
)

// memCache adapts the shared in-memory test store to sessiond's Cache.
type memCache struct{ *frontendtest.Store }

func newMemCache() *memCache { return &memCache{frontendtest.NewStore()} }

func (m *memCache) Get(_ context.Context, key []byte) ([]byte, bool, error) {
	v, _, ok := m.Store.Get(key)
	return v, ok, nil
}

func (m *memCache) Set(_ context.Context, key, value []byte, ttl time.Duration) error {
	m.Store.Set(key, value, 0, ttl)
	return nil
}

func (m *memCache) Delete(_ context.Context, key []byte) (bool, error) {
	return m.Store.Delete(key), nil
}

// blockingCache answers Get from memory but blocks writes until released.
type blockingCache struct {
	*memCache
	release chan struct{}
}

func (b blockingCache) Set(ctx context.Context, key, value []byte, ttl time.Duration) error {
	select {
	case <-b.release:
		return b.memCache.Set(ctx, key, value, ttl)
	case <-ctx.Done():
		return ctx.Err()
	}
}

type failingCache struct{ memCache }

func (*failingCache) Get(context.Context, []byte) ([]byte, bool, error) {
	return nil, false, errors.New("no quorum")
}

func startServer(t testing.TB, s *Server) net.Addr {
	t.Helper()
	if s.Logger == nil {
		s.Logger = frontendtest.Logger(t)
	}
	return frontendtest.StartPacket(t, s, ErrServerClosed)
}

// stunnelSocket mimics stunnel's cache_transfer: a fresh UDP socket per request.
func stunnelSocket(t testing.TB) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// roundTrip sends req from a fresh socket and returns the answer.
func roundTrip(t testing.TB, srv net.Addr, req []byte) []byte {
	t.Helper()
	pc := stunnelSocket(t)
	if _, err := pc.WriteTo(req, srv); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	return buf[:n]
}

func send(t testing.TB, srv net.Addr, req []byte) {
	t.Helper()
	if _, err := stunnelSocket(t).WriteTo(req, srv); err != nil {
		t.Fatal(err)
	}
}

// header builds the 36-byte CACHE_PACKET header by hand, independently of
// Packet.Append: version, type, big-endian timeout, zero-padded id.
func header(typ byte, timeout uint16, id []byte) []byte {
	h := make([]byte, 36)
	h[0], h[1], h[2], h[3] = 1, typ, byte(timeout>>8), byte(timeout)
	copy(h[4:], id)
	return h
}

func TestStunnelRoundTrip(t *testing.T) {
	mc := newMemCache()
	s := &Server{Cache: mc}
	srv := startServer(t, s)
	for _, idLen := range []int{32, 16} {
		id := bytes.Repeat([]byte{0xC3}, idLen)
		id[0] = byte(idLen)
		der := bytes.Repeat([]byte{0x30, 0x82, 0x01, 0x0a}, 45) // 180 bytes
		padded := make([]byte, 32)
		copy(padded, id)
		key := "stunnel-sess:" + hex.EncodeToString(padded)

		// NEW: timeout 300 -> 0x01 0x2c; no answer.
		send(t, srv, append(header(0x00, 300, id), der...))
		frontendtest.WaitFor(t, "NEW to be applied", func() bool { _, _, ok := mc.Lookup(key); return ok })
		v, ttl, _ := mc.Lookup(key)
		if !bytes.Equal(v, der) || ttl != 300*time.Second {
			t.Fatalf("stored %x with ttl %v", v, ttl)
		}

		// GET: 36 bytes, timeout field 0; answer 0x81 + same key + value.
		got := roundTrip(t, srv, header(0x01, 0, id))
		if want := append(header(0x81, 0, id), der...); !bytes.Equal(got, want) {
			t.Fatalf("GET answer\n got %x\nwant %x", got, want)
		}

		send(t, srv, header(0x02, 0, id))
		frontendtest.WaitFor(t, "REMOVE to be applied", func() bool { _, _, ok := mc.Lookup(key); return !ok })

		got = roundTrip(t, srv, header(0x01, 0, id))
		if want := header(0x80, 0, id); !bytes.Equal(got, want) {
			t.Fatalf("GET miss answer\n got %x\nwant %x", got, want)
		}
	}
	if st := s.Stats(); st.Gets != 4 || st.Hits != 2 || st.Misses != 2 || st.News != 2 || st.Removes != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestKeyPrefixAndTimeouts(t *testing.T) {
	mc := newMemCache()
	srv := startServer(t, &Server{Cache: mc, KeyPrefix: "s:"})
	id := []byte{0xAB}
	key := "s:ab" + strings.Repeat("00", 31)
	send(t, srv, append(header(0x00, 0, id), 1, 2, 3))
	frontendtest.WaitFor(t, "NEW", func() bool { _, _, ok := mc.Lookup(key); return ok })
	if _, ttl, _ := mc.Lookup(key); ttl != NoExpiry {
		t.Errorf("timeout 0: ttl %v, want NoExpiry", ttl)
	}
	send(t, srv, append(header(0x00, MaxTimeout, id), 1, 2, 3))
	frontendtest.WaitFor(t, "NEW", func() bool { _, ttl, _ := mc.Lookup(key); return ttl == 18*time.Hour })
}

func TestMalformedDatagramsAreIgnored(t *testing.T) {
	mc := newMemCache()
	s := &Server{Cache: mc}
	srv := startServer(t, s)
	id := bytes.Repeat([]byte{7}, 32)
	mc.Set(context.Background(), []byte("stunnel-sess:"+hex.EncodeToString(id)), []byte("der"), time.Hour)

	bad := [][]byte{
		{},
		header(0x01, 0, id)[:35],
		append([]byte{2}, header(0x01, 0, id)[1:]...),                  // version 2
		header(0x03, 0, id),                                            // unknown type
		header(0x81, 0, id),                                            // an answer sent to the server
		append(header(0x01, 0, id), 0),                                 // GET with trailing bytes
		header(0x00, 300, id),                                          // NEW without a session
		append(header(0x00, 300, id), make([]byte, MaxValueSize+1)...), // too long
	}
	pc := stunnelSocket(t)
	for _, b := range bad {
		if _, err := pc.WriteTo(b, srv); err != nil {
			t.Fatal(err)
		}
	}
	// The first answer on this socket must be the one to the valid GET.
	if _, err := pc.WriteTo(header(0x01, 0, id), srv); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1024)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(header(0x81, 0, id), "der"...); !bytes.Equal(buf[:n], want) {
		t.Fatalf("answer %x, want %x", buf[:n], want)
	}
	if got := s.Stats().Malformed; got != uint64(len(bad)) {
		t.Errorf("malformed count %d, want %d", got, len(bad))
	}
}

func TestGetsStayFastWhenWritesBlock(t *testing.T) {
	bc := blockingCache{memCache: newMemCache(), release: make(chan struct{})}
	s := &Server{Cache: bc, Workers: 1, QueueLen: 1}
	srv := startServer(t, s)
	defer close(bc.release)
	id := bytes.Repeat([]byte{1}, 32)
	for range 5 {
		send(t, srv, append(header(0x00, 300, id), 0x30))
	}
	frontendtest.WaitFor(t, "dropped NEWs", func() bool { return s.Stats().Dropped > 0 })
	got := roundTrip(t, srv, header(0x01, 0, id))
	if want := header(0x80, 0, id); !bytes.Equal(got, want) {
		t.Fatalf("GET answer %x, want %x", got, want)
	}
}

func TestLookupProblemsAnswerNotFound(t *testing.T) {
	s := &Server{Cache: &failingCache{memCache: *newMemCache()}}
	srv := startServer(t, s)
	id := bytes.Repeat([]byte{9}, 32)
	if got := roundTrip(t, srv, header(0x01, 0, id)); !bytes.Equal(got, header(0x80, 0, id)) {
		t.Fatalf("answer %x", got)
	}
	if s.Stats().Failed != 1 {
		t.Errorf("failed count %d", s.Stats().Failed)
	}

	mc := newMemCache()
	srv = startServer(t, &Server{Cache: mc})
	mc.Set(context.Background(), []byte("stunnel-sess:"+hex.EncodeToString(id)), make([]byte, MaxValueSize+1), time.Hour)
	if got := roundTrip(t, srv, header(0x01, 0, id)); !bytes.Equal(got, header(0x80, 0, id)) {
		t.Fatalf("oversized value answer %x", got)
	}
}

func TestShutdownDrainsQueuedWrites(t *testing.T) {
	bc := blockingCache{memCache: newMemCache(), release: make(chan struct{})}
	s := &Server{Cache: bc, Workers: 1, Logger: frontendtest.Logger(t)}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(pc) }()
	id := []byte{5}
	send(t, pc.LocalAddr(), append(header(0x00, 300, id), 0x30))
	frontendtest.WaitFor(t, "NEW to reach a worker", func() bool { return s.Stats().News == 1 })

	// The write is blocked: Shutdown with an expired context cancels it.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-errc; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	if s.Stats().Failed != 1 {
		t.Errorf("cancelled write not counted as failed: %+v", s.Stats())
	}
	close(bc.release)
}

func TestDecodeRejects(t *testing.T) {
	id := make([]byte, 32)
	for _, tc := range []struct {
		in   []byte
		want error
	}{
		{header(0x01, 0, id)[:10], ErrShortPacket},
		{make([]byte, MaxPacketSize+1), ErrLongPacket},
		{append([]byte{0}, header(0x01, 0, id)[1:]...), ErrVersion},
		{header(0x7f, 0, id), ErrType},
		{header(0x81, 0, id), ErrValue},
		{append(header(0x02, 0, id), 1), ErrValue},
	} {
		if _, err := Decode(tc.in); !errors.Is(err, tc.want) {
			t.Errorf("Decode(%x) = %v, want %v", tc.in, err, tc.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	id := bytes.Repeat([]byte{0xEE}, 32)
	f.Add(append(header(0x00, 300, id), 0x30, 0x82))
	f.Add(header(0x01, 0, id))
	f.Add(header(0x02, 0, id))
	f.Add(append(header(0x81, 0, id), 1))
	f.Add(header(0x80, 0, id))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := Decode(in)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes.
		if out := p.Append(nil); !bytes.Equal(out, in) {
			t.Fatalf("round trip %x -> %+v -> %x", in, p, out)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	in := append(header(0x00, 300, bytes.Repeat([]byte{1}, 32)), make([]byte, 180)...)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetUDP is one stunnel lookup over loopback UDP (one socket reused).
func BenchmarkGetUDP(b *testing.B) {
	mc := newMemCache()
	id := bytes.Repeat([]byte{2}, 32)
	mc.Set(context.Background(), []byte("stunnel-sess:"+hex.EncodeToString(id)), make([]byte, 180), time.Hour)
	srv := startServer(b, &Server{Cache: mc, Logger: frontendtest.Logger(b)})
	pc := stunnelSocket(b)
	req := header(0x01, 0, id)
	buf := make([]byte, 1024)
	b.ReportAllocs()
	for b.Loop() {
		pc.WriteTo(req, srv)
		if n, _, err := pc.ReadFrom(buf); err != nil || n != 36+180 {
			b.Fatal(n, err)
		}
	}
}

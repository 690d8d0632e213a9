package tlscache

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/internal/testport"
	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// mapCache is a distcache store in a map: enough to exercise the adapter against a
// real protocol server over real sockets.
type mapCache struct {
	mu   sync.Mutex
	m    map[string][]byte
	gets int
	// down makes every operation fail, as a node without a leader does: the
	// server answers DISCONNECTED.
	down atomic.Bool
}

var errNoLeader = errors.New("no leader")

func (c *mapCache) Add(_ context.Context, id, data []byte, _ time.Duration) (distcache.Status, error) {
	if c.down.Load() {
		return 0, errNoLeader
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[string(id)]; ok {
		return distcache.StatusAddExists, nil
	}
	c.m[string(id)] = append([]byte(nil), data...)
	return distcache.StatusOK, nil
}

func (c *mapCache) Get(_ context.Context, id []byte) ([]byte, bool, error) {
	if c.down.Load() {
		return nil, false, errNoLeader
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gets++
	v, ok := c.m[string(id)]
	return v, ok, nil
}

func (c *mapCache) Remove(_ context.Context, id []byte) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[string(id)]
	delete(c.m, string(id))
	return ok, nil
}

func (c *mapCache) Have(ctx context.Context, id []byte) (bool, error) {
	_, ok, err := c.Get(ctx, id)
	return ok, err
}

func (c *mapCache) Take(_ context.Context, id []byte) ([]byte, bool, error) {
	if c.down.Load() {
		return nil, false, errNoLeader
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[string(id)]
	delete(c.m, string(id))
	return v, ok, nil
}

func (c *mapCache) corrupt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.m {
		c.m[k] = []byte("not a session state")
	}
}

// startStore serves a mapCache over distcache on a loopback port.
func startStore(t *testing.T) (*mapCache, string) {
	t.Helper()
	store := &mapCache{m: map[string][]byte{}}
	ln, err := distcache.Listen("IP:127.0.0.1:0", distcache.ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := &distcache.Server{Handler: distcache.NewCacheHandler(store)}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return store, "IP:" + ln.Addr().String()
}

func testCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// startTLSServer runs a TLS echo-less server whose sessions live in c.
func startTLSServer(t *testing.T, cert tls.Certificate, c *Cache) string {
	t.Helper()
	return listenTLS(t, c.Install(&tls.Config{Certificates: []tls.Certificate{cert}}))
}

// listenTLS runs a TLS echo-less server with cfg and returns its address.
func listenTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				if err := conn.(*tls.Conn).Handshake(); err != nil {
					return
				}
				// TLS 1.3 tickets travel after the handshake: write a byte so the
				// client reads them before it closes.
				conn.Write([]byte{1})
				io.Copy(io.Discard, conn)
			}()
		}
	}()
	return ln.Addr().String()
}

// handshake connects, reads the server's byte (which brings TLS 1.3 tickets along)
// and reports whether the session was resumed.
func handshake(t *testing.T, addr string, cfg *tls.Config) bool {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	return conn.ConnectionState().DidResume
}

func TestResumeAcrossServers(t *testing.T) {
	for _, tc := range []struct {
		name      string
		version   uint16
		singleUse bool
	}{{"TLS1.2", tls.VersionTLS12, false}, {"TLS1.3", tls.VersionTLS13, false}, {"TLS1.3-single-use", tls.VersionTLS13, true}} {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := startStore(t)
			cert := testCert(t)
			var servers []string
			for range 2 {
				c, err := New(addr)
				if err != nil {
					t.Fatal(err)
				}
				c.SingleUse = tc.singleUse
				t.Cleanup(func() { c.Close() })
				servers = append(servers, startTLSServer(t, cert, c))
			}
			pool := x509.NewCertPool()
			leaf, _ := x509.ParseCertificate(cert.Certificate[0])
			pool.AddCert(leaf)
			client := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tc.version, MaxVersion: tc.version,
				ClientSessionCache: tls.NewLRUClientSessionCache(8)}
			if handshake(t, servers[0], client) {
				t.Fatal("first handshake resumed a session that cannot exist")
			}
			if !handshake(t, servers[1], client) {
				t.Fatal("session negotiated on server A did not resume on server B")
			}
			if !handshake(t, servers[0], client) {
				t.Fatal("session did not resume back on server A")
			}
		})
	}
}

func TestSingleUseTicketResumesOnce(t *testing.T) {
	store, addr := startStore(t)
	c, err := New(addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SingleUse = true
	t.Cleanup(func() { c.Close() })
	cert := testCert(t)
	srv := startTLSServer(t, cert, c)
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool.AddCert(leaf)
	client := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
	// Keep the first ticket so it can be replayed after it was used.
	first := &recordingCache{ClientSessionCache: tls.NewLRUClientSessionCache(1)}
	client.ClientSessionCache = first
	handshake(t, srv, client)
	if !handshake(t, srv, client) {
		t.Fatal("ticket did not resume the first time")
	}
	replay := &fixedCache{cs: first.firstPut}
	client.ClientSessionCache = replay
	if handshake(t, srv, client) {
		t.Fatal("a single-use ticket resumed twice")
	}
	if store.gets != 0 {
		t.Fatalf("single-use mode read with GET %d times; want TAKE only", store.gets)
	}
}

// TestUnavailableIsNotAReplay: while the cluster cannot answer (DISCONNECTED),
// a single-use ticket does not resume — the handshake goes on in full — and the
// lookup is counted as Unavailable, not as a miss; the ticket was not consumed,
// so it resumes once the cluster answers again, and only once.
func TestUnavailableIsNotAReplay(t *testing.T) {
	store, addr := startStore(t)
	c, err := New(addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SingleUse = true
	c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Cleanup(func() { c.Close() })
	cert := testCert(t)
	srv := startTLSServer(t, cert, c)
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool.AddCert(leaf)
	first := &recordingCache{ClientSessionCache: tls.NewLRUClientSessionCache(1)}
	client := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13, ClientSessionCache: first}
	handshake(t, srv, client)
	if first.firstPut == nil {
		t.Fatal("no ticket issued")
	}
	client.ClientSessionCache = &fixedCache{cs: first.firstPut}

	store.down.Store(true)
	if handshake(t, srv, client) {
		t.Fatal("resumed while the cluster could not answer")
	}
	st := c.Stats()
	if st.Unavailable != 1 || st.Misses != 0 || st.Hits != 0 {
		t.Fatalf("stats while unavailable: %+v; want 1 unavailable, no miss, no hit", st)
	}
	if st.StoreFailures == 0 {
		t.Errorf("stats while unavailable: %+v; want the new ticket's store counted as failed", st)
	}

	store.down.Store(false)
	if !handshake(t, srv, client) {
		t.Fatalf("the ticket did not resume once the cluster answered again: %+v", c.Stats())
	}
	if handshake(t, srv, client) {
		t.Fatal("a single-use ticket resumed twice")
	}
	st = c.Stats()
	if st.Unavailable != 1 || st.Hits != 1 || st.Misses != 1 {
		t.Fatalf("final stats %+v; want 1 unavailable, 1 hit, 1 miss", st)
	}
}

type recordingCache struct {
	tls.ClientSessionCache
	firstPut *tls.ClientSessionState
}

func (r *recordingCache) Put(k string, cs *tls.ClientSessionState) {
	if r.firstPut == nil && cs != nil {
		r.firstPut = cs
	}
	r.ClientSessionCache.Put(k, cs)
}

type fixedCache struct{ cs *tls.ClientSessionState }

func (f *fixedCache) Get(string) (*tls.ClientSessionState, bool) { return f.cs, f.cs != nil }
func (f *fixedCache) Put(string, *tls.ClientSessionState)        {}

func TestFailuresFallBackToFullHandshake(t *testing.T) {
	store, addr := startStore(t)
	c, err := New(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if ss, err := c.UnwrapSession([]byte("short"), tls.ConnectionState{}); ss != nil || err != nil {
		t.Fatalf("wrong-length ticket: got %v, %v; want nil, nil", ss, err)
	}
	if ss, err := c.UnwrapSession(make([]byte, IDLen), tls.ConnectionState{}); ss != nil || err != nil {
		t.Fatalf("unknown ticket: got %v, %v; want nil, nil", ss, err)
	}
	cert := testCert(t)
	srv := startTLSServer(t, cert, c)
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool.AddCert(leaf)
	client := &tls.Config{RootCAs: pool, ServerName: "localhost", ClientSessionCache: tls.NewLRUClientSessionCache(1)}
	handshake(t, srv, client)
	store.corrupt()
	if handshake(t, srv, client) {
		t.Fatal("a corrupt stored state resumed")
	}
}

func TestFailoverToSecondNode(t *testing.T) {
	// The first address refuses connections; every request must go to the second.
	dead := "IP:" + testport.Addr(t)
	store, live := startStore(t)
	c, err := New(dead, live)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cert := testCert(t)
	srvA, srvB := startTLSServer(t, cert, c), startTLSServer(t, cert, c)
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool.AddCert(leaf)
	client := &tls.Config{RootCAs: pool, ServerName: "localhost", ClientSessionCache: tls.NewLRUClientSessionCache(1)}
	handshake(t, srvA, client)
	if !handshake(t, srvB, client) {
		t.Fatal("no resumption with the first node down")
	}
	store.mu.Lock()
	n := len(store.m)
	store.mu.Unlock()
	if n == 0 {
		t.Fatal("nothing was stored on the live node")
	}
}

func TestNewRejectsBadAddresses(t *testing.T) {
	if _, err := New(); err == nil {
		t.Fatal("New() with no address succeeded")
	}
	if _, err := New("127.0.0.1:9100"); err == nil {
		t.Fatal("New accepted an address without the IP: prefix")
	}
}

package tlscache

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/internal/syncbuf"
	"github.com/distcache-replicated/distcache/ticketkeys"
)

// ringKey is a ring key filled with one byte.
func ringKey(b byte) ticketkeys.Key {
	var k ticketkeys.Key
	for i := range k {
		k[i] = b
	}
	return k
}

// keyFile writes ring (ids in ring order) as go.keys into a node's ticket
// directory, as the node would.
func keyFile(t *testing.T, w *ticketkeys.Writer, gen uint64, ids ...byte) {
	t.Helper()
	r := ticketkeys.Ring{Generation: gen}
	for _, id := range ids {
		r.Keys = append(r.Keys, ringKey(id))
	}
	if _, err := w.Deliver(context.Background(), r); err != nil {
		t.Fatal(err)
	}
}

// waitGeneration polls until k has loaded generation gen.
func waitGeneration(t *testing.T, k *TicketKeys, gen uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for k.Generation() != gen {
		if time.Now().After(deadline) {
			t.Fatalf("key file of generation %d not loaded within 10s (at %d)", gen, k.Generation())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSharedTicketKeys: two Go servers, each watching the go.keys of its own
// node, resume each other's TLS 1.3 tickets; across rotations, without a
// restart, a ticket resumes on both until its key leaves the ring.
func TestSharedTicketKeys(t *testing.T) {
	cert := testCert(t)
	var logs syncbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	var servers []string
	var writers []*ticketkeys.Writer
	var watchers []*TicketKeys
	for i := range 2 {
		w, err := ticketkeys.New(ticketkeys.Config{Dir: filepath.Join(t.TempDir(), fmt.Sprint(i)), Formats: []ticketkeys.Format{ticketkeys.Go}})
		if err != nil {
			t.Fatal(err)
		}
		keyFile(t, w, 1, 1, 2)
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
		k, err := WatchTicketKeys(cfg, TicketKeysConfig{Path: filepath.Join(w.Dir(), ticketkeys.GoFile), Interval: 20 * time.Millisecond, Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { k.Close() })
		writers, watchers = append(writers, w), append(watchers, k)
		servers = append(servers, listenTLS(t, cfg))
	}
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool.AddCert(leaf)
	// ticket makes a full handshake with server i and returns its ticket.
	ticket := func(i int) *tls.ClientSessionState {
		t.Helper()
		rec := &recordingCache{ClientSessionCache: tls.NewLRUClientSessionCache(1)}
		c := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13, ClientSessionCache: rec}
		if handshake(t, servers[i], c) || rec.firstPut == nil {
			t.Fatalf("no fresh ticket from server %d", i)
		}
		return rec.firstPut
	}
	resumes := func(cs *tls.ClientSessionState, i int) bool {
		t.Helper()
		c := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13, ClientSessionCache: &fixedCache{cs: cs}}
		return handshake(t, servers[i], c)
	}

	before := ticket(0)
	if !resumes(before, 1) || !resumes(before, 0) {
		t.Fatal("a ticket of server A does not resume on both servers")
	}
	// Rotation: key 2 encrypts, 3 is next, 1 is past. The servers pick it up
	// without a restart; the old ticket still resumes, a new one too.
	for i, w := range writers {
		keyFile(t, w, 2, 2, 3, 1)
		waitGeneration(t, watchers[i], 2)
	}
	after := ticket(1)
	for i := range servers {
		if !resumes(before, i) || !resumes(after, i) {
			t.Fatalf("after a rotation, server %d does not resume both tickets", i)
		}
	}
	// A server that has not picked up a rotation yet still resumes the tickets
	// of one that has: the new current key was its next key.
	keyFile(t, writers[0], 3, 3, 4, 2, 1)
	waitGeneration(t, watchers[0], 3)
	early := ticket(0)
	if !resumes(early, 1) {
		t.Fatal("a server one rotation behind does not resume a ticket under its next key")
	}
	// Key 1 leaves the ring: its tickets resume nowhere (a full handshake).
	keyFile(t, writers[1], 3, 3, 4, 2)
	keyFile(t, writers[0], 3, 3, 4, 2)
	waitGeneration(t, watchers[1], 3)
	deadline := time.Now().Add(20 * time.Second)
	for watchers[0].Loads() < 4 {
		if time.Now().After(deadline) {
			t.Fatal("server A did not reload the shortened ring")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range servers {
		if resumes(before, i) {
			t.Fatalf("server %d resumed a ticket whose key left the ring", i)
		}
		if !resumes(after, i) {
			t.Fatalf("server %d does not resume a ticket of a key still in the ring", i)
		}
	}

	// A damaged file keeps the loaded keys.
	path := filepath.Join(writers[1].Dir(), ticketkeys.GoFile)
	os.WriteFile(path, []byte("garbage\n"), 0o600)
	for !strings.Contains(logs.String(), "cannot reload the session ticket keys") {
		if time.Now().After(deadline) {
			t.Fatal("the damaged key file was not noticed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !resumes(after, 1) || watchers[1].Generation() != 3 {
		t.Fatal("a damaged key file replaced the loaded keys")
	}
	if _, err := WatchTicketKeys(&tls.Config{}, TicketKeysConfig{Path: path}); err == nil {
		t.Fatal("WatchTicketKeys started on a damaged file")
	}
	if _, err := WatchTicketKeys(&tls.Config{}, TicketKeysConfig{Path: filepath.Join(t.TempDir(), "none")}); err == nil {
		t.Fatal("WatchTicketKeys started without a file")
	}
}

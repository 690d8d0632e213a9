package gossip

import (
	"crypto/rand"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/internal/testport"
)

func TestMetaRoundTrip(t *testing.T) {
	in := map[string]string{"raft": "127.0.0.1:7000", "empty": "", "k": strings.Repeat("v", 300)}
	b := encodeMeta(in)
	out, err := decodeMeta(b)
	if err != nil || !maps.Equal(in, out) {
		t.Fatalf("decode(encode(%v)) = %v, %v", in, out, err)
	}
	for _, bad := range [][]byte{nil, {2}, b[:len(b)-1], append(append([]byte{}, b...), 5)} {
		if _, err := decodeMeta(bad); err == nil {
			t.Errorf("decodeMeta(%x) succeeded", bad)
		}
	}
}

// start runs gossip for one node on loopback with fast failure detection.
func start(t *testing.T, id string, meta map[string]string) *Gossip {
	t.Helper()
	g, err := New(Config{NodeID: id, BindAddr: testport.Addr(t), Meta: meta,
		ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Kill)
	return g
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func status(g *Gossip, id string) Status { return g.Members()[id].Status }

// TestMembersTellLeaveFromFailure: members see each other with their
// metadata; a member that leaves is seen as left (keeping its metadata), one
// that is killed as failed, and one that joins again after leaving as alive.
func TestMembersTellLeaveFromFailure(t *testing.T) {
	a := start(t, "a", map[string]string{"role": "first"})
	b := start(t, "b", map[string]string{"role": "second"})
	c := start(t, "c", nil)
	for _, g := range []*Gossip{b, c} {
		if n, err := g.Join([]string{a.LocalAddr()}); err != nil || n != 1 {
			t.Fatalf("join: %d, %v", n, err)
		}
	}
	eventually(t, "a sees everyone alive", func() bool {
		return status(a, "a") == StatusAlive && status(a, "b") == StatusAlive && status(a, "c") == StatusAlive
	})
	if got := a.Members()["b"].Meta["role"]; got != "second" {
		t.Fatalf("b's metadata as seen by a: %q", got)
	}
	b.SetMeta("role", "changed")
	eventually(t, "a sees b's new metadata", func() bool { return a.Members()["b"].Meta["role"] == "changed" })

	select { // drain: the next change must come from what follows
	case <-a.Changed():
	default:
	}
	if err := b.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	if !b.Left() || b.Leaves() != 1 {
		t.Fatalf("after Leave: Left %v, Leaves %d", b.Left(), b.Leaves())
	}
	c.Kill()
	eventually(t, "a sees b left and c failed", func() bool {
		return status(a, "b") == StatusLeft && status(a, "c") == StatusFailed
	})
	select {
	case <-a.Changed():
	default:
		t.Fatal("no change signalled")
	}
	if m := a.Members()["b"]; m.Meta["role"] != "changed" || m.Meta[metaLeaving] != "" {
		t.Fatalf("left member's metadata: %v", m.Meta)
	}

	if _, err := b.Join([]string{a.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a sees b alive again", func() bool { return status(a, "b") == StatusAlive })
	if b.Left() || b.Leaves() != 1 {
		t.Fatalf("after rejoin: Left %v, Leaves %d", b.Left(), b.Leaves())
	}
}

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestKeyringFile: a ring is persisted owner-only after every change, the
// file wins over the keys given at the next start, a primary key cannot be
// removed, and a ring without keys refuses every operation.
func TestKeyringFile(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	path := filepath.Join(t.TempDir(), "gossip-keyring")
	k1, k2 := newKey(t), newKey(t)
	ring, err := OpenKeyring(path, [][]byte{k1}, log)
	if err != nil || !ring.Enabled() {
		t.Fatalf("OpenKeyring: %v", err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("keyring file: %v, %v", st, err)
	}
	if fps, err := ring.Install(k2); err != nil || len(fps) != 2 || fps[0] != KeyFingerprint(k1) {
		t.Fatalf("Install = %v, %v", fps, err)
	}
	if fps, err := ring.Use(k2); err != nil || fps[0] != KeyFingerprint(k2) {
		t.Fatalf("Use = %v, %v", fps, err)
	}
	if _, err := ring.Remove(k2); err == nil {
		t.Fatal("removed the primary key")
	}
	if _, err := ring.Install([]byte("short")); err == nil {
		t.Fatal("installed a 5-byte key")
	}

	// Restarted with only k1 on its command line, the node uses the file.
	again, err := OpenKeyring(path, [][]byte{k1}, log)
	if err != nil {
		t.Fatal(err)
	}
	if fps, err := again.List(); err != nil || len(fps) != 2 || fps[0] != KeyFingerprint(k2) {
		t.Fatalf("List after reopen = %v, %v", fps, err)
	}
	for i := 0; i < 2; i++ { // idempotent
		if fps, err := again.Remove(k1); err != nil || len(fps) != 1 {
			t.Fatalf("Remove = %v, %v", fps, err)
		}
	}
	last, err := OpenKeyring(path, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if fps, err := last.List(); err != nil || len(fps) != 1 || fps[0] != KeyFingerprint(k2) {
		t.Fatalf("persisted ring after Remove = %v, %v", fps, err)
	}

	plain, err := OpenKeyring("", nil, log)
	if err != nil || plain.Enabled() {
		t.Fatalf("OpenKeyring without keys: enabled %v, %v", plain.Enabled(), err)
	}
	if _, err := plain.List(); !errors.Is(err, ErrNoEncryption) {
		t.Fatalf("List without keys: %v", err)
	}
}

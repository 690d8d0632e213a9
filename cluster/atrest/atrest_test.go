package atrest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

func testDataKey(t testing.TB, id string) DataKey {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return DataKey{ID: id, Key: k}
}

func TestParseDataKeys(t *testing.T) {
	k := "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes
	keys, err := ParseDataKeys(strings.NewReader("# rotated 2026-01\n\nk2:" + k + "\nk1:" + k + "\n"))
	if err != nil || len(keys) != 2 || keys[0].ID != "k2" || len(keys[1].Key) != 32 {
		t.Fatalf("ParseDataKeys = %v, %v", keys, err)
	}
	for _, bad := range []string{"", "k1", "k 1:" + k, "k1:c2hvcnQ=", "k1:!!", "k1:" + k + "\nk1:" + k} {
		if _, err := ParseDataKeys(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseDataKeys(%q) succeeded", bad)
		} else if strings.Contains(err.Error(), k) {
			t.Errorf("error %q echoes the key", err)
		}
	}
	path := filepath.Join(t.TempDir(), "keys")
	os.WriteFile(path, []byte("k1:"+k+"\n"), 0o644)
	if _, err := LoadDataKeyFile(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable key file was accepted: %v", err)
	}
	os.Chmod(path, 0o600)
	if keys, err := LoadDataKeyFile(path); err != nil || keys[0].ID != "k1" {
		t.Fatalf("LoadDataKeyFile = %v, %v", keys, err)
	}
}

// TestSealedLogStore: command entries reach the bolt file sealed, come back
// as written, are bound to their slot, and stay readable across a key
// rotation; plaintext entries from before encryption stay readable.
func TestSealedLogStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "raft.db")
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("master-secret-0123456789abcdef")
	// Index 1 is written before encryption is turned on.
	if err := bolt.StoreLog(&raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("old plaintext")}); err != nil {
		t.Fatal(err)
	}
	k1, k2 := testDataKey(t, "k1"), testDataKey(t, "k2")
	s1, _ := NewSealer([]DataKey{k1})
	st := s1.LogStore(bolt)
	in := []*raft.Log{
		{Index: 2, Term: 1, Type: raft.LogCommand, Data: secret},
		{Index: 3, Term: 1, Type: raft.LogConfiguration, Data: []byte("conf")},
		{Index: 4, Term: 2, Type: raft.LogCommand, Data: append([]byte("b"), secret...), Extensions: []byte("ext")},
	}
	if err := st.StoreLogs(in); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(in[0].Data, secret) || in[0].Extensions != nil {
		t.Fatal("StoreLogs modified the caller's entry")
	}
	// Rotate: k2 writes, k1 still reads.
	s2, _ := NewSealer([]DataKey{k2, k1})
	st = s2.LogStore(bolt)
	if err := st.StoreLog(&raft.Log{Index: 5, Term: 2, Type: raft.LogCommand, Data: secret}); err != nil {
		t.Fatal(err)
	}
	want := map[uint64]string{1: "old plaintext", 2: string(secret), 3: "conf", 4: "b" + string(secret), 5: string(secret)}
	for idx, w := range want {
		var l raft.Log
		if err := st.GetLog(idx, &l); err != nil {
			t.Fatalf("GetLog(%d): %v", idx, err)
		}
		if string(l.Data) != w {
			t.Errorf("GetLog(%d) = %q, want %q", idx, l.Data, w)
		}
		if idx == 4 && string(l.Extensions) != "ext" {
			t.Errorf("extensions of 4 = %q", l.Extensions)
		}
	}
	// Without k1, its entries cannot be opened (and say which key is missing).
	s3, _ := NewSealer([]DataKey{k2})
	var l raft.Log
	if err := s3.LogStore(bolt).GetLog(2, &l); !errors.Is(err, errSealed) || !strings.Contains(err.Error(), `"k1"`) {
		t.Fatalf("GetLog without the key: %v", err)
	}
	// An entry copied into another slot fails authentication.
	var raw raft.Log
	bolt.GetLog(2, &raw)
	raw.Index = 6
	bolt.StoreLog(&raw)
	if err := st.GetLog(6, &l); !errors.Is(err, errSealed) {
		t.Fatalf("moved entry opened: %v", err)
	}
	bolt.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, secret) {
		t.Fatal("raft.db holds the secret in plaintext")
	}
	if !bytes.Contains(b, []byte("old plaintext")) {
		t.Fatal("test is blind: plaintext written before encryption not found in raft.db")
	}
}

// TestSealedSnapshotStore: streams of every shape around the chunk size
// round-trip with the plaintext size in the metadata, never appear in the
// file, and truncation or a missing key fail.
func TestSealedSnapshotStore(t *testing.T) {
	dir := t.TempDir()
	files, err := raft.NewFileSnapshotStore(dir, 20, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := NewSealer([]DataKey{testDataKey(t, "k1")})
	st := s.SnapshotStore(files)
	marker := []byte("SECRET-MARKER-")
	sizes := map[string]int64{} // by snapshot id
	var ids []string            // oldest first
	for i, size := range []int{0, 1, snapChunk - 1, snapChunk, snapChunk + 1, 3*snapChunk + 17} {
		data := bytes.Repeat(marker, size/len(marker)+1)[:size]
		sink, err := st.Create(raft.SnapshotVersionMax, uint64(10+i), 1, raft.Configuration{}, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Odd write sizes exercise the chunk buffering.
		for p := data; len(p) > 0; {
			n := min(len(p), 1000+i*777)
			if _, err := sink.Write(p[:n]); err != nil {
				t.Fatal(err)
			}
			p = p[n:]
		}
		if err := sink.Close(); err != nil {
			t.Fatal(err)
		}
		meta, rc, err := st.Open(sink.ID())
		if err != nil {
			t.Fatalf("size %d: open: %v", size, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data) || meta.Size != int64(size) {
			t.Fatalf("size %d: read %d bytes (meta %d), err %v", size, len(got), meta.Size, err)
		}
		metas, err := st.List()
		if err != nil || metas[0].ID != sink.ID() || metas[0].Size != int64(size) {
			t.Fatalf("size %d: List = %+v, %v", size, metas[0], err)
		}
		sizes[sink.ID()] = int64(size)
		ids = append(ids, sink.ID())
	}
	metas, err := files.List()
	if err != nil || len(metas) != len(ids) {
		t.Fatalf("inner List = %d snapshots, %v", len(metas), err)
	}
	for _, m := range metas {
		_, rc, err := files.Open(m.ID)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || bytes.Contains(stored, marker) {
			t.Fatalf("snapshot %s is stored in plaintext (read err %v)", m.ID, err)
		}
	}

	// A store opened later (as by a restarted node) never saw those
	// snapshots written: it reads their headers and lists the same
	// plaintext sizes. A snapshot stored before encryption was turned on
	// keeps its size and reads as it is.
	plain, err := files.Create(raft.SnapshotVersionMax, 100, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	plain.Write([]byte("plaintext snapshot"))
	if err := plain.Close(); err != nil {
		t.Fatal(err)
	}
	sizes[plain.ID()] = int64(len("plaintext snapshot"))
	fresh := s.SnapshotStore(files)
	listed, err := fresh.List()
	if err != nil || len(listed) != len(sizes) {
		t.Fatalf("fresh List = %d snapshots, %v", len(listed), err)
	}
	for _, m := range listed {
		if m.Size != sizes[m.ID] {
			t.Errorf("fresh List: snapshot %s has size %d, want %d", m.ID, m.Size, sizes[m.ID])
		}
	}
	meta, rc, err := fresh.Open(plain.ID())
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != "plaintext snapshot" || meta.Size != int64(len(got)) {
		t.Fatalf("plaintext snapshot read %q (meta size %d), %v", got, meta.Size, err)
	}

	// Cut the largest snapshot at a chunk boundary: the reader must fail,
	// not return a short stream as if complete.
	state := filepath.Join(dir, "snapshots", ids[len(ids)-1], "state.bin")
	b, _ := os.ReadFile(state)
	hdr := len(snapHeader("k1", snapChunk))
	os.WriteFile(state, b[:hdr+nonceSize+snapChunk+16], 0o600)
	// The file store checks a CRC first; bypass it to reach the reader.
	f, _ := os.Open(state)
	r := &sealedReader{r: bufio.NewReader(f), c: f, aead: s.write, hdr: b[:hdr], chunk: snapChunk}
	if _, err := io.ReadAll(r); !errors.Is(err, errSealed) {
		t.Fatalf("truncated snapshot read: %v", err)
	}
	r.Close()

	other, _ := NewSealer([]DataKey{testDataKey(t, "k9")})
	if _, _, err := other.SnapshotStore(files).Open(ids[len(ids)-2]); !errors.Is(err, errSealed) {
		t.Fatalf("open without the key: %v", err)
	}
}

// BenchmarkStoreLogs measures what sealing costs on the log write path:
// batches of 64 command entries of 512 bytes (a packed group commit of TLS
// sessions) into bolt without fsync, plain and sealed.
func BenchmarkStoreLogs(b *testing.B) {
	for _, sealed := range []bool{false, true} {
		b.Run(fmt.Sprintf("sealed=%v", sealed), func(b *testing.B) {
			bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(b.TempDir(), "raft.db"), NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			defer bolt.Close()
			var store raft.LogStore = bolt
			if sealed {
				s, _ := NewSealer([]DataKey{testDataKey(b, "k1")})
				store = s.LogStore(bolt)
			}
			data := bytes.Repeat([]byte{7}, 512)
			logs := make([]*raft.Log, 64)
			b.SetBytes(int64(len(logs) * len(data)))
			b.ReportAllocs()
			idx := uint64(1)
			for b.Loop() {
				for i := range logs {
					logs[i] = &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}
					idx++
				}
				if err := store.StoreLogs(logs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

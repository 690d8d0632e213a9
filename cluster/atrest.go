package cluster

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hashicorp/raft"
)

// Encryption at rest. Session values are TLS master secrets, so the Raft log
// and snapshots on disk are sealed with AES-256-GCM below raft: the FSM, the
// batcher and replication see plaintext (the cluster port has its own TLS),
// and only the bytes handed to the bolt log store and the file snapshot store
// are encrypted.
//
// Log entries: only LogCommand entries are sealed (configuration entries hold
// addresses, no secrets). Data becomes nonce(12) || ciphertext+tag with a
// fresh random nonce per entry and additional data binding the entry's index,
// term and type (an entry cannot be moved to another slot). Extensions becomes
// "DCE1" | idLen:u8 | keyID | original extensions, which marks the entry as
// sealed and names its key; an entry without the mark is read as plaintext,
// so a node that starts encrypting keeps reading what it wrote before.
//
// Snapshots: the stream is "DCSNAPE1" | chunk:u32 | idLen:u8 | keyID, then
// chunks of nonce(12) || ciphertext+tag of up to chunk plaintext bytes, each
// with additional data header | chunk index:u64 | final:u8, so reordering,
// splicing and truncation fail authentication. raft's SnapshotMeta.Size must
// stay the plaintext size (raft streams exactly Size bytes to followers), so
// List and Open compute it back from the stored size.

// DataKey is one key that seals session values at rest. ID is stored with
// every sealed entry and snapshot, so a key can be rotated: new writes use
// the first key, and older ones stay readable while their id is still known.
type DataKey struct {
	ID  string
	Key []byte // 32 bytes (AES-256)
}

var dataKeyID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ParseDataKeys reads a data key file: one key per line as "id:base64key"
// (32 random bytes, e.g. `echo "k1:$(head -c32 /dev/urandom | base64)"`);
// blank lines and lines starting with # are ignored. The first key seals new
// data; all of them open old data.
func ParseDataKeys(r io.Reader) ([]DataKey, error) {
	var keys []DataKey
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		id, b64, ok := strings.Cut(s, ":")
		if !ok || !dataKeyID.MatchString(id) {
			return nil, fmt.Errorf("data keys line %d: want id:base64key with an id of letters, digits, '.', '_' or '-'", line)
		}
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
		if err != nil || len(key) != 32 {
			// The key itself is never echoed.
			return nil, fmt.Errorf("data keys line %d (id %s): want the base64 of 32 bytes", line, id)
		}
		if seen[id] {
			return nil, fmt.Errorf("data keys line %d: id %s appears twice", line, id)
		}
		seen[id] = true
		keys = append(keys, DataKey{ID: id, Key: key})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read data keys: %w", err)
	}
	if len(keys) == 0 {
		return nil, errors.New("data keys: no key found")
	}
	return keys, nil
}

// LoadDataKeyFile reads a data key file (see ParseDataKeys). It refuses a
// file that others than its owner may read.
func LoadDataKeyFile(path string) ([]DataKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("data key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("data key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("data key file %s has mode %v: make it readable by its owner only (chmod 600)", path, st.Mode().Perm())
	}
	keys, err := ParseDataKeys(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

// sealer holds the AEADs of the data keys.
type sealer struct {
	writeID string
	write   cipher.AEAD
	byID    map[string]cipher.AEAD
}

func newSealer(keys []DataKey) (*sealer, error) {
	s := &sealer{byID: make(map[string]cipher.AEAD, len(keys))}
	for i, k := range keys {
		if !dataKeyID.MatchString(k.ID) {
			return nil, fmt.Errorf("cluster: bad data key id %q", k.ID)
		}
		if len(k.Key) != 32 {
			return nil, fmt.Errorf("cluster: data key %s is %d bytes, want 32", k.ID, len(k.Key))
		}
		if _, dup := s.byID[k.ID]; dup {
			return nil, fmt.Errorf("cluster: data key id %s appears twice", k.ID)
		}
		block, err := aes.NewCipher(k.Key)
		if err != nil {
			return nil, fmt.Errorf("cluster: data key %s: %w", k.ID, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("cluster: data key %s: %w", k.ID, err)
		}
		s.byID[k.ID] = aead
		if i == 0 {
			s.writeID, s.write = k.ID, aead
		}
	}
	if s.write == nil {
		return nil, errors.New("cluster: no data key")
	}
	return s, nil
}

func (s *sealer) key(id string) (cipher.AEAD, error) {
	a, ok := s.byID[id]
	if !ok {
		return nil, fmt.Errorf("cluster: data sealed with key %q, which is not in the data key file", id)
	}
	return a, nil
}

const nonceSize = 12

var (
	logMark  = []byte("DCE1")
	snapMark = []byte("DCSNAPE1")
)

// errSealed is wrapped by every failure to open sealed data: a wrong or
// missing key, or bytes altered on disk.
var errSealed = errors.New("cluster: sealed data cannot be opened")

func logAAD(l *raft.Log) []byte {
	b := make([]byte, 0, 17)
	b = binary.BigEndian.AppendUint64(b, l.Index)
	b = binary.BigEndian.AppendUint64(b, l.Term)
	return append(b, byte(l.Type))
}

// sealedLogStore seals LogCommand entries on their way into the wrapped
// store and opens them on their way out.
type sealedLogStore struct {
	raft.LogStore
	s *sealer
}

// StoreLog implements raft.LogStore.
func (e *sealedLogStore) StoreLog(l *raft.Log) error { return e.StoreLogs([]*raft.Log{l}) }

// StoreLogs implements raft.LogStore. The caller's entries are not modified:
// raft keeps them in memory for replication and the FSM.
func (e *sealedLogStore) StoreLogs(logs []*raft.Log) error {
	out := make([]*raft.Log, len(logs))
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			out[i] = l
			continue
		}
		c := *l
		nonce := make([]byte, nonceSize, nonceSize+len(l.Data)+e.s.write.Overhead())
		if _, err := rand.Read(nonce); err != nil {
			return fmt.Errorf("cluster: nonce: %w", err)
		}
		c.Data = e.s.write.Seal(nonce, nonce, l.Data, logAAD(l))
		ext := make([]byte, 0, len(logMark)+1+len(e.s.writeID)+len(l.Extensions))
		ext = append(append(append(ext, logMark...), byte(len(e.s.writeID))), e.s.writeID...)
		c.Extensions = append(ext, l.Extensions...)
		out[i] = &c
	}
	return e.LogStore.StoreLogs(out)
}

// GetLog implements raft.LogStore.
func (e *sealedLogStore) GetLog(index uint64, l *raft.Log) error {
	if err := e.LogStore.GetLog(index, l); err != nil {
		return err
	}
	return e.open(l)
}

func (e *sealedLogStore) open(l *raft.Log) error {
	ext := l.Extensions
	if !bytes.HasPrefix(ext, logMark) {
		return nil // written before encryption was turned on
	}
	ext = ext[len(logMark):]
	if len(ext) < 1 || len(ext) < 1+int(ext[0]) {
		return fmt.Errorf("%w: log entry %d has a truncated key id", errSealed, l.Index)
	}
	id := string(ext[1 : 1+int(ext[0])])
	aead, err := e.s.key(id)
	if err != nil {
		return fmt.Errorf("%w: log entry %d: %w", errSealed, l.Index, err)
	}
	if len(l.Data) < nonceSize+aead.Overhead() {
		return fmt.Errorf("%w: log entry %d is too short", errSealed, l.Index)
	}
	ct := l.Data[nonceSize:]
	pt, err := aead.Open(ct[:0], l.Data[:nonceSize], ct, logAAD(l))
	if err != nil {
		return fmt.Errorf("%w: log entry %d (key %s): %w", errSealed, l.Index, id, err)
	}
	l.Data = pt
	if rest := ext[1+int(ext[0]):]; len(rest) > 0 {
		l.Extensions = rest
	} else {
		l.Extensions = nil
	}
	return nil
}

// snapChunk is the plaintext size of one sealed snapshot chunk.
const snapChunk = 64 << 10

// sealedSnapshotStore seals snapshot streams written to the wrapped store.
type sealedSnapshotStore struct {
	inner raft.SnapshotStore
	s     *sealer
	dir   string // the file store's base directory, for cheap List
}

var _ raft.SnapshotStore = (*sealedSnapshotStore)(nil)

func snapHeader(id string, chunk int) []byte {
	h := append([]byte(nil), snapMark...)
	h = binary.BigEndian.AppendUint32(h, uint32(chunk))
	h = append(h, byte(len(id)))
	return append(h, id...)
}

// Create implements raft.SnapshotStore.
func (st *sealedSnapshotStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := st.inner.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	hdr := snapHeader(st.s.writeID, snapChunk)
	if _, err := sink.Write(hdr); err != nil {
		sink.Cancel()
		return nil, fmt.Errorf("cluster: write snapshot header: %w", err)
	}
	return &sealedSink{SnapshotSink: sink, aead: st.s.write, hdr: hdr, buf: make([]byte, 0, snapChunk)}, nil
}

// List implements raft.SnapshotStore, with sizes in plaintext bytes. The
// header is read straight from the file store's state.bin (Open would read
// and checksum the whole snapshot); raft takes the size it streams from Open.
func (st *sealedSnapshotStore) List() ([]*raft.SnapshotMeta, error) {
	metas, err := st.inner.List()
	if err != nil {
		return nil, err
	}
	out := make([]*raft.SnapshotMeta, 0, len(metas))
	for _, m := range metas {
		c := *m
		if hdr, ok := st.peekHeader(m.ID); ok {
			c.Size = plainSize(m.Size, int64(hdr.len), int64(hdr.chunk), int64(nonceSize+st.s.write.Overhead()))
		}
		out = append(out, &c)
	}
	return out, nil
}

type sealedHeader struct{ len, chunk int }

// peekHeader reads a sealed snapshot's header from the file store's layout
// (dir/snapshots/ID/state.bin); ok is false for plaintext snapshots.
func (st *sealedSnapshotStore) peekHeader(id string) (sealedHeader, bool) {
	if st.dir == "" {
		return sealedHeader{}, false
	}
	f, err := os.Open(filepath.Join(st.dir, "snapshots", id, "state.bin"))
	if err != nil {
		return sealedHeader{}, false
	}
	defer f.Close()
	b := make([]byte, len(snapMark)+5)
	if _, err := io.ReadFull(f, b); err != nil || !bytes.Equal(b[:len(snapMark)], snapMark) {
		return sealedHeader{}, false
	}
	return sealedHeader{len: len(b) + int(b[len(b)-1]), chunk: int(binary.BigEndian.Uint32(b[len(snapMark):]))}, true
}

// Open implements raft.SnapshotStore.
func (st *sealedSnapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := st.inner.Open(id)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReaderSize(rc, snapChunk+nonceSize+64)
	mark, err := br.Peek(len(snapMark))
	if err != nil || !bytes.Equal(mark, snapMark) {
		// Written before encryption was turned on (or empty): plaintext.
		return meta, readCloser{br, rc}, nil
	}
	fixed := make([]byte, len(snapMark)+5)
	if _, err := io.ReadFull(br, fixed); err != nil {
		rc.Close()
		return nil, nil, fmt.Errorf("%w: snapshot %s header: %w", errSealed, id, err)
	}
	chunk := int(binary.BigEndian.Uint32(fixed[len(snapMark):]))
	keyID := make([]byte, fixed[len(fixed)-1])
	if _, err := io.ReadFull(br, keyID); err != nil {
		rc.Close()
		return nil, nil, fmt.Errorf("%w: snapshot %s header: %w", errSealed, id, err)
	}
	aead, err := st.s.key(string(keyID))
	if err != nil {
		rc.Close()
		return nil, nil, fmt.Errorf("%w: snapshot %s: %w", errSealed, id, err)
	}
	if chunk <= 0 || chunk > 16<<20 {
		rc.Close()
		return nil, nil, fmt.Errorf("%w: snapshot %s: bad chunk size %d", errSealed, id, chunk)
	}
	hdr := append(fixed, keyID...)
	m := *meta
	m.Size = plainSize(meta.Size, int64(len(hdr)), int64(chunk), int64(nonceSize+aead.Overhead()))
	return &m, &sealedReader{r: br, c: rc, aead: aead, hdr: hdr, chunk: chunk}, nil
}

// plainSize is the plaintext size of a sealed stream of size bytes: every
// chunk, including the final one (which may be empty), adds overhead bytes.
func plainSize(size, hdr, chunk, overhead int64) int64 {
	body := size - hdr
	if body < overhead {
		return 0
	}
	n := (body + chunk + overhead - 1) / (chunk + overhead)
	return body - n*overhead
}

type readCloser struct {
	io.Reader
	io.Closer
}

func chunkAAD(hdr []byte, n uint64, final bool) []byte {
	b := binary.BigEndian.AppendUint64(append([]byte(nil), hdr...), n)
	if final {
		return append(b, 1)
	}
	return append(b, 0)
}

// sealedSink buffers a chunk of plaintext and writes it sealed; Close seals
// the final chunk (possibly empty), which marks the end of the stream.
type sealedSink struct {
	raft.SnapshotSink
	aead cipher.AEAD
	hdr  []byte
	buf  []byte
	n    uint64
	out  []byte
}

func (s *sealedSink) flush(final bool) error {
	if cap(s.out) == 0 {
		s.out = make([]byte, 0, nonceSize+snapChunk+s.aead.Overhead())
	}
	nonce := s.out[:nonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return fmt.Errorf("cluster: nonce: %w", err)
	}
	out := s.aead.Seal(nonce, nonce, s.buf, chunkAAD(s.hdr, s.n, final))
	s.n++
	s.buf = s.buf[:0]
	_, err := s.SnapshotSink.Write(out)
	return err
}

// Write implements io.Writer. A full chunk is sealed only once more data
// arrives, so the final chunk is never a full one followed by nothing.
func (s *sealedSink) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if len(s.buf) == snapChunk {
			if err := s.flush(false); err != nil {
				return n - len(p), err
			}
		}
		k := copy(s.buf[len(s.buf):snapChunk], p)
		s.buf = s.buf[:len(s.buf)+k]
		p = p[k:]
	}
	return n, nil
}

// Close implements raft.SnapshotSink.
func (s *sealedSink) Close() error {
	if err := s.flush(true); err != nil {
		s.SnapshotSink.Cancel()
		return fmt.Errorf("cluster: seal snapshot: %w", err)
	}
	return s.SnapshotSink.Close()
}

// sealedReader opens a sealed snapshot stream chunk by chunk.
type sealedReader struct {
	r     *bufio.Reader
	c     io.Closer
	aead  cipher.AEAD
	hdr   []byte
	chunk int
	n     uint64
	in    []byte
	plain []byte
	done  bool
	err   error
}

func (s *sealedReader) Read(p []byte) (int, error) {
	for len(s.plain) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.done {
			return 0, io.EOF
		}
		s.err = s.next()
	}
	k := copy(p, s.plain)
	s.plain = s.plain[k:]
	return k, nil
}

func (s *sealedReader) next() error {
	ov := s.aead.Overhead()
	if s.in == nil {
		s.in = make([]byte, nonceSize+s.chunk+ov)
	}
	k, err := io.ReadFull(s.r, s.in)
	final := false
	switch {
	case err == nil:
		if _, perr := s.r.Peek(1); errors.Is(perr, io.EOF) {
			final = true
		} else if perr != nil {
			return perr
		}
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		final = true
	default:
		return err
	}
	if k < nonceSize+ov {
		return fmt.Errorf("%w: snapshot truncated", errSealed)
	}
	ct := s.in[nonceSize:k]
	pt, err := s.aead.Open(ct[:0], s.in[:nonceSize], ct, chunkAAD(s.hdr, s.n, final))
	if err != nil {
		return fmt.Errorf("%w: snapshot chunk %d: %w", errSealed, s.n, err)
	}
	s.n++
	s.plain, s.done = pt, final
	return nil
}

func (s *sealedReader) Close() error { return s.c.Close() }

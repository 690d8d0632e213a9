package atrest

import (
	"bufio"
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// snapMark starts a sealed snapshot stream.
var snapMark = []byte("DCSNAPE1")

// snapChunk is the plaintext size of one sealed snapshot chunk.
const snapChunk = 64 << 10

// maxSnapChunk bounds the chunk size a stored header may claim.
const maxSnapChunk = 16 << 20

// sealedSnapshotStore seals snapshot streams written to the wrapped store.
// raft's SnapshotMeta.Size must stay the plaintext size (raft streams
// exactly Size bytes to followers), so List and Open compute it from the
// stored size and the stream's layout.
type sealedSnapshotStore struct {
	inner raft.SnapshotStore
	s     *Sealer

	mu      sync.Mutex
	layouts map[string]layout // by snapshot id, for the snapshots inner lists
}

var _ raft.SnapshotStore = (*sealedSnapshotStore)(nil)

// layout is how a stored snapshot stream maps onto its plaintext.
type layout struct {
	sealed   bool
	hdr      int64 // header bytes
	chunk    int64 // plaintext bytes per chunk
	overhead int64 // nonce and tag bytes per chunk
}

func (l layout) plainSize(stored int64) int64 {
	if !l.sealed {
		return stored
	}
	return plainSize(stored, l.hdr, l.chunk, l.overhead)
}

func snapHeader(id string, chunk int) []byte {
	h := append([]byte(nil), snapMark...)
	h = binary.BigEndian.AppendUint32(h, uint32(chunk))
	h = append(h, byte(len(id)))
	return append(h, id...)
}

// header is a sealed stream's header, parsed.
type header struct {
	raw   []byte // the whole header: part of every chunk's additional data
	keyID string
	chunk int
}

// readHeader reads a sealed stream's header from r. sealed is false, and
// nothing is consumed, when the stream does not start with the mark: it was
// written before encryption was turned on (or is empty).
func readHeader(r *bufio.Reader) (h header, sealed bool, err error) {
	mark, err := r.Peek(len(snapMark))
	if err != nil || !bytes.Equal(mark, snapMark) {
		return header{}, false, nil
	}
	fixed := make([]byte, len(snapMark)+5)
	if _, err := io.ReadFull(r, fixed); err != nil {
		return header{}, true, err
	}
	keyID := make([]byte, fixed[len(fixed)-1])
	if _, err := io.ReadFull(r, keyID); err != nil {
		return header{}, true, err
	}
	chunk := int(binary.BigEndian.Uint32(fixed[len(snapMark):]))
	if chunk <= 0 || chunk > maxSnapChunk {
		return header{}, true, fmt.Errorf("bad chunk size %d", chunk)
	}
	return header{raw: append(fixed, keyID...), keyID: string(keyID), chunk: chunk}, true, nil
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
		return nil, fmt.Errorf("atrest: write snapshot header: %w", err)
	}
	l := layout{sealed: true, hdr: int64(len(hdr)), chunk: snapChunk, overhead: int64(nonceSize + st.s.write.Overhead())}
	return &sealedSink{SnapshotSink: sink, st: st, layout: l, aead: st.s.write, hdr: hdr, buf: make([]byte, 0, snapChunk)}, nil
}

// List implements raft.SnapshotStore, with sizes in plaintext bytes. The
// layout of a snapshot this store wrote is remembered from its Create; the
// layout of one written before (by an earlier process) is read once from
// its header through inner's Open, which for raft's file store also checks
// the whole file's checksum. A snapshot that cannot be opened keeps its
// stored size.
func (st *sealedSnapshotStore) List() ([]*raft.SnapshotMeta, error) {
	metas, err := st.inner.List()
	if err != nil {
		return nil, err
	}
	out := make([]*raft.SnapshotMeta, 0, len(metas))
	for _, m := range metas {
		c := *m
		if l, ok := st.layoutOf(m.ID); ok {
			c.Size = l.plainSize(m.Size)
		}
		out = append(out, &c)
	}
	return out, nil
}

// layoutOf returns the layout of snapshot id, remembered or read.
func (st *sealedSnapshotStore) layoutOf(id string) (layout, bool) {
	st.mu.Lock()
	l, ok := st.layouts[id]
	st.mu.Unlock()
	if ok {
		return l, true
	}
	_, rc, err := st.inner.Open(id)
	if err != nil {
		return layout{}, false
	}
	defer rc.Close()
	h, sealed, err := readHeader(bufio.NewReaderSize(rc, 128))
	if err != nil {
		return layout{}, false
	}
	if sealed {
		l = layout{sealed: true, hdr: int64(len(h.raw)), chunk: int64(h.chunk), overhead: int64(nonceSize + st.s.write.Overhead())}
	}
	st.mu.Lock()
	st.layouts[id] = l
	st.mu.Unlock()
	return l, true
}

// remember records the layout of a snapshot just stored and forgets those
// inner no longer lists (it reaps old snapshots as new ones are stored).
func (st *sealedSnapshotStore) remember(id string, l layout) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.layouts[id] = l
	metas, err := st.inner.List()
	if err != nil {
		return
	}
	keep := make(map[string]bool, len(metas)+1)
	keep[id] = true
	for _, m := range metas {
		keep[m.ID] = true
	}
	for k := range st.layouts {
		if !keep[k] {
			delete(st.layouts, k)
		}
	}
}

// Open implements raft.SnapshotStore.
func (st *sealedSnapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := st.inner.Open(id)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReaderSize(rc, snapChunk+nonceSize+64)
	h, sealed, err := readHeader(br)
	if !sealed {
		return meta, readCloser{br, rc}, nil
	}
	if err != nil {
		rc.Close()
		return nil, nil, fmt.Errorf("%w: snapshot %s header: %w", errSealed, id, err)
	}
	aead, err := st.s.key(h.keyID)
	if err != nil {
		rc.Close()
		return nil, nil, fmt.Errorf("%w: snapshot %s: %w", errSealed, id, err)
	}
	m := *meta
	m.Size = plainSize(meta.Size, int64(len(h.raw)), int64(h.chunk), int64(nonceSize+aead.Overhead()))
	return &m, &sealedReader{r: br, c: rc, aead: aead, hdr: h.raw, chunk: h.chunk}, nil
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
	st     *sealedSnapshotStore
	layout layout
	aead   cipher.AEAD
	hdr    []byte
	buf    []byte
	n      uint64
	out    []byte
}

func (s *sealedSink) flush(final bool) error {
	if cap(s.out) == 0 {
		s.out = make([]byte, 0, nonceSize+snapChunk+s.aead.Overhead())
	}
	nonce := s.out[:nonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return fmt.Errorf("atrest: nonce: %w", err)
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
		return fmt.Errorf("atrest: seal snapshot: %w", err)
	}
	if err := s.SnapshotSink.Close(); err != nil {
		return err
	}
	s.st.remember(s.ID(), s.layout)
	return nil
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

package atrest

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"

	"github.com/hashicorp/raft"
)

// logMark starts the Extensions of a sealed log entry.
var logMark = []byte("DCE1")

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
	s *Sealer
}

// IsMonotonic implements raft.MonotonicLogStore as the wrapped store does, so
// that raft clears a monotonic store's log before a snapshot install.
func (e *sealedLogStore) IsMonotonic() bool {
	m, ok := e.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
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
			return fmt.Errorf("atrest: nonce: %w", err)
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

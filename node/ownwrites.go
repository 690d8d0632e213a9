package node

import (
	"sync"
	"sync/atomic"
)

// ownWrites remembers the writes this node acknowledged before its own replica
// applied them: a write forwarded to the leader is answered as soon as the
// leader has committed and applied it (cluster.ProposeCommitted), while this
// node's FSM learns of the commit only with the leader's next AppendEntries.
// A later read of such a key through this node is answered by a replica that
// has applied the write's index (Service.ownWriteGet), so read-your-writes
// holds in every read mode and the cost falls on the (rare) read that needs
// it, not on every write.
//
// Entries are dropped once the replica has applied them: the table holds only
// the writes of the last replication round trip.
type ownWrites struct {
	n atomic.Int64 // len(byKey), read without the lock on the read path

	mu    sync.Mutex
	byKey map[string]uint64 // key -> highest acknowledged index not yet known applied
	order []ownWrite        // in acknowledgement order, for pruning; head at order[head]
	head  int
}

type ownWrite struct {
	key string
	idx uint64
}

func newOwnWrites() *ownWrites { return &ownWrites{byKey: make(map[string]uint64)} }

// record notes that this node acknowledged a write of key at log index idx
// while its replica had applied only applied, and prunes what applied covers.
func (w *ownWrites) record(key []byte, idx, applied uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pruneLocked(applied)
	if idx <= applied {
		return
	}
	k := string(key)
	if idx > w.byKey[k] {
		w.byKey[k] = idx
	}
	w.order = append(w.order, ownWrite{key: k, idx: idx})
	w.n.Store(int64(len(w.byKey)))
}

// pending returns the index a read of key must wait for (ok true) when this
// node acknowledged a write of key that its replica, at applied, has not
// applied yet.
func (w *ownWrites) pending(key []byte, applied uint64) (idx uint64, ok bool) {
	if w.n.Load() == 0 {
		return 0, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pruneLocked(applied)
	idx = w.byKey[string(key)]
	return idx, idx > applied
}

// pruneLocked drops the writes the replica has applied; w.mu is held.
func (w *ownWrites) pruneLocked(applied uint64) {
	for w.head < len(w.order) && w.order[w.head].idx <= applied {
		o := w.order[w.head]
		if w.byKey[o.key] <= applied {
			delete(w.byKey, o.key)
		}
		w.order[w.head] = ownWrite{}
		w.head++
	}
	if w.head == len(w.order) {
		w.order, w.head = w.order[:0], 0
	} else if w.head > 1024 && w.head > len(w.order)/2 {
		w.order, w.head = append(w.order[:0], w.order[w.head:]...), 0
	}
	w.n.Store(int64(len(w.byKey)))
}

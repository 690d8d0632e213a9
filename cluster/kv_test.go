package cluster

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// kvFSM is the tiny state machine the tests replicate: ADD-if-absent on a
// string map. Commands: 'A' key 0x00 value. A packed entry is 'B' followed by
// uvarint-length-prefixed commands, answered with [][]byte. A query is a
// key, answered with its value (nil if absent).
type kvFSM struct {
	mu       sync.Mutex
	m        map[string]string
	restores int
	delay    atomic.Int64 // nanoseconds each Apply takes: a loaded apply path
}

func newKV() *kvFSM { return &kvFSM{m: map[string]string{}} }

func addCmd(key, value string) []byte {
	b := append([]byte{'A'}, key...)
	b = append(b, 0)
	return append(b, value...)
}

var _ StateMachine = (*kvFSM)(nil)

// Pack implements StateMachine.
func (f *kvFSM) Pack(cmds [][]byte) []byte {
	b := []byte{'B'}
	for _, c := range cmds {
		b = binary.AppendUvarint(b, uint64(len(c)))
		b = append(b, c...)
	}
	return b
}

func (f *kvFSM) applyOne(cmd []byte) []byte {
	if len(cmd) == 0 || cmd[0] != 'A' {
		return []byte("bad")
	}
	kv := cmd[1:]
	for i, c := range kv {
		if c == 0 {
			k, v := string(kv[:i]), string(kv[i+1:])
			if _, ok := f.m[k]; ok {
				return []byte("exists:" + k)
			}
			f.m[k] = v
			return []byte("ok:" + k)
		}
	}
	return []byte("bad")
}

func (f *kvFSM) Apply(l *raft.Log) interface{} {
	if d := f.delay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(l.Data) > 0 && l.Data[0] == 'B' {
		var out [][]byte
		b := l.Data[1:]
		for len(b) > 0 {
			n, k := binary.Uvarint(b)
			if k <= 0 || uint64(len(b)-k) < n {
				return errors.New("corrupt batch")
			}
			out = append(out, f.applyOne(b[k:k+int(n)]))
			b = b[k+int(n):]
		}
		return out
	}
	return f.applyOne(l.Data)
}

// Query implements StateMachine.
func (f *kvFSM) Query(q []byte) ([]byte, error) {
	v, ok := f.get(string(q))
	if !ok {
		return nil, nil
	}
	return []byte(v), nil
}

func (f *kvFSM) get(k string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.m[k]
	return v, ok
}

func (f *kvFSM) size() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.m)
}

func (f *kvFSM) restoreCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restores
}

type kvSnapshot []byte

func (s kvSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}
func (kvSnapshot) Release() {}

func (f *kvFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := json.Marshal(f.m)
	return kvSnapshot(b), err
}

func (f *kvFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	m := map[string]string{}
	if err := json.NewDecoder(rc).Decode(&m); err != nil {
		return err
	}
	f.mu.Lock()
	f.m = m
	f.restores++
	f.mu.Unlock()
	return nil
}

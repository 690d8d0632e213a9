package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/distcache-replicated/distcache/fsm"
	"github.com/hashicorp/raft"
)

// fileMagic starts a `dcctl snapshot save` file: magic, the FSM snapshot's
// size (u64 big-endian), then the FSM snapshot (cluster.SnapshotSave).
const fileMagic = "DCSNAP01"

func main() {
	sessions := flag.Int("sessions", 1_000_000, "number of sessions (`N`)")
	keyLen := flag.Int("key", 32, "key length in `bytes` (16..250)")
	valueLen := flag.Int("value", 200, "value length in `bytes`")
	ttl := flag.Duration("ttl", 24*time.Hour, "shortest lifetime; lifetimes are spread over ttl..2×ttl")
	out := flag.String("o", "", "output `file` (required)")
	flag.Parse()
	if err := run(*out, *sessions, *keyLen, *valueLen, *ttl); err != nil {
		fmt.Fprintln(os.Stderr, "snapgen:", err)
		os.Exit(1)
	}
}

func run(out string, n, keyLen, valueLen int, ttl time.Duration) error {
	switch {
	case out == "":
		return errors.New("-o FILE is required")
	case keyLen < 16 || keyLen > fsm.MaxKeyLen:
		return fmt.Errorf("-key %d: want 16..%d", keyLen, fsm.MaxKeyLen)
	case valueLen < 0 || valueLen > fsm.MaxValueLen:
		return fmt.Errorf("-value %d: want 0..%d", valueLen, fsm.MaxValueLen)
	case n < 0 || ttl <= 0:
		return errors.New("-sessions and -ttl must be positive")
	}
	s := fsm.New(fsm.Config{})
	now := time.Now().UnixMilli()
	key := make([]byte, keyLen)
	value := make([]byte, valueLen)
	var cmds [][]byte
	var entry []byte
	index := uint64(0)
	for start := 0; start < n; start += 1000 {
		cmds = cmds[:0]
		for i := start; i < min(start+1000, n); i++ {
			copy(key, fmt.Sprintf("snapgen-%0*d", keyLen-8, i))
			binary.BigEndian.PutUint64(value[:min(8, valueLen)], uint64(i))
			life := ttl + time.Duration(uint64(i)*7919%uint64(ttl.Milliseconds()))*time.Millisecond
			cmds = append(cmds, fsm.AppendAdd(nil, key, value, 0, life))
		}
		index++
		entry = fsm.EncodeBatch(entry[:0], now, fsm.Limits{}, cmds)
		if _, ok := s.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: entry}).([][]byte); !ok {
			return errors.New("apply failed")
		}
	}
	if got := s.Stats().Sessions; got != int64(n) {
		return fmt.Errorf("store holds %d sessions, want %d", got, n)
	}

	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, len(fileMagic)+8)); err != nil {
		return err
	}
	if err := s.WriteSnapshot(f); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	end, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	hdr := binary.BigEndian.AppendUint64([]byte(fileMagic), uint64(end)-uint64(len(fileMagic)+8))
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	st := s.Stats()
	fmt.Printf("%s: %d sessions, payload %d B (key+value), file %d B\n", out, st.Sessions, st.PayloadBytes, end)
	return nil
}

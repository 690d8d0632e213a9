package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// Size limits of the keyspace. Front-ends enforce their own, smaller limits
// (distcache: 64-byte ids, 32 KiB sessions); these are the hard limits of the
// state machine, checked on every command so that a malformed or hostile
// entry can never grow the store beyond what any front-end accepts.
const (
	// MaxKeyLen is the longest key the store accepts (memcache's limit).
	MaxKeyLen = 250
	// MaxValueLen is the largest value the store accepts (the largest any
	// front-end accepts; distcache itself needs only 32 KiB).
	MaxValueLen = 64 << 10
)

// Encoding versions. The first byte of every command and of every batch
// (log entry) carries its version so that a later format can be introduced
// while old log entries stay readable.
const (
	commandVersion = 1
	batchVersion   = 1
)

// Op identifies a command kind inside an encoded command.
type Op uint8

// Command kinds. The numeric values are part of the replicated log format and
// must never change.
const (
	OpAdd    Op = 1 // insert if no live entry with the key exists
	OpSet    Op = 2 // insert or replace
	OpRemove Op = 3 // delete a live entry
	OpTake   Op = 4 // return and delete a live entry (single-use read)
	OpExpire Op = 5 // delete every entry whose expiry is at or before the batch time
	// OpRotateTickets rotates the ring of TLS session-ticket keys (tickets.go).
	OpRotateTickets Op = 6
)

// String returns the command name, for logs.
func (o Op) String() string {
	switch o {
	case OpAdd:
		return "ADD"
	case OpSet:
		return "SET"
	case OpRemove:
		return "REMOVE"
	case OpTake:
		return "TAKE"
	case OpExpire:
		return "EXPIRE"
	case OpRotateTickets:
		return "ROTATE_TICKETS"
	default:
		return fmt.Sprintf("Op(%d)", uint8(o))
	}
}

// ErrMalformed is wrapped by every error about a command, batch or result
// that cannot be decoded; check it with errors.Is.
var ErrMalformed = errors.New("fsm: malformed encoding")

// ttlMillis converts a relative lifetime to whole milliseconds, truncating;
// negative lifetimes mean "already expired".
func ttlMillis(ttl time.Duration) uint64 {
	if ttl <= 0 {
		return 0
	}
	return uint64(ttl / time.Millisecond)
}

// AppendAdd appends an ADD command to dst and returns the extended slice.
// ADD stores key → value unless a live entry with the same key exists, in
// which case the result is ResultExists and the existing entry is untouched.
// The lifetime is relative: the leader fixes the absolute expiry (batch time
// + ttl, truncated to whole milliseconds) when it packs the command into a
// log entry, so every replica expires the entry at the same moment.
func AppendAdd(dst []byte, key, value []byte, flags uint32, ttl time.Duration) []byte {
	return appendStore(dst, OpAdd, key, value, flags, ttl)
}

// AppendSet appends a SET command (insert or replace, as memcache "set" or
// redis SETEX) to dst and returns the extended slice.
func AppendSet(dst []byte, key, value []byte, flags uint32, ttl time.Duration) []byte {
	return appendStore(dst, OpSet, key, value, flags, ttl)
}

// Layout of ADD and SET:
//
//	version u8 | op u8 | flags u32 BE | ttl_ms uvarint | key_len uvarint | key | value (rest)
func appendStore(dst []byte, op Op, key, value []byte, flags uint32, ttl time.Duration) []byte {
	dst = append(dst, commandVersion, byte(op))
	dst = binary.BigEndian.AppendUint32(dst, flags)
	dst = binary.AppendUvarint(dst, ttlMillis(ttl))
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	return append(dst, value...)
}

// AppendRemove appends a REMOVE command to dst and returns the extended
// slice. Layout: version u8 | op u8 | key (rest).
func AppendRemove(dst []byte, key []byte) []byte {
	dst = append(dst, commandVersion, byte(OpRemove))
	return append(dst, key...)
}

// AppendTake appends a TAKE command (return and delete atomically, for TLS 1.3
// single-use tickets) to dst and returns the extended slice. Layout as REMOVE.
func AppendTake(dst []byte, key []byte) []byte {
	dst = append(dst, commandVersion, byte(OpTake))
	return append(dst, key...)
}

// AppendExpire appends an EXPIRE command to dst: it deletes every entry whose
// expiry is at or before the batch time. The leader proposes it periodically
// so that expired sessions stop occupying memory on every replica.
func AppendExpire(dst []byte) []byte {
	return append(dst, commandVersion, byte(OpExpire))
}

// command is a decoded command. key and value alias the encoded bytes.
type command struct {
	op    Op
	flags uint32
	ttlMS uint64
	key   []byte
	value []byte
}

// ValidateCommand reports whether cmd is a well-formed command, so that a
// node can refuse garbage before proposing it to the cluster. Apply performs
// the same check and answers ResultInvalid for a command that fails it.
func ValidateCommand(cmd []byte) error {
	_, err := decodeCommand(cmd)
	return err
}

// CommandOp returns the kind of an encoded command (so that a caller can, for
// example, route reads and writes) or an error if cmd is malformed.
func CommandOp(cmd []byte) (Op, error) {
	c, err := decodeCommand(cmd)
	if err != nil {
		return 0, err
	}
	return c.op, nil
}

func decodeCommand(b []byte) (command, error) {
	var c command
	if len(b) < 2 {
		return c, fmt.Errorf("%w: command of %d bytes", ErrMalformed, len(b))
	}
	if b[0] != commandVersion {
		return c, fmt.Errorf("%w: unsupported command version %d", ErrMalformed, b[0])
	}
	c.op = Op(b[1])
	b = b[2:]
	switch c.op {
	case OpAdd, OpSet:
		if len(b) < 4 {
			return c, fmt.Errorf("%w: %v truncated", ErrMalformed, c.op)
		}
		c.flags = binary.BigEndian.Uint32(b)
		b = b[4:]
		ttl, n := binary.Uvarint(b)
		if n <= 0 {
			return c, fmt.Errorf("%w: %v bad ttl", ErrMalformed, c.op)
		}
		c.ttlMS = ttl
		b = b[n:]
		klen, n := binary.Uvarint(b)
		if n <= 0 || klen > uint64(len(b)-n) {
			return c, fmt.Errorf("%w: %v bad key length", ErrMalformed, c.op)
		}
		b = b[n:]
		c.key, c.value = b[:klen:klen], b[klen:]
		if len(c.value) > MaxValueLen {
			return c, fmt.Errorf("%w: value of %d bytes exceeds %d", ErrMalformed, len(c.value), MaxValueLen)
		}
	case OpRemove, OpTake:
		c.key = b
	case OpExpire:
		if len(b) != 0 {
			return c, fmt.Errorf("%w: EXPIRE with %d trailing bytes", ErrMalformed, len(b))
		}
		return c, nil
	case OpRotateTickets:
		_, err := decodeRotation(b)
		return c, err
	default:
		return c, fmt.Errorf("%w: unknown op %d", ErrMalformed, uint8(c.op))
	}
	if len(c.key) == 0 || len(c.key) > MaxKeyLen {
		return c, fmt.Errorf("%w: key of %d bytes (want 1..%d)", ErrMalformed, len(c.key), MaxKeyLen)
	}
	return c, nil
}

// Limits are the size caps applied when an entry is inserted. They travel
// inside every log entry (set from the leader's configuration), so every
// replica evicts identically even if the nodes' own flags differ. A zero
// field means "no limit".
type Limits struct {
	// MaxSessions caps the number of stored entries.
	MaxSessions int
	// MaxBytes caps the sum of key and value lengths of stored entries.
	MaxBytes int64
}

// EncodeBatch appends one log entry carrying cmds to dst and returns the
// extended slice. nowUnixMilli is the leader's clock; it becomes the time at
// which every command in the entry executes on every replica. Commands are
// copied verbatim (a malformed one yields ResultInvalid when applied).
//
// Layout:
//
//	version u8 | now i64 BE | max_sessions uvarint | max_bytes uvarint |
//	count uvarint | count × (len uvarint | command)
func EncodeBatch(dst []byte, nowUnixMilli int64, lim Limits, cmds [][]byte) []byte {
	dst = append(dst, batchVersion)
	dst = binary.BigEndian.AppendUint64(dst, uint64(nowUnixMilli))
	dst = binary.AppendUvarint(dst, uint64(max(lim.MaxSessions, 0)))
	dst = binary.AppendUvarint(dst, uint64(max(lim.MaxBytes, 0)))
	dst = binary.AppendUvarint(dst, uint64(len(cmds)))
	for _, c := range cmds {
		dst = binary.AppendUvarint(dst, uint64(len(c)))
		dst = append(dst, c...)
	}
	return dst
}

// batch is a decoded log entry; cmds alias the entry's bytes.
type batch struct {
	now  int64
	lim  Limits
	cmds [][]byte
}

// decodeBatch parses a whole entry before anything is applied, so a
// truncated or garbled entry is refused as a unit. cmds is reused scratch.
func decodeBatch(b []byte, cmds [][]byte) (batch, error) {
	var bt batch
	if len(b) < 9 {
		return bt, fmt.Errorf("%w: batch of %d bytes", ErrMalformed, len(b))
	}
	if b[0] != batchVersion {
		return bt, fmt.Errorf("%w: unsupported batch version %d", ErrMalformed, b[0])
	}
	bt.now = int64(binary.BigEndian.Uint64(b[1:]))
	b = b[9:]
	var vals [3]uint64
	for i := range vals {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return bt, fmt.Errorf("%w: batch header truncated", ErrMalformed)
		}
		vals[i] = v
		b = b[n:]
	}
	if vals[0] > math.MaxInt32 || vals[1] > math.MaxInt64 {
		return bt, fmt.Errorf("%w: batch limits out of range", ErrMalformed)
	}
	bt.lim = Limits{MaxSessions: int(vals[0]), MaxBytes: int64(vals[1])}
	count := vals[2]
	// Each command takes at least one length byte: bound count before
	// trusting it for an allocation.
	if count > uint64(len(b)) {
		return bt, fmt.Errorf("%w: batch claims %d commands in %d bytes", ErrMalformed, count, len(b))
	}
	cmds = cmds[:0]
	for i := uint64(0); i < count; i++ {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return bt, fmt.Errorf("%w: command %d truncated", ErrMalformed, i)
		}
		b = b[n:]
		cmds = append(cmds, b[:l:l])
		b = b[l:]
	}
	if len(b) != 0 {
		return bt, fmt.Errorf("%w: %d trailing bytes after batch", ErrMalformed, len(b))
	}
	bt.cmds = cmds
	return bt, nil
}

// Status is the outcome of one command.
type Status uint8

// Command outcomes. The numeric values travel between nodes (forwarded
// results) and must never change.
const (
	// ResultOK: the command took effect (ADD/SET stored, REMOVE/TAKE found
	// and deleted a live entry, EXPIRE ran).
	ResultOK Status = 0
	// ResultExists: ADD refused because a live entry with the key exists;
	// the existing entry is unchanged (distcache 0x65).
	ResultExists Status = 1
	// ResultNotFound: REMOVE or TAKE found no live entry.
	ResultNotFound Status = 2
	// ResultInvalid: the command was malformed and had no effect.
	ResultInvalid Status = 3
	// ResultNoSpace: the entry alone is larger than Limits.MaxBytes, so no
	// amount of eviction makes room; nothing changed (distcache maps it to
	// 0x65, as the original did when out of memory).
	ResultNoSpace Status = 4
)

// String returns the status name, for logs.
func (s Status) String() string {
	switch s {
	case ResultOK:
		return "OK"
	case ResultExists:
		return "EXISTS"
	case ResultNotFound:
		return "NOT_FOUND"
	case ResultInvalid:
		return "INVALID"
	case ResultNoSpace:
		return "NO_SPACE"
	default:
		return fmt.Sprintf("Status(%d)", uint8(s))
	}
}

// Result is the answer to one command. Value, Flags and Expiry are set only
// by a successful TAKE (Value is then non-nil, possibly empty).
type Result struct {
	Status Status
	Value  []byte
	Flags  uint32
	Expiry int64 // absolute expiry, Unix milliseconds
}

// resultHeaderLen is the size of an encoded Result carrying a value, before
// the value bytes.
const resultHeaderLen = 1 + 4 + 8

// Append appends the encoding of r to dst and returns the extended slice.
// Layout: status u8, and only when Value != nil: flags u32 BE | expiry i64 BE
// | value (rest). A result without a value is therefore a single byte.
func (r Result) Append(dst []byte) []byte {
	dst = append(dst, byte(r.Status))
	if r.Value == nil {
		return dst
	}
	dst = binary.BigEndian.AppendUint32(dst, r.Flags)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Expiry))
	return append(dst, r.Value...)
}

// DecodeResult decodes a Result produced by Result.Append. The returned Value
// aliases b.
func DecodeResult(b []byte) (Result, error) {
	var r Result
	switch {
	case len(b) == 0:
		return r, fmt.Errorf("%w: empty result", ErrMalformed)
	case len(b) == 1:
		r.Status = Status(b[0])
		return r, nil
	case len(b) < resultHeaderLen:
		return r, fmt.Errorf("%w: result of %d bytes", ErrMalformed, len(b))
	}
	r.Status = Status(b[0])
	r.Flags = binary.BigEndian.Uint32(b[1:])
	r.Expiry = int64(binary.BigEndian.Uint64(b[5:]))
	r.Value = b[resultHeaderLen:len(b):len(b)]
	return r, nil
}

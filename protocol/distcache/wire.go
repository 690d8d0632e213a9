package distcache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Wire constants from spec §3.1–§3.2. They are fixed by the C implementation;
// changing any of them breaks compatibility with existing distcache peers.
const (
	// HeaderSize is the size of every frame header.
	HeaderSize = 14
	// MaxFrameData is the largest data_len of one frame; every non-final frame
	// carries exactly this many bytes.
	MaxFrameData = 2048
	// MaxFrames is the largest number of frames in one message.
	MaxFrames = 16
	// MaxPayload is the largest reassembled message payload (16 × 2048).
	MaxPayload = MaxFrames * MaxFrameData
	// MaxFrameSize is the size of the largest possible frame on the wire.
	MaxFrameSize = HeaderSize + MaxFrameData
	// ProtoLevel is the proto_level sent in every frame: version 0x0011, patch 0.
	ProtoLevel uint32 = 0x00110000
	// ProtoVersion is the upper 16 bits of proto_level a receiver accepts; the
	// patch level (lower 16 bits) is ignored on receipt.
	ProtoVersion = 0x0011
	// MaxIDLen is the longest session id an ADD may store (ids of 1..64 bytes).
	MaxIDLen = 64
	// MaxTimeoutMS is the largest ADD timeout in milliseconds (7 days, inclusive).
	MaxTimeoutMS = 604_800_000
	// MaxTimeout is MaxTimeoutMS as a duration.
	MaxTimeout = MaxTimeoutMS * time.Millisecond
	// MaxAddData is the largest session data the server's ADD check allows.
	// The framing limit makes the real maximum 32768 − 8 − len(id).
	MaxAddData = 32768
	// addHeaderSize is the timeout_ms and id_len prefix of an ADD payload.
	addHeaderSize = 8
)

// Op is the operation field of a frame. All operations use op_class 0 ("user").
type Op uint8

// Operations. OpTake is this project's extension (see the package docs): C peers
// never send it, so accepting it does not change behaviour towards them.
const (
	OpAdd    Op = 0
	OpGet    Op = 1
	OpRemove Op = 2
	OpHave   Op = 3
	OpTake   Op = 4
)

// String returns the operation name used in logs and errors.
func (o Op) String() string {
	switch o {
	case OpAdd:
		return "ADD"
	case OpGet:
		return "GET"
	case OpRemove:
		return "REMOVE"
	case OpHave:
		return "HAVE"
	case OpTake:
		return "TAKE"
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// valid reports whether o may appear on the wire.
func (o Op) valid() bool { return o <= OpTake }

// Status is a one-byte result code (spec §4.1). The protocol has no other error
// channel, so a replicated server must map every failure onto one of these.
type Status byte

// Result codes. Values below 100 are generic, 100+ are ADD-specific.
const (
	StatusOK              Status = 0x00
	StatusNotOK           Status = 0x01
	StatusDisconnected    Status = 0x02
	StatusAddCorrupt      Status = 0x64
	StatusAddExists       Status = 0x65
	StatusAddTimeoutRange Status = 0x66
	StatusAddIDRange      Status = 0x67
	StatusAddDataRange    Status = 0x68
)

// String returns the original implementation's name for s.
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "OK"
	case StatusNotOK:
		return "NOTOK"
	case StatusDisconnected:
		return "DISCONNECTED"
	case StatusAddCorrupt:
		return "ADD_CORRUPT"
	case StatusAddExists:
		return "ADD_MATCHING_SESSION"
	case StatusAddTimeoutRange:
		return "ADD_TIMEOUT_RANGE"
	case StatusAddIDRange:
		return "ADD_ID_RANGE"
	case StatusAddDataRange:
		return "ADD_DATA_RANGE"
	}
	return fmt.Sprintf("Status(0x%02x)", byte(s))
}

// statusPayloads holds the one-byte response payload for every status so that
// answering a request does not allocate. It is read-only after initialisation;
// slices of it must never be written to.
var statusPayloads = func() (t [256]byte) {
	for i := range t {
		t[i] = byte(i)
	}
	return t
}()

// Payload returns the one-byte response payload carrying s. The returned slice is
// shared and must not be modified.
func (s Status) Payload() []byte { return statusPayloads[s : int(s)+1 : int(s)+1] }

// Message is one reassembled request or response. The decoder allocates a fresh
// Payload for every message, so a receiver may keep it (or sub-slices of it).
type Message struct {
	UID      uint32
	Op       Op
	Response bool
	Payload  []byte
}

// header is a decoded frame header.
type header struct {
	level    uint32
	response byte
	uid      uint32
	class    byte
	op       byte
	complete byte
	dataLen  uint16
}

func parseHeader(b []byte) header {
	_ = b[HeaderSize-1]
	return header{
		level:    binary.BigEndian.Uint32(b[0:4]),
		response: b[4],
		uid:      binary.BigEndian.Uint32(b[5:9]),
		class:    b[9],
		op:       b[10],
		complete: b[11],
		dataLen:  binary.BigEndian.Uint16(b[12:14]),
	}
}

// Sentinel errors for framing violations. Decoders return them wrapped in a
// *FrameError (which names the offending value); match with errors.Is.
var (
	ErrBadProtoLevel  = errors.New("unsupported protocol level")
	ErrBadDirection   = errors.New("bad is_response flag")
	ErrBadOpClass     = errors.New("bad op_class")
	ErrBadOp          = errors.New("bad operation")
	ErrBadComplete    = errors.New("bad complete flag")
	ErrShortFrame     = errors.New("non-final frame shorter than 2048 bytes")
	ErrUIDMismatch    = errors.New("continuation frame with a different request_uid")
	ErrOpMismatch     = errors.New("continuation frame with a different operation")
	ErrPayloadTooLong = errors.New("payload exceeds protocol limit")
)

// FrameError reports a header field that violates spec §3.4. The connection it
// came from is unusable afterwards: the C peers close it and so do we.
type FrameError struct {
	Field string // wire field name, e.g. "proto_level"
	Value uint32 // offending value
	Err   error  // one of the Err* sentinels
}

func (e *FrameError) Error() string {
	if e.Field == "proto_level" {
		return fmt.Sprintf("distcache: %v: %s 0x%08x (want 0x%04xxxxx)", e.Err, e.Field, e.Value, ProtoVersion)
	}
	return fmt.Sprintf("distcache: %v: %s = %d", e.Err, e.Field, e.Value)
}

// Unwrap returns the sentinel so errors.Is(err, ErrBadProtoLevel) etc. work.
func (e *FrameError) Unwrap() error { return e.Err }

// LimitError reports a size limit of the spec that a message or field exceeds,
// naming the limit and both values so that a log line is self-explanatory.
type LimitError struct {
	Limit string // e.g. "frame data length"
	Value int64
	Max   int64
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("distcache: %s %d exceeds limit %d", e.Limit, e.Value, e.Max)
}

// StatusError is a result code other than the one an operation hoped for. It is
// returned by the Client and by ParseAddRequest; errors.Is matches two
// StatusErrors with the same Status, so errors.Is(err, ErrExists) works.
type StatusError struct {
	Op     Op
	Status Status
	Err    error // optional detail, e.g. a *LimitError
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("distcache %v: status %v (0x%02x)", e.Op, e.Status, byte(e.Status))
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap exposes the detail error.
func (e *StatusError) Unwrap() error { return e.Err }

// Is reports whether target is a *StatusError with the same Status.
func (e *StatusError) Is(target error) bool {
	t, ok := target.(*StatusError)
	return ok && t.Status == e.Status
}

// Errors the Client returns for the protocol's expected negative answers.
var (
	// ErrNotFound is a definite miss: a GET/TAKE or HAVE answered NOTOK (0x01),
	// or a REMOVE of an absent id.
	ErrNotFound = errors.New("distcache: session not found")
	// ErrUnavailable is a server saying it cannot answer now, which is not a
	// miss: DISCONNECTED (0x02, a node that knows no leader or could not commit
	// in time, or a proxy that lost its upstream), any other status byte that
	// is neither the operation's success nor NOTOK, an answer of 2–4 bytes to
	// GET/TAKE, or an empty answer. The C library reads all of these as a GET
	// miss (spec §4.3); this Client does not, so that a failed TAKE never looks
	// like a ticket already used and a failed GET never like a session gone.
	// The *StatusError of a status byte wraps it: match with errors.Is.
	ErrUnavailable = errors.New("distcache: unavailable")
	// ErrExists is the answer to an ADD of an id that is already stored.
	ErrExists error = &StatusError{Op: OpAdd, Status: StatusAddExists}
	// ErrDisconnected is the 0x02 answer; errors.Is matches it for any
	// operation. Every ErrDisconnected answer is also ErrUnavailable.
	ErrDisconnected error = &StatusError{Status: StatusDisconnected, Err: ErrUnavailable}
	// ErrEmptyResponse is an answer with an empty payload, which dc_client
	// (and dcctl proxy) sends when it has no upstream connection. It wraps
	// ErrUnavailable.
	ErrEmptyResponse = fmt.Errorf("%w: empty response payload (upstream not connected)", ErrUnavailable)
)

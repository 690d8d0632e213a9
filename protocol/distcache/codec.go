package distcache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Direction selects which messages a Decoder accepts (spec §3.4 "direction"):
// a server-side endpoint accepts only requests, a client-side one only responses.
type Direction uint8

// Directions.
const (
	Requests  Direction = 0
	Responses Direction = 1
)

// readBufSize is the Decoder's read buffer. It must hold at least one whole
// frame (MaxFrameSize); larger values let one read syscall pick up many
// pipelined requests at a small per-connection memory cost.
const readBufSize = 8 << 10

// Decoder reads messages from a byte stream that may arrive in pieces of any
// size (one byte at a time works). It waits for each whole frame before using
// it, which is the fix for the C off-by-four bug (spec §10.1), and validates
// every header field as soon as its bytes are buffered, so garbage such as an
// HTTP request is rejected after its first bytes instead of after a timeout.
//
// After a framing error the Decoder is poisoned: every later call returns the
// same error, because the byte stream can no longer be trusted.
type Decoder struct {
	r    io.Reader
	want byte // required is_response value

	buf        []byte
	start, end int
	rerr       error // sticky read error, surfaced once buffered data is used
	err        error // sticky framing error

	// Reassembly state of a multi-frame message.
	inMsg  bool
	uid    uint32
	op     Op
	frames int
	acc    []byte
}

// NewDecoder returns a Decoder reading from r and accepting messages of the
// given direction only.
func NewDecoder(r io.Reader, dir Direction) *Decoder {
	return &Decoder{r: r, want: byte(dir), buf: make([]byte, readBufSize)}
}

// Buffered returns the number of received bytes not yet consumed by Decode.
func (d *Decoder) Buffered() int { return d.end - d.start }

// Partial reports whether the decoder holds part of a message: a stream that
// stops now stops mid-message. Servers use it to choose between the mid-frame
// read timeout and the idle timeout.
func (d *Decoder) Partial() bool { return d.inMsg || d.end > d.start }

// Decode reads the next complete message into m. It allocates nothing except
// m.Payload (one exact-size slice per message). It returns io.EOF if the
// stream ends cleanly between messages, an error wrapping io.ErrUnexpectedEOF
// if it ends mid-message, a *FrameError or *LimitError for invalid input, and
// read errors (e.g. deadline exceeded) wrapped.
func (d *Decoder) Decode(m *Message) error {
	if d.err != nil {
		return d.err
	}
	for {
		for d.end-d.start < HeaderSize {
			if err := d.checkPrefix(d.buf[d.start:d.end]); err != nil {
				return d.fail(err)
			}
			if err := d.readMore(); err != nil {
				return err
			}
		}
		h := parseHeader(d.buf[d.start : d.start+HeaderSize])
		if err := d.checkHeader(h); err != nil {
			return d.fail(err)
		}
		n := HeaderSize + int(h.dataLen)
		for d.end-d.start < n {
			if err := d.readMore(); err != nil {
				return err
			}
		}
		data := d.buf[d.start+HeaderSize : d.start+n]
		d.start += n
		if d.start == d.end {
			d.start, d.end = 0, 0
		}
		if !d.inMsg && h.complete == 1 {
			// Hot path: one-frame message, one allocation.
			p := make([]byte, len(data))
			copy(p, data)
			*m = Message{UID: h.uid, Op: Op(h.op), Response: h.response == 1, Payload: p}
			return nil
		}
		if !d.inMsg {
			d.inMsg, d.uid, d.op, d.frames, d.acc = true, h.uid, Op(h.op), 0, d.acc[:0]
		}
		d.acc = append(d.acc, data...)
		d.frames++
		if h.complete == 1 {
			p := make([]byte, len(d.acc))
			copy(p, d.acc)
			*m = Message{UID: d.uid, Op: d.op, Response: d.want == 1, Payload: p}
			// d.acc is kept for the next multi-frame message: at most
			// MaxPayload bytes per connection that ever sent a large message.
			d.inMsg = false
			return nil
		}
	}
}

func (d *Decoder) fail(err error) error {
	d.err = err
	return err
}

// readMore performs one Read into the free space of the buffer.
func (d *Decoder) readMore() error {
	if d.rerr != nil {
		return d.readErr()
	}
	if d.end == len(d.buf) {
		d.end = copy(d.buf, d.buf[d.start:d.end])
		d.start = 0
	}
	n, err := d.r.Read(d.buf[d.end:])
	d.end += n
	if err != nil {
		d.rerr = err
		if n == 0 {
			return d.readErr()
		}
	}
	return nil
}

func (d *Decoder) readErr() error {
	if errors.Is(d.rerr, io.EOF) {
		if !d.Partial() {
			return io.EOF
		}
		return fmt.Errorf("distcache: stream ended mid-message (%d bytes of an unfinished frame buffered, %d frames reassembled): %w",
			d.end-d.start, d.frames*btoi(d.inMsg), io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("distcache: read: %w", d.rerr)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// checkPrefix validates the header fields fully contained in a partial header.
func (d *Decoder) checkPrefix(b []byte) error {
	if len(b) >= 2 {
		if v := binary.BigEndian.Uint16(b[0:2]); v != ProtoVersion {
			lvl := uint32(v) << 16
			if len(b) >= 4 {
				lvl = binary.BigEndian.Uint32(b[0:4])
			}
			return &FrameError{Field: "proto_level", Value: lvl, Err: ErrBadProtoLevel}
		}
	}
	if len(b) >= 5 {
		if err := d.checkDirection(b[4]); err != nil {
			return err
		}
	}
	if len(b) >= 10 && b[9] != 0 {
		return &FrameError{Field: "op_class", Value: uint32(b[9]), Err: ErrBadOpClass}
	}
	if len(b) >= 11 && !Op(b[10]).valid() {
		return &FrameError{Field: "operation", Value: uint32(b[10]), Err: ErrBadOp}
	}
	if len(b) >= 12 && b[11] > 1 {
		return &FrameError{Field: "complete", Value: uint32(b[11]), Err: ErrBadComplete}
	}
	return nil
}

func (d *Decoder) checkDirection(v byte) error {
	if v > 1 {
		return &FrameError{Field: "is_response", Value: uint32(v), Err: ErrBadDirection}
	}
	if v != d.want {
		return &FrameError{Field: "is_response", Value: uint32(v), Err: ErrBadDirection}
	}
	return nil
}

// checkHeader validates a whole header against spec §3.4, in the table's order.
func (d *Decoder) checkHeader(h header) error {
	if h.level>>16 != ProtoVersion {
		return &FrameError{Field: "proto_level", Value: h.level, Err: ErrBadProtoLevel}
	}
	if err := d.checkDirection(h.response); err != nil {
		return err
	}
	if h.class != 0 {
		return &FrameError{Field: "op_class", Value: uint32(h.class), Err: ErrBadOpClass}
	}
	if !Op(h.op).valid() {
		return &FrameError{Field: "operation", Value: uint32(h.op), Err: ErrBadOp}
	}
	if h.complete > 1 {
		return &FrameError{Field: "complete", Value: uint32(h.complete), Err: ErrBadComplete}
	}
	if h.dataLen > MaxFrameData {
		return &LimitError{Limit: "frame data length", Value: int64(h.dataLen), Max: MaxFrameData}
	}
	if h.complete == 0 && h.dataLen != MaxFrameData {
		return &FrameError{Field: "data_len", Value: uint32(h.dataLen), Err: ErrShortFrame}
	}
	if d.inMsg {
		if h.uid != d.uid {
			return &FrameError{Field: "request_uid", Value: h.uid, Err: ErrUIDMismatch}
		}
		if Op(h.op) != d.op {
			return &FrameError{Field: "operation", Value: uint32(h.op), Err: ErrOpMismatch}
		}
		if d.frames+1 > MaxFrames {
			return &LimitError{Limit: "frames per message", Value: int64(d.frames + 1), Max: MaxFrames}
		}
		if total := len(d.acc) + int(h.dataLen); total > MaxPayload {
			return &LimitError{Limit: "message payload size", Value: int64(total), Max: MaxPayload}
		}
	}
	return nil
}

// AppendMessage appends m to dst as one or more frames (spec §3.3): 2048-byte
// chunks, the last one holding the remainder, one empty frame for an empty
// payload, never a trailing empty frame. It allocates only if dst must grow.
func AppendMessage(dst []byte, m *Message) ([]byte, error) {
	if len(m.Payload) > MaxPayload {
		return dst, &LimitError{Limit: "message payload size", Value: int64(len(m.Payload)), Max: MaxPayload}
	}
	if !m.Op.valid() {
		return dst, &FrameError{Field: "operation", Value: uint32(m.Op), Err: ErrBadOp}
	}
	var resp byte
	if m.Response {
		resp = 1
	}
	p := m.Payload
	for {
		n := min(len(p), MaxFrameData)
		var complete byte
		if n == len(p) {
			complete = 1
		}
		dst = binary.BigEndian.AppendUint32(dst, ProtoLevel)
		dst = append(dst, resp)
		dst = binary.BigEndian.AppendUint32(dst, m.UID)
		dst = append(dst, 0, byte(m.Op), complete)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
		dst = append(dst, p[:n]...)
		p = p[n:]
		if complete == 1 {
			return dst, nil
		}
	}
}

// EncodedLen returns the number of wire bytes AppendMessage produces for a
// payload of n bytes (n ≤ MaxPayload).
func EncodedLen(n int) int {
	frames := (n + MaxFrameData - 1) / MaxFrameData
	if frames == 0 {
		frames = 1
	}
	return frames*HeaderSize + n
}

// AddRequest is a parsed ADD payload (spec §4.2). ID and Data alias the payload.
type AddRequest struct {
	TimeoutMS uint32
	ID        []byte
	Data      []byte
}

// Timeout returns the entry lifetime as a duration.
func (a AddRequest) Timeout() time.Duration { return time.Duration(a.TimeoutMS) * time.Millisecond }

// ErrAddTooShort is an ADD payload shorter than 8 bytes. The C server answers it
// by closing the connection (spec §4.2 row 1), and so must a replacement.
var ErrAddTooShort = errors.New("ADD payload shorter than 8 bytes")

// ParseAddRequest applies the spec's ADD checks (§4.2 rows 1–5, in that order).
// Row 1 returns an error wrapping ErrAddTooShort (close the connection); rows
// 2–5 return a *StatusError whose Status is the answer to send.
func ParseAddRequest(payload []byte) (AddRequest, error) {
	if len(payload) < addHeaderSize {
		return AddRequest{}, fmt.Errorf("distcache: %d-byte %w", len(payload), ErrAddTooShort)
	}
	timeout := binary.BigEndian.Uint32(payload[0:4])
	idLen := binary.BigEndian.Uint32(payload[4:8])
	if timeout > MaxTimeoutMS {
		return AddRequest{}, &StatusError{Op: OpAdd, Status: StatusAddTimeoutRange,
			Err: &LimitError{Limit: "ADD timeout_ms", Value: int64(timeout), Max: MaxTimeoutMS}}
	}
	rest := uint64(len(payload) - addHeaderSize)
	if uint64(idLen) >= rest {
		return AddRequest{}, &StatusError{Op: OpAdd, Status: StatusAddCorrupt,
			Err: fmt.Errorf("id_len %d leaves no session data in a %d-byte payload", idLen, len(payload))}
	}
	if idLen == 0 || idLen > MaxIDLen {
		return AddRequest{}, &StatusError{Op: OpAdd, Status: StatusAddIDRange,
			Err: &LimitError{Limit: "session id length", Value: int64(idLen), Max: MaxIDLen}}
	}
	data := payload[addHeaderSize+idLen:]
	if len(data) == 0 || len(data) > MaxAddData {
		return AddRequest{}, &StatusError{Op: OpAdd, Status: StatusAddDataRange,
			Err: &LimitError{Limit: "session data length", Value: int64(len(data)), Max: MaxAddData}}
	}
	return AddRequest{TimeoutMS: timeout, ID: payload[addHeaderSize : addHeaderSize+idLen], Data: data}, nil
}

// AppendAddPayload appends the ADD request payload for (timeoutMS, id, data).
func AppendAddPayload(dst []byte, timeoutMS uint32, id, data []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, timeoutMS)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(id)))
	dst = append(dst, id...)
	return append(dst, data...)
}

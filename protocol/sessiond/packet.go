package sessiond

import (
	"errors"
	"fmt"
)

// Packet types, the second byte of every datagram (CACHE_CMD_* and
// CACHE_RESP_* in stunnel's src/ctx.c).
const (
	TypeNew      byte = 0x00 // request: store the session; no answer
	TypeGet      byte = 0x01 // request: look the session up; answered
	TypeRemove   byte = 0x02 // request: forget the session; no answer
	TypeNotFound byte = 0x80 // answer to TypeGet: miss
	TypeFound    byte = 0x81 // answer to TypeGet: hit, the value follows the header
)

// Layout constants of stunnel's CACHE_PACKET.
const (
	// Version is the only protocol version stunnel sends and accepts.
	Version = 1
	// IDSize is SSL_MAX_SSL_SESSION_ID_LENGTH: shorter ids are zero padded.
	IDSize = 32
	// HeaderSize is version(1) + type(1) + timeout(2) + id(32).
	HeaderSize = 4 + IDSize
	// MaxValueSize is stunnel's MAX_VAL_LEN: it neither sends nor can
	// receive a larger encoded session.
	MaxValueSize = 512
	// MaxPacketSize is the largest datagram of the protocol.
	MaxPacketSize = HeaderSize + MaxValueSize
	// MaxTimeout is the largest timeout stunnel sends (18 hours, in seconds).
	MaxTimeout = 64800
)

// Decoding errors; Decode wraps them with detail, test with errors.Is.
var (
	ErrShortPacket = errors.New("sessiond: datagram shorter than the header")
	ErrLongPacket  = errors.New("sessiond: datagram longer than the protocol allows")
	ErrVersion     = errors.New("sessiond: unsupported version")
	ErrType        = errors.New("sessiond: unknown packet type")
	ErrValue       = errors.New("sessiond: value not allowed for this packet type")
)

// Packet is one sessiond datagram. Value aliases the decoded buffer.
type Packet struct {
	Type    byte
	Timeout uint16 // seconds; meaningful in TypeNew only, 0 in the others
	ID      [IDSize]byte
	Value   []byte // the DER session: TypeNew and TypeFound only
}

// Decode parses a datagram. It accepts exactly what stunnel sends and
// answers: NEW and FOUND carry 1 to MaxValueSize value bytes, GET, REMOVE and
// NOT_FOUND none.
func Decode(b []byte) (Packet, error) {
	var p Packet
	switch {
	case len(b) < HeaderSize:
		return p, fmt.Errorf("%w: %d bytes", ErrShortPacket, len(b))
	case len(b) > MaxPacketSize:
		return p, fmt.Errorf("%w: %d bytes", ErrLongPacket, len(b))
	case b[0] != Version:
		return p, fmt.Errorf("%w %d", ErrVersion, b[0])
	}
	p.Type = b[1]
	p.Timeout = uint16(b[2])<<8 | uint16(b[3])
	copy(p.ID[:], b[4:HeaderSize])
	value := b[HeaderSize:]
	switch p.Type {
	case TypeNew, TypeFound:
		if len(value) == 0 {
			return p, fmt.Errorf("%w: type %#02x without a session", ErrValue, p.Type)
		}
		p.Value = value
	case TypeGet, TypeRemove, TypeNotFound:
		if len(value) != 0 {
			return p, fmt.Errorf("%w: type %#02x with %d trailing bytes", ErrValue, p.Type, len(value))
		}
	default:
		return p, fmt.Errorf("%w %#02x", ErrType, p.Type)
	}
	return p, nil
}

// Append appends the datagram encoding of p to dst. It does not validate p.
func (p *Packet) Append(dst []byte) []byte {
	dst = append(dst, Version, p.Type, byte(p.Timeout>>8), byte(p.Timeout))
	dst = append(dst, p.ID[:]...)
	return append(dst, p.Value...)
}

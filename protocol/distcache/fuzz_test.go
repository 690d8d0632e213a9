package distcache

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzDecoder feeds arbitrary bytes, split into arbitrary pieces, to the
// decoder in both directions. It must never panic, must return only typed
// errors, and every decoded message must re-encode to bytes that decode to
// the same message.
func FuzzDecoder(f *testing.F) {
	for _, s := range goldenSession {
		f.Add(unhex(f, s.req), uint8(1))
		f.Add(unhex(f, s.resp), uint8(3))
	}
	for _, c := range closeCases {
		f.Add(unhex(f, c.frames), uint8(7))
	}
	big, _ := bigAddPayload(5120)
	multi, _ := AppendMessage(nil, &Message{UID: 1, Op: OpAdd, Payload: big})
	f.Add(multi, uint8(0))
	f.Add(multi[:len(multi)-3], uint8(2))
	f.Add(unhex(f, "0011ffff 00 00000005 00 04 01 0003 616263"), uint8(5))
	f.Add(unhex(f, strings.Repeat("00110000 00 00000001 00 01 01 0000", 3)), uint8(1))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), uint8(4))

	f.Fuzz(func(t *testing.T, wire []byte, chunk uint8) {
		for _, dir := range []Direction{Requests, Responses} {
			r := &chunkReader{b: wire, n: int(chunk%16) + 1}
			dec := NewDecoder(r, dir)
			for {
				var m Message
				err := dec.Decode(&m)
				if err != nil {
					var fe *FrameError
					var le *LimitError
					if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.As(err, &fe) && !errors.As(err, &le) {
						t.Fatalf("untyped error %v", err)
					}
					if err2 := dec.Decode(&m); !errors.Is(err, io.EOF) && err2 == nil {
						t.Fatal("decoder recovered after an error")
					}
					break
				}
				if len(m.Payload) > MaxPayload || m.Response != (dir == Responses) || !m.Op.valid() {
					t.Fatalf("invalid message decoded: %+v", m)
				}
				re, err := AppendMessage(nil, &m)
				if err != nil {
					t.Fatal(err)
				}
				var m2 Message
				if err := NewDecoder(bytes.NewReader(re), dir).Decode(&m2); err != nil || m2.UID != m.UID || m2.Op != m.Op || !bytes.Equal(m2.Payload, m.Payload) {
					t.Fatalf("round trip: %v", err)
				}
				if m.Op == OpAdd {
					ParseAddRequest(m.Payload) // must not panic
				}
			}
		}
	})
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[n:]
	return n, nil
}

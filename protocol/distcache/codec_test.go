package distcache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func decodeAll(t *testing.T, r io.Reader, dir Direction) ([]Message, error) {
	t.Helper()
	dec := NewDecoder(r, dir)
	var out []Message
	for {
		var m Message
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		out = append(out, m)
	}
}

func TestGoldenRoundTrip(t *testing.T) {
	for _, step := range goldenSession {
		t.Run(step.name, func(t *testing.T) {
			for _, c := range []struct {
				wire []byte
				dir  Direction
			}{{unhex(t, step.req), Requests}, {unhex(t, step.resp), Responses}} {
				msgs, err := decodeAll(t, bytes.NewReader(c.wire), c.dir)
				if err != nil || len(msgs) != 1 {
					t.Fatalf("decode %x: %d msgs, err %v", c.wire, len(msgs), err)
				}
				if msgs[0].Response != (c.dir == Responses) {
					t.Fatalf("Response = %v", msgs[0].Response)
				}
				got, err := AppendMessage(nil, &msgs[0])
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, c.wire) {
					t.Fatalf("re-encoded\n got %x\nwant %x", got, c.wire)
				}
			}
		})
	}
}

// TestGoldenEncodeFromFields builds §9.1 from its fields (not from the wire).
func TestGoldenEncodeFromFields(t *testing.T) {
	type step struct {
		uid  uint32
		op   Op
		req  []byte
		resp []byte
	}
	steps := []step{
		{1, OpAdd, AppendAddPayload(nil, 60000, []byte("abc"), []byte("hello")), StatusOK.Payload()},
		{2, OpGet, []byte("abc"), []byte("hello")},
		{3, OpGet, []byte("xyz"), StatusNotOK.Payload()},
		{4, OpHave, []byte("abc"), StatusOK.Payload()},
		{5, OpHave, []byte("xyz"), StatusNotOK.Payload()},
		{6, OpAdd, AppendAddPayload(nil, 60000, []byte("abc"), []byte("other")), StatusAddExists.Payload()},
		{7, OpRemove, []byte("abc"), StatusOK.Payload()},
		{8, OpRemove, []byte("abc"), StatusNotOK.Payload()},
		{0xdeadbeef, OpHave, []byte("xyz"), StatusNotOK.Payload()},
	}
	for i, s := range steps {
		req, err := AppendMessage(nil, &Message{UID: s.uid, Op: s.op, Payload: s.req})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := AppendMessage(nil, &Message{UID: s.uid, Op: s.op, Response: true, Payload: s.resp})
		if err != nil {
			t.Fatal(err)
		}
		if want := unhex(t, contiguous91[2*i]); !bytes.Equal(req, want) {
			t.Errorf("step %d req\n got %x\nwant %x", i+1, req, want)
		}
		if want := unhex(t, contiguous91[2*i+1]); !bytes.Equal(resp, want) {
			t.Errorf("step %d resp\n got %x\nwant %x", i+1, resp, want)
		}
	}
}

func bigAddPayload(dataLen int) (payload, data []byte) {
	data = make([]byte, dataLen)
	for i := range data {
		data[i] = byte(i*7 + i/251)
	}
	return AppendAddPayload(nil, 0xea60, []byte("big"), data), data
}

// TestMultiFrameGolden checks §9.4 frame by frame.
func TestMultiFrameGolden(t *testing.T) {
	payload, data := bigAddPayload(5120)
	if len(payload) != 5131 {
		t.Fatalf("payload %d bytes", len(payload))
	}
	req, err := AppendMessage(nil, &Message{UID: 1, Op: OpAdd, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := AppendMessage(nil, &Message{UID: 2, Op: OpGet, Response: true, Payload: data})
	if err != nil {
		t.Fatal(err)
	}
	checkFrames := func(wire []byte, headers []string, body []byte) {
		t.Helper()
		off, boff := 0, 0
		for i, h := range headers {
			want := unhex(t, h)
			if !bytes.Equal(wire[off:off+HeaderSize], want) {
				t.Fatalf("frame %d header %x, want %x", i, wire[off:off+HeaderSize], want)
			}
			n := int(binary.BigEndian.Uint16(want[12:]))
			if !bytes.Equal(wire[off+HeaderSize:off+HeaderSize+n], body[boff:boff+n]) {
				t.Fatalf("frame %d data differs", i)
			}
			off += HeaderSize + n
			boff += n
		}
		if off != len(wire) || boff != len(body) {
			t.Fatalf("consumed %d/%d wire, %d/%d body", off, len(wire), boff, len(body))
		}
	}
	checkFrames(req, []string{"00110000 00 00000001 00 00 00 0800", "00110000 00 00000001 00 00 00 0800", "00110000 00 00000001 00 00 01 040b"}, payload)
	if !bytes.HasPrefix(req[HeaderSize:], unhex(t, "0000ea60 00000003 626967")) {
		t.Fatalf("ADD payload prefix %x", req[HeaderSize:HeaderSize+11])
	}
	checkFrames(resp, []string{"00110000 01 00000002 00 01 00 0800", "00110000 01 00000002 00 01 00 0800", "00110000 01 00000002 00 01 01 0400"}, data)

	msgs, err := decodeAll(t, iotest.OneByteReader(bytes.NewReader(req)), Requests)
	if err != nil || len(msgs) != 1 || !bytes.Equal(msgs[0].Payload, payload) || msgs[0].UID != 1 || msgs[0].Op != OpAdd {
		t.Fatalf("decode multi-frame: %v, %d msgs", err, len(msgs))
	}
	a, err := ParseAddRequest(msgs[0].Payload)
	if err != nil || string(a.ID) != "big" || !bytes.Equal(a.Data, data) || a.TimeoutMS != 60000 {
		t.Fatalf("ParseAddRequest: %+v %v", a, err)
	}
}

func TestFragmentationBoundaries(t *testing.T) {
	for _, n := range []int{0, 1, 2047, 2048, 2049, 4096, 4069, 4072, 32767, 32768} {
		p := bytes.Repeat([]byte{0xab}, n)
		wire, err := AppendMessage(nil, &Message{UID: 9, Op: OpGet, Response: true, Payload: p})
		if err != nil {
			t.Fatal(n, err)
		}
		if len(wire) != EncodedLen(n) {
			t.Fatalf("%d: wire %d bytes, EncodedLen %d", n, len(wire), EncodedLen(n))
		}
		wantFrames := max(1, (n+2047)/2048)
		if got := (len(wire) - n) / HeaderSize; got != wantFrames {
			t.Fatalf("%d: %d frames, want %d", n, got, wantFrames)
		}
		msgs, err := decodeAll(t, iotest.OneByteReader(bytes.NewReader(wire)), Responses)
		if err != nil || len(msgs) != 1 || !bytes.Equal(msgs[0].Payload, p) {
			t.Fatalf("%d: %v %d", n, err, len(msgs))
		}
	}
	_, err := AppendMessage(nil, &Message{Op: OpGet, Payload: make([]byte, MaxPayload+1)})
	var le *LimitError
	if !errors.As(err, &le) || le.Value != MaxPayload+1 || le.Max != MaxPayload {
		t.Fatalf("oversize encode: %v", err)
	}
}

// TestOneByteStream decodes the whole golden session fed one byte at a time.
func TestOneByteStream(t *testing.T) {
	var stream []byte
	for _, s := range goldenSession {
		stream = append(stream, unhex(t, s.req)...)
	}
	big, _ := bigAddPayload(5120)
	stream, _ = AppendMessage(stream, &Message{UID: 77, Op: OpAdd, Payload: big})
	msgs, err := decodeAll(t, iotest.OneByteReader(bytes.NewReader(stream)), Requests)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != len(goldenSession)+1 {
		t.Fatalf("%d messages", len(msgs))
	}
	var re []byte
	for i := range msgs {
		re, _ = AppendMessage(re, &msgs[i])
	}
	if !bytes.Equal(re, stream) {
		t.Fatal("re-encoded stream differs")
	}
}

func TestDecodeErrors(t *testing.T) {
	want := map[string]func(error) bool{
		"is_response 1":            func(e error) bool { return errors.Is(e, ErrBadDirection) },
		"is_response 2":            func(e error) bool { return errors.Is(e, ErrBadDirection) },
		"op_class 1":               func(e error) bool { return errors.Is(e, ErrBadOpClass) },
		"operation 5":              func(e error) bool { return errors.Is(e, ErrBadOp) },
		"complete 2":               func(e error) bool { return errors.Is(e, ErrBadComplete) },
		"data_len 2049":            func(e error) bool { var l *LimitError; return errors.As(e, &l) && l.Value == 2049 && l.Max == 2048 },
		"short non-final frame":    func(e error) bool { return errors.Is(e, ErrShortFrame) },
		"continuation uid differs": func(e error) bool { return errors.Is(e, ErrUIDMismatch) },
		"continuation op differs":  func(e error) bool { return errors.Is(e, ErrOpMismatch) },
		"version 0x0010":           func(e error) bool { var f *FrameError; return errors.As(e, &f) && f.Value == 0x00100000 },
		"ascii text":               func(e error) bool { return errors.Is(e, ErrBadProtoLevel) },
	}
	for _, c := range closeCases {
		check, ok := want[c.name]
		if !ok {
			continue // a handler-level case
		}
		t.Run(c.name, func(t *testing.T) {
			wire := append(unhex(t, c.frames), unhex(t, validHAVE)...)
			msgs, err := decodeAll(t, iotest.OneByteReader(bytes.NewReader(wire)), Requests)
			if len(msgs) != 0 || err == nil || !check(err) {
				t.Fatalf("got %d msgs, err %v", len(msgs), err)
			}
			if !strings.HasPrefix(err.Error(), "distcache: ") {
				t.Fatalf("error text %q", err)
			}
		})
	}
}

func TestFrameLimit(t *testing.T) {
	// 16 full frames (32768 bytes) then a 17th, empty, final frame.
	var wire []byte
	for range 16 {
		wire = append(wire, unhex(t, "00110000 00 00000001 00 01 00 0800")...)
		wire = append(wire, make([]byte, 2048)...)
	}
	wire = append(wire, unhex(t, "00110000 00 00000001 00 01 01 0000")...)
	_, err := decodeAll(t, bytes.NewReader(wire), Requests)
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != "frames per message" || le.Value != 17 || le.Max != 16 {
		t.Fatalf("err = %v", err)
	}
}

func TestPatchLevelIgnoredAndTake(t *testing.T) {
	msgs, err := decodeAll(t, bytes.NewReader(unhex(t, "0011ffff 00 00000005 00 04 01 0003 616263")), Requests)
	if err != nil || len(msgs) != 1 || msgs[0].Op != OpTake {
		t.Fatalf("%v %v", msgs, err)
	}
}

func TestTruncatedStream(t *testing.T) {
	wire := unhex(t, validHAVE)
	for cut := 1; cut < len(wire); cut++ {
		_, err := decodeAll(t, bytes.NewReader(wire[:cut]), Requests)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut %d: %v", cut, err)
		}
	}
}

func TestParseAddRequestOrder(t *testing.T) {
	cases := []struct {
		payload []byte
		status  Status
	}{
		{AppendAddPayload(nil, MaxTimeoutMS+1, nil, nil), StatusAddTimeoutRange}, // row 2 before row 3
		{AppendAddPayload(nil, 1000, []byte("abc"), nil), StatusAddCorrupt},
		{AppendAddPayload(nil, 1000, nil, []byte("x")), StatusAddIDRange},
		{AppendAddPayload(nil, 1000, bytes.Repeat([]byte("A"), 65), []byte("x")), StatusAddIDRange},
	}
	for i, c := range cases {
		_, err := ParseAddRequest(c.payload)
		var se *StatusError
		if !errors.As(err, &se) || se.Status != c.status || !errors.Is(err, &StatusError{Status: c.status}) {
			t.Errorf("case %d: %v, want %v", i, err, c.status)
		}
	}
	if _, err := ParseAddRequest(make([]byte, 7)); !errors.Is(err, ErrAddTooShort) {
		t.Errorf("7 bytes: %v", err)
	}
	_, err := ParseAddRequest(AppendAddPayload(nil, 1, []byte("abc"), nil))
	if !errors.Is(err, &StatusError{Status: StatusAddCorrupt}) {
		t.Error(err)
	}
}

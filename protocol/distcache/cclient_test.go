package distcache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol/internal/frontendtest"
)

// cReceiver models how libdistcache receives answers (DC_PLUG_IO_read_flush over
// a NAL_BUFFER, spec §10 item 1): one read(2) per readiness into a 4,096-byte
// buffer, up to its free space, then frames taken from the front of the buffer
// as long as DC_MSG_pre_decode calls them complete. pre_decode counts a frame
// header as 10 bytes instead of 14, so it calls a frame complete when its last
// 1–4 bytes are missing; the C code then goes on with the previous frame's data.
// The model records that as fooled and waits for the whole frame, so that later
// answers are judged on their own.
type cReceiver struct {
	buf    [cBufSize]byte // keeps stale bytes beyond used, as the C buffer does
	used   int
	msg    []byte // payload of the message being reassembled
	fooled bool   // the message being reassembled was mis-decoded
}

// cDecode is DC_MSG_pre_decode's verdict.
type cDecode int

const (
	cIncomplete cDecode = iota
	cOK
	cCorrupt
)

// preDecode follows DC_MSG_pre_decode's arithmetic step by step: five bytes
// checked for one counted, then uid and op_class five for five, operation and
// complete one each, data_len two; ten in all for a 14-byte header. Bytes it
// looks at beyond used are whatever the buffer held before, as in C.
func (r *cReceiver) preDecode() cDecode {
	b, n := r.buf[:], r.used
	if n < 5 {
		return cIncomplete
	}
	n--
	if binary.BigEndian.Uint32(b)>>16 != ProtoVersion || b[4] > 1 {
		return cCorrupt
	}
	if n < 5 {
		return cIncomplete
	}
	n -= 5
	if b[9] != 0 { // op_class
		return cCorrupt
	}
	if n < 1 {
		return cIncomplete
	}
	n--
	if b[10] > byte(OpHave) { // operation
		return cCorrupt
	}
	if n < 1 {
		return cIncomplete
	}
	n--
	complete := b[11]
	if complete > 1 {
		return cCorrupt
	}
	if n < 2 {
		return cIncomplete
	}
	dataLen := int(binary.BigEndian.Uint16(b[12:]))
	if dataLen > MaxFrameData || complete == 0 && dataLen < MaxFrameData {
		return cCorrupt
	}
	if n-2 < dataLen {
		return cIncomplete
	}
	return cOK
}

// take decodes what the buffer holds: done reports a complete message, with
// its payload and whether the C decoder was fooled on the way.
func (r *cReceiver) take() (msg []byte, done, fooled bool, err error) {
	for {
		switch r.preDecode() {
		case cIncomplete:
			return nil, false, false, nil
		case cCorrupt:
			return nil, false, false, errors.New("C decoder: corrupt frame")
		}
		h := parseHeader(r.buf[:HeaderSize])
		size := HeaderSize + int(h.dataLen)
		if r.used < size {
			// DC_MSG_decode fails silently here; libdistcache appends the
			// previous frame's data and, if complete is set, delivers it.
			r.fooled = true
			return nil, false, false, nil
		}
		r.msg = append(r.msg, r.buf[HeaderSize:size]...)
		r.used = copy(r.buf[:], r.buf[size:r.used]) // NAL_BUFFER_takedata
		if h.complete == 1 {
			msg, fooled := r.msg, r.fooled
			r.msg, r.fooled = r.msg[:0], false // valid until the next receive
			return msg, true, fooled, nil
		}
	}
}

// receive reads until one message is complete; read is one read(2).
func (r *cReceiver) receive(read func([]byte) (int, error)) ([]byte, bool, error) {
	for {
		if msg, done, fooled, err := r.take(); done || err != nil {
			return msg, fooled, err
		}
		n, err := read(r.buf[r.used:])
		if err != nil {
			return nil, false, err
		}
		r.used += n
	}
}

// answerData is the session data of every answer in these tests.
var answerData = bytes.Repeat([]byte{0xA5}, MaxPayload)

// answer encodes a GET answer of n data bytes.
func answer(n int) []byte {
	out, _ := AppendMessage(nil, &Message{UID: 7, Op: OpGet, Response: true, Payload: answerData[:n]})
	return out
}

// arrivals delivers a byte stream in the pieces given (what has arrived before
// each read), never more than the reader asks for.
type arrivals struct {
	data   []byte
	pieces []int
	ready  int // arrived and not yet read
}

func (a *arrivals) read(p []byte) (int, error) {
	if a.ready == 0 {
		if len(a.pieces) == 0 {
			return 0, io.EOF
		}
		a.ready, a.pieces = a.pieces[0], a.pieces[1:]
	}
	n := copy(p, a.data[:min(a.ready, len(a.data))])
	a.data, a.ready = a.data[n:], a.ready-n
	return n, nil
}

// TestCDecoderModel: the model reproduces the bug as measured against the C
// code (spec §10 item 1), and riskyLastFrame names exactly the answers it hits.
func TestCDecoderModel(t *testing.T) {
	r := new(cReceiver) // one connection: stale bytes stay in its buffer, as in C
	receive := func(stream []byte, pieces ...int) ([]byte, bool) {
		msg, fooled, err := r.receive((&arrivals{data: stream, pieces: pieces}).read)
		if err != nil {
			t.Fatalf("%d bytes in pieces %v: %v", len(stream), pieces, err)
		}
		return msg, fooled
	}
	// A whole answer that has arrived before the client reads (one write, or
	// a client that fell behind) fools it exactly for the risky sizes, and
	// every frame that arrives on its own is decoded right.
	var risky []int
	var stream []byte
	for n := 0; n <= MaxPayload; n++ {
		stream, _ = AppendMessage(stream[:0], &Message{UID: uint32(n), Op: OpGet, Response: true, Payload: answerData[:n]})
		msg, fooled := receive(stream, len(stream))
		if len(msg) != n {
			t.Fatalf("%d bytes: decoded %d", n, len(msg))
		}
		if fooled != riskyLastFrame(n) {
			t.Fatalf("%d bytes arriving at once: fooled %v, riskyLastFrame %v", n, fooled, riskyLastFrame(n))
		}
		if fooled {
			risky = append(risky, n)
		}
		var frames []int
		for rest := len(stream); rest > 0; rest -= MaxFrameSize {
			frames = append(frames, min(rest, MaxFrameSize))
		}
		if _, fooled := receive(stream, frames...); fooled {
			t.Fatalf("%d bytes arriving a frame at a time: fooled", n)
		}
	}
	if len(risky) != 4*15 || risky[0] != 4069 || risky[3] != 4072 || risky[4] != 6117 || risky[59] != 32744 {
		t.Fatalf("risky sizes %v; want 4069–4072, 6117–6120, … (4 per frame count)", risky)
	}
	// A frame whose last k bytes arrive late fools it for k = 1..4 only.
	for k := 1; k <= 8; k++ {
		stream := answer(300)
		if _, fooled := receive(stream, len(stream)-k, k); fooled != (k <= HeaderSize-cHeaderCount) {
			t.Errorf("last %d bytes late: fooled %v", k, fooled)
		}
	}
}

// writeStrategy is how a test server writes one encoded answer.
type writeStrategy func(nc net.Conn, out []byte) error

// oneWrite is what this server did before: the whole answer in one write.
func oneWrite(nc net.Conn, out []byte) error {
	_, err := nc.Write(out)
	return err
}

// framePerWrite is what the C server does: one write per frame.
func framePerWrite(nc net.Conn, out []byte) error {
	for len(out) > 0 {
		n := min(len(out), MaxFrameSize)
		if _, err := nc.Write(out[:n]); err != nil {
			return err
		}
		out = out[n:]
	}
	return nil
}

// serveWith answers every request on ln with data of the requested length (the
// payload is the length, decimal), written by w.
func serveWith(t *testing.T, ln net.Listener, w writeStrategy) {
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				dec := NewDecoder(nc, Requests)
				for {
					var m Message
					if dec.Decode(&m) != nil {
						return
					}
					var n int
					fmt.Sscan(string(m.Payload), &n)
					out, _ := AppendMessage(nil, &Message{UID: m.UID, Op: m.Op, Response: true, Payload: answerData[:n]})
					if w(nc, out) != nil {
						return
					}
				}
			}()
		}
	}()
}

// lengthHandler answers a GET with as many data bytes as its payload says.
var lengthHandler = HandlerFunc(func(_ context.Context, req *Message) ([]byte, error) {
	var n int
	fmt.Sscan(string(req.Payload), &n)
	return answerData[:n], nil
})

// cClient is a C client's connection: a blocking socket on a thread of its own,
// waiting in select(2) and then reading, as libdistcache does.
type cClient struct {
	fd  int
	set syscall.FdSet
}

func dialC(t *testing.T, addr string) *cClient {
	t.Helper()
	ta, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	sa := &syscall.SockaddrInet4{Port: ta.Port}
	copy(sa.Addr[:], ta.IP.To4())
	if err := syscall.Connect(fd, sa); err != nil {
		t.Fatal(err)
	}
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	tv := syscall.NsecToTimeval(int64(10 * time.Second))
	syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	return &cClient{fd: fd}
}

func (c *cClient) read(p []byte) (int, error) {
	for { // the Go runtime's signals interrupt system calls; C retries too
		c.set = syscall.FdSet{}
		c.set.Bits[c.fd/64] |= 1 << (uint(c.fd) % 64)
		tv := syscall.NsecToTimeval(int64(10 * time.Second))
		n, err := syscall.Select(c.fd+1, &c.set, nil, nil, &tv)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			return 0, fmt.Errorf("select: %d, %v", n, err)
		}
		if n, err = syscall.Read(c.fd, p); errors.Is(err, syscall.EINTR) {
			continue
		}
		if err == nil && n == 0 {
			err = io.EOF
		}
		return n, err
	}
}

// writeAll writes b to a blocking socket, retrying after signals.
func writeAll(fd int, b []byte) (int, error) {
	for {
		n, err := syscall.Write(fd, b)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		return n, err
	}
}

// foolRate asks for answers of each length rounds times over one connection,
// one request in flight, and returns the fraction a C client mis-decodes.
func foolRate(t *testing.T, addr string, lengths []int, rounds int) float64 {
	runtime.LockOSThread() // a thread of its own, sleeping in the kernel as a C client's
	defer runtime.UnlockOSThread()
	c := dialC(t, addr)
	var r cReceiver
	fooled, total := 0, 0
	for i := range rounds {
		for _, n := range lengths {
			req, _ := AppendMessage(nil, &Message{UID: uint32(i), Op: OpGet, Payload: fmt.Append(nil, n)})
			if _, err := writeAll(c.fd, req); err != nil {
				t.Fatal(err)
			}
			msg, f, err := r.receive(c.read)
			if err != nil {
				t.Fatalf("answer of %d bytes: %v", n, err)
			}
			if len(msg) != n {
				t.Fatalf("answer of %d bytes decoded as %d", n, len(msg))
			}
			total++
			if f {
				fooled++
			}
		}
	}
	return float64(fooled) / float64(total)
}

// TestCClientOverLoopback measures, over real loopback sockets, how often a C
// client (the model above, in select and read on its own thread) mis-decodes
// the risky answers as this server writes them, against writing each answer in
// one write (what it did before) and a frame per write (the C server). Other
// multi-frame sizes are never mis-decoded.
func TestCClientOverLoopback(t *testing.T) {
	if testing.Short() {
		t.Skip("measures timing over loopback")
	}
	var risky, safe []int
	for frames := 2; frames <= MaxFrames; frames++ {
		base := (frames - 1) * MaxFrameData
		risky = append(risky, base+2021, base+2022, base+2023, base+2024)
		safe = append(safe, base+2020, base+2025, base+1000)
	}
	listen := func() net.Listener {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	one, perFrame := listen(), listen()
	serveWith(t, one, oneWrite)
	serveWith(t, perFrame, framePerWrite)
	srv := &Server{Handler: lengthHandler}
	ours := listen()
	go srv.Serve(ours)
	t.Cleanup(func() { srv.Close() })

	const rounds = 10
	rates := map[string]float64{}
	for _, v := range []struct {
		name string
		ln   net.Listener
	}{{"one write", one}, {"frame per write", perFrame}, {"server", ours}} {
		rates[v.name] = foolRate(t, v.ln.Addr().String(), risky, rounds)
		if f := foolRate(t, v.ln.Addr().String(), safe, 2); f != 0 {
			t.Errorf("%s: %.0f %% of answers of other multi-frame sizes mis-decoded", v.name, 100*f)
		}
	}
	t.Logf("risky answers mis-decoded by a C client (%d each): one write %.1f %%, frame per write %.1f %%, this server %.1f %%",
		rounds*len(risky), 100*rates["one write"], 100*rates["frame per write"], 100*rates["server"])
	if rates["one write"] < 0.9 {
		t.Errorf("the model caught %.0f %% of one-write answers; the C decoder is fooled by nearly all", 100*rates["one write"])
	}
	if rates["server"] >= rates["one write"]/2 {
		t.Errorf("this server's risky answers fool the C client in %.0f %% of cases; one write: %.0f %%",
			100*rates["server"], 100*rates["one write"])
	}
}

// TestMultiFrameAnswerWrittenPerFrame: an answer of three frames pipelined
// behind a small one leaves in four writes, the small answer and each frame on
// its own, and both are answered correctly.
func TestMultiFrameAnswerWrittenPerFrame(t *testing.T) {
	ln := frontendtest.Listen(t)
	srv := &Server{Handler: lengthHandler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	nc, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req, _ := AppendMessage(nil, &Message{UID: 1, Op: OpGet, Payload: []byte("100")})
	req, _ = AppendMessage(req, &Message{UID: 2, Op: OpGet, Payload: []byte("5000")})
	if _, err := nc.Write(req); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	dec := NewDecoder(nc, Responses)
	for _, want := range []struct {
		uid uint32
		n   int
	}{{1, 100}, {2, 5000}} {
		var m Message
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		if m.UID != want.uid || !bytes.Equal(m.Payload, answerData[:want.n]) {
			t.Fatalf("answer uid %d of %d bytes; want uid %d of %d", m.UID, len(m.Payload), want.uid, want.n)
		}
	}
	if w := ln.Writes.Load(); w != 4 {
		t.Fatalf("a small answer and a three-frame one took %d writes; want 4", w)
	}
}

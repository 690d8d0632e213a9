package integration

// Hostile and broken input against real dcnode processes (issue #9): malformed,
// oversized, truncated, stalled and foreign-protocol input on every listener of one
// node of a three-node cluster, while well-behaved clients keep adding and reading
// sessions on the same node through every protocol. For each input the test asserts
// the outcome (the protocol's exact error answer, or a close within a deadline), that
// the node's log gained one line naming the reason for that very connection, and
// that /healthz still answers; at the end no well-behaved request failed and no
// acknowledged session is missing.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol/distcache"
	"github.com/distcache-replicated/distcache/protocol/sessiond"
)

// hostileReadTimeout is the nodes' -read-timeout in the bad-input suite: short, so
// that the stalled-request cases end quickly, and still far above what a
// well-behaved request needs on loopback.
const hostileReadTimeout = time.Second

// dcFrame is one distcache frame with every header field under the test's control,
// so that it can lie about any of them. A negative dataLen means len(data).
type dcFrame struct {
	level    uint32
	response byte
	uid      uint32
	class    byte
	op       byte
	complete byte
	dataLen  int
	data     []byte
}

func (f dcFrame) bytes() []byte {
	n := f.dataLen
	if n < 0 {
		n = len(f.data)
	}
	b := binary.BigEndian.AppendUint32(nil, f.level)
	b = append(b, f.response)
	b = binary.BigEndian.AppendUint32(b, f.uid)
	b = append(b, f.class, f.op, f.complete)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	return append(b, f.data...)
}

// req is a valid one-frame request header with the given op and data; callers
// then break one field.
func req(uid uint32, op distcache.Op, data []byte) dcFrame {
	return dcFrame{level: distcache.ProtoLevel, uid: uid, op: byte(op), complete: 1, dataLen: -1, data: data}
}

// dcRequest encodes a valid request message (split into frames as needed).
func dcRequest(uid uint32, op distcache.Op, payload []byte) []byte {
	b, err := distcache.AppendMessage(nil, &distcache.Message{UID: uid, Op: op, Payload: payload})
	if err != nil {
		panic(err)
	}
	return b
}

// dcAnswer is the exact response message a node sends.
func dcAnswer(uid uint32, op distcache.Op, payload []byte) []byte {
	b, err := distcache.AppendMessage(nil, &distcache.Message{UID: uid, Op: op, Response: true, Payload: payload})
	if err != nil {
		panic(err)
	}
	return b
}

// addPayload builds an ADD payload whose id_len field may lie.
func addPayload(timeoutMS, idLen uint32, id, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, timeoutMS)
	b = binary.BigEndian.AppendUint32(b, idLen)
	return append(append(b, id...), data...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// fullFrame is a non-final 2048-byte frame of a multi-frame request.
func fullFrame(uid uint32, op distcache.Op) []byte {
	return dcFrame{level: distcache.ProtoLevel, uid: uid, op: byte(op), complete: 0, dataLen: -1,
		data: bytes.Repeat([]byte{'x'}, distcache.MaxFrameData)}.bytes()
}

// tlsClientHello is the start of a TLS 1.2 ClientHello record, as a client
// configured for TLS sends first: record header, handshake header, version, random.
func tlsClientHello() []byte {
	b := []byte{0x16, 0x03, 0x01, 0x00, 0xdc, 0x01, 0x00, 0x00, 0xd8, 0x03, 0x03}
	r := rand.New(rand.NewPCG(7, 7))
	for range 32 {
		b = append(b, byte(r.UintN(256)))
	}
	return append(b, 0x20) // session id length; the rest never matters
}

// garbage is seeded random bytes that start with something no protocol accepts.
func garbage(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	b[0], b[1] = 0xde, 0xad
	return b
}

// hostileCase is one malformed or hostile input and what the node must do with it.
type hostileCase struct {
	name  string
	proto string // distcache, memcache, resp, sessiond or admin
	send  []byte
	// halfClose shuts the client's write side after sending.
	halfClose bool
	// dribble sends send one byte at a time, every dribble (slowloris).
	dribble time.Duration
	// answer is the exact reply expected before anything else ("" none); for admin,
	// the expected status line prefix.
	answer string
	// closed: the node must close the connection (after answer) within a deadline;
	// otherwise it must keep serving it, which a follow-up request checks.
	closed bool
	// log is a substring that a new line of the node's log, naming this
	// connection's address, must contain ("" none expected).
	log string
}

// hostileEnv is the shared cluster of the bad-input suite.
type hostileEnv struct {
	fc     *feCluster
	victim *testNode
	fe     frontEnds
}

func (h *hostileEnv) addr(proto string) string {
	switch proto {
	case "distcache":
		return strings.TrimPrefix(h.victim.clientAddr, "IP:")
	case "memcache":
		return h.fe.memcache
	case "resp":
		return h.fe.resp
	case "sessiond":
		return h.fe.sessiond
	}
	return h.victim.adminAddr
}

func hostileCases() []hostileCase {
	lvl := distcache.ProtoLevel
	have := func(uid uint32) []byte { return req(uid, distcache.OpHave, []byte("abc")).bytes() }
	status := func(uid uint32, s distcache.Status) string {
		return string(dcAnswer(uid, distcache.OpAdd, s.Payload()))
	}
	addReq := func(uid uint32, p []byte) []byte { return dcRequest(uid, distcache.OpAdd, p) }
	var seventeen []byte
	for range 16 {
		seventeen = append(seventeen, fullFrame(9, distcache.OpAdd)...)
	}
	seventeen = append(seventeen, req(9, distcache.OpAdd, []byte("y")).bytes()...)
	var partial30K []byte
	for range 15 {
		partial30K = append(partial30K, fullFrame(10, distcache.OpAdd)...)
	}

	const malformed = "distcache: malformed request; closing connection"
	cases := []hostileCase{
		// ----- distcache -----
		{name: "http get", proto: "distcache", send: []byte("GET / HTTP/1.1\r\nHost: dc\r\n\r\n"), closed: true, log: "unsupported protocol level"},
		{name: "tls client hello", proto: "distcache", send: tlsClientHello(), closed: true, log: "unsupported protocol level"},
		{name: "binary garbage", proto: "distcache", send: garbage(4096, 1), closed: true, log: malformed},
		{name: "proto level 0x0010", proto: "distcache", send: cat(dcFrame{level: 0x00100000, uid: 1, op: 3, complete: 1, dataLen: -1, data: []byte("abc")}.bytes(), have(2)), closed: true, log: "proto_level 0x00100000"},
		{name: "request marked response", proto: "distcache", send: cat(dcFrame{level: lvl, response: 1, uid: 1, op: 3, complete: 1, dataLen: -1, data: []byte("abc")}.bytes(), have(2)), closed: true, log: "bad is_response flag"},
		{name: "is_response 2", proto: "distcache", send: dcFrame{level: lvl, response: 2, uid: 1, op: 3, complete: 1, dataLen: -1, data: []byte("abc")}.bytes(), closed: true, log: "bad is_response flag"},
		{name: "op_class 1", proto: "distcache", send: dcFrame{level: lvl, uid: 1, class: 1, op: 3, complete: 1, dataLen: -1, data: []byte("abc")}.bytes(), closed: true, log: "bad op_class"},
		{name: "operation 9", proto: "distcache", send: dcFrame{level: lvl, uid: 1, op: 9, complete: 1, dataLen: -1, data: []byte("abc")}.bytes(), closed: true, log: "bad operation"},
		{name: "complete 2", proto: "distcache", send: dcFrame{level: lvl, uid: 1, op: 3, complete: 2, dataLen: -1, data: []byte("abc")}.bytes(), closed: true, log: "bad complete flag"},
		{name: "data_len 2049", proto: "distcache", send: dcFrame{level: lvl, uid: 1, op: 3, complete: 1, dataLen: 2049, data: make([]byte, 2049)}.bytes(), closed: true, log: "frame data length 2049 exceeds limit 2048"},
		{name: "data_len 65535 lies", proto: "distcache", send: dcFrame{level: lvl, uid: 1, op: 1, complete: 1, dataLen: 65535, data: []byte("abc")}.bytes(), closed: true, log: "frame data length 65535 exceeds limit"},
		{name: "short non-final frame", proto: "distcache", send: dcFrame{level: lvl, uid: 1, op: 3, complete: 0, dataLen: -1, data: []byte("abc")}.bytes(), closed: true, log: "non-final frame shorter than 2048 bytes"},
		{name: "continuation other uid", proto: "distcache", send: cat(fullFrame(5, distcache.OpGet), req(6, distcache.OpGet, []byte("b")).bytes()), closed: true, log: "different request_uid"},
		{name: "continuation other op", proto: "distcache", send: cat(fullFrame(5, distcache.OpGet), req(5, distcache.OpHave, []byte("b")).bytes()), closed: true, log: "different operation"},
		{name: "17 frames (oversized value)", proto: "distcache", send: seventeen, closed: true, log: "frames per message 17 exceeds limit 16"},
		{name: "add payload 7 bytes", proto: "distcache", send: addReq(1, make([]byte, 7)), closed: true, log: "handler refused request; closing connection"},
		{name: "add timeout over 7 days", proto: "distcache", send: addReq(11, addPayload(distcache.MaxTimeoutMS+1, 3, []byte("abc"), []byte("data"))), answer: status(11, distcache.StatusAddTimeoutRange)},
		{name: "add id_len lies (10, 3 sent)", proto: "distcache", send: addReq(12, addPayload(1000, 10, []byte("abc"), nil)), answer: status(12, distcache.StatusAddCorrupt)},
		{name: "add id_len 4 GiB", proto: "distcache", send: addReq(13, addPayload(1000, 0xffffffff, []byte("abc"), []byte("data"))), answer: status(13, distcache.StatusAddCorrupt)},
		{name: "add id_len 0", proto: "distcache", send: addReq(14, addPayload(1000, 0, nil, []byte("hello"))), answer: status(14, distcache.StatusAddIDRange)},
		{name: "add oversized id (65)", proto: "distcache", send: addReq(15, addPayload(1000, 65, bytes.Repeat([]byte("A"), 65), []byte("x"))), answer: status(15, distcache.StatusAddIDRange)},
		{name: "get oversized id (30000)", proto: "distcache", send: dcRequest(16, distcache.OpGet, bytes.Repeat([]byte("i"), 30000)), answer: string(dcAnswer(16, distcache.OpGet, distcache.StatusNotOK.Payload()))},
		{name: "get empty id", proto: "distcache", send: dcRequest(17, distcache.OpGet, nil), answer: string(dcAnswer(17, distcache.OpGet, distcache.StatusNotOK.Payload()))},
		{name: "truncated header then EOF", proto: "distcache", send: have(1)[:9], halfClose: true, closed: true, log: "peer closed connection mid-message"},
		{name: "truncated frame then EOF", proto: "distcache", send: fullFrame(1, distcache.OpAdd)[:1000], halfClose: true, closed: true, log: "peer closed connection mid-message"},
		{name: "stalled partial frame", proto: "distcache", send: have(1)[:16], closed: true, log: "peer stalled mid-message longer than the read timeout"},
		{name: "stalled partial 30 KiB message", proto: "distcache", send: partial30K, closed: true, log: "peer stalled mid-message longer than the read timeout"},
		{name: "slowloris dribble", proto: "distcache", send: dcRequest(1, distcache.OpHave, []byte("slow-session-id-0123456789")), dribble: hostileReadTimeout / 8, closed: true, log: "peer stalled mid-message longer than the read timeout"},
		{name: "half-open after request", proto: "distcache", send: have(21), halfClose: true, answer: string(dcAnswer(21, distcache.OpHave, distcache.StatusNotOK.Payload())), closed: true},

		// ----- memcache -----
		{name: "tls client hello", proto: "memcache", send: tlsClientHello(), closed: true, log: "TLS handshake sent to the plaintext memcache port"},
		{name: "http get", proto: "memcache", send: []byte("GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"), closed: true, log: "HTTP request sent to the memcache port"},
		{name: "set byte count lies (short)", proto: "memcache", send: []byte("set k 0 0 5\r\n0123456789\r\n"), answer: "CLIENT_ERROR bad data chunk\r\n", closed: true, log: "data block not terminated by CRLF"},
		{name: "set byte count lies (long)", proto: "memcache", send: []byte("set k 0 0 100\r\n0123456789\r\n"), closed: true, log: "peer stalled mid-request longer than the read timeout"},
		{name: "set value over max-value-size", proto: "memcache", send: []byte("set big 0 0 70000\r\n" + strings.Repeat("v", 70000) + "\r\n"), answer: "SERVER_ERROR object too large for cache\r\n"},
		{name: "set 2 MiB declared", proto: "memcache", send: []byte("set big 0 0 2097152\r\nvvvv"), answer: "SERVER_ERROR object too large for cache\r\n", closed: true, log: "exceeds the 1048576 byte limit"},
		{name: "set negative byte count", proto: "memcache", send: []byte("set k 0 0 -1\r\n"), answer: "CLIENT_ERROR bad command line format\r\n", closed: true, log: "invalid byte count"},
		{name: "set bad flags", proto: "memcache", send: []byte("set k notanumber 0 1\r\nx\r\n"), answer: "CLIENT_ERROR bad command line format\r\n"},
		{name: "command line 5000 bytes", proto: "memcache", send: bytes.Repeat([]byte("g"), 5000), answer: "CLIENT_ERROR line too long\r\n", closed: true, log: "command line longer than 2048 bytes"},
		{name: "oversized key (251)", proto: "memcache", send: []byte("get " + strings.Repeat("k", 251) + "\r\n"), answer: "CLIENT_ERROR bad command line format\r\n"},
		{name: "unknown command", proto: "memcache", send: []byte("flush_all\r\n"), answer: "ERROR\r\n"},
		{name: "empty line", proto: "memcache", send: []byte("\r\n"), answer: "ERROR\r\n"},
		{name: "binary garbage line", proto: "memcache", send: []byte("\x00\x01\xfe\xff\x80\r\n"), answer: "ERROR\r\n"},
		{name: "truncated command then EOF", proto: "memcache", send: []byte("get k"), halfClose: true, closed: true, log: "peer closed connection mid-request"},
		{name: "stalled mid-line", proto: "memcache", send: []byte("ge"), closed: true, log: "peer stalled mid-request longer than the read timeout"},
		{name: "slowloris dribble", proto: "memcache", send: []byte("get slow-session-id-0123456789\r\n"), dribble: hostileReadTimeout / 8, closed: true, log: "peer stalled mid-request longer than the read timeout"},
		{name: "half-open after request", proto: "memcache", send: []byte("get nothing-here\r\n"), halfClose: true, answer: "END\r\n", closed: true},

		// ----- RESP -----
		{name: "1 GiB bulk length", proto: "resp", send: []byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1073741824\r\nvvvv"), answer: "-ERR Protocol error: invalid bulk length\r\n", closed: true, log: "invalid bulk length"},
		{name: "multibulk length 1e9", proto: "resp", send: []byte("*1000000000\r\n"), answer: "-ERR Protocol error: invalid multibulk length\r\n", closed: true, log: "invalid multibulk length"},
		{name: "multibulk not a number", proto: "resp", send: []byte("*abc\r\n"), answer: "-ERR Protocol error: invalid multibulk length\r\n", closed: true, log: "invalid multibulk length"},
		{name: "negative bulk length", proto: "resp", send: []byte("*1\r\n$-5\r\n"), answer: "-ERR Protocol error: invalid bulk length\r\n", closed: true, log: "invalid bulk length"},
		{name: "missing $", proto: "resp", send: []byte("*1\r\n:5\r\n"), answer: "-ERR Protocol error: expected '$'\r\n", closed: true, log: "expected '$'"},
		{name: "bulk length lies (short)", proto: "resp", send: []byte("*1\r\n$2\r\nPING\r\n"), answer: "-ERR Protocol error: bulk string not terminated by CRLF\r\n", closed: true, log: "bulk string not terminated by CRLF"},
		{name: "inline line 5000 bytes", proto: "resp", send: bytes.Repeat([]byte("x"), 5000), answer: "-ERR Protocol error: too big request\r\n", closed: true, log: "too big request"},
		{name: "value over max-value-size", proto: "resp", send: []byte("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$70000\r\n" + strings.Repeat("v", 70000) + "\r\n"), answer: "-ERR value too large for cache\r\n"},
		{name: "unknown command", proto: "resp", send: []byte("FLUSHALL\r\n"), answer: "-ERR unknown command 'FLUSHALL'\r\n"},
		{name: "wrong arity", proto: "resp", send: []byte("*1\r\n$3\r\nGET\r\n"), answer: "-ERR wrong number of arguments for 'get' command\r\n"},
		{name: "bad expiry", proto: "resp", send: []byte("SET k v EX soon\r\n"), answer: "-ERR value is not an integer or out of range\r\n"},
		{name: "tls client hello", proto: "resp", send: tlsClientHello(), closed: true, log: "TLS handshake sent to the plaintext RESP port"},
		{name: "http post", proto: "resp", send: []byte("POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"), closed: true, log: "HTTP request sent to the RESP port"},
		{name: "truncated bulk then EOF", proto: "resp", send: []byte("*2\r\n$3\r\nGET\r\n$10\r\nabc"), halfClose: true, closed: true, log: "peer closed connection mid-request"},
		{name: "stalled bulk (length lies long)", proto: "resp", send: []byte("*2\r\n$3\r\nGET\r\n$100\r\nabc\r\n"), closed: true, log: "peer stalled mid-request longer than the read timeout"},
		{name: "half-open after request", proto: "resp", send: []byte("PING\r\n"), halfClose: true, answer: "+PONG\r\n", closed: true},

		// ----- sessiond (UDP: ignored, logged, the socket keeps being served) -----
		{name: "empty datagram", proto: "sessiond", send: []byte{}, log: "datagram shorter than the header"},
		{name: "short datagram", proto: "sessiond", send: []byte{1, 1, 0, 0, 1, 2, 3, 4, 5, 6}, log: "datagram shorter than the header"},
		{name: "long datagram", proto: "sessiond", send: append([]byte{1, 0, 0, 60}, make([]byte, 600)...), log: "datagram longer than the protocol allows"},
		{name: "wrong version", proto: "sessiond", send: append([]byte{2, 1, 0, 0}, make([]byte, 32)...), log: "unsupported version 2"},
		{name: "unknown type", proto: "sessiond", send: append([]byte{1, 5, 0, 0}, make([]byte, 32)...), log: "unknown packet type"},
		{name: "answer type as request", proto: "sessiond", send: append([]byte{1, 0x81, 0, 0}, make([]byte, 40)...), log: "is an answer, not a request"},
		{name: "get with trailing bytes", proto: "sessiond", send: append([]byte{1, 1, 0, 0}, make([]byte, 40)...), log: "value not allowed for this packet type"},
		{name: "new without session", proto: "sessiond", send: append([]byte{1, 0, 0, 60}, make([]byte, 32)...), log: "value not allowed for this packet type"},

		// ----- admin HTTP (net/http answers; it logs nothing for these) -----
		{name: "binary garbage", proto: "admin", send: append(garbage(200, 2), "\r\n\r\n"...), answer: "HTTP/1.1 400 Bad Request", closed: true},
		{name: "2 MiB header", proto: "admin", send: []byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n"), answer: "HTTP/1.1 431 Request Header Fields Too Large", closed: true},
		{name: "2 MiB join body", proto: "admin", send: []byte("POST /v1/join HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n" + strings.Repeat("[", 2<<20)), answer: "HTTP/1.1 400 Bad Request"},
		{name: "bad request line", proto: "admin", send: []byte("GET\r\n\r\n"), answer: "HTTP/1.1 400 Bad Request", closed: true},
	}
	return cases
}

// TestHostileInput runs every hostile case against one node of a three-node cluster
// with all front-ends, with well-behaved clients of every protocol on the same node.
func TestHostileInput(t *testing.T) {
	// dcnode's default read consistency: a session read back on the node that
	// stored it is a local hit.
	fc := startFrontEndCluster(t, 3, clusterOptions{ReadConsistency: "leader-on-miss",
		ExtraArgs: []string{"-read-timeout", hostileReadTimeout.String()}})
	victim := fc.nodes[0]
	h := &hostileEnv{fc: fc, victim: victim, fe: fc.fe[victim.id]}

	good := startWellBehaved(t, h)
	cases := hostileCases()
	if len(cases) < 40 {
		t.Fatalf("only %d hostile cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.proto+"/"+tc.name, func(t *testing.T) {
			start := time.Now()
			if tc.proto == "sessiond" {
				h.runDatagram(t, tc)
			} else {
				h.runStream(t, tc)
			}
			if !victim.healthy() {
				t.Fatal("/healthz is not 200 after the case")
			}
			t.Logf("%s/%s: ok in %v", tc.proto, tc.name, time.Since(start).Round(time.Millisecond))
		})
	}
	t.Run("pipelined/distcache", func(t *testing.T) { h.pipelineDistcache(t, 10_000) })
	t.Run("pipelined/memcache", func(t *testing.T) { h.pipelineText(t, "memcache", 10_000) })
	t.Run("pipelined/resp", func(t *testing.T) { h.pipelineText(t, "resp", 10_000) })
	good.stopAndVerify(t)
	if !victim.healthy() {
		t.Fatal("/healthz is not 200 at the end")
	}
}

// runStream sends a case on a fresh TCP connection and checks answer, close and log.
func (h *hostileEnv) runStream(t *testing.T, tc hostileCase) {
	mark := len(h.victim.log.String())
	nc, err := net.DialTimeout("tcp", h.addr(tc.proto), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	local := nc.LocalAddr().String()
	// The node may close before everything is sent (it rejects garbage after its
	// first bytes), so write errors are expected and the reads below decide.
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		if tc.dribble > 0 {
			for i := range tc.send {
				if _, err := nc.Write(tc.send[i : i+1]); err != nil {
					return
				}
				time.Sleep(tc.dribble) // the pace of the attack, not synchronisation
			}
		} else {
			nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			nc.Write(tc.send)
		}
		if tc.halfClose {
			nc.(*net.TCPConn).CloseWrite()
		}
	}()
	defer func() { nc.Close(); <-wrote }()

	br := bufio.NewReader(nc)
	deadline := time.Now().Add(hostileReadTimeout + 5*time.Second)
	nc.SetReadDeadline(deadline)
	if tc.answer != "" {
		got := make([]byte, len(tc.answer))
		n, err := io.ReadFull(br, got)
		if string(got[:n]) != tc.answer {
			t.Fatalf("answer %q (%v), want %q", got[:n], err, tc.answer)
		}
		if tc.proto == "admin" {
			// The rest of the response (headers, body) up to the close or idle.
			nc.SetReadDeadline(time.Now().Add(2 * time.Second))
			if !tc.closed {
				return
			}
			io.Copy(io.Discard, br)
			nc.SetReadDeadline(deadline)
		}
	}
	if tc.closed {
		n, err := io.Copy(io.Discard, br)
		var ne net.Error
		switch {
		case err != nil && errors.As(err, &ne) && ne.Timeout():
			t.Fatalf("connection still open %v after the case started", time.Since(deadline.Add(-hostileReadTimeout-5*time.Second)).Round(time.Millisecond))
		case n != 0 && tc.proto != "admin":
			t.Fatalf("%d unexpected bytes before the close", n)
		case err != nil && !errors.Is(err, syscall.ECONNRESET):
			t.Fatalf("reading until close: %v", err)
		}
	} else {
		h.followUp(t, tc.proto, nc, br)
	}
	if tc.log != "" {
		waitFor(t, 5*time.Second, fmt.Sprintf("%s logs %q for %s", h.victim.id, tc.log, local), func() (bool, string) {
			l := logLineFor(h.victim.log.String()[mark:], local, tc.log)
			return l != "", "no such line yet"
		})
		t.Logf("logged: %s", logLineFor(h.victim.log.String()[mark:], local, tc.log))
	}
}

// logLineFor returns the first line of log that names addr and contains want.
func logLineFor(log, addr, want string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, addr) && strings.Contains(l, want) {
			return l
		}
	}
	return ""
}

// followUp checks that a connection the node kept open still serves a valid request.
func (h *hostileEnv) followUp(t *testing.T, proto string, nc net.Conn, br *bufio.Reader) {
	var send []byte
	var want string
	switch proto {
	case "distcache":
		send, want = req(77, distcache.OpHave, []byte("follow-up")).bytes(), string(dcAnswer(77, distcache.OpHave, distcache.StatusNotOK.Payload()))
	case "memcache":
		send, want = []byte("get follow-up\r\n"), "END\r\n"
	case "resp":
		send, want = []byte("PING\r\n"), "+PONG\r\n"
	case "admin":
		return
	}
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(send); err != nil {
		t.Fatalf("follow-up request: %v", err)
	}
	got := make([]byte, len(want))
	if n, err := io.ReadFull(br, got); err != nil || string(got) != want {
		t.Fatalf("follow-up answer %q (%v), want %q", got[:n], err, want)
	}
}

// runDatagram sends a malformed datagram until the node logs it (malformed-datagram
// lines are rate-limited to one a second), checks that it was not answered, and that
// the same socket is still served.
func (h *hostileEnv) runDatagram(t *testing.T, tc hostileCase) {
	mark := len(h.victim.log.String())
	uc, err := net.Dial("udp", h.fe.sessiond)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	local := uc.LocalAddr().String()
	buf := make([]byte, 2048)
	var line string
	deadline := time.Now().Add(5 * time.Second)
	for line == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q for %s", tc.log, local)
		}
		if _, err := uc.Write(tc.send); err != nil {
			t.Fatal(err)
		}
		uc.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		if n, err := uc.Read(buf); err == nil {
			t.Fatalf("malformed datagram answered with %x", buf[:n])
		}
		line = logLineFor(h.victim.log.String()[mark:], local, tc.log)
	}
	t.Logf("logged: %s", line)
	// A valid GET from the same socket is still answered.
	get := sessiond.Packet{Type: sessiond.TypeGet}
	copy(get.ID[:], "follow-up")
	if _, err := uc.Write(get.Append(nil)); err != nil {
		t.Fatal(err)
	}
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := uc.Read(buf)
	if err != nil {
		t.Fatalf("valid GET after the bad datagram: %v", err)
	}
	if p, err := sessiond.Decode(buf[:n]); err != nil || p.Type != sessiond.TypeNotFound {
		t.Fatalf("valid GET answered %x (%v), want NOT_FOUND", buf[:n], err)
	}
}

// pipelineDistcache writes n requests without reading, then reads every answer:
// all must arrive, in order, with the right uid and content.
func (h *hostileEnv) pipelineDistcache(t *testing.T, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := distcache.Dial(ctx, h.victim.clientAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	id, value := []byte("pipelined-id"), bytes.Repeat([]byte("P"), 48)
	if err := cl.Add(ctx, id, value, 10*time.Minute); err != nil && !errors.Is(err, distcache.ErrExists) {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", h.addr("distcache"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var out []byte
	for i := range n {
		op := distcache.OpGet
		if i%2 == 1 {
			op = distcache.OpHave
		}
		out = append(out, dcRequest(uint32(i+1), op, id)...)
	}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	start := time.Now()
	if _, err := nc.Write(out); err != nil {
		t.Fatalf("writing %d pipelined requests (%d bytes) without reading: %v", n, len(out), err)
	}
	dec := distcache.NewDecoder(nc, distcache.Responses)
	for i := range n {
		var m distcache.Message
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("answer %d of %d: %v", i+1, n, err)
		}
		want := value
		if i%2 == 1 {
			want = distcache.StatusOK.Payload()
		}
		if m.UID != uint32(i+1) || !bytes.Equal(m.Payload, want) {
			t.Fatalf("answer %d: uid %d payload %q, want uid %d payload %q", i+1, m.UID, m.Payload, i+1, want)
		}
	}
	t.Logf("%d pipelined distcache requests (%d bytes) answered in order in %v", n, len(out), time.Since(start))
}

// pipelineText does the same for memcache and RESP: n GETs of one stored key.
func (h *hostileEnv) pipelineText(t *testing.T, proto string, n int) {
	nc, err := net.Dial("tcp", h.addr(proto))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(40 * time.Second))
	br := bufio.NewReader(nc)
	key, value := "pipelined-"+proto, strings.Repeat("Q", 48)
	var set, get, answer string
	if proto == "memcache" {
		set = fmt.Sprintf("set %s 0 600 %d\r\n%s\r\n", key, len(value), value)
		get = "get " + key + "\r\n"
		answer = fmt.Sprintf("VALUE %s 0 %d\r\n%s\r\nEND\r\n", key, len(value), value)
		expectText(t, nc, br, set, "STORED\r\n")
	} else {
		set = fmt.Sprintf("SET %s %s EX 600\r\n", key, value)
		get = "GET " + key + "\r\n"
		answer = fmt.Sprintf("$%d\r\n%s\r\n", len(value), value)
		expectText(t, nc, br, set, "+OK\r\n")
	}
	start := time.Now()
	if _, err := nc.Write([]byte(strings.Repeat(get, n))); err != nil {
		t.Fatalf("writing %d pipelined GETs without reading: %v", n, err)
	}
	got := make([]byte, len(answer))
	for i := range n {
		if _, err := io.ReadFull(br, got); err != nil || string(got) != answer {
			t.Fatalf("answer %d of %d: %q (%v), want %q", i+1, n, got, err, answer)
		}
	}
	t.Logf("%d pipelined %s GETs answered in order in %v", n, proto, time.Since(start))
}

func expectText(t *testing.T, nc net.Conn, br *bufio.Reader, send, want string) {
	t.Helper()
	if _, err := io.WriteString(nc, send); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if n, err := io.ReadFull(br, got); err != nil || string(got) != want {
		t.Fatalf("sent %q: got %q (%v), want %q", send, got[:n], err, want)
	}
}

// wellBehaved is a set of clients, one per protocol, that add a new session and
// read it back in a loop for as long as the hostile cases run. Every failure is an
// error of the test; every acknowledged session is checked again at the end.
type wellBehaved struct {
	h      *hostileEnv
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	errs   []string
	stored map[string][]string // protocol -> keys acknowledged
}

func startWellBehaved(t *testing.T, h *hostileEnv) *wellBehaved {
	ctx, cancel := context.WithCancel(context.Background())
	w := &wellBehaved{h: h, cancel: cancel, stored: map[string][]string{}}
	t.Cleanup(func() { cancel(); w.wg.Wait() })
	for _, proto := range []string{"distcache", "memcache", "resp", "sessiond"} {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.loop(ctx, proto)
		}()
	}
	return w
}

func (w *wellBehaved) fail(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, fmt.Sprintf(format, args...))
}

func (w *wellBehaved) loop(ctx context.Context, proto string) {
	cl, err := newGoodClient(w.h, proto)
	if err != nil {
		w.fail("%s: %v", proto, err)
		return
	}
	defer cl.close()
	for i := 0; ctx.Err() == nil; i++ {
		key := fmt.Sprintf("good-%s-%06d", proto, i)
		value := goodValue(key)
		if err := cl.add(key, value); err != nil {
			w.fail("%s add %s: %v", proto, key, err)
			return
		}
		w.mu.Lock()
		w.stored[proto] = append(w.stored[proto], key)
		w.mu.Unlock()
		got, err := cl.get(key)
		if err != nil || got != value {
			w.fail("%s get %s: %q, %v", proto, key, got, err)
			return
		}
	}
}

// goodValue is the session data stored under key (non-secret test data).
func goodValue(key string) string { return "session-of-" + key + strings.Repeat("#", 40) }

// stopAndVerify stops the loops and reads every acknowledged session back through
// a fresh client of its protocol.
func (w *wellBehaved) stopAndVerify(t *testing.T) {
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.errs {
		t.Errorf("well-behaved client: %s", e)
	}
	for proto, keys := range w.stored {
		if len(keys) == 0 {
			t.Errorf("well-behaved %s client stored nothing", proto)
			continue
		}
		cl, err := newGoodClient(w.h, proto)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if got, err := cl.get(k); err != nil || got != goodValue(k) {
				t.Errorf("lost session: %s %s: %q, %v", proto, k, got, err)
			}
		}
		cl.close()
		t.Logf("well-behaved %s client: %d sessions added, all read back", proto, len(keys))
	}
}

// goodClient speaks one protocol correctly.
type goodClient struct {
	proto string
	dc    *distcache.Client
	nc    net.Conn
	br    *bufio.Reader
}

func newGoodClient(h *hostileEnv, proto string) (*goodClient, error) {
	c := &goodClient{proto: proto}
	var err error
	switch proto {
	case "distcache":
		c.dc, err = distcache.Dial(context.Background(), h.victim.clientAddr, distcache.WithRequestTimeout(10*time.Second))
	case "sessiond":
		c.nc, err = net.Dial("udp", h.addr(proto))
	default:
		c.nc, err = net.Dial("tcp", h.addr(proto))
		if err == nil {
			c.br = bufio.NewReader(c.nc)
		}
	}
	return c, err
}

func (c *goodClient) close() {
	if c.dc != nil {
		c.dc.Close()
	}
	if c.nc != nil {
		c.nc.Close()
	}
}

func (c *goodClient) add(key, value string) error {
	switch c.proto {
	case "distcache":
		return c.dc.Add(context.Background(), []byte(key), []byte(value), 10*time.Minute)
	case "memcache":
		return c.exchange(fmt.Sprintf("add %s 0 600 %d\r\n%s\r\n", key, len(value), value), "STORED\r\n")
	case "resp":
		return c.exchange(fmt.Sprintf("SET %s %s NX EX 600\r\n", key, value), "+OK\r\n")
	}
	p := sessiond.Packet{Type: sessiond.TypeNew, Timeout: 600, Value: []byte(value)}
	copy(p.ID[:], key)
	_, err := c.nc.Write(p.Append(nil))
	return err
}

func (c *goodClient) exchange(send, want string) error {
	c.nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.nc, send); err != nil {
		return err
	}
	got := make([]byte, len(want))
	if n, err := io.ReadFull(c.br, got); err != nil || string(got) != want {
		return fmt.Errorf("got %q (%v), want %q", got[:n], err, want)
	}
	return nil
}

func (c *goodClient) get(key string) (string, error) {
	switch c.proto {
	case "distcache":
		v, err := c.dc.Get(context.Background(), []byte(key))
		return string(v), err
	case "memcache":
		c.nc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c.nc, "get "+key+"\r\n"); err != nil {
			return "", err
		}
		var hdr string
		var flags, n int
		line, err := c.br.ReadString('\n')
		if err != nil {
			return "", err
		}
		if _, err := fmt.Sscanf(line, "VALUE %s %d %d\r\n", &hdr, &flags, &n); err != nil {
			return "", fmt.Errorf("answer %q", line)
		}
		b := make([]byte, n+len("\r\nEND\r\n"))
		if _, err := io.ReadFull(c.br, b); err != nil || string(b[n:]) != "\r\nEND\r\n" {
			return "", fmt.Errorf("value block %q: %v", b, err)
		}
		return string(b[:n]), nil
	case "resp":
		c.nc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c.nc, "GET "+key+"\r\n"); err != nil {
			return "", err
		}
		line, err := c.br.ReadString('\n')
		if err != nil {
			return "", err
		}
		var n int
		if _, err := fmt.Sscanf(line, "$%d\r\n", &n); err != nil || n < 0 {
			return "", fmt.Errorf("answer %q", line)
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(c.br, b); err != nil {
			return "", err
		}
		return string(b[:n]), nil
	}
	// sessiond: NEW is applied asynchronously, so a GET may miss at first.
	p := sessiond.Packet{Type: sessiond.TypeGet}
	copy(p.ID[:], key)
	buf := make([]byte, sessiond.MaxPacketSize)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.nc.Write(p.Append(nil)); err != nil {
			return "", err
		}
		c.nc.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.nc.Read(buf)
		if err != nil {
			continue // a lost datagram: ask again
		}
		a, err := sessiond.Decode(buf[:n])
		if err != nil || a.ID != p.ID {
			return "", fmt.Errorf("answer %x: %v", buf[:n], err)
		}
		if a.Type == sessiond.TypeFound {
			return string(a.Value), nil
		}
		pollPause()
	}
	return "", errors.New("not found within 10s of NEW")
}

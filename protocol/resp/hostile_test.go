package resp

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/internal/syncbuf"
)

// logBuffer collects a server's log lines so that a test can assert that a
// dropped connection was explained.
type logBuffer = syncbuf.Buffer

// TestForeignProtocolsClosedWithReason sends what misconfigured clients send to a
// plaintext RESP port: each connection is closed at once (no waiting for a
// newline or a timeout) and the log names the mistake.
func TestForeignProtocolsClosedWithReason(t *testing.T) {
	logs := &logBuffer{}
	addr := startServer(t, &Server{Cache: newMemCache(), ReadTimeout: time.Minute,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	good := dial(t, addr)
	cases := []struct{ name, send, reason string }{
		// A TLS 1.2 ClientHello record header and the start of its body: no newline.
		{"tls client hello", "\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03", "TLS handshake sent to the plaintext RESP port"},
		{"http request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP request sent to the RESP port"},
		{"http post body", "POST /x HTTP/1.0\r\n", "HTTP request sent to the RESP port"},
		{"http header", "Host: evil.example\r\n", "HTTP request sent to the RESP port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, addr)
			c.send(tc.send)
			c.expectClosed()
			if !strings.Contains(logs.String(), tc.reason) {
				t.Fatalf("log lacks %q:\n%s", tc.reason, logs)
			}
			good.send("*3\r\n$3\r\nSET\r\n$2\r\nok\r\n$2\r\nok\r\n")
			good.expect("+OK\r\n")
		})
	}
}

// TestStallLogged checks that a request stalled mid-line is closed with a line
// naming the read timeout, and one cut short by the peer with its own line.
func TestStallLogged(t *testing.T) {
	logs := &logBuffer{}
	addr := startServer(t, &Server{Cache: newMemCache(), ReadTimeout: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	c := dial(t, addr)
	c.send("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\nabc")
	c.expectClosed()
	if !strings.Contains(logs.String(), "peer stalled mid-request longer than the read timeout") {
		t.Fatalf("stall not logged:\n%s", logs)
	}
	c = dial(t, addr)
	c.send("*2\r\n$3\r\nGET\r\n$1\r\nk")
	c.nc.(interface{ CloseWrite() error }).CloseWrite()
	c.expectClosed()
	if !strings.Contains(logs.String(), "peer closed connection mid-request") {
		t.Fatalf("truncated request not logged:\n%s", logs)
	}
}

// stingyReader returns some bytes, then fails as a stalled socket would.
type stingyReader struct{ data []byte }

func (r *stingyReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.ErrNoProgress
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestAnnouncedBlockCostsWhatArrived announces the largest bulk string and sends
// only 100 bytes of it: the connection's buffer holds about what arrived, not what
// was announced, so memory per stalled connection stays small.
func TestAnnouncedBlockCostsWhatArrived(t *testing.T) {
	s := &Server{Cache: newMemCache(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	c := s.newConn(nil)
	c.BR = bufio.NewReaderSize(&stingyReader{data: []byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$65536\r\n" + strings.Repeat("v", 100))}, 4096)
	if err := c.readCommand(); err == nil {
		t.Fatal("a stalled bulk string was accepted")
	}
	if cap(c.arena) > 32<<10 { // what arrived plus at most one 16 KiB read chunk
		t.Fatalf("a 100-byte partial bulk string holds a %d byte buffer", cap(c.arena))
	}
}

// TestValuesAcrossReadChunks stores and reads back values around the 16 KiB read
// chunk and up to the largest allowed, pipelined in one write so that the argument
// arena is reused between requests.
func TestValuesAcrossReadChunks(t *testing.T) {
	addr := startServer(t, &Server{Cache: newMemCache()})
	c := dial(t, addr)
	sizes := []int{1, 16<<10 - 1, 16 << 10, 16<<10 + 1, 40000, DefaultMaxValueSize, 3}
	var req, want strings.Builder
	for i, n := range sizes {
		v := strings.Repeat(string(rune('a'+i)), n)
		key := fmt.Sprintf("k%d", i)
		fmt.Fprintf(&req, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(key), key, n, v, len(key), key)
		fmt.Fprintf(&want, "+OK\r\n$%d\r\n%s\r\n", n, v)
	}
	c.send(req.String())
	c.expect(want.String())
}

package frontendtest

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// LineProtocol describes a line-protocol front-end (memcache, RESP) to the
// hostile-input tests that every such front-end must pass.
type LineProtocol struct {
	// Port is the front-end's name as its log lines name its port.
	Port string
	// Start serves the front-end as set up until the test ends, and returns
	// its address.
	Start func(t *testing.T, s Setup) string
	// Set is a request that stores value under key, and its answer.
	Set func(key, value string) (req, answer string)
	// Get is a request that reads key, and its answer when key holds value.
	Get func(key, value string) (req, answer string)
	// SetHead is a request that stores under key a value announced as n
	// bytes, up to the value's first byte.
	SetHead func(key string, n int) string
	// MaxValue is the largest value the front-end stores by default.
	MaxValue int
}

// Setup is how a test wants a line-protocol front-end started.
type Setup struct {
	Store        *Store
	ReadTimeout  time.Duration // 0: the front-end's default
	WriteTimeout time.Duration // 0: the front-end's default
	Log          *slog.Logger  // nil: the test's log
	// Listener is served instead of a fresh loopback listener (see Listen).
	Listener net.Listener
	// Quick makes the Cache answer reads at once (the front-end's QuickCache,
	// backed by Store.GetNow), as the node's does.
	Quick bool
}

// Logger is the Setup's logger, or one writing to the test's log.
func (s Setup) Logger(t testing.TB) *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return Logger(t)
}

// Foreign is what a misconfigured client sends, and the reason the log must
// give for closing its connection.
type Foreign struct{ Name, Send, Reason string }

// ForeignProtocols sends what misconfigured clients send to the plaintext
// port (a TLS ClientHello, an HTTP request, and extra): each connection is
// closed at once (no waiting for a newline or a timeout), the log names the
// mistake, and a well-behaved connection is unaffected.
func ForeignProtocols(t *testing.T, p LineProtocol, extra ...Foreign) {
	logs, log := LogBuffer()
	addr := p.Start(t, Setup{Store: NewStore(), ReadTimeout: time.Minute, Log: log})
	good := Dial(t, addr)
	cases := append([]Foreign{
		// A TLS 1.2 ClientHello record header and the start of its body: no newline.
		{"tls client hello", "\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03", "TLS handshake sent to the plaintext " + p.Port + " port"},
		{"http request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP request sent to the " + p.Port + " port"},
	}, extra...)
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			c := Dial(t, addr)
			c.Send(tc.Send)
			c.ExpectClosed()
			if !strings.Contains(logs.String(), tc.Reason) {
				t.Fatalf("log lacks %q:\n%s", tc.Reason, logs)
			}
			req, answer := p.Set("ok", "ok")
			good.Send(req)
			good.Expect(answer)
		})
	}
}

// StallLogged checks that a request stalled mid-value is closed with a line
// naming the read timeout, and one cut short by the peer with its own line.
func StallLogged(t *testing.T, p LineProtocol) {
	logs, log := LogBuffer()
	addr := p.Start(t, Setup{Store: NewStore(), ReadTimeout: 200 * time.Millisecond, Log: log})
	c := Dial(t, addr)
	c.Send(p.SetHead("k", 10) + "abc")
	c.ExpectClosed()
	if !strings.Contains(logs.String(), "peer stalled mid-request longer than the read timeout") {
		t.Fatalf("stall not logged:\n%s", logs)
	}
	c = Dial(t, addr)
	get, _ := p.Get("k", "")
	c.Send(strings.TrimSuffix(get, "\r\n"))
	c.NC.(interface{ CloseWrite() error }).CloseWrite()
	c.ExpectClosed()
	if !strings.Contains(logs.String(), "peer closed connection mid-request") {
		t.Fatalf("truncated request not logged:\n%s", logs)
	}
}

// ValuesAcrossReadChunks stores and reads back values around the 16 KiB read
// chunk and up to the largest allowed, pipelined in one write so that the
// connection's value buffer is reused between requests.
func ValuesAcrossReadChunks(t *testing.T, p LineProtocol) {
	c := Dial(t, p.Start(t, Setup{Store: NewStore(), ReadTimeout: time.Minute}))
	var req, want strings.Builder
	for i, n := range []int{1, 16<<10 - 1, 16 << 10, 16<<10 + 1, 40000, p.MaxValue, 3} {
		key, v := fmt.Sprintf("k%d", i), strings.Repeat(string(rune('a'+i)), n)
		set, stored := p.Set(key, v)
		get, found := p.Get(key, v)
		req.WriteString(set + get)
		want.WriteString(stored + found)
	}
	c.Send(req.String())
	c.Expect(want.String())
}

// PartialValueCostsWhatArrived gives read the head of a request that announces
// a value of the largest size and only 100 bytes of it, then a stall: read must
// fail, and held (the capacity of the connection's value buffer) stay about
// what arrived, not what was announced, so that memory per stalled connection
// stays small.
func PartialValueCostsWhatArrived(t *testing.T, head string, read func(*bufio.Reader) error, held func() int) {
	r := bufio.NewReaderSize(&StingyReader{Data: []byte(head + strings.Repeat("v", 100))}, 4096)
	if err := read(r); err == nil {
		t.Fatal("a stalled value was accepted")
	}
	if n := held(); n > 32<<10 { // what arrived plus at most one 16 KiB read chunk
		t.Fatalf("a 100-byte partial value holds a %d byte buffer", n)
	}
}

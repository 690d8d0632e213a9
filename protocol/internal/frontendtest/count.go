package frontendtest

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// CountingListener counts, over every connection it accepts, what the server
// does to its sockets: Write calls and deadlines set. Tests use it to check
// that answers share writes and that answering a request that arrived whole
// leaves the deadlines alone.
type CountingListener struct {
	net.Listener
	Writes         atomic.Int64
	ReadDeadlines  atomic.Int64 // SetReadDeadline calls (SetDeadline counts as both)
	WriteDeadlines atomic.Int64 // SetWriteDeadline calls
}

// Listen returns a CountingListener on loopback, closed at cleanup.
func Listen(t testing.TB) *CountingListener {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &CountingListener{Listener: ln}
}

// Accept wraps the accepted connection so that it is counted.
func (l *CountingListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: nc, l: l}, nil
}

type countingConn struct {
	net.Conn
	l *CountingListener
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.l.Writes.Add(1)
	return c.Conn.Write(b)
}

func (c *countingConn) SetDeadline(t time.Time) error {
	c.l.ReadDeadlines.Add(1)
	c.l.WriteDeadlines.Add(1)
	return c.Conn.SetDeadline(t)
}

func (c *countingConn) SetReadDeadline(t time.Time) error {
	c.l.ReadDeadlines.Add(1)
	return c.Conn.SetReadDeadline(t)
}

func (c *countingConn) SetWriteDeadline(t time.Time) error {
	c.l.WriteDeadlines.Add(1)
	return c.Conn.SetWriteDeadline(t)
}

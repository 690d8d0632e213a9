package connset

import (
	"bufio"
	"log/slog"
	"net"
	"time"

	"github.com/distcache-replicated/distcache/protocol/internal/reqctx"
)

// Line is what every connection of a line-protocol front-end has, whatever it
// parses: the socket, its buffers, the per-request context and the timeouts. A
// front-end's connection embeds it and adds its own parsing state; Wake and
// Close make it a Conn once it has a Serve method (see Line.Serve).
type Line struct {
	NC  net.Conn // nil when driven directly by tests and benchmarks
	BR  *bufio.Reader
	BW  *bufio.Writer
	Log *slog.Logger // tagged with the peer's address
	Req *reqctx.Context

	ReadTimeout  time.Duration // a started request must arrive within it
	IdleTimeout  time.Duration // 0: idle connections stay open
	WriteTimeout time.Duration // bounds every flush
}

// NewLine sets up a connection whose reader holds a whole command line of
// maxLine bytes.
func NewLine(nc net.Conn, maxLine int, log *slog.Logger, req *reqctx.Context, read, idle, write time.Duration) Line {
	l := Line{
		NC: nc, BR: bufio.NewReaderSize(nc, max(4096, maxLine+2)), BW: bufio.NewWriterSize(nc, 4096),
		Log: log, Req: req, ReadTimeout: read, IdleTimeout: idle, WriteTimeout: write,
	}
	if nc != nil {
		l.Log = log.With("remote", Remote(nc))
	}
	return l
}

// Wake interrupts a read waiting for the next request, so a shutdown is noticed.
func (l *Line) Wake() {
	if l.NC != nil {
		l.NC.SetReadDeadline(time.Unix(1, 0))
	}
}

// Close closes the connection at once.
func (l *Line) Close() {
	if l.NC != nil {
		l.NC.Close()
	}
}

// Flush sends the answers written so far, within the write timeout.
func (l *Line) Flush() error {
	if l.BW.Buffered() == 0 {
		return nil
	}
	if l.NC != nil {
		l.NC.SetWriteDeadline(time.Now().Add(l.WriteTimeout))
	}
	return l.BW.Flush()
}

// Serve runs the connection's request loop (ServeStream) with handle reading
// and answering one request, then releases the connection and calls done (the
// Set's Done for it). quiet and malformed are as in Stream.
func (l *Line) Serve(name string, closing func() bool, handle func() error, quiet, malformed error, done func()) {
	defer func() {
		l.Req.Release()
		l.NC.Close()
		done()
	}()
	ServeStream(Stream{
		Name: name, Conn: l.NC, Reader: l.BR, Log: l.Log,
		ReadTimeout: l.ReadTimeout, IdleTimeout: l.IdleTimeout, Closing: closing,
		Flush: l.Flush, Handle: handle, Quiet: quiet, Malformed: malformed,
	})
}

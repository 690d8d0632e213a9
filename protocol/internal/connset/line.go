package connset

import (
	"bufio"
	"context"
	"errors"
	"io"
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

// ErrLineTooLong is ReadLine's error for a line longer than its limit.
var ErrLineTooLong = errors.New("line too long")

// ReadLine returns the next line without its terminator ("\n" or "\r\n"); it
// aliases the read buffer and is valid until the next read. io.EOF means the
// stream ended cleanly before the line, io.ErrUnexpectedEOF inside it.
func (l *Line) ReadLine(maxLine int) ([]byte, error) {
	line, err := l.BR.ReadSlice('\n')
	switch {
	case err == nil:
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, ErrLineTooLong
	case errors.Is(err, io.EOF) && len(line) == 0:
		return nil, io.EOF
	case errors.Is(err, io.EOF):
		return nil, io.ErrUnexpectedEOF
	default:
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > maxLine {
		return nil, ErrLineTooLong
	}
	return line, nil
}

// readChunk is how much of an announced value is read (and the buffer grown
// for) at a time.
const readChunk = 16 << 10

// AppendValue appends the next n bytes of the stream to buf. buf grows with
// the data that has actually arrived, a chunk at a time, so a client that
// announces a large value and stalls costs no more memory than what it sent.
// On error buf holds what did arrive.
func (l *Line) AppendValue(buf []byte, n int) ([]byte, error) {
	want := len(buf) + n
	for len(buf) < want {
		m := min(want-len(buf), readChunk)
		if cap(buf)-len(buf) < m {
			grown := make([]byte, len(buf), min(want, max(2*cap(buf), len(buf)+m)))
			copy(grown, buf)
			buf = grown
		}
		k, err := io.ReadFull(l.BR, buf[len(buf):len(buf)+m])
		buf = buf[:len(buf)+k]
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// ErrorText renders a failed backend call for the client, on one protocol
// line: a timeout and a shutdown are named, anything else is the error's own
// text, shortened.
func ErrorText(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "server shutting down"
	}
	text := err.Error()
	return OneLine(text[:min(len(text), 200)])
}

// OneLine replaces control characters with spaces, so that s can neither end
// nor split the protocol line it is written on.
func OneLine(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if ch < ' ' || ch == 0x7f {
			b[i] = ' '
		}
	}
	return string(b)
}

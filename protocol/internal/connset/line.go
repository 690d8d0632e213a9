package connset

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/distcache-replicated/distcache/protocol/internal/reqctx"
)

// Line is what every connection of a line-protocol front-end has, whatever it
// parses: the socket, its buffers, the per-request context and the deadlines. A
// front-end's connection embeds it and adds its own parsing state; Wake and
// Close make it a Conn once it has a Serve method (see Line.Serve).
type Line struct {
	NC  net.Conn // nil when driven directly by tests and benchmarks
	BR  *bufio.Reader
	BW  *bufio.Writer
	Log *slog.Logger // tagged with the peer's address
	Req *reqctx.Context

	io *lineIO // what BR reads from and BW writes to
}

// NewLine sets up a connection whose reader holds a whole command line of
// maxLine bytes. read bounds the arrival of a started request, idle the wait
// for a new one (0: none), write a write that cannot complete (see Deadlines).
func NewLine(nc net.Conn, maxLine int, log *slog.Logger, req *reqctx.Context, read, idle, write time.Duration) Line {
	rw := &lineIO{Deadlines: Deadlines{NC: nc, Read: read, Idle: idle, Write: write}}
	l := Line{
		NC: nc, BR: bufio.NewReaderSize(rw, max(4096, maxLine+2)), BW: bufio.NewWriterSize(rw, 4096),
		Log: log, Req: req, io: rw,
	}
	if nc != nil {
		l.Log = log.With("remote", Remote(nc))
	}
	return l
}

// lineIO is the socket as a line connection's buffers see it: every read and
// write arms the deadline it needs (Deadlines), and a read that waits for a new
// request returns errStopReading once the server is closing.
type lineIO struct {
	Deadlines
	closing func() bool // the server is shutting down; set by Serve
	partial bool        // a request has started: set by Serve around each handle
}

// errStopReading ends the wait for a new request when the server shuts down.
var errStopReading = errors.New("server shutting down")

func (c *lineIO) Read(p []byte) (int, error) {
	c.ArmRead(c.partial)
	// The deadline is armed before the flag is read: Shutdown sets the flag
	// before Wake moves the deadline into the past, so one of the two stops
	// this read. A started request may still complete.
	if !c.partial && c.closing != nil && c.closing() {
		return 0, errStopReading
	}
	return c.NC.Read(p)
}

// Write arms the write deadline for every write, including those bufio makes on
// its own when an answer outgrows the buffer.
func (c *lineIO) Write(p []byte) (int, error) {
	c.ArmWrite()
	return c.NC.Write(p)
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
	return l.BW.Flush()
}

// Serve runs the connection's request loop with handle reading and answering
// one request, then releases the connection and calls done (the Set's Done for
// it). Answers are coalesced and flushed only when nothing more is pipelined;
// a request already buffered whole is answered without touching a deadline;
// every close mid-stream is explained in one log line, written before the last
// answer is flushed so the line exists by the time the peer sees the close.
// name prefixes the log lines ("memcache", "resp"); closing reports that the
// server is shutting down; quiet is handle's error for an orderly close
// (quit), malformed marks a stream that broke the protocol so badly that it
// cannot be trusted any more.
func (l *Line) Serve(name string, closing func() bool, handle func() error, quiet, malformed error, done func()) {
	defer func() {
		l.Req.Release()
		l.NC.Close()
		done()
	}()
	l.io.closing = closing
	for {
		if l.BR.Buffered() == 0 {
			if err := l.Flush(); err != nil {
				l.Log.Debug(name+": write failed", "err", err)
				return
			}
			l.io.partial = false
			if _, err := l.BR.Peek(1); err != nil {
				switch {
				case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, errStopReading) || closing():
				case errors.Is(err, os.ErrDeadlineExceeded):
					l.Log.Info(name+": idle timeout; closing connection", "idle_timeout", l.io.Idle)
				default:
					l.Log.Debug(name+": connection closed while idle", "err", err)
				}
				return
			}
		}
		l.io.partial = true
		l.io.Next()
		if err := handle(); err != nil {
			l.logClose(name, closing, quiet, malformed, err)
			if ferr := l.Flush(); ferr != nil {
				l.Log.Debug(name+": last answer not sent", "err", ferr)
			}
			return
		}
	}
}

func (l *Line) logClose(name string, closing func() bool, quiet, malformed, err error) {
	var pe *PeerError
	switch {
	case errors.Is(err, quiet):
	case closing() && errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, net.ErrClosed):
		l.Log.Debug(name+": connection closed by shutdown", "err", err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		l.Log.Warn(name+": peer stalled mid-request longer than the read timeout; closing connection",
			"read_timeout", l.io.Read, "err", err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		l.Log.Warn(name+": peer closed connection mid-request", "err", err)
	case errors.As(err, &pe):
		l.Log.Warn(name+": "+pe.Reason+"; closing connection", "first_bytes", pe.Head)
	case errors.Is(err, malformed):
		l.Log.Warn(name+": malformed request; closing connection", "err", err)
	default:
		l.Log.Info(name+": read error; closing connection", "err", err)
	}
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

package connset

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"
)

// Stream is one connection of a line protocol, as ServeStream drives it.
type Stream struct {
	Name        string // log prefix: "memcache", "resp"
	Conn        net.Conn
	Reader      *bufio.Reader
	Log         *slog.Logger
	ReadTimeout time.Duration // a request that has started must arrive within it
	IdleTimeout time.Duration // 0: idle connections stay open (Apache pools them)
	Closing     func() bool   // the server is shutting down
	Flush       func() error  // sends the answers written so far
	Handle      func() error  // reads and answers one request
	// Quiet is Handle's error for an orderly close (quit); Malformed marks a
	// stream that broke the protocol so badly that it cannot be trusted any more.
	Quiet, Malformed error
}

// ServeStream runs the request loop of one connection: answers are coalesced and
// flushed only when nothing more is pipelined, an idle wait has the idle deadline
// and a started request the read deadline (slowloris), and every close mid-stream
// is explained in one log line, written before the last answer is flushed so the
// line exists by the time the peer sees the close.
func ServeStream(s Stream) {
	for {
		if s.Reader.Buffered() == 0 {
			if err := s.Flush(); err != nil {
				s.Log.Debug(s.Name+": write failed", "err", err)
				return
			}
			var idle time.Time
			if s.IdleTimeout > 0 {
				idle = time.Now().Add(s.IdleTimeout)
			}
			// Deadline first, then the flag: Shutdown sets the flag before Wake
			// moves the deadline into the past, so one of the two sees the other.
			s.Conn.SetReadDeadline(idle)
			if s.Closing() {
				return
			}
			if _, err := s.Reader.Peek(1); err != nil {
				switch {
				case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || s.Closing():
				case errors.Is(err, os.ErrDeadlineExceeded):
					s.Log.Info(s.Name+": idle timeout; closing connection", "idle_timeout", s.IdleTimeout)
				default:
					s.Log.Debug(s.Name+": connection closed while idle", "err", err)
				}
				return
			}
		}
		s.Conn.SetReadDeadline(time.Now().Add(s.ReadTimeout))
		if err := s.Handle(); err != nil {
			s.logClose(err)
			if ferr := s.Flush(); ferr != nil {
				s.Log.Debug(s.Name+": last answer not sent", "err", ferr)
			}
			return
		}
	}
}

func (s Stream) logClose(err error) {
	var pe *PeerError
	switch {
	case errors.Is(err, s.Quiet):
	case s.Closing() && errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, net.ErrClosed):
		s.Log.Debug(s.Name+": connection closed by shutdown", "err", err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.Log.Warn(s.Name+": peer stalled mid-request longer than the read timeout; closing connection",
			"read_timeout", s.ReadTimeout, "err", err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		s.Log.Warn(s.Name+": peer closed connection mid-request", "err", err)
	case errors.As(err, &pe):
		s.Log.Warn(s.Name+": "+pe.Reason+"; closing connection", "first_bytes", pe.Head)
	case errors.Is(err, s.Malformed):
		s.Log.Warn(s.Name+": malformed request; closing connection", "err", err)
	default:
		s.Log.Info(s.Name+": read error; closing connection", "err", err)
	}
}

// PeerError is a connection from a client speaking another protocol, named in the
// log so that an operator can fix the client's configuration.
type PeerError struct {
	Reason string
	Head   string // the first bytes, quoted
}

func (e *PeerError) Error() string { return e.Reason }

// NewPeerError quotes up to n first bytes of b.
func NewPeerError(reason string, b []byte, n int) *PeerError {
	return &PeerError{Reason: reason, Head: fmt.Sprintf("%q", b[:min(len(b), n)])}
}

// ForeignProtocol recognises, from the start of a request, clients that speak
// another protocol to a line-protocol port: a TLS handshake (a client configured
// for TLS) or an HTTP request line. Such a stream can only produce a string of
// errors, so the caller closes it at once.
func ForeignProtocol(b []byte, port string) *PeerError {
	switch {
	case len(b) >= 2 && b[0] == 0x16 && b[1] == 0x03:
		return NewPeerError("TLS handshake sent to the plaintext "+port+" port (is the client set up for TLS?)", b, 8)
	case isHTTPRequestLine(b):
		return NewPeerError("HTTP request sent to the "+port+" port", b, 40)
	}
	return nil
}

// isHTTPRequestLine reports whether line (with its trailing '\n' or '\r') ends like
// "... HTTP/1.x".
func isHTTPRequestLine(line []byte) bool {
	n := len(line)
	return n > 9 && line[n-9] == ' ' && string(line[n-8:n-1]) == "HTTP/1."
}

package connset

import "fmt"

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

package mux

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Kind is the first byte a dialer writes on the cluster port: it says which
// service the connection is for.
type Kind byte

// Connection kinds.
const (
	// KindRaft connections go to raft's transport (RaftLayer).
	KindRaft Kind = 'R'
	// KindForward connections go to the handler given to Serve.
	KindForward Kind = 'F'
)

// firstByteTimeout bounds how long an accepted connection may stay silent
// (or take for its TLS handshake) before it is dropped.
const firstByteTimeout = 5 * time.Second

// Mux owns the cluster listener and is the ONE place where connections are
// wrapped in TLS (accepted and dialed alike). It hands raft connections to
// the raft stream layer and forwarding connections to the forward handler.
type Mux struct {
	ln        net.Listener
	advertise net.Addr
	tls       *tls.Config
	log       *slog.Logger
	raft      *raftLayer

	raftCh    chan net.Conn
	onForward func(net.Conn)

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup

	// Every connection in use, so Close can end them: raft's transport
	// neither closes its pooled connections nor the accepted ones.
	connMu sync.Mutex
	conns  map[*trackedConn]struct{}
}

// trackedConn removes itself from the mux's set when closed.
type trackedConn struct {
	net.Conn
	m    *Mux
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.m.connMu.Lock()
		delete(c.m.conns, c)
		c.m.connMu.Unlock()
	})
	return c.Conn.Close()
}

// track registers conn; if the mux is already closed the conn is closed.
func (m *Mux) track(conn net.Conn) (net.Conn, error) {
	tc := &trackedConn{Conn: conn, m: m}
	m.connMu.Lock()
	defer m.connMu.Unlock()
	select {
	case <-m.done:
		conn.Close()
		return nil, net.ErrClosed
	default:
	}
	m.conns[tc] = struct{}{}
	return tc, nil
}

// Listen binds the cluster port on bind. advertise is the address peers
// dial ("" means the bound address, which must then not be unspecified);
// tlsConf, when set, wraps every connection in mutual TLS (it must carry the
// certificate, the CA pool for both roles and ClientAuth). Nothing is
// accepted until Serve.
func Listen(bind, advertise string, tlsConf *tls.Config, log *slog.Logger) (*Mux, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("mux: listen %s: %w", bind, err)
	}
	adv := ln.Addr()
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("mux: advertise address %q: %w", advertise, err)
		}
		adv = a
	} else if ta, ok := adv.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("mux: %s is unspecified: peers need an advertise address", bind)
	}
	m := &Mux{
		ln:        ln,
		advertise: adv,
		tls:       tlsConf,
		log:       log,
		raftCh:    make(chan net.Conn),
		done:      make(chan struct{}),
		conns:     make(map[*trackedConn]struct{}),
	}
	m.raft = &raftLayer{m: m, closed: make(chan struct{})}
	return m, nil
}

// Advertise is the address peers dial, as given to Listen or bound.
func (m *Mux) Advertise() net.Addr { return m.advertise }

// RaftLayer is raft's stream layer over this port: its Accept yields the
// connections whose kind byte was KindRaft, its Dial writes KindRaft first,
// and its Addr is the advertised address. Closing it does not close the
// port (Close does).
func (m *Mux) RaftLayer() raft.StreamLayer { return m.raft }

// Serve starts accepting. Each KindForward connection (TLS done, kind byte
// read) is passed to forward in its own goroutine, which owns it; forward
// returns when it is done with it. Serve is called once.
func (m *Mux) Serve(forward func(net.Conn)) {
	m.onForward = forward
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			conn, err := m.ln.Accept()
			if err != nil {
				select {
				case <-m.done:
					return
				default:
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				m.log.Error("cluster listener failed", "err", err)
				return
			}
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				m.handoff(conn)
			}()
		}
	}()
}

func (m *Mux) handoff(conn net.Conn) {
	conn, err := m.track(conn)
	if err != nil {
		return
	}
	conn.SetDeadline(time.Now().Add(firstByteTimeout))
	if m.tls != nil {
		tc := tls.Server(conn, m.tls)
		if err := tc.Handshake(); err != nil {
			// Once per connection: a peer without a certificate signed by
			// the cluster CA (or speaking plaintext) ends here.
			m.log.Warn("cluster connection refused: TLS handshake failed", "remote", conn.RemoteAddr(), "err", err)
			conn.Close()
			return
		}
		conn = tc
	}
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		m.log.Debug("cluster connection closed before kind byte", "remote", conn.RemoteAddr(), "err", err)
		conn.Close()
		return
	}
	conn.SetDeadline(time.Time{})
	switch Kind(b[0]) {
	case KindRaft:
		select {
		case m.raftCh <- conn:
		case <-m.done:
			conn.Close()
		}
	case KindForward:
		m.onForward(conn)
	default:
		m.log.Warn("cluster connection: unknown kind byte, closing", "remote", conn.RemoteAddr(), "kind", b[0])
		conn.Close()
	}
}

// Dial opens a connection of the given kind to a peer's cluster port: TCP,
// then (when configured) the TLS handshake, verifying the peer against the
// cluster CA and the host dialed, then the kind byte. ctx bounds all three.
// Close ends the connection along with the mux.
func (m *Mux) Dial(ctx context.Context, addr string, kind Kind) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if m.tls != nil {
		tc := tls.Client(conn, m.clientTLS(addr))
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
		}
		conn = tc
	}
	if _, err := conn.Write([]byte{byte(kind)}); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return m.track(conn)
}

// clientTLS is the dial side's configuration for addr: unless the
// configuration names a server, the peer's certificate must be valid for the
// host it was dialed at (an IP SAN for peers addressed by IP), so a node
// holding some certificate of the cluster CA cannot stand in for another's
// address.
func (m *Mux) clientTLS(addr string) *tls.Config {
	if m.tls.ServerName != "" {
		return m.tls
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return m.tls
	}
	c := m.tls.Clone()
	c.ServerName = host
	return c
}

// Close stops accepting and closes every connection accepted or dialed
// through the mux. It is idempotent; Wait then waits for the goroutines.
func (m *Mux) Close() {
	m.closeOnce.Do(func() {
		m.connMu.Lock()
		close(m.done)
		conns := m.conns
		m.conns = nil
		m.connMu.Unlock()
		m.ln.Close()
		for c := range conns {
			c.Conn.Close()
		}
	})
}

// Wait blocks until the accept loop and every hand-off (including the
// forward handlers) have returned.
func (m *Mux) Wait() { m.wg.Wait() }

// raftLayer is the raft.StreamLayer over the mux.
type raftLayer struct {
	m         *Mux
	closeOnce sync.Once
	closed    chan struct{}
}

// Accept implements net.Listener.
func (l *raftLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.m.raftCh:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-l.m.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (l *raftLayer) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

// Addr implements net.Listener; it is the advertised address, which raft
// puts in its RPC headers.
func (l *raftLayer) Addr() net.Addr { return l.m.advertise }

// Dial implements raft.StreamLayer.
func (l *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return l.m.Dial(ctx, string(address), KindRaft)
}

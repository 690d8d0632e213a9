package cluster

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

// Connection kinds: the first byte a dialer writes on the cluster port.
const (
	kindRaft    byte = 'R'
	kindForward byte = 'F'
)

// firstByteTimeout bounds how long an accepted connection may stay silent
// (or take for its TLS handshake) before it is dropped.
const firstByteTimeout = 5 * time.Second

// mux owns the cluster listener and is the ONE place where connections are
// wrapped in TLS (accepted and dialed alike). It hands raft connections to
// the raft stream layer and forwarding connections to the forward server.
type mux struct {
	ln        net.Listener
	advertise net.Addr
	tls       *tls.Config
	log       *slog.Logger

	raftCh    chan net.Conn
	onForward func(net.Conn)

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup

	// Every connection in use, so close can end them: raft's transport
	// neither closes its pooled connections nor the accepted ones.
	connMu sync.Mutex
	conns  map[*trackedConn]struct{}
}

// trackedConn removes itself from the mux's set when closed.
type trackedConn struct {
	net.Conn
	m    *mux
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
func (m *mux) track(conn net.Conn) (net.Conn, error) {
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

func newMux(bind, advertise string, tlsConf *tls.Config, log *slog.Logger) (*mux, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("cluster: listen %s: %w", bind, err)
	}
	adv := ln.Addr()
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("cluster: advertise address %q: %w", advertise, err)
		}
		adv = a
	} else if ta, ok := adv.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("cluster: raft address %s is unspecified; set AdvertiseRaftAddr", bind)
	}
	return &mux{
		ln:        ln,
		advertise: adv,
		tls:       tlsConf,
		log:       log,
		raftCh:    make(chan net.Conn),
		done:      make(chan struct{}),
		conns:     make(map[*trackedConn]struct{}),
	}, nil
}

// serve runs the accept loop; onForward must be set before.
func (m *mux) serve() {
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

func (m *mux) handoff(conn net.Conn) {
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
	switch b[0] {
	case kindRaft:
		select {
		case m.raftCh <- conn:
		case <-m.done:
			conn.Close()
		}
	case kindForward:
		m.onForward(conn)
	default:
		m.log.Warn("cluster connection: unknown kind byte, closing", "remote", conn.RemoteAddr(), "kind", b[0])
		conn.Close()
	}
}

// dial opens a connection of the given kind to a peer's cluster port.
func (m *mux) dial(ctx context.Context, addr string, kind byte) (net.Conn, error) {
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
	if _, err := conn.Write([]byte{kind}); err != nil {
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
func (m *mux) clientTLS(addr string) *tls.Config {
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

func (m *mux) close() {
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

// wait blocks until the accept loop and hand-offs have finished.
func (m *mux) wait() { m.wg.Wait() }

// raftLayer is the raft.StreamLayer over the mux: Accept yields connections
// whose kind byte was 'R', Dial writes 'R' first. Closing it does not close
// the shared listener (the mux owns that).
type raftLayer struct {
	m         *mux
	closeOnce sync.Once
	closed    chan struct{}
}

var _ raft.StreamLayer = (*raftLayer)(nil)

func newRaftLayer(m *mux) *raftLayer { return &raftLayer{m: m, closed: make(chan struct{})} }

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
	return l.m.dial(ctx, string(address), kindRaft)
}

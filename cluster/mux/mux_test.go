package mux

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/internal/testpki"
	"github.com/hashicorp/raft"
)

// listen starts a mux on loopback whose forward handler answers one line.
func listen(t *testing.T, conf *tls.Config) *Mux {
	t.Helper()
	m, err := Listen("127.0.0.1:0", "", conf, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	m.Serve(func(c net.Conn) {
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil {
			io.WriteString(c, "forward:"+line)
		}
	})
	t.Cleanup(func() { m.Close(); m.Wait() })
	return m
}

// closedByPeer fails the test unless c's peer closed it (a read ends with
// an error that is not a timeout).
func closedByPeer(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("%s: read %v, want the connection closed", what, err)
	}
}

// TestRoutesByKind: over plaintext and mutual TLS alike, forwarding
// connections reach the forward handler, raft connections the raft layer,
// and Close ends the connections still open so that Wait returns.
func TestRoutesByKind(t *testing.T) {
	ca := testpki.NewCA(t, "cluster CA")
	for name, conf := range map[string]*tls.Config{
		"plaintext":  nil,
		"mutual TLS": ca.MutualTLS(ca.Issue(t, "node", "127.0.0.1")),
	} {
		t.Run(name, func(t *testing.T) {
			m := listen(t, conf)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			fc, err := m.Dial(ctx, m.Advertise().String(), KindForward)
			if err != nil {
				t.Fatal(err)
			}
			fc.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(fc, "hello\n")
			if got, err := bufio.NewReader(fc).ReadString('\n'); err != nil || got != "forward:hello\n" {
				t.Fatalf("forward connection answered %q, %v", got, err)
			}
			fc.Close()

			layer := m.RaftLayer()
			if layer.Addr().String() != m.Advertise().String() {
				t.Fatalf("raft layer address %s, advertised %s", layer.Addr(), m.Advertise())
			}
			rc, err := layer.Dial(raft.ServerAddress(m.Advertise().String()), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			accepted, err := layer.Accept()
			if err != nil {
				t.Fatal(err)
			}
			rc.Write([]byte("x"))
			b := make([]byte, 1)
			accepted.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(accepted, b); err != nil || b[0] != 'x' {
				t.Fatalf("raft connection carried %q, %v", b, err)
			}

			m.Close()
			closedByPeer(t, rc, "raft connection after Close")
			m.Wait()
			if _, err := layer.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Accept after Close: %v", err)
			}
		})
	}
}

// TestUnknownKindClosed: a connection whose first byte names no kind, and a
// plaintext connection to a TLS port, are closed; the port keeps serving.
func TestUnknownKindClosed(t *testing.T) {
	m := listen(t, nil)
	c, err := net.Dial("tcp", m.Advertise().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("Z\n"))
	closedByPeer(t, c, "unknown kind")
	c.Close()

	ca := testpki.NewCA(t, "cluster CA")
	tm := listen(t, ca.MutualTLS(ca.Issue(t, "node", "127.0.0.1")))
	c, err = net.Dial("tcp", tm.Advertise().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte{byte(KindForward), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	closedByPeer(t, c, "plaintext to a TLS port")
	c.Close()
}

// TestListenAdvertise: an unspecified bind address needs an advertise
// address, which then is what peers are told.
func TestListenAdvertise(t *testing.T) {
	if _, err := Listen("0.0.0.0:0", "", nil, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "advertise") {
		t.Fatalf("Listen on 0.0.0.0 without an advertise address: %v", err)
	}
	m, err := Listen("127.0.0.1:0", "127.0.0.1:7946", nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { m.Close(); m.Wait() }()
	if got := m.Advertise().String(); got != "127.0.0.1:7946" {
		t.Fatalf("Advertise = %s", got)
	}
}

// TestDialVerifiesPeer: the dialing side refuses a server whose
// certificate is not from the cluster CA, and one from the CA that is not
// valid for the address dialed.
func TestDialVerifiesPeer(t *testing.T) {
	ca := testpki.NewCA(t, "cluster CA")
	other := testpki.NewCA(t, "another CA")
	m, err := Listen("127.0.0.1:0", "", ca.MutualTLS(ca.Issue(t, "node", "127.0.0.1")), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); m.Wait() })
	for name, srv := range map[string]*tls.Config{
		"foreign CA":      other.MutualTLS(other.Issue(t, "impostor", "127.0.0.1")),
		"wrong IP in SAN": ca.MutualTLS(ca.Issue(t, "elsewhere", "10.9.9.9")),
	} {
		srv.ClientAuth = tls.RequireAnyClientCert
		addr := testpki.HandshakeServer(t, srv)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := m.Dial(ctx, addr.String(), KindForward)
		cancel()
		if err == nil {
			c.Close()
			t.Fatalf("%s: dial succeeded", name)
		}
		if !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: error %v does not name the certificate", name, err)
		}
	}
}

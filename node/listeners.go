package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/distcache-replicated/distcache/internal/version"
	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// boundListener is a listener bound at start-up, waiting for the service to exist.
type boundListener struct {
	proto int
	ln    net.Listener
	pc    net.PacketConn
}

// pending holds listeners between listenAll and startServing.
type pending struct{ list []boundListener }

// listenAll binds every configured client listener, failing on the first address that
// cannot be bound (with the address in the error).
func (n *Node) listenAll() error {
	n.pend = &pending{}
	for _, a := range n.cfg.Listen {
		ln, err := distcache.Listen(a, n.cfg.Socket)
		if err != nil {
			return fmt.Errorf("distcache listener %s: %w", a, err)
		}
		ln = n.withClientTLS(ln)
		n.addCloser(func(context.Context) error { return ln.Close() })
		n.pend.list = append(n.pend.list, boundListener{proto: protoDistcache, ln: ln})
		n.record("distcache", distcacheAddr(ln.Addr()))
	}
	for _, l := range []struct {
		proto int
		addrs []string
	}{{protoMemcache, n.cfg.MemcacheListen}, {protoRESP, n.cfg.RESPListen}} {
		for _, a := range l.addrs {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				return fmt.Errorf("%s listener %s: %w", protoNames[l.proto], a, err)
			}
			ln = n.withClientTLS(ln)
			n.addCloser(func(context.Context) error { return ln.Close() })
			n.pend.list = append(n.pend.list, boundListener{proto: l.proto, ln: ln})
			n.record(protoNames[l.proto], ln.Addr().String())
		}
	}
	for _, a := range n.cfg.SessiondListen {
		pc, err := net.ListenPacket("udp", a)
		if err != nil {
			return fmt.Errorf("sessiond listener %s: %w", a, err)
		}
		n.addCloser(func(context.Context) error { return pc.Close() })
		n.pend.list = append(n.pend.list, boundListener{proto: protoSessiond, pc: pc})
		n.record("sessiond", pc.LocalAddr().String())
	}
	return nil
}

func (n *Node) record(proto, addr string) {
	n.mu.Lock()
	n.listeners[proto] = append(n.listeners[proto], addr)
	n.mu.Unlock()
}

// Gossip metadata keys of the node's own, besides one per client protocol
// (distcache, memcache, resp, sessiond) holding its bound addresses.
const (
	metaAdmin   = "admin"   // the admin endpoint: restores are relayed there, status read there
	metaVersion = "version" // the build, for dcctl members and the status page
)

// gossipMeta is the gossip metadata that tells other nodes (and dcctl members)
// where this node serves clients and its admin endpoint, and which build it runs.
func (n *Node) gossipMeta() map[string]string {
	meta := map[string]string{metaVersion: version.Get().Version}
	for proto, addrs := range n.Listeners() {
		meta[proto] = strings.Join(addrs, ",")
	}
	if n.adminAddr != "" {
		meta[metaAdmin] = n.adminAddr
	}
	return meta
}

// startServing starts one server per bound listener, now that the service exists.
func (n *Node) startServing() {
	for _, b := range n.pend.list {
		serve, shutdown, conns := n.frontEnd(b)
		n.conns = append(n.conns, conns)
		n.addCloser(shutdown)
		n.bg.Add(1)
		go func() {
			defer n.bg.Done()
			if err := serve(); err != nil && !n.closing.Load() && !errors.Is(err, net.ErrClosed) {
				n.log.Error("listener stopped", "protocol", protoNames[b.proto], "err", err)
			}
		}()
	}
	n.pend = nil
}

// distcacheAddr writes a bound address in the original syntax, as clients configure it.
func distcacheAddr(a net.Addr) string {
	switch a := a.(type) {
	case *net.TCPAddr:
		return "IP:" + a.String()
	case *net.UnixAddr:
		return "UNIX:" + a.Name
	}
	return a.String()
}

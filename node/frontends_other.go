package node

import (
	"context"

	"github.com/distcache-replicated/distcache/protocol/memcache"
	"github.com/distcache-replicated/distcache/protocol/resp"
	"github.com/distcache-replicated/distcache/protocol/sessiond"
)

// frontEndOther builds the servers of the non-distcache front-ends.
func (n *Node) frontEndOther(b boundListener) (serve func() error, shutdown func(context.Context) error, conns func() int) {
	lim := n.cfg.Limits
	switch b.proto {
	case protoMemcache:
		srv := &memcache.Server{Cache: memcacheCache{n}, Logger: n.log.With("protocol", "memcache"), RequestTimeout: n.cfg.WriteTimeout,
			MaxConns: lim.MaxConns, ReadTimeout: lim.ReadTimeout, IdleTimeout: lim.IdleTimeout, MaxValueSize: lim.MaxValueSize}
		return func() error { return srv.Serve(b.ln) }, srv.Shutdown, srv.ActiveConns
	case protoRESP:
		srv := &resp.Server{Cache: respCache{n}, Logger: n.log.With("protocol", "resp"), RequestTimeout: n.cfg.WriteTimeout,
			MaxConns: lim.MaxConns, ReadTimeout: lim.ReadTimeout, IdleTimeout: lim.IdleTimeout, MaxValueSize: lim.MaxValueSize}
		return func() error { return srv.Serve(b.ln) }, srv.Shutdown, srv.ActiveConns
	default:
		srv := &sessiond.Server{Cache: sessiondCache{n}, Logger: n.log.With("protocol", "sessiond"), KeyPrefix: "stunnel-sess:"}
		return func() error { return srv.Serve(b.pc) }, srv.Shutdown, func() int { return 0 }
	}
}

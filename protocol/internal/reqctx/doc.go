// Package reqctx provides the per-connection request context of the line-protocol
// front-ends (memcache, RESP): one context re-armed for every backend call, so the
// GET hot path allocates nothing for its deadline.
//
// It must not know either protocol's commands or the cache behind them.
package reqctx

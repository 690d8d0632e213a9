// Command loadgen is the lean load tool behind bench/run.sh: one goroutine per
// persistent connection, one request in flight on each (or -depth requests
// pipelined on each distcache connection), over the distcache, memcache text or
// Redis RESP protocol. The same binary drives dcnode,
// memcached and redis-server, so their figures compare like for like.
//
// It exists because dcctl bench verifies every answer against a model (too
// heavy to saturate a server on 2 cores) and memcaslap sends keys that start
// with control bytes, which dcnode's memcache front-end rightly refuses.
//
// With -op add it also measures write unavailability: the longest gap between
// two consecutive successful writes (all connections together), which
// bench/run.sh uses while it SIGKILLs the leader.
//
// Design: no model, no verification (dcctl bench does that), per-connection
// latency slices merged and sorted at the end, success timestamps kept for the
// gap measurement; every run is bounded by -duration. Keys are
// "loadgen-%024d" (32 bytes), values a fixed byte repeated -size times.
package main

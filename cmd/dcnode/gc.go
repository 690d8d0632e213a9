package main

import (
	"log/slog"
	"math"
	"runtime/debug"
	"strings"
)

// The GC policy dcnode applies when the environment does not set its own.
//
// The session store keeps keys and values in slabs the garbage collector
// never scans (package fsm), so collections are cheap however large the
// store and a low GOGC costs little CPU while it keeps the heap close to
// the live data: Go's default of 100 lets the heap grow to twice the live
// set, the difference between the 2× payload target and 3–4×.
//
// The soft memory limit is what a full store needs — its -max-bytes of keys
// and values, half as much again for slab slack (a slab is compacted once
// less than half of it is live, so that is the worst case), gcBytesPerSession
// of index for each of its -sessions — plus gcBaseBytes for Raft's log cache,
// connections and buffers. Below that limit GOGC rules; the limit makes the
// collector work harder only when the heap nears it, so it caps the headroom
// a full store can take rather than the store itself (Go bounds the GC's
// CPU share to about half when the live heap exceeds the limit).
const (
	gcPercent         = 25
	gcBytesPerSession = 96
	gcBaseBytes       = 128 << 20
)

// gcPolicy is the runtime configuration applyGCPolicy sets; a zero field is
// left as the runtime has it (from GOGC / GOMEMLIMIT, or Go's defaults).
type gcPolicy struct {
	percent int   // GOGC
	limit   int64 // GOMEMLIMIT, bytes
}

// gcPolicyFor derives the policy for nodes (dev cluster: several in one
// process) capped at maxBytes and sessions each. A variable set in environ
// (even empty) means the user chose; maxBytes 0 (no byte cap) sets no limit.
func gcPolicyFor(environ []string, maxBytes int64, sessions, nodes int) gcPolicy {
	var p gcPolicy
	if !hasEnv(environ, "GOGC") {
		p.percent = gcPercent
	}
	if !hasEnv(environ, "GOMEMLIMIT") && maxBytes > 0 {
		// float64: -max-bytes and -sessions may be large enough to overflow.
		l := float64(nodes) * (1.5*float64(maxBytes) + gcBytesPerSession*float64(sessions))
		p.limit = math.MaxInt64 / 2
		if l+gcBaseBytes < math.MaxInt64/2 {
			p.limit = int64(l + gcBaseBytes)
		}
	}
	return p
}

func hasEnv(environ []string, name string) bool {
	for _, kv := range environ {
		if k, _, ok := strings.Cut(kv, "="); ok && k == name {
			return true
		}
	}
	return false
}

// apply sets the policy in the runtime and logs what it chose.
func (p gcPolicy) apply(logger *slog.Logger) {
	if p.percent > 0 {
		debug.SetGCPercent(p.percent)
	}
	if p.limit > 0 {
		debug.SetMemoryLimit(p.limit)
	}
	logger.Debug("gc policy (GOGC, GOMEMLIMIT override it)", "gogc", p.percent, "memory_limit_bytes", p.limit)
}

package main

import (
	"math"
	"testing"
)

// TestGCPolicy: GOGC and GOMEMLIMIT from the environment win (even empty),
// the limit follows -max-bytes, -sessions and the number of nodes in the
// process, no byte cap means no limit, and huge caps do not overflow.
func TestGCPolicy(t *testing.T) {
	const gib = 1 << 30
	full := func(maxBytes int64, sessions, nodes int) int64 {
		return int64(nodes)*(maxBytes+maxBytes/2+gcBytesPerSession*int64(sessions)) + gcBaseBytes
	}
	for _, tc := range []struct {
		name     string
		environ  []string
		maxBytes int64
		sessions int
		nodes    int
		want     gcPolicy
	}{
		{"defaults", []string{"HOME=/root"}, gib, 1_000_000, 1, gcPolicy{gcPercent, full(gib, 1_000_000, 1)}},
		{"dev cluster of 3", nil, gib, 1_000_000, 3, gcPolicy{gcPercent, full(gib, 1_000_000, 3)}},
		{"GOGC set", []string{"GOGC=200"}, gib, 1_000_000, 1, gcPolicy{0, full(gib, 1_000_000, 1)}},
		{"GOGC=off", []string{"GOGC=off"}, gib, 1, 1, gcPolicy{0, full(gib, 1, 1)}},
		{"GOMEMLIMIT set", []string{"GOMEMLIMIT=2GiB"}, gib, 1_000_000, 1, gcPolicy{gcPercent, 0}},
		{"GOMEMLIMIT empty", []string{"GOMEMLIMIT="}, gib, 1_000_000, 1, gcPolicy{gcPercent, 0}},
		{"a variable that only starts like it", []string{"GOGC_X=1", "XGOMEMLIMIT=1"}, gib, 1, 1, gcPolicy{gcPercent, full(gib, 1, 1)}},
		{"no byte cap", nil, 0, 1_000_000, 1, gcPolicy{gcPercent, 0}},
		{"huge caps", nil, math.MaxInt64, math.MaxInt, 9, gcPolicy{gcPercent, math.MaxInt64 / 2}},
	} {
		if got := gcPolicyFor(tc.environ, tc.maxBytes, tc.sessions, tc.nodes); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

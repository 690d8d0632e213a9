package node

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// TestReadYourWritesThroughFollower: a follower answers a forwarded write as
// soon as the leader has committed it, before its own replica applies it. With
// a 500 ms CommitTimeout and no other traffic the follower's replica stays behind
// for 0.5–1 s after each acknowledgement, so a GET, HAVE or TAKE sent to the
// follower right after its ADD, REMOVE or TAKE would see the stale copy unless
// the read goes where the node's own write is applied. Every read mode.
func TestReadYourWritesThroughFollower(t *testing.T) {
	for _, rc := range []ReadConsistency{ReadLocal, ReadLeaderOnMiss, ReadLinearizable} {
		t.Run(string(rc), func(t *testing.T) { testReadYourWrites(t, rc) })
	}
}

func testReadYourWrites(t *testing.T, rc ReadConsistency) {
	nodes := startNodesConfig(t, 3, rc, func(_ int, c *Config) {
		c.Tune.CommitTimeout = 500 * time.Millisecond
		c.WriteTimeout = 10 * time.Second // generous: two cores shared with -race
		c.ExpireInterval = time.Hour      // no writes but the test's
	})
	_, follower := leaderAndFollower(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := dial(t, follower)
	lagged := 0 // acknowledgements after which the follower's replica was behind
	behind := func() {
		if follower.svc.own.n.Load() > 0 {
			lagged++
		}
	}
	mustHave := func(step string, id []byte, want bool) {
		t.Helper()
		if ok, err := c.Have(ctx, id); err != nil || ok != want {
			t.Fatalf("%s: HAVE %s = %v, %v; want %v", step, id, ok, err, want)
		}
	}
	mustGet := func(step string, id, want []byte) {
		t.Helper()
		got, err := c.Get(ctx, id)
		if want == nil {
			if !errors.Is(err, distcache.ErrNotFound) {
				t.Fatalf("%s: GET %s = %q, %v; want not found", step, id, got, err)
			}
			return
		}
		if err != nil || string(got) != string(want) {
			t.Fatalf("%s: GET %s = %q, %v; want %q", step, id, got, err, want)
		}
	}
	for round := range 2 {
		k := func(s string) []byte { return fmt.Appendf(nil, "%s-%s-%d", rc, s, round) }
		v := []byte("a session value")

		// ADD, then GET and HAVE see it.
		if err := c.Add(ctx, k("a"), v, time.Minute); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		behind()
		mustGet("GET after ADD", k("a"), v)
		mustHave("HAVE after ADD", k("a"), true)

		// REMOVE, then GET and HAVE miss.
		if err := c.Remove(ctx, k("a")); err != nil {
			t.Fatalf("REMOVE: %v", err)
		}
		behind()
		mustHave("HAVE after REMOVE", k("a"), false)
		mustGet("GET after REMOVE", k("a"), nil)

		// TAKE, then GET, HAVE and TAKE miss.
		if err := c.Add(ctx, k("t"), v, time.Minute); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		if got, err := c.Take(ctx, k("t")); err != nil || string(got) != string(v) {
			t.Fatalf("TAKE after ADD: %q, %v", got, err)
		}
		behind()
		mustGet("GET after TAKE", k("t"), nil)
		mustHave("HAVE after TAKE", k("t"), false)
		if got, err := c.Take(ctx, k("t")); !errors.Is(err, distcache.ErrNotFound) {
			t.Fatalf("TAKE after TAKE: %q, %v; want not found", got, err)
		}
	}
	// The test proves something only if the replica was behind at the reads.
	if lagged == 0 {
		t.Fatal("the follower's replica was never behind its acknowledgements: the test did not test")
	}
	t.Logf("%s: the follower's replica was behind after %d of 6 acknowledgements", rc, lagged)
}

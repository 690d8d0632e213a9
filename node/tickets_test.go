package node

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/internal/syncbuf"
	"github.com/distcache-replicated/distcache/node/adminapi"
	"github.com/distcache-replicated/distcache/ticketkeys"
)

// adminClient returns an admin API client for nd.
func adminClient(t *testing.T, nd *Node) *adminapi.Client {
	t.Helper()
	c, err := adminapi.New(adminapi.Config{Addr: nd.Status().AdminAddr, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTicketRotationReplicatesAndDelivers: a rotation asked of a follower
// reaches every replica with the same bytes; the two nodes with outputs write
// them for their servers, run their reload command once per change, and name
// keys by id only in answers and logs.
func TestTicketRotationReplicatesAndDelivers(t *testing.T) {
	var logs syncbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dirs := []string{filepath.Join(t.TempDir(), "n1"), filepath.Join(t.TempDir(), "n2")}
	reloads := filepath.Join(t.TempDir(), "reloads")
	nodes := startNodesWith(t, 3, func(i int, c *Config) {
		c.Logger = logger
		c.Tickets.Lifetime = time.Hour
		if i < 2 {
			c.Tickets.Output = &ticketkeys.Config{
				Dir: dirs[i], Formats: []ticketkeys.Format{ticketkeys.Nginx, ticketkeys.Go}, NginxKeys: 3,
				Reload: fmt.Sprintf("echo n%d $DISTCACHE_TICKET_GENERATION >> %s", i+1, reloads),
			}
		}
	})
	_, follower := leaderAndFollower(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ring, err := adminClient(t, follower).Tickets(ctx)
	if err != nil || ring.Generation != 0 || len(ring.Keys) != 0 {
		t.Fatalf("before any rotation: %+v, %v", ring, err)
	}
	for gen := uint64(1); gen <= 3; gen++ {
		ans, err := adminClient(t, follower).TicketsRotate(ctx)
		if err != nil {
			t.Fatalf("rotation %d: %v", gen, err)
		}
		strictDecode(t, "tickets rotate", ans.JSON(), new(adminapi.TicketRing))
		if ans.Generation != gen || ans.Keys[0].ID != gen || ans.Keys[0].Role != adminapi.TicketCurrent || ans.Keys[1].Role != adminapi.TicketNext {
			t.Fatalf("rotation %d answered %+v", gen, ans)
		}
		// Every replica holds the same bytes.
		want, _ := follower.store.TicketRing()
		for _, nd := range nodes {
			waitUntil(t, 10*time.Second, nd.ID()+" applies generation "+fmt.Sprint(gen), func() (bool, any) {
				got, _ := nd.store.TicketRing()
				return fmt.Sprint(got.Keys) == fmt.Sprint(want.Keys) && got.Generation == gen, fmt.Sprint(got.Keys)
			})
			got, _ := nd.store.TicketRing()
			for i := range got.Keys {
				if got.Keys[i].Material != want.Keys[i].Material {
					t.Fatalf("%s holds other bytes for key #%d", nd.ID(), got.Keys[i].ID)
				}
			}
		}
		// Both nodes with outputs deliver it.
		for i, dir := range dirs {
			waitUntil(t, 10*time.Second, fmt.Sprintf("n%d delivers generation %d", i+1, gen), func() (bool, any) {
				d := nodes[i].Status().Tickets
				return d.Delivered == gen && d.Error == "", fmt.Sprintf("%+v", d)
			})
			b, err := os.ReadFile(filepath.Join(dir, ticketkeys.NginxFile(1)))
			if err != nil || !bytes.Equal(b, want.Keys[0].Material[:]) {
				t.Fatalf("n%d's nginx.1.key is not the current key (%v)", i+1, err)
			}
			b, _ = os.ReadFile(filepath.Join(dir, ticketkeys.NginxFile(2)))
			if !bytes.Equal(b, want.Keys[1].Material[:]) {
				t.Fatalf("n%d's nginx.2.key is not the next key", i+1)
			}
			gk, err := ticketkeys.ReadGo(filepath.Join(dir, ticketkeys.GoFile))
			if err != nil || gk.Generation != gen || len(gk.Keys) != len(want.Keys) {
				t.Fatalf("n%d's go.keys: %+v, %v", i+1, gk, err)
			}
		}
	}

	st, err := adminClient(t, nodes[2]).TicketsStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	strictDecode(t, "tickets status", st.JSON(), new(adminapi.TicketsStatus))
	if len(st.Nodes) != 3 || st.Generation != 3 {
		t.Fatalf("status: %+v", st)
	}
	for _, n := range st.Nodes {
		hasOutputs := n.Node != nodes[2].ID()
		if !n.Reached || n.Generation != 3 || (len(n.Outputs) > 0) != hasOutputs || (hasOutputs && n.Delivered != 3) {
			t.Errorf("status of %s: %+v", n.Node, n)
		}
	}
	list, err := adminClient(t, nodes[2]).Tickets(ctx)
	if err != nil || len(list.Keys) != 4 || list.Keys[2].Role != adminapi.TicketPast || list.Keys[2].RetiredAt == nil || list.RotatedAt == nil {
		t.Fatalf("list: %+v, %v", list, err)
	}

	// One reload per node and change.
	b, _ := os.ReadFile(reloads)
	for _, n := range []string{"n1", "n2"} {
		for gen := 1; gen <= 3; gen++ {
			if c := strings.Count(string(b), fmt.Sprintf("%s %d\n", n, gen)); c != 1 {
				t.Errorf("%s reloaded %d times for generation %d:\n%s", n, c, gen, b)
			}
		}
	}

	// No key, in any encoding, in the logs.
	ring2, _ := nodes[0].store.TicketRing()
	out := logs.String()
	for _, k := range ring2.Keys {
		for _, enc := range []string{hex.EncodeToString(k.Material[:8]), base64.StdEncoding.EncodeToString(k.Material[:12]), fmt.Sprint(k.Material[:6])} {
			if strings.Contains(out, enc) {
				t.Fatalf("key #%d appears in the logs (%q)", k.ID, enc)
			}
		}
	}
	if !strings.Contains(out, "ticket keys delivered") || !strings.Contains(out, "operator rotated the ticket keys") {
		t.Error("deliveries and rotations are not logged")
	}
}

// TestConcurrentTicketRotations: rotations asked of two nodes at once all
// happen, one generation each.
func TestConcurrentTicketRotations(t *testing.T) {
	nodes := startNodes(t, 3, ReadLeaderOnMiss)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := nodes[0].tickets.rotate(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := nodes[i%2].tickets.rotate(ctx)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	done := 0
	for err := range errs {
		if err == nil {
			done++
		} else if err != errRingBusy {
			t.Fatal(err)
		}
	}
	if err := nodes[2].Cluster().ReadBarrier(ctx); err != nil {
		t.Fatal(err)
	}
	ring, _ := nodes[2].store.TicketRing()
	if ring.Generation != uint64(1+done) || done < 2 {
		t.Fatalf("%d rotations answered success; the ring is at generation %d", done, ring.Generation)
	}
}

// TestScheduledRotation: with -ticket-rotate the leader creates the ring, then
// rotates it an interval after the replicated last rotation, never twice for
// one interval, also across a change of leader.
func TestScheduledRotation(t *testing.T) {
	const every = 700 * time.Millisecond
	nodes := startNodesWith(t, 3, func(_ int, c *Config) { c.Tickets.Rotate = every })
	waitUntil(t, 15*time.Second, "the leader creates the ring and rotates it", func() (bool, any) {
		ring, _ := nodes[0].store.TicketRing()
		return ring.Generation >= 3, fmt.Sprint("generation ", ring.Generation)
	})
	leader, follower := leaderAndFollower(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	before, _ := follower.store.TicketRing()
	if err := leader.Cluster().TransferLeadership(ctx, ""); err != nil {
		t.Fatal(err)
	}
	// Record each rotation's time as one replica applies it.
	times := map[uint64]int64{before.Generation: before.RotatedAt}
	waitUntil(t, 20*time.Second, "three more rotations after the transfer", func() (bool, any) {
		ring, _ := follower.store.TicketRing()
		times[ring.Generation] = ring.RotatedAt
		return ring.Generation >= before.Generation+3, fmt.Sprint("generation ", ring.Generation)
	})
	ring, _ := follower.store.TicketRing()
	// Each rotation is due an interval after the previous one's replicated
	// time; the leaders stamp both with their clocks (one clock here).
	var prev int64
	for g := before.Generation; g <= ring.Generation; g++ {
		at, ok := times[g]
		if !ok {
			continue // two rotations between polls: the next gap covers both
		}
		if prev != 0 && time.Duration(at-prev)*time.Millisecond < every {
			t.Errorf("generation %d rotated %v after the one before; the interval is %v", g, time.Duration(at-prev)*time.Millisecond, every)
		}
		prev = at
	}
}

// startNodesWith is startNodes with each node's configuration adjusted.
func startNodesWith(t *testing.T, n int, mutate func(i int, c *Config)) []*Node {
	t.Helper()
	return startNodesConfig(t, n, ReadLeaderOnMiss, mutate)
}

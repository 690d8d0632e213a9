package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// TestKillAllDuringWrites: writers ADD unique sessions through every node; while
// they write, every node is SIGKILLed (a power cut: only what was fsynced
// survives), then all are restarted. Every ADD that was acknowledged before the
// kill is present, with its value, for each log store dcnode offers (issue 12,
// target 7). A store that acknowledged before its fsync, or lost a synced tail on
// recovery, fails it.
func TestKillAllDuringWrites(t *testing.T) {
	for _, store := range []string{"wal", "bolt"} {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			testKillAllDuringWrites(t, store)
		})
	}
}

func testKillAllDuringWrites(t *testing.T, store string) {
	if !dcnodeHasFlag("log-store") {
		t.Skip("dcnode has no -log-store")
	}
	c := startCluster(t, 3, clusterOptions{ExtraArgs: []string{"-log-store", store}})
	c.waitLeader(10 * time.Second)

	var (
		mu    sync.Mutex
		acked = map[string][]byte{}
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 6 {
		nd := c.all()[w%3]
		cl, err := distcache.Dial(ctx, nd.clientAddr, distcache.WithRequestTimeout(2*time.Second))
		if err != nil {
			t.Fatalf("dial %s: %v", nd.id, err)
		}
		t.Cleanup(func() { cl.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				k := fmt.Sprintf("crash-%s-w%d-%06d", store, w, i)
				v := bytes.Repeat([]byte{byte('a' + i%26)}, 200)
				if err := cl.Add(ctx, []byte(k), v, time.Hour); err == nil {
					mu.Lock()
					acked[k] = v
					mu.Unlock()
				} else if ctx.Err() == nil {
					// The cluster is going down: keep trying until told to stop.
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	// Kill while the writers are at full speed, after a few hundred writes.
	waitFor(t, 30*time.Second, "300 acknowledged ADDs", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 300, fmt.Sprintf("%d acknowledged", len(acked))
	})
	for _, nd := range c.all() {
		nd.signal(syscall.SIGKILL)
	}
	mu.Lock()
	killedAt := len(acked) // acknowledgements after this may race the kill; still checked
	mu.Unlock()
	for _, nd := range c.all() {
		nd.kill() // waits until the process is gone
	}
	cancel()
	wg.Wait()
	t.Logf("%s: %d ADDs acknowledged (%d when the kill was sent)", store, len(acked), killedAt)

	for _, nd := range c.all() {
		nd.restart()
	}
	leader := c.waitLeader(20 * time.Second)
	cl := dial(t, leader) // linearizable reads: the leader's committed state
	missing := 0
	for k, v := range acked {
		got, err := getRetry(cl, k)
		if err != nil || !bytes.Equal(got, v) {
			missing++
			if missing <= 10 {
				t.Errorf("%s: acknowledged ADD %s lost in the crash: %q, %v", store, k, got, err)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%s: %d of %d acknowledged ADDs lost", store, missing, len(acked))
	}
}

// getRetry GETs key, retrying while the restarted cluster cannot answer yet (a
// miss under linearizable reads is an answer).
func getRetry(cl *distcache.Client, key string) ([]byte, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		v, err := cl.Get(ctx, []byte(key))
		cancel()
		if err == nil || errors.Is(err, distcache.ErrNotFound) || time.Now().After(deadline) {
			return v, err
		}
		pollPause()
	}
}

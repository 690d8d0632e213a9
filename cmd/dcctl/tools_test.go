package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/cmd/dcctl/internal/bench"
	"github.com/distcache-replicated/distcache/cmd/dcctl/internal/dctest"
	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// startCLI runs a long-lived dcctl command until the test ends, then checks that it
// shut down cleanly with status 0.
func startCLI(t *testing.T, args ...string) *syncBuffer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	a := &app{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }}
	done := make(chan int, 1)
	go func() { done <- a.run(ctx, args) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("%v exited %d; stderr:\n%s", args, code, errOut.String())
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%v did not stop after cancellation", args)
		}
	})
	return &out
}

func dialWhenUp(t *testing.T, addr string) *distcache.Client {
	t.Helper()
	var c *distcache.Client
	waitFor(t, 5*time.Second, "listener "+addr, func() bool {
		var err error
		c, err = distcache.Dial(context.Background(), addr, distcache.WithRequestTimeout(5*time.Second))
		return err == nil
	})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestProxyCommand(t *testing.T) {
	up := startServer(t, "tcp")
	sock := filepath.Join(t.TempDir(), "scache")
	startCLI(t, "proxy", "-listen", "UNIX:"+sock, "-servers", deadAddr(t)+","+up.Addr, "-sockperms", "600", "-timeout", "1s", "-retry", "20ms")
	c := dialWhenUp(t, "UNIX:"+sock)
	st, err := os.Stat(sock)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", st.Mode(), err)
	}
	// The proxy first tries the dead server, then connects to the live one; until
	// then answers are empty ("upstream unavailable").
	ctx := context.Background()
	waitFor(t, 5*time.Second, "proxy upstream", func() bool {
		_, err := c.Have(ctx, []byte("probe"))
		return err == nil
	})
	if err := c.Add(ctx, []byte("via-proxy"), []byte("hello proxy"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, []byte("via-proxy")); err != nil || string(got) != "hello proxy" {
		t.Fatalf("get via proxy: %q %v", got, err)
	}
	if got, ok := up.Cache.Lookup([]byte("via-proxy")); !ok || string(got) != "hello proxy" {
		t.Fatal("session did not reach the server")
	}
	// The data commands work through the proxy too.
	env := map[string]string{"DCCTL_SERVER": "UNIX:" + sock}
	if r := runCLI(t, env, "get", "via-proxy"); r.code != 0 || r.stdout != "hello proxy\n" {
		t.Fatalf("dcctl get via proxy: %+v", r)
	}
}

func TestSnoopCommand(t *testing.T) {
	up := startServer(t, "unix")
	sock := filepath.Join(t.TempDir(), "snoop")
	out := startCLI(t, "snoop", "-listen", "UNIX:"+sock, "-server", up.Addr)
	env := map[string]string{"DCCTL_SERVER": "UNIX:" + sock}
	waitFor(t, 5*time.Second, "snoop listener", func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})
	if r := runCLI(t, env, "add", "hex:0a0b", "do not print me", "--ttl", "90s"); r.code != 0 {
		t.Fatalf("add via snoop: %+v", r)
	}
	waitFor(t, 5*time.Second, "two snoop lines", func() bool { return strings.Count(out.String(), "\n") >= 2 })
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if !strings.Contains(lines[0], "client->server REQ  ADD") || !strings.Contains(lines[0], "id=hex:0a0b") ||
		!strings.Contains(lines[0], "ttl_ms=90000") || !strings.Contains(lines[0], "data_len=15") {
		t.Errorf("request line: %q", lines[0])
	}
	if !strings.Contains(lines[1], "server->client RESP ADD") || !strings.Contains(lines[1], "result=OK") {
		t.Errorf("response line: %q", lines[1])
	}
	if bytes.Contains([]byte(out.String()), []byte("do not print me")) {
		t.Fatal("snoop printed session data")
	}
}

// Two servers sharing one store stand in for a replicated cluster: when the proxy's
// server dies, bench through the proxy keeps going on the other one, and no answer
// contradicts the model (a request caught by the failure gets an error, never a
// wrong answer).
func TestBenchThroughProxyAcrossFailover(t *testing.T) {
	shared := dctest.NewMapCache()
	s1 := dctest.StartServer(t, "tcp", distcache.NewCacheHandler(shared))
	s2 := dctest.StartServer(t, "tcp", distcache.NewCacheHandler(shared))
	sock := filepath.Join(t.TempDir(), "scache")
	startCLI(t, "proxy", "-listen", "UNIX:"+sock, "-servers", s1.Addr+","+s2.Addr, "-timeout", "1s", "-retry", "20ms")
	dialWhenUp(t, "UNIX:"+sock)

	done := make(chan cliResult, 1)
	go func() {
		done <- runCLI(t, nil, "bench", "--server", "UNIX:"+sock, "--duration", "1500ms", "--concurrency", "2",
			"--sessions", "20", "--json", "--timeout", "2s", "--mix", "1:6:1:0")
	}()
	waitFor(t, 5*time.Second, "traffic on the first server", func() bool { return shared.Len() > 5 })
	s1.Stop()
	r := <-done
	var rep bench.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("bench output %q: %v (stderr %s)", r.stdout, err, r.stderr)
	}
	if rep.VerifyErrors != 0 || r.code != 0 {
		t.Fatalf("verification errors across failover: %+v\n%s", rep, r.stderr)
	}
	if rep.Errors > 10 {
		t.Errorf("%d failed operations; failover should cost only those in flight", rep.Errors)
	}
	if rep.Ops < 100 {
		t.Errorf("only %d operations in 1.5s", rep.Ops)
	}
}

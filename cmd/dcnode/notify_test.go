package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/internal/testport"
	"github.com/distcache-replicated/distcache/node/adminapi"
)

// listenNotify is the service manager's end: a unixgram socket in a temporary
// directory. Messages arrive on the returned channel.
func listenNotify(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 1024)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return path, ch
}

// next waits for the first message for which match is true, returning the
// messages skipped on the way.
func next(t *testing.T, ch <-chan string, what string, match func(string) bool) (string, []string) {
	t.Helper()
	var skipped []string
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("socket closed while waiting for %s (got %q)", what, skipped)
			}
			if match(m) {
				return m, skipped
			}
			skipped = append(skipped, m)
		case <-deadline:
			t.Fatalf("no %s within 30s (got %q)", what, skipped)
		}
	}
}

func TestNewNotifier(t *testing.T) {
	path, _ := listenNotify(t)
	pid := 4242
	for _, tc := range []struct {
		env      []string
		nil      bool
		watchdog time.Duration
		err      string
	}{
		{env: nil, nil: true},
		{env: []string{"NOTIFY_SOCKET=" + path}},
		{env: []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=30000000"}, watchdog: 15 * time.Second},
		{env: []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=30000000", "WATCHDOG_PID=4242"}, watchdog: 15 * time.Second},
		{env: []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=30000000", "WATCHDOG_PID=1"}}, // meant for another process
		{env: []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=soon"}, err: "WATCHDOG_USEC"},
		{env: []string{"NOTIFY_SOCKET=relative.sock"}, err: "only unix socket paths"},
		{env: []string{"NOTIFY_SOCKET=/nonexistent/notify.sock"}, err: "no such file"},
	} {
		n, err := newNotifier(tc.env, pid)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want one mentioning %q", tc.env, err, tc.err)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.env, err)
		case tc.nil != (n == nil):
			t.Errorf("%q: notifier %v, want nil %v", tc.env, n, tc.nil)
		case n != nil && n.watchdog != tc.watchdog:
			t.Errorf("%q: watchdog %v, want %v", tc.env, n.watchdog, tc.watchdog)
		}
		n.close()
	}
	var none *notifier // not under systemd: every call is a no-op
	if err := none.send("READY=1"); err != nil {
		t.Errorf("nil notifier: %v", err)
	}
}

// flipReady is a node whose readiness the test decides.
type flipReady struct{ ready atomic.Bool }

func (f *flipReady) Ready() error {
	if f.ready.Load() {
		return nil
	}
	return errors.New("no leader")
}

func (f *flipReady) Status() adminapi.Status {
	if f.ready.Load() {
		return adminapi.Status{State: "Leader", LeaderID: "n1", Term: 2, AppliedIndex: 7}
	}
	return adminapi.Status{State: "Follower"}
}

// TestNotifierWaitsForReadiness: no READY=1 while the node is not ready (only
// a STATUS= saying why); READY=1 once it is.
func TestNotifierWaitsForReadiness(t *testing.T) {
	path, ch := listenNotify(t)
	n, err := newNotifier([]string{"NOTIFY_SOCKET=" + path}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer n.close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	r := &flipReady{}
	go func() { n.run(ctx, r, slog.New(slog.NewTextHandler(io.Discard, nil))); close(done) }()

	first, _ := next(t, ch, "a status", func(string) bool { return true })
	if want := "STATUS=not ready (no leader); follower, no leader"; !strings.HasPrefix(first, want) || strings.Contains(first, "READY=1") {
		t.Fatalf("first message %q; want it to start %q, without READY=1", first, want)
	}
	r.ready.Store(true)
	got, skipped := next(t, ch, "READY=1", func(m string) bool { return strings.Contains(m, "READY=1") })
	if want := "READY=1\nSTATUS=ready; leader, leader n1, term 2, applied 7, 0 sessions"; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
	if len(skipped) != 0 {
		t.Errorf("messages between: %q (an unchanged status is not repeated)", skipped)
	}
}

// TestNotifyRealNode runs a real one-node cluster as dcnode does under
// systemd with Type=notify and WatchdogSec=: WATCHDOG=1 pings, READY=1 when
// /readyz says ready, STOPPING=1 when it is told to stop.
func TestNotifyRealNode(t *testing.T) {
	path, ch := listenNotify(t)
	dir := t.TempDir()
	admin := testport.Addr(t)
	args := []string{"-node-id", "n1", "-data-dir", filepath.Join(dir, "data"), "-quiet",
		"-listen", fmt.Sprintf("IP:127.0.0.1:%d", testport.Port(t)),
		"-raft-addr", testport.Addr(t), "-gossip-addr", testport.Addr(t), "-admin-addr", admin}
	var o options
	if err := o.load(args, nil); err != nil {
		t.Fatal(err)
	}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	environ := []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=200000"} // a ping every 100ms
	ctx, cancel := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		exit <- runNode(ctx, o, environ, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	t.Cleanup(func() { cancel(); <-done }) // the node is gone before its temp dirs

	ready, before := next(t, ch, "READY=1", func(m string) bool { return strings.Contains(m, "READY=1") })
	if !strings.Contains(ready, "STATUS=ready; leader, leader n1, term ") {
		t.Errorf("READY=1 came with %q; want the ready status line", ready)
	}
	res, err := http.Get("http://" + admin + adminapi.PathReadyz)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("READY=1 sent but /readyz answers %s", res.Status)
	}
	pings := 0
	for _, m := range before {
		if m == "WATCHDOG=1" {
			pings++
		}
	}
	if pings == 0 { // the first ping goes out at once, before readiness is checked
		_, skipped := next(t, ch, "WATCHDOG=1", func(m string) bool { return m == "WATCHDOG=1" })
		t.Logf("messages before the first ping after READY=1: %q", skipped)
	}
	next(t, ch, "a second WATCHDOG=1", func(m string) bool { return m == "WATCHDOG=1" })

	cancel()
	next(t, ch, "STOPPING=1", func(m string) bool { return strings.HasPrefix(m, "STOPPING=1\n") })
	select {
	case code := <-exit:
		if code != exitOK {
			t.Errorf("runNode exited %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("runNode did not return within 30s of cancel")
	}
}

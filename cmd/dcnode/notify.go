package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distcache-replicated/distcache/node/adminapi"
)

// This file speaks systemd's notification protocol (sd_notify(3)) for the unit in
// packaging/: with Type=notify, systemd considers dcnode started only once it
// says READY=1, which it does when the node is ready by the same check as
// /readyz; STATUS= lines show in `systemctl status`; WATCHDOG=1 keeps a unit
// with WatchdogSec= from being restarted; STOPPING=1 announces a shutdown. The
// protocol is one datagram per message on the unix socket named by
// $NOTIFY_SOCKET, so it needs no library.

// notifyPoll is how often the node's readiness is checked for systemd.
const notifyPoll = 500 * time.Millisecond

// notifier sends messages to the service manager; a nil *notifier (dcnode not
// started by systemd with Type=notify) sends nothing.
type notifier struct {
	mu   sync.Mutex
	conn *net.UnixConn // nil once closed or broken
	// watchdog is the interval at which to send WATCHDOG=1 (half of
	// $WATCHDOG_USEC), 0 without a watchdog.
	watchdog time.Duration
}

// newNotifier reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID from
// environ (as os.Environ) for the process pid; it returns nil, nil when there
// is no socket to notify.
func newNotifier(environ []string, pid int) (*notifier, error) {
	env := map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	path := env["NOTIFY_SOCKET"]
	if path == "" {
		return nil, nil
	}
	if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "@") {
		return nil, fmt.Errorf("NOTIFY_SOCKET=%s: only unix socket paths (/...) and abstract names (@...) are supported", path)
	}
	// Go maps a leading @ to Linux's abstract namespace, as systemd means it.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("NOTIFY_SOCKET=%s: %w", path, err)
	}
	n := &notifier{conn: conn}
	if us := env["WATCHDOG_USEC"]; us != "" {
		wpid := env["WATCHDOG_PID"]
		usec, err := strconv.ParseUint(us, 10, 63)
		switch {
		case err != nil || usec == 0:
			conn.Close()
			return nil, fmt.Errorf("WATCHDOG_USEC=%s: want a positive number of microseconds", us)
		case wpid == "" || wpid == strconv.Itoa(pid):
			n.watchdog = time.Duration(usec) * time.Microsecond / 2
		}
	}
	return n, nil
}

// send writes one message, e.g. "READY=1\nSTATUS=ready".
func (n *notifier) send(msg string) error {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conn == nil {
		return nil
	}
	_, err := n.conn.Write([]byte(msg))
	return err
}

// close releases the socket; later sends do nothing.
func (n *notifier) close() {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conn != nil {
		n.conn.Close()
		n.conn = nil
	}
}

// readiness is what the notifier needs of the node: the /readyz check and a
// summary for the STATUS= line.
type readiness interface {
	Ready() error
	Status() adminapi.Status
}

// run tells systemd about the node until ctx ends: READY=1 the first time r is
// ready, a STATUS= line whenever the summary changes, and WATCHDOG=1 every
// watchdog interval. Failures to send are logged once; they never stop the node.
func (n *notifier) run(ctx context.Context, r readiness, log *slog.Logger) {
	if n == nil {
		return
	}
	poll := time.NewTicker(notifyPoll)
	defer poll.Stop()
	var dog <-chan time.Time
	if n.watchdog > 0 {
		t := time.NewTicker(n.watchdog)
		defer t.Stop()
		dog = t.C
		n.report(n.send("WATCHDOG=1"), log)
	}
	ready, status := false, ""
	for {
		err := r.Ready()
		msg := ""
		if s := statusLine(err, r.Status()); s != status {
			status = s
			msg = "STATUS=" + s
		}
		if err == nil && !ready {
			ready = true
			msg = "READY=1\n" + msg
			log.Info("told systemd the node is ready")
		}
		if msg != "" {
			n.report(n.send(msg), log)
		}
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
		case <-dog:
			n.report(n.send("WATCHDOG=1"), log)
		}
	}
}

// report logs a failure to reach systemd and stops notifying: later sends
// would only repeat it.
func (n *notifier) report(err error, log *slog.Logger) {
	if err != nil {
		log.Warn("cannot notify systemd (NOTIFY_SOCKET); continuing without", "err", err)
		n.close()
	}
}

// statusLine is the one-line summary `systemctl status` shows.
func statusLine(notReady error, st adminapi.Status) string {
	leader := "no leader"
	if st.LeaderID != "" {
		leader = "leader " + st.LeaderID
	}
	state := "ready"
	if notReady != nil {
		state = "not ready (" + notReady.Error() + ")"
	}
	return fmt.Sprintf("%s; %s, %s, term %d, applied %d, %d sessions", state, strings.ToLower(st.State), leader, st.Term, st.AppliedIndex, st.Sessions)
}

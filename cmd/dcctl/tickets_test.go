package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/node/adminapi"
)

// fakeTickets implements the node's /v1/tickets contract for two members: n1
// writes files and delivers a rotation after `lag` status calls; n2 writes
// nothing. failing makes n1 report a delivery failure.
type fakeTickets struct {
	token string

	mu        sync.Mutex
	gen       uint64
	delivered uint64
	lag       int // status calls before n1 delivers the current generation
	failing   bool
}

func (f *fakeTickets) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	js := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	switch r.Method + " " + r.URL.Path {
	case "GET /v1/tickets":
		js(f.ring())
	case "POST /v1/tickets/rotate":
		if r.Header.Get("Authorization") != "Bearer "+f.token {
			writeErr(w, http.StatusUnauthorized, "missing or wrong admin token")
			return
		}
		f.gen++
		f.lag = 3
		js(f.ring())
	case "GET /v1/tickets/status":
		if f.lag > 0 {
			f.lag--
		} else {
			f.delivered = f.gen
		}
		n1 := adminapi.TicketNode{Node: "n1", Reached: true, TicketDelivery: adminapi.TicketDelivery{
			Generation: f.gen, Outputs: []string{"nginx:/run/tickets/nginx.{1..4}.key (4 files, 1 encrypts)"},
			CaughtUp: true, Delivered: f.delivered, Reloads: f.delivered,
		}}
		if f.failing {
			n1.Error = "ticketkeys: reload command failed: exit status 1"
		}
		n2 := adminapi.TicketNode{Node: "n2", Reached: true, TicketDelivery: adminapi.TicketDelivery{Generation: f.gen, CaughtUp: true}}
		js(adminapi.TicketsStatus{Generation: f.gen, Nodes: []adminapi.TicketNode{n1, n2}})
	default:
		writeErr(w, http.StatusNotFound, "no route "+r.URL.Path)
	}
}

func (f *fakeTickets) ring() adminapi.TicketRing {
	ring := adminapi.TicketRing{Generation: f.gen, RotateEverySeconds: 3600, LifetimeSeconds: 360, Keys: []adminapi.TicketKey{}}
	if f.gen == 0 {
		return ring
	}
	now := time.Now().UTC()
	next := now.Add(time.Hour)
	ring.RotatedAt, ring.NextRotation = &now, &next
	ring.Keys = append(ring.Keys,
		adminapi.TicketKey{ID: f.gen, Role: adminapi.TicketCurrent, CreatedAt: now.Add(-time.Hour), AgeSeconds: 3600},
		adminapi.TicketKey{ID: f.gen + 1, Role: adminapi.TicketNext, CreatedAt: now, AgeSeconds: 0})
	if f.gen > 1 {
		ring.Keys = append(ring.Keys, adminapi.TicketKey{ID: f.gen - 1, Role: adminapi.TicketPast, CreatedAt: now.Add(-2 * time.Hour), AgeSeconds: 7200, RetiredAt: &now})
	}
	return ring
}

func TestTickets(t *testing.T) {
	f := &fakeTickets{token: "tok"}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	tf := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tf, []byte("tok\n"), 0o600)
	env := map[string]string{"DCCTL_ADDR": strings.TrimPrefix(srv.URL, "http://")}

	r := runCLI(t, env, "tickets", "list")
	if r.code != exitOK || !strings.Contains(r.stdout, "no ticket keys yet") {
		t.Fatalf("list before a rotation: %+v", r)
	}
	if r := runCLI(t, env, "tickets", "rotate"); r.code != exitFailed || !strings.Contains(r.stderr, "token") {
		t.Fatalf("rotate without the token: %+v", r)
	}
	env["DCCTL_TOKEN_FILE"] = tf
	if r := runCLI(t, env, "tickets", "rotate"); r.code != exitOK || r.stdout != "rotated: generation 1, current key #1, next key #2\n" {
		t.Fatalf("rotate: %+v", r)
	}
	// --wait polls until n1 (which writes files) has delivered; n2 writes nothing.
	r = runCLI(t, env, "tickets", "rotate", "--wait", "20s")
	if r.code != exitOK || !strings.Contains(r.stdout, "every member delivered generation 2") {
		t.Fatalf("rotate --wait: %+v", r)
	}
	r = runCLI(t, env, "tickets", "list")
	for _, want := range []string{"generation 2", "every 1h0m0s", "ROLE", "current", "next", "past"} {
		if r.code != exitOK || !strings.Contains(r.stdout, want) {
			t.Fatalf("list does not show %q: %+v", want, r)
		}
	}
	if r := runCLI(t, env, "tickets", "status"); r.code != exitOK || !strings.Contains(r.stdout, "nginx:/run/tickets") {
		t.Fatalf("status: %+v", r)
	}
	f.mu.Lock()
	f.failing = true
	f.mu.Unlock()
	r = runCLI(t, env, "tickets", "status")
	if r.code != exitFailed || !strings.Contains(r.stdout, "reload command failed") || !strings.Contains(r.stderr, "n1 failed") {
		t.Fatalf("status with a failing member: %+v", r)
	}
	r = runCLI(t, env, "tickets", "rotate", "--wait", "600ms")
	if r.code != exitFailed || !strings.Contains(r.stderr, "not delivered everywhere within 600ms") {
		t.Fatalf("rotate --wait with a failing member: %+v", r)
	}
	if r := runCLI(t, env, "tickets", "status", "--json"); r.code != exitFailed || !json.Valid([]byte(r.stdout)) {
		t.Fatalf("status --json with a failing member: %+v", r)
	}
	for _, args := range [][]string{{"tickets"}, {"tickets", "spin"}, {"tickets", "list", "--wait", "1s"}} {
		if r := runCLI(t, env, args...); r.code != exitUsage {
			t.Errorf("dcctl %v: exit %d, want %d (%s)", args, r.code, exitUsage, r.stderr)
		}
	}
}

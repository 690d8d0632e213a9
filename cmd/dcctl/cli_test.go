package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestHelpAndUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		r := runCLI(t, nil, args...)
		if r.code != exitOK || !strings.Contains(r.stdout, "Usage:") || !strings.Contains(r.stdout, "bench") {
			t.Errorf("%v: code %d, stdout %q", args, r.code, r.stdout)
		}
	}
	for _, c := range commands() {
		for _, args := range [][]string{{c.name, "--help"}, {c.name, "-h"}, {"help", c.name}} {
			r := runCLI(t, nil, args...)
			if r.code != exitOK {
				t.Errorf("%v: exit %d, stderr %q", args, r.code, r.stderr)
			}
			if !strings.Contains(r.stdout, "Usage: dcctl "+c.name) || !strings.Contains(r.stdout, "Example:\n  dcctl "+c.name) {
				t.Errorf("%v: help lacks usage or example:\n%s", args, r.stdout)
			}
			if !strings.Contains(r.stdout, "--json") {
				t.Errorf("%v: help does not document --json:\n%s", args, r.stdout)
			}
		}
	}
	usage := [][]string{
		{},
		{"frobnicate"},
		{"help", "frobnicate"},
		{"status", "--no-such-flag"},
		{"status", "extra"},
		{"add", "only-id"},
		{"get"},
		{"get", "hex:zz"},
		{"add", "id", "v", "--ttl", "200h"},
		{"add", strings.Repeat("x", 65), "v"},
		{"get", "x", "--server", "TCP:1.2.3.4:5"},
		{"snapshot", "frob", "file"},
		{"bench", "--mix", "1:2"},
		{"bench", "--datamin", "2"},
		{"bench", "--concurrency", "5", "--sessions", "4"},
		{"proxy"},
		{"snoop", "--listen", "IP:127.0.0.1:0"},
		{"members", "--addr", "ftp://x"},
	}
	for _, args := range usage {
		r := runCLI(t, nil, args...)
		if r.code != exitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", args, r.code, exitUsage, r.stderr)
		}
		if r.stdout != "" && len(args) > 0 {
			t.Errorf("%v: usage error wrote to stdout: %q", args, r.stdout)
		}
		if len(args) > 0 && strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("%v: want a one-line hint on stderr, got %q", args, r.stderr)
		}
	}
}

func TestDataCommands(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			ts := startServer(t, network)
			env := map[string]string{"DCCTL_SERVER": ts.Addr}

			if r := runCLI(t, env, "add", "sess1", "hello world", "--ttl", "1m"); r.code != 0 || r.stdout != "OK\n" {
				t.Fatalf("add: %+v", r)
			}
			if r := runCLI(t, env, "add", "sess1", "other"); r.code != exitFailed || r.stdout != "session exists\n" {
				t.Fatalf("duplicate add: %+v", r)
			}
			if r := runCLI(t, env, "get", "sess1"); r.code != 0 || r.stdout != "hello world\n" {
				t.Fatalf("get: %+v", r)
			}
			if r := runCLI(t, env, "get", "sess1", "--hex"); r.code != 0 || r.stdout != "68656c6c6f20776f726c64\n" {
				t.Fatalf("get --hex: %+v", r)
			}
			if r := runCLI(t, env, "have", "sess1"); r.code != 0 || r.stdout != "yes\n" {
				t.Fatalf("have: %+v", r)
			}
			if r := runCLI(t, env, "remove", "sess1"); r.code != 0 || r.stdout != "removed\n" {
				t.Fatalf("remove: %+v", r)
			}
			if r := runCLI(t, env, "remove", "sess1"); r.code != exitFailed || r.stdout != "not found\n" {
				t.Fatalf("second remove: %+v", r)
			}
			if r := runCLI(t, env, "have", "sess1"); r.code != exitFailed || r.stdout != "no\n" {
				t.Fatalf("have after remove: %+v", r)
			}
			if r := runCLI(t, env, "get", "sess1"); r.code != exitFailed || r.stdout != "not found\n" {
				t.Fatalf("get after remove: %+v", r)
			}

			// Binary id and value, given in hex and printed back in hex.
			if r := runCLI(t, env, "add", "hex:00ff10", "hex:DEADBEEF00"); r.code != 0 {
				t.Fatalf("hex add: %+v", r)
			}
			if got, _ := ts.Cache.Lookup([]byte("\x00\xff\x10")); string(got) != "\xde\xad\xbe\xef\x00" {
				t.Fatalf("server stored %x", got)
			}
			r := runCLI(t, env, "get", "hex:00ff10", "--json")
			var res opResult
			if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 0 {
				t.Fatalf("get --json: %+v (%v)", r, err)
			}
			if res.Result != "found" || res.ValueHex != "deadbeef00" || res.Value != "" || res.Size == nil || *res.Size != 5 || res.Server != ts.Addr {
				t.Fatalf("get --json: %+v", res)
			}
			if r := runCLI(t, env, "get", "hex:00ff10", "--raw"); r.stdout != "\xde\xad\xbe\xef\x00" {
				t.Fatalf("get --raw: %q", r.stdout)
			}
			if r := runCLI(t, env, "take", "hex:00ff10"); r.code != 0 || r.stdout != "deadbeef00\n" {
				t.Fatalf("take: %+v", r)
			}
			if r := runCLI(t, env, "take", "hex:00ff10", "--json"); r.code != exitFailed || !strings.Contains(r.stdout, `"result": "not_found"`) {
				t.Fatalf("second take: %+v", r)
			}
			if ts.Cache.Len() != 0 {
				t.Fatalf("cache not empty: %d", ts.Cache.Len())
			}
		})
	}
}

func TestDataCommandsFailOver(t *testing.T) {
	ts := startServer(t, "tcp")
	dead := deadAddr(t)
	env := map[string]string{"DCCTL_SERVER": dead + "," + ts.Addr}
	if r := runCLI(t, env, "add", "k", "value-1", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"server": "`+ts.Addr+`"`) {
		t.Fatalf("add via second server: %+v", r)
	}
	if r := runCLI(t, env, "get", "k"); r.code != 0 || r.stdout != "value-1\n" {
		t.Fatalf("get via second server: %+v", r)
	}
	// Only dead servers: a failure (exit 1) naming the address, not a usage error.
	r := runCLI(t, map[string]string{"DCCTL_SERVER": dead}, "have", "k")
	if r.code != exitFailed || !strings.Contains(r.stderr, dead) {
		t.Fatalf("dead server: %+v", r)
	}
}

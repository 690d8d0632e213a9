package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/distcache-replicated/distcache/cmd/dcctl/internal/bench"
)

func TestBenchVerifiesAndReportsJSON(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		ops  int64
	}{
		{"persistent-tcp", []string{"--ops", "3000", "--concurrency", "4", "--sessions", "40"}, 3000},
		{"per-op-connections", []string{"--ops", "300", "--persistent=false", "--concurrency", "2", "--sessions", "10"}, 300},
		{"multi-frame-with-take", []string{"--ops", "1000", "--datamin", "2000", "--datamax", "9000", "--mix", "2:3:1:1:1", "--sessions", "8"}, 1000},
	} {
		t.Run(c.name, func(t *testing.T) {
			ts := startServer(t, "tcp")
			args := append([]string{"bench", "--server", ts.Addr, "--json", "--seed", "7"}, c.args...)
			r := runCLI(t, nil, args...)
			if r.code != 0 {
				t.Fatalf("bench failed: %+v", r)
			}
			var rep bench.Report
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
				t.Fatalf("bad JSON %q: %v", r.stdout, err)
			}
			if rep.Ops != c.ops || rep.Errors != 0 || rep.VerifyErrors != 0 {
				t.Fatalf("report: %+v", rep)
			}
			var sum, hits int64
			for _, op := range rep.ByOp {
				sum += op.Ops
				hits += op.Hits
				if op.Ops > 0 && (op.Latency.P50 <= 0 || op.Latency.P50 > op.Latency.P99 || op.Latency.P99 > op.Latency.Max) {
					t.Errorf("implausible latency %+v", op.Latency)
				}
			}
			if sum != rep.Ops || hits == 0 || rep.OpsPerSec <= 0 || rep.Seconds <= 0 {
				t.Fatalf("by_op does not add up: %+v", rep)
			}
			// The JSON keys scripts rely on.
			var m map[string]any
			json.Unmarshal([]byte(r.stdout), &m)
			for _, k := range []string{"ops", "seconds", "ops_per_sec", "errors", "verify_errors", "latency_ms", "by_op"} {
				if _, ok := m[k]; !ok {
					t.Errorf("JSON lacks %q", k)
				}
			}
			lat := m["latency_ms"].(map[string]any)
			for _, k := range []string{"p50", "p90", "p99", "max"} {
				if _, ok := lat[k]; !ok {
					t.Errorf("latency_ms lacks %q", k)
				}
			}
		})
	}
}

func TestBenchDetectsWrongAnswers(t *testing.T) {
	ts := startServer(t, "unix")
	ts.Cache.SetCorrupt(true) // every GET answer has its last byte flipped
	r := runCLI(t, nil, "bench", "--server", ts.Addr, "--ops", "400", "--sessions", "5", "--mix", "1:4:0:0")
	if r.code != exitFailed {
		t.Fatalf("bench against a corrupting server: exit %d, %+v", r.code, r)
	}
	if !strings.Contains(r.stderr, "verification failed") || !strings.Contains(r.stderr, "differ from the") {
		t.Errorf("no verification log line: %q", r.stderr)
	}
	if !strings.Contains(r.stdout, "verification errors") || !strings.Contains(r.stdout, "P99 ms") {
		t.Errorf("human report missing: %q", r.stdout)
	}
}

func TestBenchCountsTransportErrors(t *testing.T) {
	r := runCLI(t, nil, "bench", "--server", deadAddr(t), "--ops", "20", "--json", "--fail-on-error")
	if r.code != exitFailed {
		t.Fatalf("bench against a dead server: %+v", r)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || rep.Errors != 20 || rep.VerifyErrors != 0 || rep.FirstError == "" {
		t.Fatalf("report %+v (%v)", rep, err)
	}
	// Without --fail-on-error transport errors alone do not fail the run.
	if r := runCLI(t, nil, "bench", "--server", deadAddr(t), "--ops", "5"); r.code != 0 {
		t.Fatalf("exit %d: %+v", r.code, r)
	}
}

// TestBenchFailuresAreNotMisses: a node that answers every 7th GET, TAKE and
// HAVE with DISCONNECTED (a failing TAKE having removed the session first) makes
// failures, counted as unavailable, and no verification error: a failed TAKE
// leaves its session unknown, a failed GET or HAVE is not believed a miss.
func TestBenchFailuresAreNotMisses(t *testing.T) {
	ts := startServer(t, "tcp")
	ts.Cache.SetFailEvery(7)
	r := runCLI(t, nil, "bench", "--server", ts.Addr, "--json", "--seed", "18", "--ops", "4000",
		"--concurrency", "3", "--sessions", "60", "--mix", "2:4:1:2:1")
	var rep bench.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("bad JSON %+v: %v", r, err)
	}
	if r.code != exitOK || rep.VerifyErrors != 0 {
		t.Fatalf("exit %d, %d verification errors; stderr:\n%s", r.code, rep.VerifyErrors, r.stderr)
	}
	if rep.Errors == 0 || rep.Unavailable != rep.Errors {
		t.Fatalf("errors %d, unavailable %d: want every failure counted as unavailable", rep.Errors, rep.Unavailable)
	}
	for _, op := range []string{"get", "take", "have"} {
		if rep.ByOp[op].Unavailable == 0 {
			t.Errorf("no unavailable %s counted: %+v", op, rep.ByOp[op])
		}
	}
	h := runCLI(t, nil, "bench", "--server", ts.Addr, "--seed", "18", "--ops", "200", "--mix", "0:1:0:1:1")
	if !strings.Contains(h.stdout, "unavailable: no leader / quorum lost") {
		t.Errorf("human report does not count unavailable answers: %q", h.stdout)
	}
}

func TestBenchRateAndDuration(t *testing.T) {
	ts := startServer(t, "tcp")
	r := runCLI(t, nil, "bench", "--server", ts.Addr, "--duration", "300ms", "--rate", "200", "--concurrency", "2", "--json")
	var rep bench.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 0 {
		t.Fatalf("%+v (%v)", r, err)
	}
	// 200/s for 0.3 s is about 60 operations; pacing must hold it well below an
	// unthrottled run (thousands) and the duration must end it.
	if rep.Ops < 30 || rep.Ops > 90 || rep.Seconds < 0.29 || rep.Seconds > 2 {
		t.Fatalf("rate-limited run: %d ops in %.2fs", rep.Ops, rep.Seconds)
	}
}

func TestBenchProgressOnlyOnTerminal(t *testing.T) {
	ts := startServer(t, "tcp")
	args := []string{"bench", "--server", ts.Addr, "--duration", "1100ms", "--rate", "300"}
	for _, tty := range []bool{false, true} {
		var out, errOut syncBuffer
		a := &app{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }, isTTY: tty}
		if code := a.run(context.Background(), args); code != 0 {
			t.Fatalf("tty=%v: exit %d: %s", tty, code, errOut.String())
		}
		hasProgress := strings.Contains(out.String(), "\r\033[K") && strings.Contains(out.String(), "ops/s  errors 0")
		if hasProgress != tty {
			t.Errorf("tty=%v: progress shown %v:\n%q", tty, hasProgress, out.String())
		}
		if !strings.Contains(out.String(), "verification errors") {
			t.Errorf("tty=%v: no final report", tty)
		}
	}
}

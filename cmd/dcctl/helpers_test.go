package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/cmd/dcctl/internal/dctest"
	"github.com/distcache-replicated/distcache/internal/syncbuf"
)

func startServer(t *testing.T, network string) *dctest.Server {
	return dctest.StartServer(t, network, nil)
}

func deadAddr(t *testing.T) string { return dctest.DeadAddr(t) }

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	dctest.WaitFor(t, timeout, what, cond)
}

// cliResult is what one dcctl invocation produced.
type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs dcctl in-process with the given environment.
func runCLI(t *testing.T, env map[string]string, args ...string) cliResult {
	t.Helper()
	return runCLICtx(context.Background(), t, env, args...)
}

func runCLICtx(ctx context.Context, t *testing.T, env map[string]string, args ...string) cliResult {
	t.Helper()
	return runApp(ctx, &app{}, env, args...)
}

// runCLITerminal runs dcctl as if stdin were a terminal on which the operator
// types input.
func runCLITerminal(t *testing.T, env map[string]string, input string, args ...string) cliResult {
	t.Helper()
	return runApp(context.Background(), &app{stdin: strings.NewReader(input), stdinTTY: true}, env, args...)
}

func runApp(ctx context.Context, a *app, env map[string]string, args ...string) cliResult {
	var out, errOut syncBuffer
	a.stdout, a.stderr, a.getenv = &out, &errOut, func(k string) string { return env[k] }
	code := a.run(ctx, args)
	return cliResult{code: code, stdout: out.String(), stderr: errOut.String()}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writers of proxy and snoop.
type syncBuffer = syncbuf.Buffer

package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/distcache-replicated/distcache/cmd/dcctl/internal/bench"
	"github.com/distcache-replicated/distcache/cmd/dcctl/internal/proxy"
	"github.com/distcache-replicated/distcache/cmd/dcctl/internal/snoop"
	"github.com/distcache-replicated/distcache/protocol/distcache"
)

func toolCommands() []*command {
	const group = "Tools (replacing dc_client, dc_snoop, dc_test)"
	return []*command{
		{
			name: "proxy", group: group,
			summary: "Local proxy (dc_client): multiplex short-lived local connections onto one persistent upstream connection.",
			detail: `Requests get fresh upstream uids and the client's uid back on the answer (spec §7).
With no upstream connected a request is answered at once with an empty payload; a
request outstanding when the upstream fails, or not answered within --timeout, gets
the DISCONNECTED byte 0x02. When the upstream fails the next server of --servers is
used. Runs until interrupted (SIGINT/SIGTERM).`,
			example: "dcctl proxy -listen UNIX:/tmp/scache -servers IP:10.0.0.1:9100,IP:10.0.0.2:9100 -sockperms 660",
			run:     runProxy,
		},
		{
			name: "snoop", group: group,
			summary: "Transparent proxy (dc_snoop) printing every decoded message in both directions.",
			detail: `Prints one line per message: time, connection, direction, operation, uid, id,
sizes, and for answers the result and round-trip time. Session data is never
printed, only its size. Corrupt framing is logged and closes the pair.`,
			example: "dcctl snoop -listen IP:127.0.0.1:9200 -server IP:127.0.0.1:9100\ndcctl snoop -listen IP:127.0.0.1:9200 -server IP:127.0.0.1:9100 --json | jq .",
			run:     runSnoop,
		},
		{
			name: "bench", group: group,
			summary: "Load generator and verifier (dc_test): random operations checked against an exact model.",
			detail: `Each of --concurrency workers owns a disjoint set of sessions and keeps a model of
them, so every answer is checked (GET data byte for byte). Sizes are inclusive ranges.
Latency is measured per operation (from the scheduled start when --rate is set).
Live progress is shown when stdout is a terminal. Exit status 1 if any answer
disagreed with the model or, with --fail-on-error, on any failed operation.`,
			example: "dcctl bench --server IP:127.0.0.1:9100 --sessions 100 --ops 100000 --concurrency 4\n" +
				"dcctl bench --duration 30s --rate 1000 --mix 1:8:1:1 --json",
			run: runBench,
		},
	}
}

// logLevelFlag registers -log-level and returns a function building the stderr
// logger; jsonLogs selects slog's JSON format.
func logLevelFlag(a *app, inv *invocation, jsonLogs *bool) func() (*slog.Logger, error) {
	lvl := inv.fs.String("log-level", "info", "log level: debug, info, warn, error")
	return func() (*slog.Logger, error) {
		var l slog.Level
		if err := l.UnmarshalText([]byte(*lvl)); err != nil {
			return nil, usagef("bad --log-level %q", *lvl)
		}
		opts := &slog.HandlerOptions{Level: l}
		if jsonLogs != nil && *jsonLogs {
			return slog.New(slog.NewJSONHandler(a.stderr, opts)), nil
		}
		return slog.New(slog.NewTextHandler(a.stderr, opts)), nil
	}
}

func runProxy(ctx context.Context, a *app, inv *invocation) error {
	f := inv.fs
	listen := f.String("listen", "UNIX:/tmp/scache", "local `address` to accept application connections on")
	servers := f.String("servers", "", "upstream distcache `addresses`, comma-separated, in failover order (required)")
	f.StringVar(servers, "server", "", "alias of --servers")
	timeout := f.Duration("timeout", proxy.DefaultTimeout, "per-request deadline; a late request is answered with 0x02")
	retry := f.Duration("retry", proxy.DefaultRetry, "pause after no server could be connected")
	idle := f.Duration("idle", 0, "close local connections idle this long (0 = never)")
	maxConns := f.Int("maxconns", 1024, "maximum simultaneous local connections")
	maxInFlight := f.Int("max-inflight", proxy.DefaultMaxInFlight, "maximum requests outstanding upstream")
	sockOwner := f.String("sockowner", "", "owner (user name or uid) of the unix socket")
	sockGroup := f.String("sockgroup", "", "group (name or gid) of the unix socket")
	sockPerms := f.String("sockperms", "", "octal permissions of the unix socket, e.g. 660")
	jsonLogs := f.Bool("json", false, "log (to stderr) in JSON")
	mkLogger := logLevelFlag(a, inv, jsonLogs)
	if _, err := inv.parse(0, 0); err != nil {
		return err
	}
	logger, err := mkLogger()
	if err != nil {
		return err
	}
	list := splitList(*servers)
	if len(list) == 0 {
		return usagef("--servers is required")
	}
	for _, s := range list {
		if _, err := distcache.ParseAddress(s); err != nil {
			return &usageError{msg: err.Error()}
		}
	}
	opts, err := listenOptions(*sockOwner, *sockGroup, *sockPerms)
	if err != nil {
		return err
	}
	if *maxConns < 1 {
		return usagef("--maxconns must be ≥ 1")
	}
	p, err := proxy.New(proxy.Config{
		Servers: list, Timeout: *timeout, Retry: *retry, MaxInFlight: *maxInFlight,
		Dial: distcache.DialConn, Logger: logger,
	})
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	ln, err := distcache.Listen(*listen, opts)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	logger.Info("proxy listening", "listen", *listen, "servers", strings.Join(list, ","))
	return serveProxy(ctx, p, ln, *idle, *maxConns, logger)
}

// serveProxy runs the proxy's upstream manager and a distcache.Server on ln until ctx
// is cancelled, then shuts both down.
func serveProxy(ctx context.Context, p *proxy.Proxy, ln net.Listener, idle time.Duration, maxConns int, logger *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		p.Run(ctx)
	}()
	srv := &distcache.Server{Handler: p, Logger: logger, IdleTimeout: idle, MaxConns: maxConns}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		if errors.Is(err, distcache.ErrServerClosed) {
			err = nil
		}
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	srv.Shutdown(sctx)
	cancel()
	<-runDone
	return err
}

func listenOptions(owner, group, perms string) (distcache.ListenOptions, error) {
	o := distcache.ListenOptions{Owner: owner, Group: group}
	if perms != "" {
		v, err := strconv.ParseUint(perms, 8, 32)
		if err != nil || v > 0o777 {
			return o, usagef("bad --sockperms %q (want octal like 660)", perms)
		}
		o.Perm = fs.FileMode(v)
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func runSnoop(ctx context.Context, a *app, inv *invocation) error {
	f := inv.fs
	listen := f.String("listen", "", "`address` to accept connections on (required)")
	server := f.String("server", "", "distcache `address` to forward to (required)")
	f.StringVar(server, "connect", "", "alias of --server")
	asJSON := f.Bool("json", false, "print JSON lines")
	maxID := f.Int("max-id", 32, "print at most this many bytes of an id")
	mkLogger := logLevelFlag(a, inv, nil)
	if _, err := inv.parse(0, 0); err != nil {
		return err
	}
	logger, err := mkLogger()
	if err != nil {
		return err
	}
	if *listen == "" || *server == "" {
		return usagef("--listen and --server are required")
	}
	if _, err := distcache.ParseAddress(*server); err != nil {
		return &usageError{msg: err.Error()}
	}
	ln, err := distcache.Listen(*listen, distcache.ListenOptions{})
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	logger.Info("snoop listening", "listen", *listen, "server", *server)
	s := &snoop.Snooper{
		Dial:       func(ctx context.Context) (net.Conn, error) { return distcache.DialConn(ctx, *server) },
		Out:        a.stdout,
		JSON:       *asJSON,
		MaxIDBytes: *maxID,
		Logger:     logger,
	}
	return s.Serve(ctx, ln)
}

func runBench(ctx context.Context, a *app, inv *invocation) error {
	f := inv.fs
	var o dataOptions
	o.register(a, inv)
	f.Lookup("timeout").Usage = "per-operation deadline"
	sessions := f.Int("sessions", 100, "number of distinct sessions (split between workers)")
	idMin := f.Int("idmin", 10, "minimum session id length")
	idMax := f.Int("idmax", 63, "maximum session id length (≤ 64)")
	dataMin := f.Int("datamin", 50, "minimum session data length (≥ 5 when verifying)")
	dataMax := f.Int("datamax", 2100, "maximum session data length")
	ttl := f.Duration("ttl", 60*time.Second, "lifetime of every added session")
	ops := f.Int64("ops", 0, "number of operations (default 10000 unless --duration is given)")
	duration := f.Duration("duration", 0, "run for this long (with --ops: whichever ends first)")
	mixStr := f.String("mix", "1:1:1:1", "operation weights add:get:remove:have[:take], or get=8,add=1,...")
	concurrency := f.Int("concurrency", 1, "parallel workers, each with its own connection")
	persistent := f.Bool("persistent", true, "one connection per worker (false: a new connection per operation)")
	rate := f.Float64("rate", 0, "target total operations per second (0 = as fast as possible)")
	verify := f.Bool("verify", true, "check every answer against the model")
	seed := f.Uint64("seed", 0, "random seed (0 = random)")
	progress := f.Bool("progress", true, "live progress line (only when stdout is a terminal)")
	failOnError := f.Bool("fail-on-error", false, "exit 1 if any operation failed (not only on verification errors)")
	if _, err := inv.parse(0, 0); err != nil {
		return err
	}
	servers, err := o.serverList()
	if err != nil {
		return err
	}
	if len(servers) > 1 {
		return usagef("bench targets one --server")
	}
	mix, err := bench.ParseMix(*mixStr)
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	if *ops == 0 && *duration == 0 {
		*ops = 10000
	}
	addr := servers[0]
	cfg := bench.Config{
		Dial: func(ctx context.Context) (bench.Client, error) {
			c, err := distcache.Dial(ctx, addr)
			if err != nil {
				return nil, err
			}
			return benchClient{c}, nil
		},
		Sessions: *sessions, IDMin: *idMin, IDMax: *idMax, DataMin: *dataMin, DataMax: *dataMax,
		TTL: *ttl, Ops: *ops, Duration: *duration, Mix: mix, Concurrency: *concurrency,
		Persistent: *persistent, Rate: *rate, Timeout: o.timeout, Verify: *verify, Seed: *seed,
		Logger: a.logger, Unavailable: unavailable,
	}
	if err := cfg.Validate(); err != nil {
		return &usageError{msg: err.Error()}
	}
	if *progress && a.isTTY && !o.json {
		cfg.Progress = a.stdout
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if o.json {
		if err := writeJSON(a.stdout, rep); err != nil {
			return err
		}
	} else {
		printBenchReport(a, addr, rep)
	}
	switch {
	case rep.VerifyErrors > 0:
		return fmt.Errorf("%d answer(s) disagreed with the model", rep.VerifyErrors)
	case *failOnError && rep.Errors > 0:
		return fmt.Errorf("%d operation(s) failed; first: %s", rep.Errors, rep.FirstError)
	case rep.Interrupted:
		return errors.New("interrupted")
	}
	return nil
}

func printBenchReport(a *app, addr string, rep *bench.Report) {
	fmt.Fprintf(a.stdout, "target %s: %d ops in %.2fs = %.0f ops/s, %d errors (%d unavailable: no leader / quorum lost), %d verification errors\n",
		addr, rep.Ops, rep.Seconds, rep.OpsPerSec, rep.Errors, rep.Unavailable, rep.VerifyErrors)
	t := newTable(a.stdout, "OP", "OPS", "HITS", "MISSES", "ERRORS", "VERIFY", "P50 ms", "P90 ms", "P99 ms", "MAX ms")
	ms := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
	names := sortedKeys(rep.ByOp)
	sort.Slice(names, func(i, j int) bool { return opOrder(names[i]) < opOrder(names[j]) })
	for _, n := range names {
		r := rep.ByOp[n]
		t.row(n, fmt.Sprint(r.Ops), fmt.Sprint(r.Hits), fmt.Sprint(r.Misses), fmt.Sprint(r.Errors), fmt.Sprint(r.VerifyErrors),
			ms(r.Latency.P50), ms(r.Latency.P90), ms(r.Latency.P99), ms(r.Latency.Max))
	}
	l := rep.Latency
	t.row("all", fmt.Sprint(rep.Ops), "", "", fmt.Sprint(rep.Errors), fmt.Sprint(rep.VerifyErrors), ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max))
	t.flush()
	if rep.FirstError != "" {
		fmt.Fprintf(a.stdout, "first error: %s\n", rep.FirstError)
	}
}

func opOrder(name string) int {
	for i, n := range []string{"add", "get", "remove", "have", "take"} {
		if n == name {
			return i
		}
	}
	return 99
}

// benchClient adapts distcache.Client to the bench engine's outcome-based interface.
type benchClient struct{ c *distcache.Client }

func (b benchClient) Add(ctx context.Context, id, data []byte, ttl time.Duration) (bool, error) {
	err := b.c.Add(ctx, id, data, ttl)
	if errors.Is(err, distcache.ErrExists) {
		return false, nil
	}
	return err == nil, err
}

func (b benchClient) Get(ctx context.Context, id []byte) ([]byte, bool, error) {
	return found(b.c.Get(ctx, id))
}

func (b benchClient) Take(ctx context.Context, id []byte) ([]byte, bool, error) {
	return found(b.c.Take(ctx, id))
}

// found turns a GET/TAKE result into the engine's outcome: only NOTOK is a miss;
// a DISCONNECTED or other short answer (distcache.ErrUnavailable) is an error,
// never a miss the verifier would believe.
func found(data []byte, err error) ([]byte, bool, error) {
	if errors.Is(err, distcache.ErrNotFound) {
		return nil, false, nil
	}
	return data, err == nil, err
}

func (b benchClient) Remove(ctx context.Context, id []byte) (bool, error) {
	err := b.c.Remove(ctx, id)
	if errors.Is(err, distcache.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (b benchClient) Have(ctx context.Context, id []byte) (bool, error) { return b.c.Have(ctx, id) }
func (b benchClient) Close() error                                      { return b.c.Close() }

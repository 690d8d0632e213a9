package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/distcache-replicated/distcache/cmd/dcctl/internal/display"
	"github.com/distcache-replicated/distcache/protocol/distcache"
)

const (
	// minValueLen is the protocol's client rule (spec §4.3): a GET answer
	// shorter than this reads as a miss, so shorter values are never found.
	minValueLen        = 5
	defaultServer      = "IP:127.0.0.1:9100"
	defaultDataTimeout = 5 * time.Second
	defaultTTL         = 5 * time.Minute
)

// dataOptions are the flags of the commands that speak the distcache protocol.
type dataOptions struct {
	servers string
	// addr is a node's admin endpoint, asked for its view of the cluster when
	// a node answers that it cannot serve (see explainUnavailable).
	addr    string
	op      string // the command's name, for explanations
	timeout time.Duration
	json    bool
	// TLS, for listeners a node serves with -client-tls-cert; any of them
	// turns it on.
	tlsCA, tlsCert, tlsKey, tlsServerName string

	dial []distcache.ClientOption // built by target from the flags
}

func (o *dataOptions) register(a *app, inv *invocation) {
	srv := a.getenv("DCCTL_SERVER")
	if srv == "" {
		srv = defaultServer
	}
	inv.fs.StringVar(&o.servers, "server", srv, "distcache `address`(es), comma-separated, tried in order (env DCCTL_SERVER)")
	inv.fs.StringVar(&o.addr, "addr", a.adminAddr(), "admin HTTP `address` of a node, asked for its view of the cluster when the node cannot answer (env DCCTL_ADDR)")
	inv.fs.DurationVar(&o.timeout, "timeout", defaultDataTimeout, "deadline per server tried")
	inv.fs.BoolVar(&o.json, "json", false, "print JSON")
	inv.fs.StringVar(&o.tlsCA, "tls-ca", "", "speak TLS, verifying the node with the CA in this PEM `file` (for -client-tls-cert listeners)")
	inv.fs.StringVar(&o.tlsCert, "tls-cert", "", "speak TLS with this client certificate (PEM `file`; for listeners that require one, with --tls-key)")
	inv.fs.StringVar(&o.tlsKey, "tls-key", "", "private key (PEM `file`) of --tls-cert")
	inv.fs.StringVar(&o.tlsServerName, "tls-server-name", "", "name to verify in the node's certificate (default: the host of the address)")
}

// tlsConfig builds the client TLS configuration from the flags; nil when no
// TLS flag is given.
func (o *dataOptions) tlsConfig() (*tls.Config, error) {
	if o.tlsCA == "" && o.tlsCert == "" && o.tlsKey == "" && o.tlsServerName == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.tlsServerName}
	if o.tlsCA != "" {
		pem, err := os.ReadFile(o.tlsCA)
		if err != nil {
			return nil, usagef("--tls-ca: %v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, usagef("--tls-ca: no PEM certificate in %s", o.tlsCA)
		}
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return nil, usagef("--tls-cert and --tls-key go together")
	}
	if o.tlsCert != "" {
		pair, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return nil, usagef("--tls-cert/--tls-key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

func (o *dataOptions) serverList() ([]string, error) {
	var out []string
	for _, s := range strings.Split(o.servers, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if _, err := distcache.ParseAddress(s); err != nil {
			return nil, &usageError{msg: err.Error()}
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, usagef("no server address given")
	}
	return out, nil
}

// opResult is the JSON answer of a data command.
type opResult struct {
	Op       string `json:"op"`
	ID       string `json:"id"`
	Server   string `json:"server"`
	Result   string `json:"result"` // ok, exists, found, not_found, yes, no
	Value    string `json:"value,omitempty"`
	ValueHex string `json:"value_hex,omitempty"`
	Size     *int   `json:"size,omitempty"`
}

// withFailover runs op against each server in turn until one gives an answer. A
// server that cannot be reached is skipped; so is one whose answer was lost or was
// DISCONNECTED when retry is true (reads). Writes (retry false) are not repeated on
// another server once sent, because the first may have applied them.
func (o *dataOptions) withFailover(ctx context.Context, servers []string, retry bool,
	op func(ctx context.Context, c *distcache.Client) error) (string, error) {
	var errs []error
	for _, s := range servers {
		err := func() error {
			ctx, cancel := context.WithTimeout(ctx, o.timeout)
			defer cancel()
			c, err := distcache.Dial(ctx, s, o.dial...)
			if err != nil {
				return &dialError{err}
			}
			defer c.Close()
			return op(ctx, c)
		}()
		if err == nil || isAnswer(err) {
			return s, err
		}
		errs = append(errs, fmt.Errorf("%s: %w", s, err))
		var de *dialError
		if !retry && !errors.As(err, &de) {
			break
		}
		if ctx.Err() != nil {
			break
		}
	}
	err := errors.Join(errs...)
	if unavailable(err) {
		return "", o.explainUnavailable(ctx, servers, err)
	}
	return "", err
}

type dialError struct{ err error }

func (e *dialError) Error() string { return "connect: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// isAnswer reports whether err is a definite answer of the cache (not found, exists,
// an ADD validation code) rather than a failure to get one.
func isAnswer(err error) bool {
	if errors.Is(err, distcache.ErrNotFound) {
		return true
	}
	var se *distcache.StatusError
	return errors.As(err, &se) && !errors.Is(err, distcache.ErrUnavailable)
}

func dataCommands() []*command {
	const group = "Sessions (distcache protocol, --server)"
	return []*command{
		{
			name: "add", group: group, args: "ID VALUE",
			summary: "Store a session (fails if the id is already stored).",
			detail:  "ID and VALUE are text, or hex when written hex:0a1b... . Exit status 1 if the id exists.\nA VALUE shorter than 5 bytes is refused (clients read such answers as a miss) unless --force.",
			example: "dcctl add sess1 'secret bytes' --ttl 10m\ndcctl add hex:0a1b2c hex:00ff00ff00 --server IP:10.0.0.1:9100,IP:10.0.0.2:9100",
			run:     runAdd,
		},
		{
			name: "get", group: group, args: "ID",
			summary: "Print a session's value (text if printable, else hex).",
			detail:  "Exit status 1 if not found, or if the node cannot answer (no leader / quorum lost: printed as\n\"unavailable\", never as \"not found\"). Values shorter than 5 bytes are never found.",
			example: "dcctl get sess1\ndcctl get hex:0a1b2c --raw > session.bin",
			run:     func(ctx context.Context, a *app, inv *invocation) error { return runGet(ctx, a, inv, false) },
		},
		{
			name: "take", group: group, args: "ID",
			summary: "Get a session and remove it atomically (extension operation 4, single-use read).",
			detail:  "Exit status 1 if not found (already taken), or if the node cannot answer: then it prints\n\"unavailable\" and the session may or may not have been taken. A take is not retried on another server.",
			example: "dcctl take sess1 --json",
			run:     func(ctx context.Context, a *app, inv *invocation) error { return runGet(ctx, a, inv, true) },
		},
		{
			name: "remove", aliases: []string{"del", "rm"}, group: group, args: "ID",
			summary: "Remove a session. Exit status 1 if it was not there.",
			detail:  "To remove a cluster node use remove-node.",
			example: "dcctl remove sess1",
			run:     runRemove,
		},
		{
			name: "have", group: group, args: "ID",
			summary: "Report whether a session exists: prints yes (exit 0) or no (exit 1).",
			detail:  "When the node cannot answer (no leader / quorum lost) it prints why on stderr, not \"no\", and exits 1.",
			example: "dcctl have sess1 && echo cached",
			run:     runHave,
		},
	}
}

func parseIDArg(s string) ([]byte, error) {
	id, err := display.Parse(s)
	if err != nil {
		return nil, &usageError{msg: err.Error()}
	}
	return id, nil
}

// target parses a data command's n positional arguments, the first being the
// session id, and its server list: the prologue every data command shares.
func (o *dataOptions) target(inv *invocation, n int) (pos, servers []string, id []byte, err error) {
	o.op = inv.cmd.name
	if pos, err = inv.parse(n, n); err != nil {
		return nil, nil, nil, err
	}
	if servers, err = o.serverList(); err != nil {
		return nil, nil, nil, err
	}
	cfg, err := o.tlsConfig()
	if err != nil {
		return nil, nil, nil, err
	}
	if cfg != nil {
		o.dial = append(o.dial, distcache.WithTLS(cfg))
	}
	if id, err = parseIDArg(pos[0]); err != nil {
		return nil, nil, nil, err
	}
	return pos, servers, id, nil
}

func runAdd(ctx context.Context, a *app, inv *invocation) error {
	var o dataOptions
	o.register(a, inv)
	var ttl time.Duration
	var force bool
	inv.fs.DurationVar(&ttl, "ttl", defaultTTL, "session lifetime (at most 168h)")
	inv.fs.BoolVar(&force, "force", false, fmt.Sprintf("store a value shorter than %d bytes, which every distcache client reads as a miss", minValueLen))
	pos, servers, id, err := o.target(inv, 2)
	if err != nil {
		return err
	}
	value, err := parseIDArg(pos[1])
	if err != nil {
		return err
	}
	switch {
	case len(id) == 0 || len(id) > distcache.MaxIDLen:
		return usagef("id must be 1..%d bytes (got %d)", distcache.MaxIDLen, len(id))
	case len(value) == 0:
		return usagef("value must not be empty")
	case len(value) < minValueLen && !force:
		return usagef("value is %d byte(s): no distcache client returns an answer shorter than %d bytes as data (libdistcache and Apache read it as a miss, dcctl get as neither data nor a miss), so this session would be stored but never found; give a value of %d bytes or more, or --force to store it anyway",
			len(value), minValueLen, minValueLen)
	case 8+len(id)+len(value) > distcache.MaxPayload:
		return usagef("id and value together exceed %d bytes", distcache.MaxPayload-8)
	case ttl < 0 || ttl > distcache.MaxTimeout:
		return usagef("ttl must be within 0..%v", distcache.MaxTimeout)
	case ttl%time.Millisecond != 0:
		return usagef("ttl has a millisecond resolution")
	}
	server, err := o.withFailover(ctx, servers, false, func(ctx context.Context, c *distcache.Client) error {
		return c.Add(ctx, id, value, ttl)
	})
	res := opResult{Op: "add", ID: pos[0], Server: server, Result: "ok"}
	switch {
	case errors.Is(err, distcache.ErrExists):
		res.Result = "exists"
		return a.reportData(&o, res, "session exists", true)
	case err != nil:
		return err
	}
	return a.reportData(&o, res, "OK", false)
}

func runGet(ctx context.Context, a *app, inv *invocation, take bool) error {
	var o dataOptions
	o.register(a, inv)
	var asHex, raw bool
	inv.fs.BoolVar(&asHex, "hex", false, "print the value in hex even if it is printable")
	inv.fs.BoolVar(&raw, "raw", false, "write the value's bytes unchanged, without a newline")
	pos, servers, id, err := o.target(inv, 1)
	if err != nil {
		return err
	}
	if asHex && raw {
		return usagef("--hex and --raw exclude each other")
	}
	var value []byte
	name := "get"
	if take {
		name = "take"
	}
	server, err := o.withFailover(ctx, servers, !take, func(ctx context.Context, c *distcache.Client) error {
		var err error
		if take {
			value, err = c.Take(ctx, id)
		} else {
			value, err = c.Get(ctx, id)
		}
		return err
	})
	res := opResult{Op: name, ID: pos[0], Server: server, Result: "found"}
	switch {
	case errors.Is(err, distcache.ErrNotFound):
		res.Result = "not_found"
		return a.reportData(&o, res, "not found", true)
	case err != nil:
		return err
	}
	size := len(value)
	res.Size = &size
	res.ValueHex = hex.EncodeToString(value)
	if display.Printable(value) {
		res.Value = string(value)
	}
	if o.json {
		return writeJSON(a.stdout, res)
	}
	switch {
	case raw:
		_, err = a.stdout.Write(value)
	case asHex || !display.Printable(value):
		_, err = fmt.Fprintln(a.stdout, res.ValueHex)
	default:
		_, err = fmt.Fprintln(a.stdout, res.Value)
	}
	return err
}

func runRemove(ctx context.Context, a *app, inv *invocation) error {
	var o dataOptions
	o.register(a, inv)
	pos, servers, id, err := o.target(inv, 1)
	if err != nil {
		return err
	}
	server, err := o.withFailover(ctx, servers, false, func(ctx context.Context, c *distcache.Client) error {
		return c.Remove(ctx, id)
	})
	res := opResult{Op: "remove", ID: pos[0], Server: server, Result: "ok"}
	switch {
	case errors.Is(err, distcache.ErrNotFound):
		res.Result = "not_found"
		return a.reportData(&o, res, "not found", true)
	case err != nil:
		return err
	}
	return a.reportData(&o, res, "removed", false)
}

func runHave(ctx context.Context, a *app, inv *invocation) error {
	var o dataOptions
	o.register(a, inv)
	pos, servers, id, err := o.target(inv, 1)
	if err != nil {
		return err
	}
	var yes bool
	server, err := o.withFailover(ctx, servers, true, func(ctx context.Context, c *distcache.Client) error {
		var err error
		yes, err = c.Have(ctx, id)
		return err
	})
	if err != nil {
		return err
	}
	res := opResult{Op: "have", ID: pos[0], Server: server, Result: "yes"}
	if !yes {
		res.Result = "no"
		return a.reportData(&o, res, "no", true)
	}
	return a.reportData(&o, res, "yes", false)
}

// reportData prints a data command's outcome; negative outcomes exit with status 1
// without another message.
func (a *app) reportData(o *dataOptions, res opResult, human string, negative bool) error {
	var err error
	if o.json {
		err = writeJSON(a.stdout, res)
	} else {
		_, err = fmt.Fprintln(a.stdout, human)
	}
	if err != nil {
		return err
	}
	if negative {
		return &silentError{err: errors.New(human)}
	}
	return nil
}

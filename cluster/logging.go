package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/distcache-replicated/distcache/internal/loglimit"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// peerFailureInterval is how often a failure to reach one peer is logged
// while it lasts: raft retries a dead follower's heartbeat three times a
// second, and the operator needs to know that it is down, not every retry.
const peerFailureInterval = time.Minute

// hclogBridge is hashicorp/raft's hclog.Logger on top of the node's slog
// logger: raft, its transport and its snapshot store log through it. It
// follows hclog's conventions for arguments (key-value pairs, an odd last
// value, hclog.Fmt and friends) and decides what an operator sees:
//
//   - raft's INFO is chatter (every election step, every replication start):
//     debug here; the cluster logs leadership and membership changes itself;
//   - what raft reports as an error but is part of normal operation (a planned
//     transfer's "peer has newer term", a peer closing its connection) is
//     logged below ERROR, so that ERROR means a person is needed;
//   - failures to reach a peer are WARN, at most one line per peer per
//     peerFailureInterval, saying how many were held back (and so are the
//     restarted elections of a node without a quorum).
type hclogBridge struct {
	l       *slog.Logger // with sub=name
	name    string
	implied []any // hclog With arguments, prepended to every line's
	peers   *loglimit.Keyed
	now     func() time.Time
}

var _ hclog.Logger = (*hclogBridge)(nil)

// newHCLogger routes hclog output of the component name into l.
func newHCLogger(l *slog.Logger, name string) hclog.Logger {
	return &hclogBridge{l: l.With("sub", name), name: name,
		peers: &loglimit.Keyed{Interval: peerFailureInterval}, now: time.Now}
}

// slogLevel maps hclog's levels: INFO goes to debug (see hclogBridge) and
// TRACE below debug, so -log-level debug does not show raft's traces.
func slogLevel(lv hclog.Level) slog.Level {
	switch {
	case lv >= hclog.Error:
		return slog.LevelError
	case lv == hclog.Warn:
		return slog.LevelWarn
	case lv == hclog.Info, lv == hclog.Debug:
		return slog.LevelDebug
	}
	return slog.LevelDebug - 4
}

// Log implements hclog.Logger.
func (b *hclogBridge) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off {
		return
	}
	lv := slogLevel(level)
	attrs := b.attrs(args)
	lv, peer := raftLine(msg, lv, attrs)
	ctx := context.Background()
	if !b.l.Enabled(ctx, lv) {
		return
	}
	if peer != "" {
		ok, held := b.peers.Allow(b.name+"\x00"+msg+"\x00"+peer, b.now())
		if !ok {
			return
		}
		attrs = append(attrs, slog.Uint64("suppressed_since_last", held),
			slog.Duration("at_most_every", b.peers.Interval))
	}
	b.l.LogAttrs(ctx, lv, msg, attrs...)
}

// raftLine adjusts the level of raft's lines that misstate their weight, and
// names the peer of a failure to reach one ("-" for a repeated line about no
// peer in particular, "" for lines logged every time). attrs are the line's
// converted arguments.
func raftLine(msg string, lv slog.Level, attrs []slog.Attr) (slog.Level, string) {
	switch msg {
	case "peer has newer term, stopping replication":
		// A leader that transferred leadership or lost an election: planned,
		// or logged by the election itself.
		return slog.LevelInfo, ""
	case "appendEntries rejected, sending older logs", "failed to get previous log", "previous log term mis-match":
		// Every new leader probes each follower's log this way.
		return slog.LevelDebug, ""
	case "no known peers, aborting election":
		// A node waiting to be bootstrapped or added; the cluster says what it
		// waits for (joinLoop).
		return slog.LevelDebug, ""
	case "Election timeout reached, restarting election":
		// Without a quorum, twice a second until one is back.
		return slog.LevelWarn, "-"
	case "failed to decode incoming command", "failed to flush response":
		// A peer closed its connection (it stopped, or raft's pool dropped it).
		if closedConn(attrValue(attrs, "error")) {
			return slog.LevelDebug, ""
		}
		return slog.LevelWarn, ""
	case "failed to heartbeat to", "failed to appendEntries to", "failed to send snapshot to",
		"failed to pipeline appendEntries", "failed to start pipeline replication to":
		return slog.LevelWarn, peerOf(attrs, "peer")
	case "failed to make requestVote RPC":
		return slog.LevelWarn, peerOf(attrs, "target")
	case "failed to contact":
		return slog.LevelWarn, peerOf(attrs, "server-id")
	}
	return lv, ""
}

// closedConn tells the end of a connection (closed here or by the peer) from
// an error in what it carried.
func closedConn(v slog.Value) bool {
	if v.Kind() != slog.KindAny {
		return false
	}
	err, ok := v.Any().(error)
	if !ok {
		return false
	}
	if errors.Is(err, net.ErrClosed) || errors.Is(err, raft.ErrTransportShutdown) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	// Decoders wrap without %w.
	s := err.Error()
	return strings.Contains(s, "use of closed network connection") || strings.Contains(s, "connection reset by peer") ||
		strings.HasSuffix(s, "EOF") || strings.Contains(s, "broken pipe")
}

// peerOf names the peer of a failure line by its attribute key.
func peerOf(attrs []slog.Attr, key string) string {
	if p := attrValue(attrs, key).String(); p != "" {
		return p
	}
	return "unknown"
}

// attrValue returns the value of the attribute key ("" string value if none).
func attrValue(attrs []slog.Attr, key string) slog.Value {
	for _, a := range attrs {
		if a.Key == key {
			return a.Value
		}
	}
	return slog.StringValue("")
}

// attrs converts hclog arguments (the logger's implied ones first) to slog
// attributes the way hclog renders them: key-value pairs; an odd last value
// is a captured stack trace or goes under hclog.MissingKey; hclog.Fmt is
// formatted, Hex, Octal and Binary are spelled as hclog spells them, and
// values of other types than slog renders natively become their %+v text, so
// text and JSON show the same thing. Spaces in keys become underscores, and
// keys the node's own logger uses are prefixed with the component name.
func (b *hclogBridge) attrs(args []any) []slog.Attr {
	if len(b.implied) > 0 {
		args = append(append([]any(nil), b.implied...), args...)
	}
	var stack hclog.CapturedStacktrace
	if len(args)%2 == 1 {
		last := args[len(args)-1]
		args = args[: len(args)-1 : len(args)-1]
		if st, ok := last.(hclog.CapturedStacktrace); ok {
			stack = st
		} else {
			args = append(args, hclog.MissingKey, last)
		}
	}
	out := make([]slog.Attr, 0, len(args)/2+3)
	for i := 0; i+1 < len(args); i += 2 {
		key, ok := args[i].(string)
		if !ok {
			key = fmt.Sprint(args[i])
		}
		key = strings.ReplaceAll(key, " ", "_") // raft's "backoff time"
		switch key {
		case "node", "sub", slog.TimeKey, slog.LevelKey, slog.MessageKey, slog.SourceKey:
			key = strings.ReplaceAll(b.name, "-", "_") + "_" + key
		}
		out = append(out, slog.Attr{Key: key, Value: hclogValue(args[i+1])})
	}
	if stack != "" {
		out = append(out, slog.String("stacktrace", string(stack)))
	}
	return out
}

// hclogValue converts one hclog argument value.
func hclogValue(v any) slog.Value {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) == 0 {
			return slog.StringValue("")
		}
		if f, ok := v[0].(string); ok {
			return slog.StringValue(fmt.Sprintf(f, v[1:]...))
		}
		return slog.StringValue(fmt.Sprint(v...))
	case hclog.Hex:
		return slog.StringValue("0x" + strconv.FormatUint(uint64(v), 16))
	case hclog.Octal:
		return slog.StringValue("0" + strconv.FormatUint(uint64(v), 8))
	case hclog.Binary:
		return slog.StringValue("0b" + strconv.FormatUint(uint64(v), 2))
	case hclog.Quote:
		return slog.StringValue(string(v))
	case hclog.CapturedStacktrace:
		return slog.StringValue(string(v))
	case nil:
		return slog.StringValue("<nil>")
	case error, time.Time:
		return slog.AnyValue(v)
	case fmt.Stringer: // durations too: "250ms" in JSON as in text
		return slog.StringValue(v.String())
	}
	sv := slog.AnyValue(v)
	if sv.Kind() != slog.KindAny {
		return sv // strings, numbers, bools, durations, times
	}
	return slog.StringValue(fmt.Sprintf("%+v", v))
}

// Trace implements hclog.Logger.
func (b *hclogBridge) Trace(msg string, args ...any) { b.Log(hclog.Trace, msg, args...) }

// Debug implements hclog.Logger.
func (b *hclogBridge) Debug(msg string, args ...any) { b.Log(hclog.Debug, msg, args...) }

// Info implements hclog.Logger.
func (b *hclogBridge) Info(msg string, args ...any) { b.Log(hclog.Info, msg, args...) }

// Warn implements hclog.Logger.
func (b *hclogBridge) Warn(msg string, args ...any) { b.Log(hclog.Warn, msg, args...) }

// Error implements hclog.Logger.
func (b *hclogBridge) Error(msg string, args ...any) { b.Log(hclog.Error, msg, args...) }

func (b *hclogBridge) enabled(lv hclog.Level) bool {
	return b.l.Enabled(context.Background(), slogLevel(lv))
}

// IsTrace implements hclog.Logger.
func (b *hclogBridge) IsTrace() bool { return b.enabled(hclog.Trace) }

// IsDebug implements hclog.Logger.
func (b *hclogBridge) IsDebug() bool { return b.enabled(hclog.Debug) }

// IsInfo implements hclog.Logger.
func (b *hclogBridge) IsInfo() bool { return b.enabled(hclog.Info) }

// IsWarn implements hclog.Logger.
func (b *hclogBridge) IsWarn() bool { return b.enabled(hclog.Warn) }

// IsError implements hclog.Logger.
func (b *hclogBridge) IsError() bool { return b.enabled(hclog.Error) }

// ImpliedArgs implements hclog.Logger.
func (b *hclogBridge) ImpliedArgs() []any { return b.implied }

// With implements hclog.Logger.
func (b *hclogBridge) With(args ...any) hclog.Logger {
	nb := *b
	nb.implied = append(append([]any(nil), b.implied...), args...)
	return &nb
}

// Name implements hclog.Logger.
func (b *hclogBridge) Name() string { return b.name }

// Named implements hclog.Logger.
func (b *hclogBridge) Named(name string) hclog.Logger { return b.ResetNamed(b.name + "." + name) }

// ResetNamed implements hclog.Logger. The derived logger shares the peer
// failure limits.
func (b *hclogBridge) ResetNamed(name string) hclog.Logger {
	nb := *b
	nb.name = name
	nb.l = b.l.With("sub", name)
	return &nb
}

// SetLevel implements hclog.Logger: the slog handler's level governs, so
// this is a no-op.
func (b *hclogBridge) SetLevel(hclog.Level) {}

// GetLevel implements hclog.Logger: the lowest level that would be logged.
func (b *hclogBridge) GetLevel() hclog.Level {
	for _, lv := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Warn, hclog.Error} {
		if b.enabled(lv) {
			return lv
		}
	}
	return hclog.Off
}

// StandardLogger implements hclog.Logger.
func (b *hclogBridge) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(b.StandardWriter(opts), "", 0)
}

// StandardWriter implements hclog.Logger: each write is one line at the
// forced level (INFO unless opts says otherwise).
func (b *hclogBridge) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	lv := hclog.Info
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		lv = opts.ForceLevel
	}
	return stdWriter{b: b, level: lv}
}

type stdWriter struct {
	b     *hclogBridge
	level hclog.Level
}

func (w stdWriter) Write(p []byte) (int, error) {
	w.b.Log(w.level, strings.TrimSpace(string(p)))
	return len(p), nil
}

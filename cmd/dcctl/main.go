package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/distcache-replicated/distcache/internal/suggest"
)

// Exit statuses, as documented in the usage text: scripts rely on them.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	programName = "dcctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := &app{
		stdin:    os.Stdin,
		stdout:   os.Stdout,
		stderr:   os.Stderr,
		getenv:   os.Getenv,
		isTTY:    isTerminal(os.Stdout),
		stdinTTY: isTerminal(os.Stdin),
	}
	os.Exit(a.run(ctx, os.Args[1:]))
}

// app carries the process environment of one dcctl invocation. Tests build their own
// with buffers and a fake environment, so everything dcctl does goes through here
// rather than touching os.Stdout or os.Getenv directly.
type app struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	// isTTY reports whether stdout is a terminal; bench prints live progress only then.
	isTTY bool
	// stdinTTY reports whether stdin is a terminal: a command that needs
	// --yes may then ask instead (see confirm).
	stdinTTY bool
	// logger receives diagnostics of commands without their own -log-level flag
	// (bench); it writes to stderr.
	logger *slog.Logger
}

// command is one dcctl subcommand. Each builds its own flag.FlagSet, so flags are
// specific to the command and `dcctl CMD --help` documents exactly what CMD takes.
type command struct {
	name    string
	aliases []string
	group   string
	args    string // positional argument synopsis, e.g. "ID VALUE"
	summary string
	detail  string
	example string
	run     func(ctx context.Context, a *app, inv *invocation) error
}

// invocation is what a command's run function gets: its parsed flag set, the
// positional arguments and the shared options the command registered.
type invocation struct {
	fs   *flag.FlagSet
	args []string
	cmd  *command
}

// usageError marks a command-line mistake: the dispatcher prints a one-line hint to
// stderr and exits with status 2 instead of 1.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// silentError is a failure whose explanation the command already printed (for
// example `have` answering "no"); the dispatcher only sets the exit status.
type silentError struct{ err error }

func (e *silentError) Error() string { return e.err.Error() }
func (e *silentError) Unwrap() error { return e.err }

func commands() []*command {
	cmds := []*command{}
	cmds = append(cmds, adminCommands()...)
	cmds = append(cmds, dataCommands()...)
	cmds = append(cmds, toolCommands()...)
	cmds = append(cmds, completionCommand())
	return cmds
}

func findCommand(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
		for _, al := range c.aliases {
			if al == name {
				return c
			}
		}
	}
	return nil
}

// run executes one dcctl invocation and returns the process exit status.
func (a *app) run(ctx context.Context, args []string) int {
	if a.getenv == nil {
		a.getenv = func(string) string { return "" }
	}
	if a.logger == nil {
		a.logger = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if len(args) == 0 {
		a.printOverview(a.stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help", "-?":
		if len(args) > 1 && name == "help" {
			if findCommand(args[1]) == nil {
				a.unknownCommand(args[1])
				return exitUsage
			}
			// The command registers its flags before parsing, so let it handle --help.
			return a.run(ctx, []string{args[1], "--help"})
		}
		a.printOverview(a.stdout)
		return exitOK
	}
	c := findCommand(name)
	if c == nil {
		a.unknownCommand(name)
		return exitUsage
	}
	inv := &invocation{fs: newFlagSet(a, c), cmd: c}
	err := c.run(ctx, a, inv.withArgs(args[1:]))
	return a.exitStatus(c, inv, err)
}

// unknownCommand says that name is no command, and which one was probably meant.
func (a *app) unknownCommand(name string) {
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
		names = append(names, c.aliases...)
	}
	fmt.Fprintf(a.stderr, "%s: unknown command %q%s (see '%s help')\n", programName, name, suggest.Hint(name, names), programName)
}

// withArgs records the raw arguments; the command's run function registers its flags
// and then calls parse.
func (inv *invocation) withArgs(args []string) *invocation {
	inv.args = args
	return inv
}

func (a *app) exitStatus(c *command, inv *invocation, err error) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		a.printCommandHelp(c, inv.fs)
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(a.stderr, "%s %s: %s (see '%s %s --help')\n", programName, c.name, ue.msg, programName, c.name)
		return exitUsage
	}
	var se *silentError
	if errors.As(err, &se) {
		return exitFailed
	}
	fmt.Fprintf(a.stderr, "%s %s: %v\n", programName, c.name, err)
	return exitFailed
}

func newFlagSet(a *app, c *command) *flag.FlagSet {
	fs := flag.NewFlagSet(programName+" "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by exitStatus as a one-line hint
	fs.Usage = func() {}
	return fs
}

// parse parses flags and positional arguments in any order (`add ID VALUE --ttl 5m`
// and `add --ttl 5m ID VALUE` both work, as with etcdctl); "--" ends flag parsing.
// It checks the number of positional arguments against min and max (max < 0: no limit).
func (inv *invocation) parse(min, max int) ([]string, error) {
	var pos []string
	rest := inv.args
	for {
		if err := inv.fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, inv.flagError(err)
		}
		left := inv.fs.Args()
		consumed := len(rest) - len(left)
		if consumed > 0 && rest[consumed-1] == "--" {
			pos = append(pos, left...)
			break
		}
		if len(left) == 0 {
			break
		}
		pos = append(pos, left[0])
		rest = left[1:]
	}
	switch {
	case len(pos) < min:
		if min == max {
			return nil, usagef("expected %d argument(s) %s, got %d", min, inv.cmd.args, len(pos))
		}
		return nil, usagef("expected at least %d argument(s) %s, got %d", min, inv.cmd.args, len(pos))
	case max >= 0 && len(pos) > max:
		if max == 0 {
			return nil, usagef("unexpected argument %q", pos[0])
		}
		return nil, usagef("too many arguments (want at most %d: %s)", max, inv.cmd.args)
	}
	return pos, nil
}

// flagError rewords the flag package's errors: the nearest flag for an unknown
// one, and what a value should look like instead of "parse error".
func (inv *invocation) flagError(err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		var names []string
		inv.fs.VisitAll(func(f *flag.Flag) { names = append(names, "--"+f.Name) })
		return usagef("unknown flag --%s%s", name, suggest.Hint("--"+name, names))
	}
	if strings.HasSuffix(msg, ": parse error") {
		if i := strings.Index(msg, " for flag -"); i >= 0 {
			name := strings.TrimSuffix(msg[i+len(" for flag -"):], ": parse error")
			if f := inv.fs.Lookup(name); f != nil {
				msg = strings.TrimSuffix(msg, "parse error") + valueHint(f)
			}
		}
	}
	return &usageError{msg: msg}
}

// valueHint says what a flag's value must look like, by its type.
func valueHint(f *flag.Flag) string {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return "invalid value"
	}
	switch g.Get().(type) {
	case time.Duration:
		return "want a duration with a unit, e.g. 500ms, 5s or 1m"
	case int, int64, uint, uint64:
		return "want a whole number"
	case float64:
		return "want a number"
	case bool:
		return "want true or false"
	}
	return "invalid value"
}

func (a *app) printOverview(w io.Writer) {
	fmt.Fprintf(w, "%s is the operator's tool for a replicated distcache cluster.\n\n", programName)
	fmt.Fprintf(w, "Usage:\n  %s COMMAND [flags] [args]\n  %s help COMMAND\n", programName, programName)
	groups := map[string][]*command{}
	var order []string
	for _, c := range commands() {
		if _, ok := groups[c.group]; !ok {
			order = append(order, c.group)
		}
		groups[c.group] = append(groups[c.group], c)
	}
	for _, g := range order {
		fmt.Fprintf(w, "\n%s:\n", g)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, c := range groups[g] {
			fmt.Fprintf(tw, "  %s\t%s\n", strings.TrimSpace(c.name+" "+c.args), c.summary)
		}
		tw.Flush()
	}
	fmt.Fprintf(w, `
Environment:
  DCCTL_ADDR        admin HTTP address of a node (default %s)
  DCCTL_TOKEN_FILE  file holding the admin bearer token
  DCCTL_SERVER      distcache address(es) for data commands (default %s)

Exit status: 0 success, 1 failure (including "not found" / "no"), 2 usage error.
Every command takes --help (with an example) and --json.

Example:
  %s status --addr 127.0.0.1:9400
`, defaultAdminAddr, defaultServer, programName)
}

func (a *app) printCommandHelp(c *command, fs *flag.FlagSet) {
	w := a.stdout
	fmt.Fprintf(w, "Usage: %s %s [flags] %s\n\n%s\n", programName, c.name, c.args, c.summary)
	if c.detail != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(c.detail, "\n"))
	}
	if len(c.aliases) > 0 {
		fmt.Fprintf(w, "\nAliases: %s\n", strings.Join(c.aliases, ", "))
	}
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if len(names) > 0 {
		sort.Strings(names)
		fmt.Fprintf(w, "\nFlags:\n")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, n := range names {
			f := fs.Lookup(n)
			typ, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(tw, "  --%s %s\t%s%s\n", n, typ, usage, defaultNote(f))
		}
		tw.Flush()
	}
	if c.example != "" {
		fmt.Fprintf(w, "\nExample:\n%s\n", indent(strings.TrimRight(c.example, "\n"), "  "))
	}
}

// defaultNote is " (default X)" for a flag whose default is not the zero value
// (the usage says what zero means), else "".
func defaultNote(f *flag.Flag) string {
	switch f.DefValue {
	case "", "false", "0", "0s":
		return ""
	}
	return fmt.Sprintf(" (default %s)", f.DefValue)
}

func indent(s, prefix string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

// confirm guards a command that destroys or replaces something: it goes ahead
// with --yes (yes true); without it, it asks when stdin is a terminal, and
// otherwise refuses with what would happen (a usage error, exit 2).
func (a *app) confirm(yes bool, what string) error {
	if yes {
		return nil
	}
	if !a.stdinTTY || a.stdin == nil {
		return usagef("%s; add --yes to go ahead", what)
	}
	fmt.Fprintf(a.stderr, "%s.\nGo ahead? [y/N] ", what)
	line, _ := bufio.NewReader(a.stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	fmt.Fprintln(a.stderr, "cancelled")
	return &silentError{err: errors.New("not confirmed")}
}

// isTerminal reports whether f is a terminal: the signal for live progress
// output and for asking instead of requiring --yes. (/dev/null is a character
// device too, so the mode bits cannot tell.)
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

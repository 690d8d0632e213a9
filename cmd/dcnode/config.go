package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/distcache-replicated/distcache/internal/suggest"
)

// setting is one entry of the registry: a named value of options that can be
// given as a flag, a DCNODE_* environment variable and a config-file key.
type setting struct {
	// name is the flag's name and the config file's key; the environment
	// variable is derived from it (see env).
	name  string
	group string
	// value is bound to a field of options and holds the default until set.
	value flag.Value
	// example is a valid value, shown in errors and checked by the tests.
	// Boolean settings need none.
	example string
	// usage is the -help line; a `word` in backquotes names the value, as with
	// the flag package (flag.UnquoteUsage).
	usage string
	// secret marks a value that is itself a secret (a key given inline):
	// -print-config does not show it.
	secret bool
	// secretFile marks a file of secrets (a token, a key): dcnode refuses it
	// when its group or others may read it.
	secretFile bool
	// from says where the setting may be given; 0 means everywhere.
	from from

	// def is the default as text and src where the effective value came
	// from; both are recorded by load.
	def string
	src source
}

// from is a set of the places a setting may be given.
type from uint8

const (
	fromFlag from = 1 << iota
	fromEnv
	fromFile
)

// envPrefix starts every environment variable dcnode reads.
const envPrefix = "DCNODE_"

func (s *setting) allows(f from) bool { return s.from == 0 || s.from&f != 0 }

// env is the setting's environment variable: DCNODE_ and the name in upper
// case with dashes as underscores (-write-timeout: DCNODE_WRITE_TIMEOUT).
func (s *setting) env() string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(s.name, "-", "_"))
}

func (s *setting) isBool() bool {
	b, ok := s.value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// exampleValue is a valid value for error messages.
func (s *setting) exampleValue() string {
	if s.example == "" && s.isBool() {
		return "true"
	}
	return s.example
}

// argName and help split usage into the value's name and the text, as -help
// prints them.
func (s *setting) argName() string {
	name, _ := flag.UnquoteUsage(&flag.Flag{Name: s.name, Usage: s.usage, Value: s.value})
	return name
}

func (s *setting) help() string {
	_, usage := flag.UnquoteUsage(&flag.Flag{Name: s.name, Usage: s.usage, Value: s.value})
	return usage
}

// source is where a setting's effective value came from.
type source struct {
	kind sourceKind
	file string // for srcFile
	line int    // for srcFile: the first line that set it
}

type sourceKind uint8

const (
	srcDefault sourceKind = iota
	srcFlag
	srcEnv
	srcFile
)

// label names the setting as the operator gave it, for messages: -name for a
// flag (or a default), DCNODE_NAME for the environment, "name (FILE:LINE)" for
// the config file.
func (s *setting) label() string {
	switch s.src.kind {
	case srcEnv:
		return s.env()
	case srcFile:
		return fmt.Sprintf("%s (%s:%d)", s.name, s.src.file, s.src.line)
	}
	return "-" + s.name
}

// origin describes the source for -print-config.
func (s *setting) origin() string {
	switch s.src.kind {
	case srcFlag:
		return "flag -" + s.name
	case srcEnv:
		return "env " + s.env()
	case srcFile:
		return fmt.Sprintf("file %s:%d", s.src.file, s.src.line)
	}
	return "default"
}

// flagValue is how a setting is registered with the flag package: a value
// that fails names a valid example, as the environment and the file do.
type flagValue struct{ s *setting }

func (v flagValue) String() string {
	if v.s == nil {
		return ""
	}
	return v.s.value.String()
}

func (v flagValue) Set(x string) error {
	if err := v.s.value.Set(x); err != nil {
		return fmt.Errorf("%w (for example -%s %s)", err, v.s.name, v.s.exampleValue())
	}
	return nil
}

func (v flagValue) IsBoolFlag() bool { return v.s != nil && v.s.isBool() }

// load fills o from the command line, the environment (DCNODE_* entries of
// environ) and the config file named by -config or DCNODE_CONFIG, in that order
// of precedence: each setting takes its value from the first of them that gives
// it, or keeps its default. A repeatable setting is never merged across
// sources. Unknown flags, variables and keys are errors. It returns
// flag.ErrHelp for -help.
func (o *options) load(args, environ []string) error {
	o.settings = o.registry()
	fs := flag.NewFlagSet("dcnode", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // run prints the error with a hint instead
	fs.Usage = func() {}
	for _, s := range o.settings {
		s.def = s.value.String()
		if s.allows(fromFlag) {
			fs.Var(flagValue{s}, s.name, s.usage)
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return o.flagError(err)
	}
	if rest := fs.Args(); len(rest) > 0 {
		return fmt.Errorf("unexpected argument %q: every setting is a flag (see dcnode -help)", rest[0])
	}
	fs.Visit(func(f *flag.Flag) { o.lookup(f.Name).src = source{kind: srcFlag} })
	if err := o.loadEnv(environ); err != nil {
		return err
	}
	if o.configFile == "" {
		return nil
	}
	return o.loadFile(o.configFile)
}

// lookup returns the setting called name, or nil.
func (o *options) lookup(name string) *setting {
	for _, s := range o.settings {
		if s.name == name {
			return s
		}
	}
	return nil
}

// given reports whether the setting called name was given by any source.
func (o *options) given(name string) bool { return o.lookup(name).src.kind != srcDefault }

// names lists the settings that may be given in f, in the form render makes
// of each (a flag's -name, a variable's name, a key).
func (o *options) names(f from, render func(*setting) string) []string {
	var out []string
	for _, s := range o.settings {
		if s.allows(f) {
			out = append(out, render(s))
		}
	}
	return out
}

// flagError adds what to do to the flag package's errors: the nearest flag for
// an unknown one, an example for a missing argument.
func (o *options) flagError(err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		return fmt.Errorf("unknown flag %s%s", name, suggest.Hint(name, o.names(fromFlag, func(s *setting) string { return "-" + s.name })))
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		if s := o.lookup(name); s != nil {
			return fmt.Errorf("flag -%s needs a value (for example -%s %s)", name, name, s.exampleValue())
		}
	}
	return err
}

// loadEnv applies the DCNODE_* variables of environ to the settings no flag gave.
func (o *options) loadEnv(environ []string) error {
	env := append([]string(nil), environ...)
	sort.Strings(env) // report the same variable first whatever the environment's order
	for _, kv := range env {
		name, val, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) {
			continue
		}
		var s *setting
		for _, c := range o.settings {
			if c.env() == name {
				s = c
			}
		}
		switch {
		case s == nil:
			return fmt.Errorf("unknown environment variable %s%s: dcnode reads every %s* variable as a setting (see dcnode -help)",
				name, suggest.Hint(name, o.names(fromEnv, (*setting).env)), envPrefix)
		case !s.allows(fromEnv):
			return fmt.Errorf("%s: -%s is a command-line flag only", name, s.name)
		case s.src.kind == srcFlag:
			continue // the flag wins
		}
		if err := s.value.Set(val); err != nil {
			return fmt.Errorf("%s=%q: %w (for example %s=%s)", name, val, err, name, s.exampleValue())
		}
		s.src = source{kind: srcEnv}
	}
	return nil
}

// configEntry is one "name = value" line of a config file.
type configEntry struct {
	line       int
	key, value string
}

// parseConfig reads a config file: one "name = value" per line, where name is a
// setting's flag name without the dash. Blank lines and lines starting with #
// are ignored, and so is the rest of a line from a # that starts the value or
// follows white space.
// A value may be written in double quotes (to hold a # or surrounding spaces);
// there are no escapes. An empty value is allowed (admin-addr = turns the admin
// endpoint off).
func parseConfig(r io.Reader) ([]configEntry, error) {
	var out []configEntry
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return nil, fmt.Errorf("line %d: want name = value, e.g. write-timeout = 2s", n)
		}
		val, err := configValue(strings.TrimSpace(val))
		if err != nil {
			return nil, fmt.Errorf("line %d: %s: %w", n, key, err)
		}
		out = append(out, configEntry{line: n, key: key, value: val})
	}
	return out, sc.Err()
}

// configValue strips a value's quotes or trailing comment.
func configValue(v string) (string, error) {
	if rest, ok := strings.CutPrefix(v, `"`); ok {
		val, after, ok := strings.Cut(rest, `"`)
		if !ok {
			return "", errors.New(`value opens a quote (") it does not close`)
		}
		if after = strings.TrimSpace(after); after != "" && !strings.HasPrefix(after, "#") {
			return "", fmt.Errorf("unexpected %q after the quoted value", after)
		}
		return val, nil
	}
	for i := 0; i < len(v); i++ {
		if v[i] == '#' && (i == 0 || v[i-1] == ' ' || v[i-1] == '\t') {
			return strings.TrimSpace(v[:i]), nil
		}
	}
	return v, nil
}

// quoteConfig writes v so that configValue reads it back unchanged.
func quoteConfig(v string) string {
	if strings.Contains(v, "#") || strings.HasPrefix(v, `"`) || strings.TrimSpace(v) != v {
		return `"` + v + `"`
	}
	return v
}

// loadFile applies the config file to the settings that neither a flag nor the
// environment gave.
func (o *options) loadFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	entries, err := parseConfig(f)
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	seen := map[string]int{}
	for _, e := range entries {
		at := fmt.Sprintf("%s:%d", path, e.line)
		s := o.lookup(e.key)
		switch {
		case s == nil:
			return fmt.Errorf("%s: unknown setting %q%s (see dcnode -help)", at, e.key,
				suggest.Hint(e.key, o.names(fromFile, func(s *setting) string { return s.name })))
		case !s.allows(fromFile):
			return fmt.Errorf("%s: %s cannot be set in a config file; give -%s on the command line", at, e.key, e.key)
		}
		_, isList := s.value.(listValue)
		if first, dup := seen[e.key]; dup && !isList {
			return fmt.Errorf("%s: %s is already set on line %d; give it once", at, e.key, first)
		}
		seen[e.key] = e.line
		if s.src.kind == srcFlag || s.src.kind == srcEnv {
			continue // the flag or the environment wins
		}
		if err := s.value.Set(e.value); err != nil {
			return fmt.Errorf("%s: %s = %s: %w (for example %s = %s)", at, e.key, e.value, err, e.key, s.exampleValue())
		}
		if s.src.kind != srcFile {
			s.src = source{kind: srcFile, file: path, line: e.line}
		}
		if s.secret && e.value != "" && !strings.HasPrefix(e.value, "@") {
			if err := checkSecretFile("config file", path); err != nil {
				return fmt.Errorf("%w (it holds %s; or give %s = @FILE)", err, e.key, e.key)
			}
		}
	}
	return nil
}

// writeConfig writes the effective configuration as a config file that dcnode
// would read back, each line with where its value came from. Secret values are
// not shown.
func (o *options) writeConfig(w io.Writer) error {
	fmt.Fprintf(w, "# dcnode effective configuration; precedence: flag, then %s* environment, then config file, then default\n", envPrefix)
	if c := o.lookup("config"); c != nil && o.configFile != "" {
		fmt.Fprintf(w, "# config file %s (%s)\n", o.configFile, c.origin())
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range o.settings {
		if !s.allows(fromFile) {
			continue
		}
		vals := []string{s.value.String()}
		if l, ok := s.value.(listValue); ok {
			vals = l.values()
			if len(vals) == 0 {
				vals = []string{""}
			}
		}
		for _, v := range vals {
			line := s.name + " = " + quoteConfig(v)
			if s.secret && v != "" && !strings.HasPrefix(v, "@") {
				line = "# " + s.name + " = (secret, not shown)"
			}
			fmt.Fprintf(tw, "%s\t# %s\n", line, s.origin())
		}
	}
	return tw.Flush()
}

const usageHead = `dcnode: one node of a replicated distcache TLS session cache.

Clients speak the distcache protocol (and optionally memcache, Redis RESP and stunnel
sessiond) to any node; writes go through Raft, reads are served locally.

Try it (three nodes in one process, loopback only, throwaway data):
  dcnode -dev-cluster 3

One node per machine (run the same command on each, with its own addresses):
  dcnode -data-dir /var/lib/dcnode -listen IP:10.0.0.1:9100 \
         -raft-addr 10.0.0.1:9200 -gossip-addr 10.0.0.1:9300 \
         -bootstrap-expect 3 -join 10.0.0.2:9300,10.0.0.3:9300

Addresses: distcache listeners use the original syntax (IP:host:port, IP:port for all
interfaces, UNIX:/path); every other address is host:port. Defaults are loopback-only.
`

const usageSources = `
Every flag (but %s) is also
an environment variable and a config-file key: -write-timeout 2s can be given as
DCNODE_WRITE_TIMEOUT=2s, or as the line "write-timeout = 2s" in the file named by
-config (or DCNODE_CONFIG). A flag wins over the environment, which wins over the
file. In the file, # starts a comment, a repeatable setting may take several lines,
and a value may be written in double quotes. Unknown flags, DCNODE_* variables and
keys are errors. -print-config shows the result and where each value came from.
`

// printHelp writes -help: the introduction, every setting by group, and how the
// sources combine.
func (o *options) printHelp(w io.Writer) {
	fmt.Fprint(w, usageHead)
	for _, g := range groupOrder {
		fmt.Fprintf(w, "\n%s:\n", g)
		for _, s := range o.settings {
			if s.group != g || !s.allows(fromFlag) {
				continue
			}
			fmt.Fprintf(w, "  -%s", s.name)
			if a := s.argName(); a != "" {
				fmt.Fprintf(w, " %s", a)
			}
			fmt.Fprintf(w, "\n    \t%s%s\n", s.help(), s.defaultNote(" (default %s)"))
		}
	}
	fmt.Fprintf(w, usageSources, strings.Join(o.cmdlineOnly(), ", "))
}

// cmdlineOnly lists the flags that are not also config-file keys.
func (o *options) cmdlineOnly() []string {
	var out []string
	for _, s := range o.settings {
		if !s.allows(fromFile) {
			out = append(out, "-"+s.name)
		}
	}
	return out
}

// defaultNote formats the default with format, or "" when it is the zero value
// (the usage text says what zero means).
func (s *setting) defaultNote(format string) string {
	switch s.def {
	case "", "0", "0s", "false":
		return ""
	}
	return fmt.Sprintf(format, s.def)
}

// markdownTable renders the settings as the README's table.
func (o *options) markdownTable() string {
	var b strings.Builder
	b.WriteString("| setting | default | meaning |\n|---|---|---|\n")
	for _, g := range groupOrder {
		fmt.Fprintf(&b, "| **%s** | | |\n", g)
		for _, s := range o.settings {
			if s.group != g || !s.allows(fromFlag) {
				continue
			}
			name := "-" + s.name
			if a := s.argName(); a != "" {
				name += " " + a
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", name, s.defaultNote("`%s`"), strings.ReplaceAll(s.help(), "|", `\|`))
		}
	}
	return b.String()
}

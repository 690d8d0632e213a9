package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/distcache-replicated/distcache/internal/manpage"
)

var update = flag.Bool("update", false, "rewrite README's settings table and the packaged config file and man page from the registry")

// loaded reads settings as run does, with an optional config file of the given
// content (passed with -config).
func loaded(t *testing.T, args, environ []string, file string) (*options, error) {
	t.Helper()
	if file != "" {
		path := filepath.Join(t.TempDir(), "dcnode.conf")
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"-config", path}, args...)
	}
	var o options
	err := o.load(args, environ)
	return &o, err
}

// metaSettings are the settings that are not configuration of the node but of
// dcnode's reading of it; they are the only ones not accepted everywhere.
var metaSettings = map[string]from{
	"config":       fromFlag | fromEnv,
	"print-config": fromFlag,
	"version":      fromFlag,
}

// TestRegistry checks every entry: a unique name, an environment variable and a
// config key (or a reason not to have one), a group, an example that parses from
// every source, and a usage line that names its value.
func TestRegistry(t *testing.T) {
	var o options
	settings := o.registry()
	inGroup := map[string]bool{}
	for _, g := range groupOrder {
		inGroup[g] = true
	}
	seen := map[string]bool{}
	for _, s := range settings {
		if seen[s.name] {
			t.Errorf("%s declared twice", s.name)
		}
		seen[s.name] = true
		if !regexp.MustCompile(`^[a-z][a-z0-9]*(-[a-z0-9]+)*$`).MatchString(s.name) {
			t.Errorf("%s: a setting's name is lower-case words joined by dashes", s.name)
		}
		if !inGroup[s.group] {
			t.Errorf("%s: group %q is not in groupOrder", s.name, s.group)
		}
		want, meta := metaSettings[s.name]
		if !meta {
			want = fromFlag | fromEnv | fromFile
		}
		for _, f := range []from{fromFlag, fromEnv, fromFile} {
			if s.allows(f) != (want&f != 0) {
				t.Errorf("%s: allowed from %b, want %b", s.name, s.from, want)
			}
		}
		if got, wantEnv := s.env(), "DCNODE_"+strings.ToUpper(strings.ReplaceAll(s.name, "-", "_")); got != wantEnv {
			t.Errorf("%s: env %s, want %s", s.name, got, wantEnv)
		}
		if !s.isBool() && (s.example == "" || !strings.Contains(s.usage, "`")) {
			t.Errorf("%s: a non-boolean setting needs an example and a `word` naming its value in the usage", s.name)
		}
		if s.usage == "" || strings.HasSuffix(s.usage, ".") {
			t.Errorf("%s: usage %q: want one line without a final period", s.name, s.usage)
		}
	}
	// The example parses from every source the setting allows.
	for _, s := range settings {
		if s.name == "config" {
			continue // its example names a file that does not exist
		}
		ex := s.exampleValue()
		if s.allows(fromFlag) {
			if _, err := loaded(t, []string{"-" + s.name + "=" + ex}, nil, ""); err != nil {
				t.Errorf("-%s=%s: %v", s.name, ex, err)
			}
		}
		if s.allows(fromEnv) {
			if _, err := loaded(t, nil, []string{s.env() + "=" + ex}, ""); err != nil {
				t.Errorf("%s=%s: %v", s.env(), ex, err)
			}
		}
		if s.allows(fromFile) {
			if _, err := loaded(t, nil, nil, s.name+" = "+ex+"\n"); err != nil {
				t.Errorf("file %s = %s: %v", s.name, ex, err)
			}
		}
	}
}

// TestPrecedence: a flag wins over the environment, which wins over the file,
// which wins over the default; a list takes all its values from one source.
func TestPrecedence(t *testing.T) {
	file := "write-timeout = 3s\nsessions = 300\nmax-conns = 30\njoin = 10.0.0.1:9300\njoin = 10.0.0.2:9300\nresp-listen = 127.0.0.1:9600\n"
	env := []string{"DCNODE_WRITE_TIMEOUT=4s", "DCNODE_SESSIONS=400", "DCNODE_JOIN=10.0.0.3:9300", "HOME=/root"}
	args := []string{"-write-timeout", "5s", "-join", "10.0.0.4:9300"}
	o, err := loaded(t, args, env, file)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, value, origin string
	}{
		{"write-timeout", "5s", "flag -write-timeout"},
		{"join", "10.0.0.4:9300", "flag -join"},
		{"sessions", "400", "env DCNODE_SESSIONS"},
		{"max-conns", "30", "file "},
		{"resp-listen", "127.0.0.1:9600", "file "},
		{"read-timeout", "10s", "default"},
		{"listen", "IP:127.0.0.1:9100", "default"},
	} {
		s := o.lookup(tc.name)
		if got := s.value.String(); got != tc.value {
			t.Errorf("%s = %q, want %q", tc.name, got, tc.value)
		}
		if got := s.origin(); !strings.HasPrefix(got, tc.origin) {
			t.Errorf("%s came from %q, want %q", tc.name, got, tc.origin)
		}
	}
	// Without the flag, the environment's list replaces the file's; without
	// either, the file's lines accumulate.
	if o, err = loaded(t, nil, env, file); err != nil || strings.Join(o.join, ",") != "10.0.0.3:9300" {
		t.Errorf("join from env = %v, %v", o.join, err)
	}
	if o, err = loaded(t, nil, nil, file); err != nil || strings.Join(o.join, ",") != "10.0.0.1:9300,10.0.0.2:9300" {
		t.Errorf("join from file = %v, %v", o.join, err)
	}
	// A repeated flag accumulates too, replacing the default.
	if o, err = loaded(t, []string{"-listen", "IP:127.0.0.1:1", "-listen", "UNIX:/tmp/s"}, nil, ""); err != nil || strings.Join(o.listen, ",") != "IP:127.0.0.1:1,UNIX:/tmp/s" {
		t.Errorf("listen = %v, %v", o.listen, err)
	}
	// DCNODE_CONFIG names the file like -config.
	path := filepath.Join(t.TempDir(), "c.conf")
	if err := os.WriteFile(path, []byte("sessions = 77\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if o, err = loaded(t, nil, []string{"DCNODE_CONFIG=" + path}, ""); err != nil || o.sessions != 77 {
		t.Errorf("DCNODE_CONFIG: sessions %d, %v", o.sessions, err)
	}
}

// refusal is a configuration that load must refuse with an error naming all of want.
type refusal struct {
	args, env []string
	file      string
	want      []string
}

func expectRefused(t *testing.T, cases []refusal) {
	t.Helper()
	for _, tc := range cases {
		_, err := loaded(t, tc.args, tc.env, tc.file)
		if err == nil {
			t.Errorf("%v %v %q: accepted", tc.args, tc.env, tc.file)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v %v %q: error %q does not mention %q", tc.args, tc.env, tc.file, err, w)
			}
		}
	}
}

// TestBadValues: a bad value names the setting as the operator gave it and a
// valid example, whichever the source.
func TestBadValues(t *testing.T) {
	expectRefused(t, []refusal{
		{args: []string{"-write-timeout", "2"}, want: []string{"-write-timeout", "needs a unit", "for example -write-timeout 2s"}},
		{args: []string{"-sessions", "abc"}, want: []string{"-sessions", "not a whole number", "for example -sessions 1000000"}},
		{args: []string{"-quiet=maybe"}, want: []string{"-quiet", "true or false"}},
		{args: []string{"-read-consistency", "eventual"}, want: []string{"-read-consistency", "leader-on-miss", "for example -read-consistency linearizable"}},
		{args: []string{"-write-timeout"}, want: []string{"-write-timeout needs a value", "for example -write-timeout 2s"}},
		{args: []string{"-dev-cluster", "12"}, want: []string{"-dev-cluster", "must be 0 to 9"}},
		{args: []string{"-join", "10.0.0.2"}, want: []string{"-join", `"10.0.0.2"`, "host:port"}},
		{env: []string{"DCNODE_WRITE_TIMEOUT=2"}, want: []string{`DCNODE_WRITE_TIMEOUT="2"`, "needs a unit", "for example DCNODE_WRITE_TIMEOUT=2s"}},
		{env: []string{"DCNODE_SESSIONS=abc"}, want: []string{"DCNODE_SESSIONS", "for example DCNODE_SESSIONS=1000000"}},
		{file: "# comment\n\nwrite-timeout = 2\n", want: []string{"dcnode.conf:3: write-timeout = 2", "needs a unit", "for example write-timeout = 2s"}},
		{file: "max-bytes = lots\n", want: []string{"max-bytes = lots", "positive size", "for example max-bytes = 512MiB"}},
	})
}

// TestUnknownNames: an unknown flag, DCNODE_ variable or config key is an
// error naming it, with the nearest known name.
func TestUnknownNames(t *testing.T) {
	expectRefused(t, []refusal{
		{args: []string{"-wirte-timeout", "2s"}, want: []string{"unknown flag -wirte-timeout", "did you mean -write-timeout?"}},
		{args: []string{"-frobnicate"}, want: []string{"unknown flag -frobnicate"}},
		{env: []string{"DCNODE_WRITE_TIMOUT=2s"}, want: []string{"DCNODE_WRITE_TIMOUT", "did you mean DCNODE_WRITE_TIMEOUT?"}},
		{env: []string{"DCNODE_PRINT_CONFIG=1"}, want: []string{"command-line flag only"}},
		{file: "sesions = 5\n", want: []string{"dcnode.conf:1", `unknown setting "sesions"`, "did you mean sessions?"}},
		{file: "-listen = IP:127.0.0.1:1\n", want: []string{`unknown setting "-listen"`, "did you mean listen?"}},
		{file: "config = /etc/other.conf\n", want: []string{"cannot be set in a config file"}},
		{file: "sessions = 5\nsessions = 6\n", want: []string{"dcnode.conf:2", "already set on line 1"}},
		{file: "sessions 5\n", want: []string{"line 1", "want name = value"}},
		{file: `node-id = "n1` + "\n", want: []string{"line 1", "does not close"}},
	})
	// Variables without the prefix are not dcnode's business.
	if _, err := loaded(t, nil, []string{"DCCTL_ADDR=x", "DCNODEX=1", "PATH=/bin"}, ""); err != nil {
		t.Errorf("foreign variables: %v", err)
	}
}

func TestConfigSyntax(t *testing.T) {
	got, err := parseConfig(strings.NewReader(`
# a comment
  node-id = n1   # trailing comment
admin-addr =   # off
pidfile = "/run/dc #1/pid"  # quoted: keeps the # and the spaces
sockgroup=www-data
gossip-key = @/etc/distcache/gossip#key
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []configEntry{{3, "node-id", "n1"}, {4, "admin-addr", ""}, {5, "pidfile", "/run/dc #1/pid"}, {6, "sockgroup", "www-data"}, {7, "gossip-key", "@/etc/distcache/gossip#key"}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, v := range []string{"plain", "", "with # hash", " padded "} {
		back, err := configValue(quoteConfig(v))
		if err != nil || back != v {
			t.Errorf("quoteConfig(%q) reads back as %q, %v", v, back, err)
		}
	}
}

// TestPrintConfig: -print-config names every source, hides an inline secret,
// and its output read back as a config file gives the same configuration.
func TestPrintConfig(t *testing.T) {
	file := "sessions = 300\njoin = 10.0.0.1:9300\njoin = 10.0.0.2:9300\npidfile = \"/tmp/a #b\"\n"
	var out, errb bytes.Buffer
	dir := t.TempDir()
	path := filepath.Join(dir, "in.conf")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	code := run([]string{"-config", path, "-print-config", "-write-timeout", "5s", "-gossip-key", "MDEyMzQ1Njc4OWFiY2RlZg=="},
		[]string{"DCNODE_MAX_CONNS=30"}, &out, &errb)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	printed := out.String()
	for _, w := range []string{
		"write-timeout = 5s", "# flag -write-timeout", "max-conns = 30", "# env DCNODE_MAX_CONNS",
		"sessions = 300", "in.conf:1", "join = 10.0.0.1:9300", "join = 10.0.0.2:9300", `pidfile = "/tmp/a #b"`,
		"read-timeout = 10s", "# default", "# gossip-key = (secret, not shown)",
	} {
		if !strings.Contains(printed, w) {
			t.Errorf("-print-config lacks %q:\n%s", w, printed)
		}
	}
	if strings.Contains(printed, "MDEyMzQ1") {
		t.Errorf("-print-config shows the gossip key:\n%s", printed)
	}
	back := filepath.Join(dir, "back.conf")
	if err := os.WriteFile(back, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	o1, err := loaded(t, []string{"-config", path, "-write-timeout", "5s"}, []string{"DCNODE_MAX_CONNS=30"}, "")
	if err != nil {
		t.Fatal(err)
	}
	o2, err := loaded(t, []string{"-config", back}, nil, "")
	if err != nil {
		t.Fatalf("reading -print-config's output back: %v", err)
	}
	for _, s := range o1.settings {
		if s2 := o2.lookup(s.name); s.allows(fromFile) && s2.value.String() != s.value.String() {
			t.Errorf("%s: %q read back as %q", s.name, s.value.String(), s2.value.String())
		}
	}
}

// TestREADMESettings: README's settings table is the registry's; -update
// rewrites it.
func TestREADMESettings(t *testing.T) {
	const begin, end = "<!-- BEGIN dcnode settings", "<!-- END dcnode settings -->"
	path := filepath.Join("..", "..", "README.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	i, j := strings.Index(readme, begin), strings.Index(readme, end)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the %q ... %q markers", begin, end)
	}
	i += strings.Index(readme[i:], "\n") + 1
	var o options
	o.settings = o.registry()
	for _, s := range o.settings {
		s.def = s.value.String()
	}
	want := o.markdownTable()
	if readme[i:j] == want {
		return
	}
	if !*update {
		t.Fatalf("README.md's settings table differs from the registry: run go test ./cmd/dcnode -run README -update")
	}
	if err := os.WriteFile(path, []byte(readme[:i]+want+readme[j:]), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPackagedFiles: the config file and the manual page that
// packaging/build-deb.sh ships are the registry's (-update rewrites them), and
// dcnode reads the shipped config file without complaint, with the package's
// values and the registry's defaults.
func TestPackagedFiles(t *testing.T) {
	var o options
	o.settings = o.registry()
	for _, s := range o.settings {
		s.def = s.value.String()
	}
	for _, f := range []struct {
		path  string
		write func(io.Writer) error
	}{
		{filepath.Join("..", "..", "packaging", "dcnode.conf"), o.writePackagedConfig},
		{filepath.Join("..", "..", "packaging", "man", "dcnode.8"), o.writeManPage},
	} {
		var want bytes.Buffer
		if err := f.write(&want); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f.path)
		if err == nil && bytes.Equal(got, want.Bytes()) {
			continue
		}
		if !*update {
			t.Errorf("%s differs from the registry (%v): run go test ./cmd/dcnode -run Packaged -update", f.path, err)
			continue
		}
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.path, want.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	conf := filepath.Join("..", "..", "packaging", "dcnode.conf")
	got, err := loaded(t, []string{"-config", conf}, nil, "")
	if err != nil {
		t.Fatalf("dcnode -config %s: %v", conf, err)
	}
	if err := got.validate(); err != nil {
		t.Fatalf("dcnode -config %s: %v", conf, err)
	}
	for _, s := range got.settings {
		v, _, packaged := packagedValue(s.name)
		switch {
		case packaged && (s.value.String() != v || s.src.kind != srcFile):
			t.Errorf("%s = %q from %s; want the package's %q from the file", s.name, s.value.String(), s.origin(), v)
		case !packaged && s.src.kind == srcFile:
			t.Errorf("%s is set (%s) by the shipped file; only the package's values may be", s.name, s.origin())
		}
	}
	man := filepath.Join("..", "..", "packaging", "man", "dcnode.8")
	page, _ := os.ReadFile(man)
	if err := manpage.Lint(page); err != nil && !errors.Is(err, manpage.ErrNoFormatter) {
		t.Errorf("%s: %v", man, err)
	}
	for _, s := range o.settings {
		if s.allows(fromFlag) && !bytes.Contains(page, []byte(`.BI "\-`+strings.ReplaceAll(s.name, "-", `\-`)+` "`)) && !bytes.Contains(page, []byte(`.B \-`+strings.ReplaceAll(s.name, "-", `\-`)+"\n")) {
			t.Errorf("%s does not document -%s", man, s.name)
		}
	}
}

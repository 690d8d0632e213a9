package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/distcache-replicated/distcache/internal/manpage"
)

var update = flag.Bool("update", false, "rewrite packaging/man/dcctl.1 from the command table")

// complete runs the script of `dcctl completion bash` in a real bash with the
// command line words (the last one being completed) and returns the
// completions it offers.
func complete(t *testing.T, script string, words ...string) []string {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	dir := t.TempDir()
	for _, f := range []string{"node.pem", "node.key", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var quoted []string
	for _, w := range append([]string{"dcctl"}, words...) {
		quoted = append(quoted, "'"+w+"'")
	}
	prog := script + "\nCOMP_WORDS=(" + strings.Join(quoted, " ") + ")\nCOMP_CWORD=" + strconv.Itoa(len(words)) +
		"\n_dcctl\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
	cmd := exec.Command(bash, "--norc", "--noprofile", "-c", prog)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			got = append(got, l)
		}
	}
	return got
}

func TestCompletionBash(t *testing.T) {
	r := runCLI(t, nil, "completion", "bash")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	script := r.stdout
	for _, tc := range []struct {
		words []string
		want  []string
	}{
		{[]string{"sta"}, []string{"status"}},
		{[]string{"re"}, []string{"remove", "remove-node", "remove-peer"}},
		{[]string{"help", "snap"}, []string{"snapshot"}},
		{[]string{"snapshot", ""}, []string{"save", "restore"}},
		{[]string{"keyring", "in"}, []string{"install"}},
		{[]string{"remove-node", "--y"}, []string{"--yes"}},
		{[]string{"add", "--tls-c"}, []string{"--tls-ca", "--tls-cert"}},
		{[]string{"add", "--tls-key", "node."}, []string{"node.key", "node.pem"}},
		{[]string{"status", "--addr", ""}, nil}, // an address: nothing to offer
		{[]string{"rm", "--ser"}, []string{"--server"}},
	} {
		got := complete(t, script, tc.words...)
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("dcctl %s<TAB>: %q, want %q", strings.Join(tc.words, " "), got, tc.want)
		}
	}
	r = runCLI(t, nil, "completion", "bash", "--json")
	var table []struct {
		Name  string
		Flags []struct{ Name string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &table); err != nil || len(table) != len(commands()) {
		t.Errorf("completion --json: %v, %d commands, want %d", err, len(table), len(commands()))
	}
	if r := runCLI(t, nil, "completion", "fish"); r.code != exitUsage || !strings.Contains(r.stderr, "want bash") {
		t.Errorf("completion fish: exit %d, %q; want a usage error naming bash", r.code, r.stderr)
	}
}

// TestPackagedManPage: packaging/man/dcctl.1 is generated from the command
// table (-update rewrites it) and documents every command and flag.
func TestPackagedManPage(t *testing.T) {
	path := filepath.Join("..", "..", "packaging", "man", "dcctl.1")
	var want bytes.Buffer
	if err := writeManPage(context.Background(), &want); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want.Bytes()) {
		if !*update {
			t.Fatalf("%s differs from dcctl's command table (%v): run go test ./cmd/dcctl -run PackagedManPage -update", path, err)
		}
		if err := os.WriteFile(path, want.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	all, err := specs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	page := want.String()
	for _, s := range all {
		if !strings.Contains(page, ".SS dcctl "+strings.ReplaceAll(s.name, "-", `\-`)) {
			t.Errorf("no section for %s", s.name)
		}
		for _, f := range s.flags {
			if !strings.Contains(page, `\-\-`+strings.ReplaceAll(f.Name, "-", `\-`)) {
				t.Errorf("%s: flag --%s not documented", s.name, f.Name)
			}
		}
	}
	if err := manpage.Lint(want.Bytes()); err != nil && !errors.Is(err, manpage.ErrNoFormatter) {
		t.Errorf("dcctl.1: %v", err)
	}
}

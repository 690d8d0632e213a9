package manpage

import (
	"errors"
	"strings"
	"testing"
)

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"-listen":          `\-listen`,
		`C:\path`:          `C:\epath`,
		`say "hi"`:         `say \(dqhi\(dq`,
		"plain text, 1.0.": "plain text, 1.0.",
		"len ≥ 5":          `len \[u2265] 5`,
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRender writes a page and, where man(1)'s formatter is installed, has it
// rendered: what a reader sees must keep the options' hyphens and the text that
// starts with a dot.
func TestRender(t *testing.T) {
	var b strings.Builder
	p := New(&b, "dcdemo", "1", "User Commands", "a demo page")
	p.Section("Synopsis")
	p.Para("Runs -fast.\n.dotfile starts this line\n\nSecond paragraph.")
	p.Subsection("Options")
	p.Tagged("-addr", "host:port", "admin address")
	p.Tagged("--yes", "", "do it")
	p.Example("dcdemo -addr 127.0.0.1:9400\n'quoted'")
	if p.Err() != nil {
		t.Fatal(p.Err())
	}
	page := b.String()
	for _, want := range []string{".TH DCDEMO 1 \"\" \"distcache\" \"User Commands\"\n", "dcdemo \\- a demo page\n", "\\&.dotfile", ".BI \"\\-addr \" \"host:port\"\n", "\\&'quoted'"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	switch err := Lint([]byte(page)); {
	case errors.Is(err, ErrNoFormatter):
		t.Skip("groff not installed; roff source checked only")
	case err != nil:
		t.Error(err)
	}
	if err := Lint([]byte(".TH X 1\n.BOGUS\n")); err == nil || errors.Is(err, ErrNoFormatter) {
		t.Errorf("Lint of a page with an unknown macro: %v; want groff's warning", err)
	}
}

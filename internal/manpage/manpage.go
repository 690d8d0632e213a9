package manpage

import (
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"unicode"
)

// Page writes one manual page to an io.Writer; the first write error is kept
// and returned by Err, so callers write the whole page and check once.
type Page struct {
	w   io.Writer
	err error
}

// New starts a page: name (dcnode), section (8), the manual's title
// ("System Manager's Manual") and the one-line description for NAME.
func New(w io.Writer, name, section, manual, summary string) *Page {
	p := &Page{w: w}
	// No date: a generated page must not change when nothing else did.
	p.printf(".TH %s %s \"\" \"distcache\" \"%s\"\n", strings.ToUpper(name), section, manual)
	p.Section("NAME")
	p.printf("%s \\- %s\n", Escape(name), Escape(summary))
	return p
}

func (p *Page) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

// Err returns the first write error.
func (p *Page) Err() error { return p.err }

// Section starts a section (NAME, SYNOPSIS, OPTIONS, ...).
func (p *Page) Section(title string) { p.printf(".SH %s\n", Escape(strings.ToUpper(title))) }

// Subsection starts a subsection, such as a group of options.
func (p *Page) Subsection(title string) { p.printf(".SS %s\n", Escape(title)) }

// Para writes a paragraph of running text; blank lines in text separate
// paragraphs and line breaks within one are kept as the reader would reflow
// them anyway.
func (p *Page) Para(text string) {
	for _, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		p.printf(".PP\n%s\n", escapeLines(para))
	}
}

// Tagged writes a tagged paragraph: tag in bold (an option, a command) with
// arg in italics after it, and text indented below.
func (p *Page) Tagged(tag, arg, text string) {
	p.printf(".TP\n")
	if arg == "" {
		p.printf(".B %s\n", Escape(tag))
	} else {
		p.printf(".BI \"%s \" \"%s\"\n", Escape(tag), Escape(arg))
	}
	p.printf("%s\n", escapeLines(strings.TrimSpace(text)))
}

// Example writes text verbatim (no filling), indented, as for commands.
func (p *Page) Example(text string) {
	p.printf(".PP\n.RS\n.nf\n%s\n.fi\n.RE\n", escapeLines(strings.TrimRight(text, "\n")))
}

// Escape makes s safe inside one line of roff: backslashes and hyphens (which
// roff would render as typographic hyphens, breaking copied options) are
// escaped, double quotes do not end a macro argument, and characters beyond
// ASCII are written as groff's \[uXXXX].
func Escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	s = strings.ReplaceAll(s, `"`, `\(dq`)
	if !strings.ContainsFunc(s, func(r rune) bool { return r > unicode.MaxASCII }) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r > unicode.MaxASCII {
			fmt.Fprintf(&b, `\[u%04X]`, r) // groff reads ASCII; man(1) renders it back
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// escapeLines escapes each line and protects a line that would otherwise start
// with a control character (. or ').
func escapeLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		l = Escape(l)
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			l = `\&` + l
		}
		if strings.TrimSpace(l) == "" {
			l = ".sp"
		}
		lines[i] = l
	}
	return strings.Join(lines, "\n")
}

// ErrNoFormatter is Lint's answer on a machine without groff.
var ErrNoFormatter = errors.New("groff is not installed")

// Lint formats page with groff, as man(1) would, with every warning on, and
// returns what groff complained about: an error for the first problem, nil
// for a clean page, ErrNoFormatter without groff (tests then skip).
func Lint(page []byte) error {
	groff, err := exec.LookPath("groff")
	if err != nil {
		return ErrNoFormatter
	}
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(string(page))
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		return fmt.Errorf("groff: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/distcache-replicated/distcache/internal/manpage"
)

// The files the Debian package ships for dcnode, generated from the registry so
// that they cannot drift from the settings dcnode has: the default config file
// (packaging/dcnode.conf, installed as PackagedConfigPath) and the manual page
// (packaging/man/dcnode.8). `go test ./cmd/dcnode -run Packaged -update`
// rewrites them; the tests fail when the checked-in copies differ.

// Where the package installs things; the unit in packaging/ uses the same paths.
const (
	packagedConfigPath = "/etc/distcache/dcnode.conf"
	packagedDataDir    = "/var/lib/distcache"
)

// packagedSettings are the values the package sets where dcnode's own default
// does not suit a system service: the unit's StateDirectory, and no activity
// line every second in the journal (the metrics carry the same counts).
var packagedSettings = []struct{ name, value, why string }{
	{"data-dir", packagedDataDir, "the unit's StateDirectory, owned by the distcache user"},
	{"quiet", "true", "no activity line every second in the journal: /metrics has the same counts"},
}

func packagedValue(name string) (value, why string, ok bool) {
	for _, p := range packagedSettings {
		if p.name == name {
			return p.value, p.why, true
		}
	}
	return "", "", false
}

// writePackagedConfig writes the config file the package installs: every
// setting a file may hold, grouped as in -help, with its help text and default,
// commented out except packagedSettings. A fresh install thus runs a one-node
// cluster on loopback; the comments say what to change for a real one.
func (o *options) writePackagedConfig(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, `# %s: settings of dcnode, one node of a replicated distcache cluster.
#
# Each line is "name = value", name being a dcnode flag without the dash. A
# flag on the command line or a %s* environment variable (systemctl edit
# dcnode: [Service] Environment=...) wins over this file. Lines starting with #
# are comments: the value shown is dcnode's default, or an example where the
# default is empty. See dcnode(8) and dcnode -help; check the effective
# configuration with: dcnode -config %s -print-config
#
# For a cluster of three machines set, on each: listen, raft-addr, gossip-addr
# (this machine's addresses), join (the others' gossip addresses),
# bootstrap-expect = 3, and the security settings (tls-*, gossip-key,
# data-key-file, admin-token-file). Then: systemctl restart dcnode.
#
# Generated from dcnode's settings registry (cmd/dcnode/settings.go).
`, packagedConfigPath, envPrefix, packagedConfigPath)
	for _, g := range groupOrder {
		fmt.Fprintf(&b, "\n##\n## %s\n##\n", g)
		for _, s := range o.settings {
			if s.group != g || !s.allows(fromFile) || s.name == "daemon" || s.name == "dev-cluster" {
				continue
			}
			b.WriteString("\n")
			for _, l := range wrap(s.help(), 76) {
				b.WriteString("# " + l + "\n")
			}
			if v, why, ok := packagedValue(s.name); ok {
				fmt.Fprintf(&b, "# (set by the package: %s; dcnode's default is %s)\n", why, quoteConfig(s.def))
				fmt.Fprintf(&b, "%s = %s\n", s.name, quoteConfig(v))
				continue
			}
			v := s.def
			if l, ok := s.value.(listValue); ok {
				v = strings.Join(l.values(), ",")
			}
			if v == "" || s.isBool() {
				v = s.exampleValue()
			}
			fmt.Fprintf(&b, "#%s = %s\n", s.name, quoteConfig(v))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// wrap breaks text into lines of at most width runes at spaces.
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		if line != "" && len([]rune(line))+1+len([]rune(word)) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	return append(lines, line)
}

// writeManPage writes dcnode(8).
func (o *options) writeManPage(w io.Writer) error {
	p := manpage.New(w, "dcnode", "8", "System Manager's Manual", "one node of a replicated distcache TLS session cache")
	p.Section("Synopsis")
	p.Para("dcnode [-config FILE] [-flag value ...]\n\ndcnode -dev-cluster 3\n\ndcnode -version | -print-config | -help")
	p.Section("Description")
	p.Para(strings.TrimPrefix(usageHead, "dcnode: one node of a replicated distcache TLS session cache.\n"))
	p.Para(fmt.Sprintf(strings.TrimPrefix(usageSources, "\n"), strings.Join(o.cmdlineOnly(), ", ")))
	p.Section("Options")
	for _, g := range groupOrder {
		p.Subsection(g)
		for _, s := range o.settings {
			if s.group != g || !s.allows(fromFlag) {
				continue
			}
			text := strings.TrimSuffix(s.help()+s.defaultNote(" (default %s)"), ".") + "."
			if s.allows(fromEnv) {
				text += "\nEnvironment: " + s.env()
				if s.allows(fromFile) {
					text += "; config file: " + s.name + " = " + s.exampleValue()
				}
				text += "."
			}
			p.Tagged("-"+s.name, s.argName(), text)
		}
	}
	p.Section("Signals")
	p.Tagged("SIGTERM, SIGINT", "", "Stop: the node stays a member of the cluster and resumes when restarted (with -leave-on-terminate it leaves the Raft configuration first). dcctl leave departs for good.")
	p.Tagged("SIGHUP", "", "Re-read the TLS certificates and keys (renewal without a restart); a file that fails to load keeps the previous one.")
	p.Tagged("SIGUSR1, SIGUSR2", "", "Ignored, unless -killable: then stop as on SIGTERM.")
	p.Section("Systemd")
	p.Para("Under a unit with Type=notify (as packaged), dcnode tells systemd READY=1 once the node is ready by the same check as /readyz (a known leader, caught up with it, writable storage), keeps a STATUS= line current for systemctl status, sends WATCHDOG=1 at half of WatchdogSec=, and STOPPING=1 when it stops. A node that cannot become ready (no quorum) keeps starting: the unit has no start timeout.")
	p.Section("Files")
	p.Tagged(packagedConfigPath, "", "The packaged config file (read with -config).")
	p.Tagged(packagedDataDir, "", "The packaged data directory: Raft log, snapshots, node id, gossip keyring.")
	p.Section("Exit status")
	p.Para("0 after a clean stop, -help or -version; 1 when the node fails to start or stop cleanly; 2 for invalid settings.")
	p.Section("See also")
	p.Para("dcctl(1), systemctl(1), the operations guide docs/operations.md (installed as /usr/share/doc/distcache/operations.md).")
	return p.Err()
}

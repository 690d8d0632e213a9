package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distcache-replicated/distcache/internal/version"
)

// TestFlagErrors: unknown and contradictory flags exit 2 with a message that says
// what to do, and -help exits 0 with the usage on stdout.
func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-help"}, exitOK, "-dev-cluster"},
		{[]string{"-bogus"}, exitUsage, "dcnode -help"},
		{[]string{"extra"}, exitUsage, "every setting is a flag"},
		{[]string{"-daemon"}, exitUsage, "systemd"},
		{[]string{"-dev-cluster", "3", "-listen", "IP:127.0.0.1:1"}, exitUsage, "cannot be combined with -dev-cluster"},
		{[]string{"-sessions", "0"}, exitUsage, "-sessions: must be at least 1 (for example -sessions 1000000)"},
		{[]string{"-max-bytes", "lots"}, exitUsage, "positive size"},
		{[]string{"-read-consistency", "eventual"}, exitUsage, "leader-on-miss"},
		{[]string{"-bootstrap-expect", "1", "-join", "127.0.0.1:9300"}, exitUsage, "second one-node cluster"},
		{[]string{"-listen", "127.0.0.1:9100"}, exitUsage, "-listen"},
		{[]string{"-admin-addr", "0.0.0.0:9400"}, exitUsage, "-admin-token-file"},
		{[]string{"-sockperms", "9x"}, exitUsage, "octal"},
		{[]string{"-max-value-size", "100000"}, exitUsage, "-max-value-size"},
		{[]string{"-tls-cert", "node.pem", "-tls-key", "node.key"}, exitUsage, "go together"},
		{[]string{"-in-memory", "-node-id", "n1"}, exitUsage, "new id"},
		{[]string{"-client-tls-ca", "ca.pem"}, exitUsage, "-client-tls-key go together"},
		{[]string{"-in-memory", "-data-key-file", "keys"}, exitUsage, "choose one"},
		{[]string{"-gossip-key", "c2hvcnQ="}, exitUsage, "-gossip-key"},
		{[]string{"-gossip-key", "@/nonexistent/gossip.key"}, exitUsage, "no such file"},
		{[]string{"-ticket-rotate", "10ms"}, exitUsage, "at least 1s"},
		{[]string{"-ticket-lifetime", "0s"}, exitUsage, "-ticket-lifetime"},
		{[]string{"-ticket-reload", "nginx -s reload"}, exitUsage, "needs -ticket-dir"},
		{[]string{"-ticket-dir", "/tmp/t"}, exitUsage, "needs -ticket-formats"},
		{[]string{"-ticket-dir", "/tmp/t", "-ticket-formats", "nginx,iis"}, exitUsage, "unknown ticket key format"},
		{[]string{"-ticket-dir", "/tmp/t", "-ticket-formats", "nginx", "-ticket-nginx-keys", "1"}, exitUsage, "-ticket-nginx-keys"},
		{[]string{"-ticket-dir", "/tmp/t", "-ticket-formats", "nginx", "-ticket-haproxy-socket", "/run/haproxy.sock"}, exitUsage, "needs haproxy"},
		{[]string{"-ticket-dir", "/tmp/t", "-ticket-formats", "go", "-ticket-owner", "no-such-user-dc"}, exitUsage, "-ticket-owner"},
		{[]string{"-dev-cluster", "3", "-ticket-dir", "/tmp/t"}, exitUsage, "cannot be combined with -dev-cluster"},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, nil, &out, &errb)
		if code != tc.code {
			t.Errorf("dcnode %v: exit %d, want %d (stderr %q)", tc.args, code, tc.code, errb.String())
			continue
		}
		if got := out.String() + errb.String(); !strings.Contains(got, tc.want) {
			t.Errorf("dcnode %v: output %q does not mention %q", tc.args, got, tc.want)
		}
	}
}

// TestVersionFlag: -version prints the build and exits 0 without starting anything.
func TestVersionFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"-version"}, nil, &out, &errb); code != exitOK {
		t.Fatalf("dcnode -version: exit %d, stderr %q", code, errb.String())
	}
	if want := "dcnode " + version.Get().String() + "\n"; out.String() != want {
		t.Errorf("dcnode -version printed %q; want %q", out.String(), want)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "512MiB": 512 << 20, "1GiB": 1 << 30, "2 KiB": 2048, "5MB": 5_000_000} {
		got, err := parseBytes(in)
		if err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1MiB", "1TiB", "MiB"} {
		if _, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) succeeded", in)
		}
	}
}

// TestSecretFilesMustBePrivate: a token or key file that its group or others
// may read is refused with the chmod to run; the same file at mode 600 passes.
func TestSecretFilesMustBePrivate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return path
	}
	key := "MDEyMzQ1Njc4OWFiY2RlZg==" // 16 bytes
	for _, tc := range []struct {
		name  string
		args  func(file string) []string
		label string
	}{
		{"token", func(f string) []string { return []string{"-admin-token-file", f} }, "-admin-token-file"},
		{"data.keys", func(f string) []string { return []string{"-data-key-file", f} }, "-data-key-file"},
		{"gossip.key", func(f string) []string { return []string{"-gossip-key", "@" + f} }, "-gossip-key"},
		{"client.key", func(f string) []string {
			return []string{"-client-tls-cert", write("client.pem", "x", 0o644), "-client-tls-key", f}
		}, "-client-tls-key"},
		{"dcnode.conf", func(f string) []string { return []string{"-config", f} }, "config file"},
	} {
		content := key
		if tc.name == "dcnode.conf" {
			content = "gossip-key = " + key + "\n"
		}
		for _, mode := range []os.FileMode{0o640, 0o604} {
			file := write(tc.name, content, mode)
			var out, errb bytes.Buffer
			args := append(tc.args(file), "-print-config")
			if code := run(args, nil, &out, &errb); code != exitUsage {
				t.Errorf("%s at mode %o: exit %d, want %d (%s)", tc.name, mode, code, exitUsage, errb.String())
				continue
			}
			if msg := errb.String(); !strings.Contains(msg, tc.label) || !strings.Contains(msg, "chmod 600 "+file) {
				t.Errorf("%s at mode %o: %q does not name %s and the chmod", tc.name, mode, msg, tc.label)
			}
		}
		file := write(tc.name, content, 0o600)
		var out, errb bytes.Buffer
		if code := run(append(tc.args(file), "-print-config"), nil, &out, &errb); code != exitOK {
			t.Errorf("%s at mode 600: exit %d (%s)", tc.name, code, errb.String())
		}
	}
}

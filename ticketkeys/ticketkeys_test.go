package ticketkeys

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/internal/testpki"
	"github.com/distcache-replicated/distcache/internal/testport"
	"github.com/distcache-replicated/distcache/internal/testtool"
)

// layoutKey is a key whose name, HMAC secret and AES key are filled with
// distinct bytes (id, id+0x40, id+0x80), so each server's layout can be read
// off the bytes it gets.
func layoutKey(id byte) Key {
	var k Key
	for i := range k {
		switch {
		case i < 16:
			k[i] = id
		case i < 48:
			k[i] = id + 0x40
		default:
			k[i] = id + 0x80
		}
	}
	return k
}

// testRing is a ring of generation gen holding keys with the given ids, in
// ring order (current, next, past newest first).
func testRing(gen uint64, ids ...byte) Ring {
	r := Ring{Generation: gen}
	for _, id := range ids {
		r.Keys = append(r.Keys, layoutKey(id))
	}
	return r
}

func rep(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestServerLayouts(t *testing.T) {
	k := layoutKey(1)
	// nginx 80 bytes: name | HMAC | AES (ngx_ssl_session_ticket_keys).
	if got := nginxFiles(Ring{Keys: []Key{k, k}}, 1)[0].data; !bytes.Equal(got, cat(rep(1, 16), rep(0x41, 32), rep(0x81, 32))) {
		t.Errorf("nginx layout % x", got)
	}
	// HAProxy 80 bytes: name | AES | HMAC (struct tls_sess_key_256).
	if got := haproxyKey(&k); !bytes.Equal(got, cat(rep(1, 16), rep(0x81, 32), rep(0x41, 32))) {
		t.Errorf("HAProxy layout % x", got)
	}
	// Apache 48 bytes: name | HMAC (16) | AES-128 (16) (ssl_init_ticket_key).
	if got := apacheFile(Ring{Keys: []Key{k, layoutKey(2)}}).data; !bytes.Equal(got, cat(rep(1, 16), rep(0x41, 16), rep(0x81, 16))) {
		t.Errorf("Apache layout % x", got)
	}
}

func TestNginxFilesOrder(t *testing.T) {
	for _, c := range []struct {
		ring Ring
		n    int
		want []byte // ids of files 1..n
	}{
		{testRing(1, 1, 2), 4, []byte{1, 2, 2, 2}},
		{testRing(3, 3, 4, 2, 1), 4, []byte{3, 4, 2, 1}},
		{testRing(5, 5, 6, 4, 3, 2), 3, []byte{5, 6, 4}},
	} {
		fs := nginxFiles(c.ring, c.n)
		var got []byte
		for i, f := range fs {
			if f.name != NginxFile(i+1) || len(f.data) != KeyLen {
				t.Fatalf("file %d: %s of %d bytes", i+1, f.name, len(f.data))
			}
			got = append(got, f.data[0])
		}
		if !bytes.Equal(got, c.want) {
			t.Errorf("generation %d, %d files: key ids %v, want %v", c.ring.Generation, c.n, got, c.want)
		}
	}
}

func TestHAProxyFileOrder(t *testing.T) {
	for _, c := range []struct {
		ring Ring
		want []byte // ids of the lines; the penultimate encrypts
	}{
		{testRing(1, 1, 2), []byte{1, 1, 2}},
		{testRing(2, 2, 3, 1), []byte{1, 2, 3}},
		{testRing(4, 4, 5, 3, 2), []byte{2, 3, 4, 5}},
	} {
		lines := strings.Split(strings.TrimSuffix(string(haproxyFile(c.ring).data), "\n"), "\n")
		var got []byte
		for _, l := range lines {
			b, err := base64.StdEncoding.DecodeString(l)
			if err != nil || len(b) != KeyLen {
				t.Fatalf("line %q: %d bytes, %v", l, len(b), err)
			}
			got = append(got, b[0])
		}
		if !bytes.Equal(got, c.want) {
			t.Errorf("generation %d: line key ids %v, want %v", c.ring.Generation, got, c.want)
		}
	}
}

func TestGoFileRoundTrip(t *testing.T) {
	r := testRing(7, 7, 8, 6)
	gk, err := ParseGo(goFile(r).data)
	if err != nil {
		t.Fatal(err)
	}
	if gk.Generation != 7 || len(gk.Keys) != 3 {
		t.Fatalf("parsed generation %d with %d keys", gk.Generation, len(gk.Keys))
	}
	for i := range r.Keys {
		if gk.Keys[i] != GoKey(&r.Keys[i]) {
			t.Errorf("key %d is not the derived Go key", i)
		}
	}
	if a, b := GoKey(&r.Keys[0]), GoKey(&r.Keys[1]); a == b || bytes.Contains(r.Keys[0][:], a[:8]) {
		t.Error("Go keys are not derived per key")
	}
	secret := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xEE}, 31))
	for name, in := range map[string]string{
		"empty":          "",
		"only a comment": "# nothing\n",
		"short key":      secret + "\n",
		"not base64":     "!!!!\n",
		"bad generation": goHeader + "x\n",
	} {
		_, err := ParseGo([]byte(in))
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "!!!!") {
			t.Errorf("%s: the error quotes the file: %v", name, err)
		}
	}
}

func TestNewRefusesImpossibleDirectories(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	for _, dir := range []string{file, filepath.Join(file, "tickets"), "/no/such/parent/tickets"} {
		if _, err := New(Config{Dir: dir, Formats: []Format{Go}}); err == nil {
			t.Errorf("New accepted %s", dir)
		}
	}
}

func TestParseFormatsAndOwner(t *testing.T) {
	fs, err := ParseFormats("nginx, go,nginx")
	if err != nil || len(fs) != 2 || fs[0] != Nginx || fs[1] != Go {
		t.Fatalf("ParseFormats = %v, %v", fs, err)
	}
	for _, bad := range []string{"", " , ", "nginx,iis"} {
		if _, err := ParseFormats(bad); err == nil {
			t.Errorf("ParseFormats(%q) accepted", bad)
		}
	}
	o, err := ParseOwner("root:0")
	if err != nil || o.UID != 0 || o.GID != 0 {
		t.Fatalf("ParseOwner(root:0) = %+v, %v", o, err)
	}
	for _, bad := range []string{"no-such-user-dc", "root:no-such-group-dc"} {
		if _, err := ParseOwner(bad); err == nil {
			t.Errorf("ParseOwner(%q) accepted", bad)
		}
	}
}

// reloadLog is a reload command that appends the generation it was given to
// a file, and the way to read that file back.
func reloadLog(t *testing.T) (cmd string, runs func() []string) {
	log := filepath.Join(t.TempDir(), "reloads")
	return `echo "$DISTCACHE_TICKET_GENERATION $DISTCACHE_TICKET_DIR" >> ` + log, func() []string {
		b, err := os.ReadFile(log)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
}

func TestWriterWritesAtomicallyAndOnlyChanges(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tickets")
	reload, runs := reloadLog(t)
	w, err := New(Config{Dir: dir, Formats: []Format{Nginx, HAProxy, Apache, Go}, NginxKeys: 3, Reload: reload})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("New made the ticket directory: the first delivery must, as the node's final user")
	}
	ctx := context.Background()
	if d, err := w.Deliver(ctx, Ring{}); err != nil || len(d.Written) != 0 || d.Reloaded {
		t.Fatalf("an empty ring delivered %+v, %v", d, err)
	}
	d, err := w.Deliver(ctx, testRing(1, 1, 2))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Written) != 6 || !d.Reloaded {
		t.Fatalf("first delivery: %+v", d)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o711 {
		t.Fatalf("ticket directory: %v, %v", fi, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 6 {
		t.Fatalf("%d entries in the ticket directory (temporary files left?)", len(entries))
	}
	for _, e := range entries {
		fi, _ := e.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", e.Name(), fi.Mode().Perm())
		}
	}
	if got := runs(); len(got) != 1 || got[0] != "1 "+dir {
		t.Fatalf("reload runs %q, want one with generation 1 and the directory", got)
	}

	// The same ring again (a restarted node): nothing written, no reload.
	w2, err := New(Config{Dir: dir, Formats: []Format{Nginx, HAProxy, Apache, Go}, NginxKeys: 3, Reload: reload})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := w2.Deliver(ctx, testRing(1, 1, 2)); err != nil || len(d.Written) != 0 || d.Reloaded {
		t.Fatalf("unchanged ring: %+v, %v", d, err)
	}
	// A file whose mode was loosened is rewritten.
	os.Chmod(filepath.Join(dir, ApacheFile), 0o644)
	if d, err := w2.Deliver(ctx, testRing(1, 1, 2)); err != nil || len(d.Written) != 1 || d.Written[0] != ApacheFile {
		t.Fatalf("loosened file: %+v, %v", d, err)
	}
	if d, err := w2.Deliver(ctx, testRing(2, 2, 3, 1)); err != nil || !d.Reloaded {
		t.Fatalf("rotation: %+v, %v", d, err)
	}
	if got := runs(); len(got) != 3 || got[2] != "2 "+dir {
		t.Fatalf("reload runs %q", got)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, NginxFile(1))); b[0] != 2 {
		t.Fatalf("nginx.1.key holds key %d after the rotation, want 2", b[0])
	}
}

func TestReloadFailureIsRetried(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "ok")
	w, err := New(Config{Dir: t.TempDir(), Formats: []Format{Apache}, Reload: "test -f " + flag + " || { echo not yet >&2; exit 3; }"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = w.Deliver(ctx, testRing(1, 1, 2))
	if !errors.Is(err, ErrReload) || !strings.Contains(err.Error(), "not yet") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("failing reload: %v", err)
	}
	// The files are in place; the next delivery of the same ring retries the reload.
	if _, err := w.Deliver(ctx, testRing(1, 1, 2)); !errors.Is(err, ErrReload) {
		t.Fatalf("second attempt: %v", err)
	}
	os.WriteFile(flag, nil, 0o600)
	if d, err := w.Deliver(ctx, testRing(1, 1, 2)); err != nil || !d.Reloaded || len(d.Written) != 0 {
		t.Fatalf("retry once the server is back: %+v, %v", d, err)
	}
	if d, err := w.Deliver(ctx, testRing(1, 1, 2)); err != nil || d.Reloaded {
		t.Fatalf("after a successful reload: %+v, %v", d, err)
	}
}

func TestReloadTimeoutKillsItsProcessGroup(t *testing.T) {
	child := filepath.Join(t.TempDir(), "child")
	w, err := New(Config{
		Dir: t.TempDir(), Formats: []Format{Go}, ReloadTimeout: 300 * time.Millisecond,
		Reload: "sleep 60 & echo $! > " + child + "; wait",
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = w.Deliver(context.Background(), testRing(1, 1, 2))
	if !errors.Is(err, ErrReload) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hanging reload: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("Deliver returned after %v", took)
	}
	b, err := os.ReadFile(child)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the reload command's child %d survived the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid runs: neither gone nor a zombie waiting for
// whoever inherited it to reap it.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestOwnerOfFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing a file's owner needs root")
	}
	o, err := ParseOwner("nobody")
	if err != nil {
		t.Skip("no user nobody:", err)
	}
	dir := filepath.Join(t.TempDir(), "t")
	w, err := New(Config{Dir: dir, Formats: []Format{Go, Apache}, Owner: o})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Deliver(context.Background(), testRing(1, 1, 2)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, GoFile), filepath.Join(dir, ApacheFile)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != o.UID || int(st.Gid) != o.GID {
			t.Errorf("%s is owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, o.UID, o.GID)
		}
	}
}

// TestHAProxyRuntimeAPI runs a real HAProxy on its key file and checks that
// deliveries through the runtime API leave exactly the wanted keys, with one
// `set ssl tls-key` per rotation.
func TestHAProxyRuntimeAPI(t *testing.T) {
	haproxy := testtool.Look(t, "haproxy")
	dir := t.TempDir()
	files, err := New(Config{Dir: dir, Formats: []Format{HAProxy}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := files.Deliver(ctx, testRing(1, 1, 2)); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "admin.sock")
	ca := testpki.NewCA(t, "ticketkeys test CA")
	cert, key := testpki.WritePair(t, dir, "server", ca.Issue(t, "localhost", "127.0.0.1"))
	crt := filepath.Join(dir, "combined.pem") // HAProxy's crt: certificate and key
	os.WriteFile(crt, append(mustRead(t, cert), mustRead(t, key)...), 0o600)
	cfg := filepath.Join(dir, "haproxy.cfg")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`global
  stats socket %s mode 600 level admin
defaults
  mode http
  timeout connect 5s
  timeout client 5s
  timeout server 5s
frontend fe
  bind 127.0.0.1:%d ssl crt %s tls-ticket-keys %s
  http-request return status 200
`, sock, testport.Port(t), crt, filepath.Join(dir, HAProxyFile))), 0o600)
	cmd := exec.Command(haproxy, "-db", "-f", cfg)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := showTLSKeys(ctx, sock, filepath.Join(dir, HAProxyFile)); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("HAProxy's runtime API does not answer: %v\n%s", err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	w, err := New(Config{Dir: dir, Formats: []Format{HAProxy}, HAProxySocket: sock})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ring   Ring
		pushes int
	}{
		{testRing(1, 1, 2), 0},           // what HAProxy loaded
		{testRing(2, 2, 3, 1), 1},        // one rotation: one key
		{testRing(4, 4, 5, 3, 2), 2},     // two rotations missed: two keys
		{testRing(4, 4, 5, 3, 2), 0},     // nothing new
		{testRing(9, 9, 10, 8, 7, 6), 3}, // nothing in common: every slot
	} {
		d, err := w.Deliver(ctx, c.ring)
		if err != nil {
			t.Fatalf("generation %d: %v\n%s", c.ring.Generation, err, out.String())
		}
		if d.Pushed != c.pushes {
			t.Errorf("generation %d: pushed %d keys, want %d", c.ring.Generation, d.Pushed, c.pushes)
		}
		have, err := showTLSKeys(ctx, sock, filepath.Join(dir, HAProxyFile))
		if err != nil {
			t.Fatal(err)
		}
		order := haproxyOrder(c.ring)
		want := order[len(order)-3:]
		for i := range have {
			if !bytes.Equal(have[i], haproxyKey(want[i])) {
				t.Fatalf("generation %d: HAProxy's key %d is not the wanted one", c.ring.Generation, i)
			}
		}
	}
	if _, err := pushHAProxy(ctx, sock, "/no/such/file", haproxyOrder(testRing(1, 1, 2))); err == nil || !strings.Contains(err.Error(), "unable to locate") {
		t.Fatalf("unknown key file: %v", err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

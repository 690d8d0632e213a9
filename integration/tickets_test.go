package integration

// End-to-end tests of the session-ticket keys (issue 17): pairs of stock nginx,
// HAProxy, Apache httpd and Go servers, each server reading the key files of a
// different node, resume each other's TLS 1.3 tickets; after `dcctl tickets
// rotate` the servers pick up the new ring (a reload, HAProxy's runtime API, or
// tlscache watching its file) and a ticket issued before the rotation still
// resumes until its key leaves the ring. A node that was down during rotations
// catches up before it reloads its servers.
//
// The server configurations are rendered from testdata/tls/*.tmpl, which the
// README's "Ticket keys" section quotes.

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/ticketkeys"
	"github.com/distcache-replicated/distcache/tlscache"
)

// ticketLifetime is the test clusters' -ticket-lifetime: a retired key is dropped
// at the first rotation this long after it retired.
const ticketLifetime = 2 * time.Second

// tls13 are the s_client flags of the ticket tests: stateless tickets are a TLS
// 1.3 story (issue 17); TLS 1.2 uses the same keys the same way.
var tls13 = []string{"-tls1_3"}

// ticketFleet is a three-node cluster in which n1 and n2 each write the ticket keys
// for one TLS server, A and B; n3 writes nothing and keeps the quorum while one of
// the others is down.
type ticketFleet struct {
	t     *testing.T
	c     *testCluster
	n     [2]*testNode
	dirs  [2]string // -ticket-dir of n1 and n2
	addrs [2]string // servers A and B
	sess  string    // session files
}

// startTicketFleet starts the cluster; serverArgs gives n1 (0) and n2 (1) the
// arguments that reach their server (reload command, HAProxy socket).
func startTicketFleet(t *testing.T, serverArgs func(i int) []string) *ticketFleet {
	t.Helper()
	base := t.TempDir()
	f := &ticketFleet{t: t, sess: t.TempDir()}
	for i := range f.dirs {
		f.dirs[i] = filepath.Join(base, fmt.Sprintf("n%d-tickets", i+1))
		f.addrs[i] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	}
	opts := clusterOptions{
		ReadConsistency: "leader-on-miss",
		ExtraArgs:       []string{"-ticket-lifetime", ticketLifetime.String()},
		NodeArgs: func(nd *testNode) []string {
			i := map[string]int{"n1": 0, "n2": 1}
			j, ok := i[nd.id]
			if !ok {
				return nil
			}
			args := []string{"-ticket-dir", f.dirs[j], "-ticket-formats", "nginx,haproxy,apache,go", "-ticket-nginx-keys", "4"}
			return append(args, serverArgs(j)...)
		},
	}
	f.c = startCluster(t, 3, opts)
	f.n = [2]*testNode{f.c.node("n1"), f.c.node("n2")}
	return f
}

// rotate runs `dcctl tickets rotate` through n1, waiting (wait) until every
// member with outputs has delivered the new ring, and returns its generation.
func (f *ticketFleet) rotate(wait bool) uint64 {
	f.t.Helper()
	args := []string{"tickets", "rotate"}
	if wait {
		args = append(args, "--wait", "25s")
	}
	out, err := f.n[0].dcctl(args...)
	if err != nil {
		f.t.Fatal(err)
	}
	var gen uint64
	if _, err := fmt.Sscanf(out, "rotated: generation %d", &gen); err != nil {
		f.t.Fatalf("dcctl tickets rotate printed %q", out)
	}
	return gen
}

// ticketRing is the subset of GET /v1/tickets the tests use.
type ticketRing struct {
	Generation uint64    `json:"generation"`
	RotatedAt  time.Time `json:"rotated_at"`
	Keys       []struct {
		ID uint64 `json:"id"`
	} `json:"keys"`
}

func (f *ticketFleet) ring() ticketRing {
	f.t.Helper()
	var r ticketRing
	if err := f.n[0].getJSON("/v1/tickets", &r); err != nil {
		f.t.Fatal(err)
	}
	return r
}

// waitRetention waits until the last rotation is older than -ticket-lifetime, so
// that the next one drops the key it retired.
func (f *ticketFleet) waitRetention() {
	f.t.Helper()
	waitFor(f.t, 10*time.Second, "the retired key's retention runs out", func() (bool, string) {
		r := f.ring()
		return time.Since(r.RotatedAt) > ticketLifetime, fmt.Sprint("rotated at ", r.RotatedAt)
	})
}

// currentName is the key name of the current key node i wrote: the first 16
// bytes of nginx.1.key, which every format shares and which OpenSSL servers put
// in front of every ticket they issue.
func (f *ticketFleet) currentName(i int) []byte {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dirs[i], ticketkeys.NginxFile(1)))
	if err != nil {
		f.t.Fatal(err)
	}
	return b[:16]
}

// waitEncrypting polls fresh tickets of server i until they carry the name of
// the current key of its node: it has picked up the ring (a reload is
// asynchronous).
func (f *ticketFleet) waitEncrypting(i int) {
	f.t.Helper()
	name := f.currentName(i)
	probe := filepath.Join(f.sess, "probe")
	waitFor(f.t, 30*time.Second, fmt.Sprintf("server %c encrypts with its node's current key", 'A'+i), func() (bool, string) {
		newSession(f.t, f.addrs[i], probe, "TLSv1.3", tls13)
		tk := readSession(f.t, probe).ticket
		return len(tk) >= 16 && bytes.Equal(tk[:16], name), "tickets under another key"
	})
}

// waitOpenSSLServers is the waitServers of OpenSSL-based servers.
func (f *ticketFleet) waitOpenSSLServers(uint64) {
	for i := range f.addrs {
		f.waitEncrypting(i)
	}
}

// resumes checks that a ticket resumes, or not, on both servers.
func (f *ticketFleet) resumes(file string, want bool, what string) {
	f.t.Helper()
	for i, addr := range f.addrs {
		if h := resume(f.t, addr, file, "TLSv1.3", tls13); h.resumed != want {
			f.t.Fatalf("%s: resumed=%v on server %c, want %v:\n%s", what, h.resumed, 'A'+i, want, h.out)
		}
	}
}

// exercise runs the scenario of issue 17 once both servers use generation 1:
// a ticket of A resumes on B; after a rotation (waitServers returns when both
// servers use it) a ticket issued before it resumes on both if the servers keep
// past keys (pastDecrypts; Apache keeps one key only), and one issued after it
// resumes on both; after the first key leaves the ring, its ticket resumes
// nowhere.
func (f *ticketFleet) exercise(waitServers func(gen uint64), pastDecrypts bool) {
	t := f.t
	t.Helper()
	before := filepath.Join(f.sess, "before")
	newSession(t, f.addrs[0], before, "TLSv1.3", tls13)
	f.resumes(before, true, "a ticket of server A")

	gen := f.rotate(true)
	waitServers(gen)
	f.resumes(before, pastDecrypts, "a ticket issued before the rotation")
	after := filepath.Join(f.sess, "after")
	newSession(t, f.addrs[1], after, "TLSv1.3", tls13)
	f.resumes(after, true, "a ticket issued after the rotation")

	f.waitRetention()
	gen = f.rotate(true)
	waitServers(gen)
	for _, k := range f.ring().Keys {
		if k.ID == 1 {
			t.Fatalf("key #1 is still in the ring at generation %d", gen)
		}
	}
	f.resumes(before, false, "a ticket whose key left the ring")
	f.resumes(after, pastDecrypts, "a ticket whose key is a past key")
}

// nginxServer is an nginx instance whose directory (configuration, pid file,
// logs) exists before the node that reloads it starts.
type nginxServer struct {
	nginx, dir string
}

func newNginxServer(t *testing.T, nginx string) *nginxServer {
	return &nginxServer{nginx: nginx, dir: worldReadableDir(t, "dcint-nginx-")}
}

func (s *nginxServer) conf() string { return filepath.Join(s.dir, "nginx.conf") }

// reloadCmd is the node's -ticket-reload: a no-op until nginx runs (it cannot
// start before the key files exist).
func (s *nginxServer) reloadCmd() string {
	return fmt.Sprintf("test ! -s %s/nginx.pid || %s -c %s -e %s/error.log -s reload", s.dir, s.nginx, s.conf(), s.dir)
}

// nginxConfig is the data of testdata/tls/nginx.conf.tmpl.
type nginxConfig struct {
	Dir, Name, Listen, Cert, Key, User, Group string
	TicketKeys                                []string
}

// start renders the configuration (n key files from keyDir) and runs nginx in
// the foreground until the test ends.
func (s *nginxServer) start(t *testing.T, name, listen string, files tlsFiles, keyDir string, n int) *proc {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(s.dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := nginxConfig{Dir: s.dir, Name: name, Listen: listen, Cert: files.cert, Key: files.key}
	for i := 1; i <= n; i++ {
		cfg.TicketKeys = append(cfg.TicketKeys, filepath.Join(keyDir, ticketkeys.NginxFile(i)))
	}
	if os.Geteuid() == 0 {
		cfg.User, cfg.Group = "nobody", "nogroup"
		if _, err := user.LookupGroup("nogroup"); err != nil {
			cfg.Group = "nobody"
		}
	}
	renderTemplate(t, "nginx.conf.tmpl", s.conf(), cfg)
	p := startProc(t, name, s.conf(), []string{filepath.Join(s.dir, "error.log")}, s.nginx, "-c", s.conf(), "-e", filepath.Join(s.dir, "error.log"))
	p.waitListening(listen)
	return p
}

// TestTicketKeysNginx: two nginx servers, reloaded by their nodes after every
// rotation (-ticket-reload 'nginx -s reload').
func TestTicketKeysNginx(t *testing.T) {
	t.Parallel()
	nginx := lookTool(t, "nginx")
	lookTool(t, "openssl")
	srv := [2]*nginxServer{newNginxServer(t, nginx), newNginxServer(t, nginx)}
	f := startTicketFleet(t, func(i int) []string { return []string{"-ticket-reload", srv[i].reloadCmd()} })
	f.rotate(true) // nginx needs the key files to start
	files := newTLSFiles(t, worldReadableDir(t, "dcint-cert-"))
	for i, s := range srv {
		s.start(t, fmt.Sprintf("nginx %c (keys of %s)", 'A'+i, f.n[i].id), f.addrs[i], files, f.dirs[i], 4)
	}
	f.waitOpenSSLServers(1)
	f.exercise(f.waitOpenSSLServers, true)
}

// haproxyConfig is the data of testdata/tls/haproxy.cfg.tmpl.
type haproxyConfig struct {
	Dir, Name, Listen, Crt, Socket, TicketKeys string
}

// TestTicketKeysHAProxy: two HAProxy servers; A gets each new key through the
// runtime API (-ticket-haproxy-socket, no reload), B is reloaded in
// master-worker mode (-ticket-reload 'kill -USR2 master').
func TestTicketKeysHAProxy(t *testing.T) {
	t.Parallel()
	haproxy := lookTool(t, "haproxy")
	lookTool(t, "openssl")
	dirs := [2]string{worldReadableDir(t, "dcint-haproxy-"), worldReadableDir(t, "dcint-haproxy-")}
	sock := filepath.Join(dirs[0], "admin.sock")
	f := startTicketFleet(t, func(i int) []string {
		if i == 0 {
			return []string{"-ticket-haproxy-socket", sock}
		}
		pid := filepath.Join(dirs[1], "haproxy.pid")
		return []string{"-ticket-reload", fmt.Sprintf("test ! -s %s || kill -USR2 $(cat %s)", pid, pid)}
	})
	// HAProxy needs the key file to start; until A runs, n1's pushes fail and are
	// retried.
	f.rotate(false)
	for i := range f.dirs {
		waitFor(t, 20*time.Second, fmt.Sprintf("n%d writes haproxy.keys", i+1), func() (bool, string) {
			_, err := os.Stat(filepath.Join(f.dirs[i], ticketkeys.HAProxyFile))
			return err == nil, fmt.Sprint(err)
		})
	}
	files := newTLSFiles(t, worldReadableDir(t, "dcint-cert-"))
	for i, dir := range dirs {
		crt := filepath.Join(dir, "combined.pem")
		cert, _ := os.ReadFile(files.cert)
		key, _ := os.ReadFile(files.key)
		if err := os.WriteFile(crt, append(cert, key...), 0o600); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("haproxy %c (keys of %s)", 'A'+i, f.n[i].id)
		conf := filepath.Join(dir, "haproxy.cfg")
		renderTemplate(t, "haproxy.cfg.tmpl", conf, haproxyConfig{
			Dir: dir, Name: name, Listen: f.addrs[i], Crt: crt, Socket: filepath.Join(dir, "admin.sock"),
			TicketKeys: filepath.Join(f.dirs[i], ticketkeys.HAProxyFile),
		})
		p := startProc(t, name, conf, nil, haproxy, "-W", "-db", "-f", conf)
		p.waitListening(f.addrs[i])
	}
	f.waitOpenSSLServers(1)
	f.exercise(f.waitOpenSSLServers, true)
	if out := f.n[0].log.String(); !bytes.Contains([]byte(out), []byte("haproxy_pushed=1")) {
		t.Error("n1 never pushed a key to HAProxy A's runtime API")
	}
}

// TestTicketKeysApache: two Apache httpd servers with SSLSessionTicketKeyFile,
// restarted gracefully by their nodes. Apache holds one key only, so a rotation
// ends every ticket issued before it (a full handshake, as the README says).
func TestTicketKeysApache(t *testing.T) {
	t.Parallel()
	apache := lookTool(t, "apache2")
	lookTool(t, "openssl")
	dirs := [2]string{worldReadableDir(t, "dcint-apache-"), worldReadableDir(t, "dcint-apache-")}
	f := startTicketFleet(t, func(i int) []string {
		pid := filepath.Join(dirs[i], "httpd.pid")
		return []string{"-ticket-reload", fmt.Sprintf("test ! -s %s || %s -f %s -k graceful", pid, apache, filepath.Join(dirs[i], "httpd.conf"))}
	})
	f.rotate(true)
	files := newTLSFiles(t, worldReadableDir(t, "dcint-cert-"))
	serverName := "localhost:" + f.addrs[0][len("127.0.0.1:"):]
	for i, dir := range dirs {
		startApacheIn(t, dir, fmt.Sprintf("apache %c (keys of %s)", 'A'+i, f.n[i].id), f.addrs[i], serverName, files,
			func(c *apacheConfig) { c.TicketKeyFile = filepath.Join(f.dirs[i], ticketkeys.ApacheFile) })
	}
	f.waitOpenSSLServers(1)
	f.exercise(f.waitOpenSSLServers, false)
}

// TestTicketKeysGo: two Go servers whose tlscache.WatchTicketKeys reads the
// go.keys of its node: no reload, no request to the cluster per handshake.
func TestTicketKeysGo(t *testing.T) {
	t.Parallel()
	lookTool(t, "openssl")
	f := startTicketFleet(t, func(int) []string { return nil })
	f.rotate(true)
	files := newTLSFiles(t, t.TempDir())
	var watchers [2]*tlscache.TicketKeys
	for i := range f.addrs {
		cfg := &tls.Config{Certificates: []tls.Certificate{files.pair}, MinVersion: tls.VersionTLS12}
		k, err := tlscache.WatchTicketKeys(cfg, tlscache.TicketKeysConfig{Path: filepath.Join(f.dirs[i], ticketkeys.GoFile), Interval: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { k.Close() })
		watchers[i] = k
		f.addrs[i] = serveGoTLS(t, cfg).addr
	}
	f.exercise(func(gen uint64) {
		for i, k := range watchers {
			waitFor(t, 20*time.Second, fmt.Sprintf("Go server %c loads generation %d", 'A'+i, gen), func() (bool, string) {
				return k.Generation() == gen, fmt.Sprint("at ", k.Generation())
			})
		}
	}, true)
}

// ticketStatus is the subset of GET /v1/status's tickets the tests use.
type ticketStatus struct {
	Tickets struct {
		Generation uint64 `json:"generation"`
		CaughtUp   bool   `json:"caught_up"`
		Delivered  uint64 `json:"delivered_generation"`
	} `json:"tickets"`
}

// TestTicketKeysCatchUp: n2 is killed and misses two rotations. Restarted, it
// restores a snapshot older than the files its server holds; it must catch up
// with the cluster before it writes anything, so the first reload of its nginx
// after the restart loads the newest ring, never the snapshot's.
func TestTicketKeysCatchUp(t *testing.T) {
	t.Parallel()
	nginx := lookTool(t, "nginx")
	lookTool(t, "openssl")
	srv := [2]*nginxServer{newNginxServer(t, nginx), newNginxServer(t, nginx)}
	// n2's reload command records the name of the key its nginx is about to load.
	reloads := filepath.Join(t.TempDir(), "reloads")
	f := startTicketFleet(t, func(i int) []string {
		cmd := srv[i].reloadCmd()
		if i == 1 {
			cmd = fmt.Sprintf(`head -c 16 "$DISTCACHE_TICKET_DIR/%s" >> %s && %s`, ticketkeys.NginxFile(1), reloads, cmd)
		}
		return []string{"-ticket-reload", cmd}
	})
	f.rotate(true)
	files := newTLSFiles(t, worldReadableDir(t, "dcint-cert-"))
	for i, s := range srv {
		s.start(t, fmt.Sprintf("nginx %c (keys of %s)", 'A'+i, f.n[i].id), f.addrs[i], files, f.dirs[i], 4)
	}
	// n2 snapshots generation 1, then delivers generation 2 to its nginx.
	if _, err := f.n[1].dcctl("snapshot", "save", filepath.Join(t.TempDir(), "n2.snap")); err != nil {
		t.Fatal(err)
	}
	stale := f.currentName(1)
	f.rotate(true)
	f.waitOpenSSLServers(2)

	f.n[1].kill()
	held, err := os.ReadFile(reloads)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		f.rotate(false)
	}
	waitFor(t, 20*time.Second, "n1 delivers generation 4", func() (bool, string) {
		var st ticketStatus
		err := f.n[0].getJSON("/v1/status", &st)
		return err == nil && st.Tickets.Delivered == 4, fmt.Sprintf("%+v %v", st.Tickets, err)
	})
	f.waitEncrypting(0)

	f.n[1].restart()
	waitFor(t, 30*time.Second, "restarted n2 catches up and delivers generation 4", func() (bool, string) {
		var st ticketStatus
		err := f.n[1].getJSON("/v1/status", &st)
		return err == nil && st.Tickets.CaughtUp && st.Tickets.Delivered == 4, fmt.Sprintf("%+v %v", st.Tickets, err)
	})
	f.waitEncrypting(1)
	all, err := os.ReadFile(reloads)
	if err != nil {
		t.Fatal(err)
	}
	after := all[len(held):]
	current := f.currentName(1)
	if len(after) == 0 || len(after)%16 != 0 {
		t.Fatalf("n2 reloaded its nginx with %d bytes of key names after the restart", len(after))
	}
	for len(after) > 0 {
		name := after[:16]
		switch {
		case bytes.Equal(name, stale):
			t.Fatal("restarted n2 reloaded its nginx with the ring of its snapshot (generation 1) before catching up")
		case !bytes.Equal(name, current):
			t.Fatal("restarted n2 reloaded its nginx with a key that is not the newest ring's current key")
		}
		after = after[16:]
	}
	// The fleet shares tickets again.
	ticket := filepath.Join(f.sess, "after-restart")
	newSession(t, f.addrs[0], ticket, "TLSv1.3", tls13)
	f.resumes(ticket, true, "a ticket of server A after n2's restart")
}

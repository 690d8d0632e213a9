package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// pki writes PEM certificates for secure-cluster tests into a directory.
type pki struct {
	t    testing.TB
	dir  string
	name string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// newPKI creates a CA named name and writes its certificate to dir/name-ca.pem.
func newPKI(t testing.TB, dir, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{t: t, dir: dir, name: name, cert: cert, key: key}
	p.write(name+"-ca.pem", "CERTIFICATE", der)
	return p
}

func (p *pki) caFile() string { return filepath.Join(p.dir, p.name+"-ca.pem") }

func (p *pki) write(file, typ string, der []byte) string {
	path := filepath.Join(p.dir, file)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// issue writes a node certificate (server and client auth, IP SAN 127.0.0.1)
// and its key, returning the dcnode flags that use them.
func (p *pki) issue(node string) []string {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: node},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return []string{
		"-tls-cert", p.write(p.name+"-"+node+".pem", "CERTIFICATE", der),
		"-tls-key", p.write(p.name+"-"+node+".key", "EC PRIVATE KEY", keyDER),
	}
}

func randomB64(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// filesContaining returns the files under dir whose bytes contain needle.
func filesContaining(t testing.TB, dir string, needle []byte) (hits []string, files int) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(b, needle) {
			hits = append(hits, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits, files
}

// addSecureNode registers a node with per-node flags, joining the given
// gossip addresses, and starts it.
func (c *testCluster) addSecureNode(id string, join []string, extra []string) *testNode {
	c.t.Helper()
	nd := c.newNode(id)
	nd.join, nd.extra = join, extra
	c.mu.Lock()
	c.nodes = append(c.nodes, nd)
	c.mu.Unlock()
	nd.start()
	return nd
}

// TestSecureCluster: three dcnode processes with mutual TLS on the cluster
// port, gossip encryption, an admin token and sealed storage serve writes and
// reads through every node; no session value reaches the disk in plaintext;
// a process with a certificate from another CA is refused at the Raft port
// and gets no data; a process with another gossip key cannot join; the gossip
// key is rotated on the live cluster and a node restarted afterwards (with
// the old key on its command line) rejoins.
func TestSecureCluster(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"tls-cert", "gossip-key", "data-key-file", "snapshot-threshold"} {
		if !dcnodeHasFlag(f) {
			t.Fatalf("dcnode has no -%s flag", f)
		}
	}
	dir := t.TempDir()
	ca := newPKI(t, dir, "cluster")
	k1, k2 := randomB64(t, 32), randomB64(t, 32)
	token := filepath.Join(dir, "admin-token")
	dataKeys := filepath.Join(dir, "data-keys")
	k1File := filepath.Join(dir, "k1")
	for file, content := range map[string]string{token: randomB64(t, 24), dataKeys: "k1:" + randomB64(t, 32) + "\n", k1File: k1} {
		if err := os.WriteFile(file, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := newTestCluster(t, clusterOptions{ExtraArgs: []string{
		"-tls-ca", ca.caFile(), "-gossip-key", "@" + k1File, "-admin-token-file", token, "-data-key-file", dataKeys,
		"-snapshot-threshold", "32", "-snapshot-interval", "200ms", "-trailing-logs", "16"}})
	for i := range 3 {
		nd := c.newNode(fmt.Sprintf("n%d", i+1))
		nd.extra = ca.issue(nd.id)
		nd.expect = 3
		c.nodes = append(c.nodes, nd)
	}
	for _, nd := range c.nodes {
		for _, o := range c.nodes {
			if o != nd {
				nd.join = append(nd.join, o.gossipAddr)
			}
		}
	}
	for _, nd := range c.nodes {
		nd.start()
	}
	leader := c.waitLeader(30 * time.Second)
	nodes := c.all()

	// Writes through every node, reads of every write through every node.
	marker := "S3ss10nM4sterSecret-" + strings.TrimRight(randomB64(t, 9), "=")
	clients := map[string]*distcache.Client{}
	for _, nd := range nodes {
		clients[nd.id] = dial(t, nd)
	}
	for i, nd := range nodes {
		mustAdd(t, clients[nd.id], fmt.Sprintf("sec-%d", i), fmt.Sprintf("%s-%d", marker, i), time.Hour)
	}
	for _, nd := range nodes {
		for i := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			v, err := clients[nd.id].Get(ctx, []byte(fmt.Sprintf("sec-%d", i)))
			cancel()
			if err != nil || string(v) != fmt.Sprintf("%s-%d", marker, i) {
				t.Fatalf("GET sec-%d through %s: %q, %v", i, nd.id, v, err)
			}
		}
	}
	// Enough writes for every node to take a snapshot.
	for i := range 80 {
		mustAdd(t, clients[nodes[i%3].id], fmt.Sprintf("bulk-%d", i), fmt.Sprintf("%s-bulk-%d", marker, i), time.Hour)
	}
	for _, nd := range nodes {
		waitFor(t, 20*time.Second, nd.id+" takes a snapshot", func() (bool, string) {
			return latestSnapshot(nd) > 0, "no snapshot yet"
		})
	}
	assertNoPlaintext := func(when string) {
		t.Helper()
		for _, nd := range c.all() {
			hits, files := filesContaining(t, nd.dataDir, []byte(marker))
			if files == 0 {
				t.Fatalf("%s: %s: no files in the data dir: the scan is blind", when, nd.id)
			}
			if len(hits) > 0 {
				t.Errorf("%s: session values in plaintext on disk: %v", when, hits)
			}
		}
	}
	assertNoPlaintext("after snapshots")

	// A process whose certificate comes from another CA (but which holds the
	// gossip key, so it finds the Raft ports) is never added to the
	// configuration: the leader's mutual-TLS check of its cluster port fails,
	// and the process refuses the leader's certificate. It gets no data.
	rogueCA := newPKI(t, dir, "rogue")
	rogueFlags := rogueCA.issue("rogue")
	rogue := c.addSecureNode("rogue", []string{leader.gossipAddr}, append(rogueFlags, "-tls-ca", rogueCA.caFile()))
	waitFor(t, 20*time.Second, "the leader refuses to add the rogue, and the rogue refuses the leader", func() (bool, string) {
		l := c.leaderAmong(nodes, 10*time.Second)
		switch {
		case !strings.Contains(l.log.String(), "fails mutual TLS"):
			return false, "leader " + l.id + " logged no refusal of the rogue"
		case !strings.Contains(rogue.log.String(), "cluster connection refused"):
			return false, "the rogue logged no refused connection"
		}
		return true, ""
	})
	// The rogue dialing a Raft port itself is refused and logged with its address.
	cert, err := tls.LoadX509KeyPair(rogueFlags[1], rogueFlags[3])
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", leader.raftAddr, &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true})
	if err == nil {
		local := conn.LocalAddr().String()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write([]byte{'R'})
		_, rerr := conn.Read(make([]byte, 1))
		conn.Close()
		if rerr == nil {
			t.Fatal("the Raft port answered a certificate from another CA")
		}
		waitFor(t, 10*time.Second, "the refusal is logged with the remote address", func() (bool, string) {
			return strings.Contains(leader.log.String(), "remote="+local), "not logged"
		})
	}
	if st, err := rogue.status(); err != nil || st.Sessions != 0 || st.LeaderID != "" {
		t.Fatalf("rogue got data or a leader: %+v, %v", st, err)
	}
	waitVoters(t, leader, "n1", "n2", "n3")
	rogue.kill()
	waitFor(t, 20*time.Second, "gossip sees the rogue gone", func() (bool, string) {
		ms, err := leader.members()
		if err != nil {
			return false, err.Error()
		}
		for _, m := range ms {
			if m.ID == "rogue" && (m.Status == "alive" || m.Status == "suspect") {
				return false, "rogue is " + m.Status
			}
		}
		return true, ""
	})

	// A process with the right certificate but another gossip key cannot join.
	stranger := c.addSecureNode("stranger", []string{leader.gossipAddr}, append(ca.issue("stranger"), "-gossip-key", randomB64(t, 32)))
	waitFor(t, 20*time.Second, "the cluster drops the stranger's gossip", func() (bool, string) {
		for _, nd := range nodes {
			if strings.Contains(strings.ToLower(nd.log.String()), "no installed keys could decrypt") {
				return true, ""
			}
		}
		return false, "no decrypt failure logged"
	})
	for _, nd := range []*testNode{leader, stranger} {
		ms, err := nd.members()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if (nd == leader && m.ID == "stranger") || (nd == stranger && m.ID != "stranger") {
				t.Fatalf("%s sees %s in the cluster", nd.id, m.ID)
			}
		}
	}
	stranger.kill()

	// Rotate the gossip key on the live cluster; the admin token is required.
	if _, err := leader.dcctl("keyring", "list"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("keyring list without the token: %v", err)
	}
	fol := c.followers(leader)
	keyFile := filepath.Join(dir, "k2")
	os.WriteFile(keyFile, []byte(k2), 0o600)
	for _, step := range [][]string{{"install", "@" + keyFile}, {"use", k2}, {"remove", k1}} {
		out, err := fol[0].dcctl(append([]string{"keyring"}, append(step, "--token-file", token)...)...)
		if err != nil {
			t.Fatalf("keyring %s: %v\n%s", step[0], err, out)
		}
		t.Logf("dcctl keyring %s:\n%s", step[0], out)
	}
	out, err := leader.dcctl("keyring", "list", "--token-file", token, "--json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, `"primary"`) != 3 || strings.Contains(out, k2) || strings.Contains(out, `"error"`) {
		t.Fatalf("keyring after rotation: %s", out)
	}
	mustAdd(t, clients[fol[1].id], "after-rotation", marker+"-rotated", time.Hour)

	// A follower restarted with only the old key on its command line rejoins
	// through its persisted keyring, reads everything and takes writes.
	f := fol[1]
	f.stop()
	f.restart()
	c.waitConverged(c.leaderAmong(nodes, 30*time.Second), nodes, 30*time.Second)
	fc := dial(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	v, err := fc.Get(ctx, []byte("after-rotation"))
	cancel()
	if err != nil || string(v) != marker+"-rotated" {
		t.Fatalf("restarted node reads %q, %v", v, err)
	}
	mustAdd(t, fc, "after-restart", marker+"-restart", time.Hour)
	if !strings.Contains(f.log.String(), "not in the persisted keyring") {
		t.Errorf("%s did not say that its persisted keyring overrides -gossip-key", f.id)
	}
	assertNoPlaintext("after rotation and restart")
}

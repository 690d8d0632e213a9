package node

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/distcache-replicated/distcache/internal/testpki"
)

// writePKI writes a CA and a certificate for 127.0.0.1 signed by it as PEM
// files in dir, returning their paths.
func writePKI(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	ca := testpki.NewCA(t, "test CA")
	certFile, keyFile = testpki.WritePair(t, dir, "node", ca.Issue(t, "node", "127.0.0.1"))
	return ca.WriteCA(t, dir), certFile, keyFile
}

// startOne starts a one-node cluster with cfg adjusted by mutate.
func startOne(t *testing.T, mutate func(*Config)) *Node {
	t.Helper()
	cfg := Config{
		NodeID: "n1", DataDir: t.TempDir(), RaftAddr: freeAddr(t), GossipAddr: freeAddr(t), BootstrapExpect: 1,
		AdminAddr: "127.0.0.1:0", Listen: []string{"IP:127.0.0.1:0"},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	mutate(&cfg)
	nd, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		nd.Close(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := nd.Cluster().WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return nd
}

// TestAdminTokenGuardsMutationsAndSecrets: with a token, every POST, the
// snapshot download and the keyring answer 401 without it (or with a wrong
// one) and work with it; status stays open.
func TestAdminTokenGuardsMutationsAndSecrets(t *testing.T) {
	const token = "s3cret-admin-token"
	nd := startOne(t, func(c *Config) { c.AdminToken = token })
	base := "http://" + nd.Status().AdminAddr
	call := func(method, path, tok, body string) int {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/join", `{"addrs":[]}`},
		{"POST", "/v1/remove", `{"id":""}`},
		{"POST", "/v1/transfer-leader", `{"id":"nobody"}`},
		{"POST", "/v1/snapshot", ""},
		{"GET", "/v1/snapshot", ""},
		{"GET", "/v1/keyring", ""},
		{"POST", "/v1/keyring", `{"op":"install","key":"bad"}`},
		{"GET", "/debug/pprof/", ""},
		{"GET", "/debug/pprof/cmdline", ""},
		{"POST", "/v1/tickets/rotate", ""},
		{"POST", "/v1/leave", ""},
	} {
		for _, tok := range []string{"", "wrong", token[:len(token)-1], token + "x"} {
			if got := call(c.method, c.path, tok, c.body); got != http.StatusUnauthorized {
				t.Errorf("%s %s with token %q: %d, want 401", c.method, c.path, tok, got)
			}
		}
		if c.path == "/v1/leave" {
			continue // would stop the node
		}
		if got := call(c.method, c.path, token, c.body); got == http.StatusUnauthorized {
			t.Errorf("%s %s with the token: 401", c.method, c.path)
		}
	}
	if got := call("GET", "/v1/snapshot", token, ""); got != http.StatusOK {
		t.Errorf("snapshot with the token: %d", got)
	}
	if got := call("GET", "/v1/status", "", ""); got != http.StatusOK {
		t.Errorf("status without a token: %d", got)
	}
	if got := call("POST", "/v1/leave", token, ""); got != http.StatusOK {
		t.Errorf("leave with the token: %d", got)
	}
	select {
	case <-nd.LeaveRequested():
	case <-time.After(5 * time.Second):
		t.Fatal("leave with the token did not ask the node to stop")
	}
}

// TestClientTLSListeners: with client TLS the TCP front-ends speak TLS only
// (a plaintext request gets no answer), and memcache and RESP work over it;
// with a client CA, a client without a certificate is refused.
func TestClientTLSListeners(t *testing.T) {
	caFile, certFile, keyFile := writePKI(t, t.TempDir())
	for _, requireCert := range []bool{false, true} {
		t.Run(fmt.Sprintf("client-certs-%v", requireCert), func(t *testing.T) {
			ca := ""
			if requireCert {
				ca = caFile
			}
			srv, _, err := ClientTLS(certFile, keyFile, ca)
			if err != nil {
				t.Fatal(err)
			}
			nd := startOne(t, func(c *Config) {
				c.ClientTLS = srv
				c.MemcacheListen = []string{"127.0.0.1:0"}
				c.RESPListen = []string{"127.0.0.1:0"}
			})
			ls := nd.Listeners()
			pool, _ := loadCAPool(caFile)
			cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
			if requireCert {
				cert, _ := tls.LoadX509KeyPair(certFile, keyFile)
				cfg.Certificates = []tls.Certificate{cert}
			}
			roundTrip := func(conn net.Conn, req string, lines int) (string, error) {
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.WriteString(conn, req); err != nil {
					return "", err
				}
				br := bufio.NewReader(conn)
				var out string
				for range lines {
					l, err := br.ReadString('\n')
					out += l
					if err != nil {
						return out, err
					}
				}
				return out, nil
			}
			mc, err := tls.Dial("tcp", ls["memcache"][0], cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer mc.Close()
			if got, err := roundTrip(mc, "set k 0 60 5\r\nhello\r\n", 1); err != nil || got != "STORED\r\n" {
				t.Fatalf("memcache set over TLS: %q, %v", got, err)
			}
			rc, err := tls.Dial("tcp", ls["resp"][0], cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if got, err := roundTrip(rc, "GET k\r\n", 2); err != nil || got != "$5\r\nhello\r\n" {
				t.Fatalf("RESP GET over TLS: %q, %v", got, err)
			}
			dc, err := tls.Dial("tcp", strings.TrimPrefix(ls["distcache"][0], "IP:"), cfg)
			if err != nil {
				t.Fatalf("distcache TLS handshake: %v", err)
			}
			dc.Close()

			plain, err := net.Dial("tcp", ls["memcache"][0])
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close()
			if got, err := roundTrip(plain, "get k\r\n", 1); err == nil || strings.Contains(got, "hello") {
				t.Fatalf("plaintext memcache answered: %q", got)
			}
			if requireCert {
				noCert := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
				c, err := tls.Dial("tcp", ls["memcache"][0], noCert)
				if err == nil {
					got, rerr := roundTrip(c, "get k\r\n", 1)
					c.Close()
					if rerr == nil || strings.Contains(got, "hello") {
						t.Fatalf("a client without a certificate was answered: %q", got)
					}
				}
			}
		})
	}
}

// TestLoadTLSFiles: partial or unreadable TLS settings are refused with a
// message naming what is missing.
func TestLoadTLSFiles(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := writePKI(t, dir)
	if _, _, err := ClusterTLS(certFile, keyFile, caFile); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ClusterTLS(certFile, keyFile, ""); err == nil || !strings.Contains(err.Error(), "all three") {
		t.Fatalf("cluster TLS without a CA: %v", err)
	}
	if _, _, err := ClusterTLS(certFile, keyFile, keyFile); err == nil {
		t.Fatal("a key file was accepted as the CA")
	}
	if _, _, err := ClientTLS(certFile, "", ""); err == nil {
		t.Fatal("client TLS without a key was accepted")
	}
}

// TestKeyPairReload: after the files are replaced, Reload serves the new
// certificate on new handshakes; a broken file keeps the old one.
func TestKeyPairReload(t *testing.T) {
	caFile, certFile, keyFile := writePKI(t, t.TempDir())
	conf, kp, err := ClusterTLS(certFile, keyFile, caFile)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := testpki.HandshakeServer(t, conf)
	served := func(caFile string) string {
		t.Helper()
		pool, err := loadCAPool(caFile)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.Dial("tcp", addr.String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{clientCert}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return string(conn.ConnectionState().PeerCertificates[0].Raw)
	}
	before := served(caFile)
	newDir := t.TempDir()
	newCA, newCert, newKey := writePKI(t, newDir)
	for src, dst := range map[string]string{newCert: certFile, newKey: keyFile} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if served(caFile) != before {
		t.Fatal("certificate changed before Reload")
	}
	if err := kp.Reload(); err != nil {
		t.Fatal(err)
	}
	if served(newCA) == before {
		t.Fatal("Reload did not change the served certificate")
	}
	os.WriteFile(keyFile, []byte("garbage"), 0o600)
	if err := kp.Reload(); err == nil {
		t.Fatal("Reload accepted a broken key")
	}
	if served(newCA) == before {
		t.Fatal("a failed Reload went back to the old certificate")
	}
}

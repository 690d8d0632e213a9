package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/distcache-replicated/distcache/cmd/dcctl/internal/dctest"
	"github.com/distcache-replicated/distcache/internal/testpki"
	"github.com/distcache-replicated/distcache/protocol/distcache"
)

// startTLSServer serves a MapCache over TLS on loopback, as a node's distcache
// listener does with -client-tls-cert (and -client-tls-ca when clientCAs is set).
func startTLSServer(t *testing.T, cert tls.Certificate, clientCAs *testpki.CA) (addr string, cache *dctest.MapCache) {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAs != nil {
		cfg.ClientCAs, cfg.ClientAuth = clientCAs.Pool, tls.RequireAndVerifyClientCert
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	cache = dctest.NewMapCache()
	srv := &distcache.Server{Handler: distcache.NewCacheHandler(cache), Logger: slog.New(slog.DiscardHandler)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return fmt.Sprintf("IP:127.0.0.1:%d", ln.Addr().(*net.TCPAddr).Port), cache
}

// TestDataCommandsOverTLS: add/get/have/remove reach a TLS listener with
// --tls-ca, and with a client certificate where one is required; without TLS
// flags, with another CA or without the required certificate they fail (exit 1).
func TestDataCommandsOverTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "test CA")
	caFile := ca.WriteCA(t, dir)
	addr, cache := startTLSServer(t, ca.Issue(t, "node1", "127.0.0.1"), nil)

	if r := runCLI(t, nil, "add", "s1", "secret", "--server", addr, "--tls-ca", caFile); r.code != exitOK || r.stdout != "OK\n" {
		t.Fatalf("add over TLS: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if v, ok := cache.Lookup([]byte("s1")); !ok || string(v) != "secret" {
		t.Fatalf("server holds %q, %v after add", v, ok)
	}
	if r := runCLI(t, nil, "get", "s1", "--server", addr, "--tls-ca", caFile); r.code != exitOK || r.stdout != "secret\n" {
		t.Fatalf("get over TLS: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, nil, "have", "s1", "--server", addr, "--tls-ca", caFile, "--tls-server-name", "node1"); r.code != exitOK {
		t.Fatalf("have over TLS with --tls-server-name: exit %d, %q", r.code, r.stderr)
	}

	// No TLS flags: the server sees garbage and closes; dcctl reports a failure.
	if r := runCLI(t, nil, "get", "s1", "--server", addr, "--timeout", "2s"); r.code != exitFailed {
		t.Fatalf("plain get to a TLS listener: exit %d, %q", r.code, r.stdout)
	}
	// A CA that did not sign the node's certificate.
	otherCA := testpki.NewCA(t, "another CA").WriteCA(t, t.TempDir())
	if r := runCLI(t, nil, "get", "s1", "--server", addr, "--tls-ca", otherCA); r.code != exitFailed || !strings.Contains(r.stderr, "TLS handshake") {
		t.Fatalf("get with the wrong CA: exit %d, stderr %q; want a TLS handshake failure", r.code, r.stderr)
	}
	// A name the certificate does not carry.
	if r := runCLI(t, nil, "get", "s1", "--server", addr, "--tls-ca", caFile, "--tls-server-name", "elsewhere"); r.code != exitFailed {
		t.Fatalf("get with a wrong server name: exit %d", r.code)
	}

	// A listener that requires client certificates.
	mtlsAddr, _ := startTLSServer(t, ca.Issue(t, "node2", "127.0.0.1"), ca)
	certFile, keyFile := testpki.WritePair(t, dir, "client", ca.Issue(t, "client"))
	if r := runCLI(t, nil, "add", "s2", "value2", "--server", mtlsAddr, "--tls-ca", caFile, "--tls-cert", certFile, "--tls-key", keyFile); r.code != exitOK {
		t.Fatalf("add with a client certificate: exit %d, %q", r.code, r.stderr)
	}
	if r := runCLI(t, nil, "get", "s2", "--server", mtlsAddr, "--tls-ca", caFile, "--timeout", "2s"); r.code != exitFailed {
		t.Fatalf("get without the required client certificate: exit %d, %q", r.code, r.stdout)
	}
}

// TestTLSFlagMistakesAreUsageErrors: exit 2 with a message that names the flag.
func TestTLSFlagMistakesAreUsageErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := dir + "/not.pem"
	certFile, _ := testpki.WritePair(t, dir, "c", testpki.NewCA(t, "test CA").Issue(t, "c"))
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-ca", dir + "/missing.pem"}, "--tls-ca"},
		{[]string{"--tls-ca", notPEM}, "no PEM certificate"},
		{[]string{"--tls-cert", certFile}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-cert", notPEM, "--tls-key", notPEM}, "--tls-cert/--tls-key"},
	} {
		args := append([]string{"get", "s1", "--server", "IP:127.0.0.1:1"}, c.args...)
		if r := runCLI(t, nil, args...); r.code != exitUsage || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", c.args, r.code, r.stderr, exitUsage, c.want)
		}
	}
}

package integration

import (
	"strings"
	"testing"

	"github.com/distcache-replicated/distcache/internal/testpki"
)

// TestDcctlOverClientTLS: a dcnode process whose distcache listener speaks TLS
// (-client-tls-cert) is reachable by dcctl's data commands with --tls-ca, and
// not without it.
func TestDcctlOverClientTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "test CA")
	caFile := ca.WriteCA(t, dir)
	certFile, keyFile := testpki.WritePair(t, dir, "node", ca.Issue(t, "node", "127.0.0.1"))
	c := startCluster(t, 1, clusterOptions{ExtraArgs: []string{"-client-tls-cert", certFile, "-client-tls-key", keyFile}})
	nd := c.nodes[0]
	if out, err := nd.dcctl("add", "tls-session", "over TLS", "--tls-ca", caFile); err != nil || out != "OK\n" {
		t.Fatalf("dcctl add over TLS: %q, %v", out, err)
	}
	if out, err := nd.dcctl("get", "tls-session", "--tls-ca", caFile); err != nil || out != "over TLS\n" {
		t.Fatalf("dcctl get over TLS: %q, %v", out, err)
	}
	out, err := nd.dcctl("get", "tls-session", "--timeout", "2s")
	if err == nil || strings.Contains(out, "over TLS") {
		t.Fatalf("plain dcctl get from a TLS listener: %q, %v; want a failure", out, err)
	}
}

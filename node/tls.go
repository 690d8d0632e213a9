package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
)

// KeyPair serves a certificate and its key from PEM files, and re-reads them
// on Reload, so that certificates can be renewed without a restart (dcnode
// reloads on SIGHUP). Connections already open keep their certificate.
type KeyPair struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// LoadKeyPair reads a certificate and its key.
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) {
	k := &KeyPair{certFile: certFile, keyFile: keyFile}
	if err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// Reload re-reads the files; on error the previous certificate stays in use.
func (k *KeyPair) Reload() error {
	cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return fmt.Errorf("certificate %s: %w", k.certFile, err)
	}
	k.cur.Store(&cert)
	return nil
}

// GetCertificate implements tls.Config.GetCertificate.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.cur.Load(), nil
}

// GetClientCertificate implements tls.Config.GetClientCertificate.
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.cur.Load(), nil
}

// ClusterTLS builds the mutual-TLS configuration of the cluster port (Raft and
// write forwarding) from PEM files: this node's certificate and key, and the
// cluster CA that every peer's certificate must chain to. The same
// configuration serves both directions: accepted connections must present a
// client certificate signed by the CA, and dialed peers must present a server
// certificate signed by the CA and valid for the address dialed (cluster
// certificates therefore carry both the serverAuth and clientAuth extended key
// usages, and an IP or DNS SAN for the node's -raft-addr/-raft-advertise host).
// TLS 1.3 only: every node runs this build, so there is no legacy peer to serve.
// The returned KeyPair reloads the certificate; the CA is read once.
func ClusterTLS(certFile, keyFile, caFile string) (*tls.Config, *KeyPair, error) {
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, nil, errors.New("cluster TLS needs a certificate, its key and the CA certificate, all three")
	}
	kp, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster TLS: %w", err)
	}
	pool, err := loadCAPool(caFile)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster TLS CA: %w", err)
	}
	return &tls.Config{
		GetCertificate:       kp.GetCertificate,
		GetClientCertificate: kp.GetClientCertificate,
		RootCAs:              pool,
		ClientCAs:            pool,
		ClientAuth:           tls.RequireAndVerifyClientCert,
		MinVersion:           tls.VersionTLS13,
	}, kp, nil
}

// ClientTLS builds the server-side TLS configuration of the client-facing TCP
// listeners (distcache, memcache, RESP). With caFile set, clients must present
// a certificate signed by that CA; without it any client may connect, as over
// plaintext, but the session values travel encrypted. TLS 1.2 is accepted here
// because web servers' cache clients (Apache's mod_socache_*, stunnel) may not
// all speak 1.3. The returned KeyPair reloads the certificate.
func ClientTLS(certFile, keyFile, caFile string) (*tls.Config, *KeyPair, error) {
	if certFile == "" || keyFile == "" {
		return nil, nil, errors.New("client TLS needs a certificate and its key")
	}
	kp, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("client TLS: %w", err)
	}
	c := &tls.Config{GetCertificate: kp.GetCertificate, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := loadCAPool(caFile)
		if err != nil {
			return nil, nil, fmt.Errorf("client TLS CA: %w", err)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, kp, nil
}

func loadCAPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// withClientTLS wraps a TCP client listener in TLS when the node has a client
// TLS configuration. The handshake runs on the connection's first read, under
// the front-end's read deadlines.
func (n *Node) withClientTLS(ln net.Listener) net.Listener {
	if n.cfg.ClientTLS == nil {
		return ln
	}
	if _, ok := ln.Addr().(*net.TCPAddr); !ok {
		return ln
	}
	return tls.NewListener(ln, n.cfg.ClientTLS)
}

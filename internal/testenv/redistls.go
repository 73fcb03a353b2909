package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// StartRedisServerTLS starts redis-server that accepts only TLS (its plain port is off), with a certificate for
// 127.0.0.1 from a CA made for the test. URL is then a rediss:// URL and Client trusts that CA.
func StartRedisServerTLS(t testing.TB) *RedisServer {
	t.Helper()
	dir := t.TempDir()
	roots := writeTestCertificates(t, dir)
	return startRedisServer(t, &redisTLS{
		dir:    dir,
		client: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12},
	})
}

type redisTLS struct {
	dir    string // ca.pem, cert.pem, key.pem
	client *tls.Config
}

func (r *redisTLS) serverArgs(port string) []string {
	return []string{"--port", "0", "--tls-port", port, "--tls-auth-clients", "no",
		"--tls-cert-file", filepath.Join(r.dir, "cert.pem"), "--tls-key-file", filepath.Join(r.dir, "key.pem"),
		"--tls-ca-cert-file", filepath.Join(r.dir, "ca.pem")}
}

// writeTestCertificates writes a CA and a server certificate for 127.0.0.1 signed by it, and returns a pool with the CA.
func writeTestCertificates(t testing.TB, dir string) *x509.CertPool {
	t.Helper()
	now := time.Now()
	caKey := newKey(t)
	caTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "authgate test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("testenv: CA certificate: %v", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatalf("testenv: CA certificate: %v", err)
	}
	serverKey := newKey(t)
	serverDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, &serverKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("testenv: server certificate: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(serverKey)
	if err != nil {
		t.Fatalf("testenv: server key: %v", err)
	}
	for name, block := range map[string]*pem.Block{
		"ca.pem":   {Type: "CERTIFICATE", Bytes: caDER},
		"cert.pem": {Type: "CERTIFICATE", Bytes: serverDER},
		"key.pem":  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return roots
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testenv: key: %v", err)
	}
	return k
}

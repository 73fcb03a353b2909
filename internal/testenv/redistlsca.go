package testenv

import "path/filepath"

// CAFile is the PEM file of the CA that signed a TLS server's certificate (REDIS_SSL_CA_CERTS), "" for a plain server.
func (s *RedisServer) CAFile() string {
	if s.tls == nil {
		return ""
	}
	return filepath.Join(s.tls.dir, "ca.pem")
}

package mqttconn

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/lpsdev/lps/config"
)

// loadCAFile reads a PEM bundle of CA certificates for Options.CAFile. It fails on a file
// that cannot be read, and on one that holds no certificate or a block that is not one (a
// key, a truncated or mangled block): trusting part of a bundle would make the connection
// fail later with an unknown-authority error that points nowhere near the file.
func loadCAFile(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is in the caller's message
		}
		return nil, fmt.Errorf("reading the CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is a %q, not a CERTIFICATE", n+1, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, errors.New("holds no PEM certificate (want a CA bundle: -----BEGIN CERTIFICATE----- blocks)")
	}
	return pool, nil
}

// withCAFile returns o with the CAs of o.CAFile as the root CAs of its TLS configuration
// (a copy of o.TLSConfig, or a new one). An error names the field.
func (o Options) withCAFile() (Options, error) {
	if o.CAFile == "" {
		return o, nil
	}
	pool, err := loadCAFile(o.CAFile)
	if err != nil {
		return o, config.Invalid("CAFile", o.CAFile, "%v", err)
	}
	if o.TLSConfig != nil {
		o.TLSConfig = o.TLSConfig.Clone()
	} else {
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	o.TLSConfig.RootCAs = pool
	return o, nil
}

// Package devtls is the local stack's development certificate authority. The Key Vault and SPO emulators
// serve HTTPS with leaf certificates it issues; clients trust it the way they would trust any private CA:
// through SSL_CERT_FILE pointing at a bundle of the system roots plus this CA (Go honours SSL_CERT_FILE on
// Linux), or, in-process, through the *http.Client it returns. Product code never turns verification off.
package devtls

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// File names inside the CA folder.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
	BundleFile = "ca-bundle.pem" // system roots + the dev CA, for SSL_CERT_FILE
)

// CA is a development certificate authority.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer
	dir     string
}

// LoadOrCreate loads the CA from dir, or creates one there (ca.pem, ca-key.pem, ca-bundle.pem).
// dir is created if needed. Several processes may call it for the same dir: the first one to write wins
// and the others load what it wrote.
func LoadOrCreate(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	if ca, err := load(certPath, keyPath); err == nil {
		ca.dir = dir
		return ca, ca.writeBundle()
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("load dev CA from %s: %w", dir, err)
	}
	ca, err := New()
	if err != nil {
		return nil, err
	}
	ca.dir = dir
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, err
	}
	// Write to temporary names and link into place, so a concurrent reader never sees half a file.
	if err := writeAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := writeAtomic(certPath, ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	// Another process may have won the race between our load and our write: reload what is on disk.
	disk, err := load(certPath, keyPath)
	if err != nil {
		return nil, err
	}
	disk.dir = dir
	return disk, disk.writeBundle()
}

// New creates an in-memory CA (for tests that need no files).
func New() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "spomig development CA", Organization: []string{"spomig local stack"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(5, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}, nil
}

// Dir is the folder the CA was loaded from ("" for New).
func (ca *CA) Dir() string { return ca.dir }

// BundlePath is the SSL_CERT_FILE bundle written beside the CA ("" for New).
func (ca *CA) BundlePath() string {
	if ca.dir == "" {
		return ""
	}
	return filepath.Join(ca.dir, BundleFile)
}

// Pool is a cert pool holding the system roots (when readable) and this CA.
func (ca *CA) Pool() *x509.CertPool {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	pool.AddCert(ca.Cert)
	return pool
}

// ServerTLS issues a leaf certificate for hosts (IP addresses or DNS names; default 127.0.0.1, ::1 and
// localhost) and returns a server tls.Config using it.
func (ca *CA) ServerTLS(hosts ...string) (*tls.Config, error) {
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1", "::1", "localhost"}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(0, 0, 30),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key}},
	}, nil
}

// WriteServerCert issues a leaf certificate for hosts (see ServerTLS) and writes it and its key as PEM files
// into dir (server.pem, server-key.pem), for servers that take files, such as Azurite's --cert/--key.
func (ca *CA) WriteServerCert(dir string, hosts ...string) (certFile, keyFile string, err error) {
	cfg, err := ca.ServerTLS(hosts...)
	if err != nil {
		return "", "", err
	}
	c := cfg.Certificates[0]
	var certPEM []byte
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(certFile, certPEM, 0o644)
}

// ClientTLS is a client tls.Config that trusts the system roots and this CA.
func (ca *CA) ClientTLS() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca.Pool()}
}

// HTTPClient is an *http.Client that trusts the system roots and this CA.
func (ca *CA) HTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = ca.ClientTLS()
	return &http.Client{Transport: tr, Timeout: 5 * time.Minute}
}

func (ca *CA) writeBundle() error {
	var bundle []byte
	for _, p := range systemBundles {
		if b, err := os.ReadFile(p); err == nil {
			bundle = append(bundle, b...)
			if len(bundle) > 0 && bundle[len(bundle)-1] != '\n' {
				bundle = append(bundle, '\n')
			}
			break
		}
	}
	bundle = append(bundle, ca.CertPEM...)
	return writeAtomic(filepath.Join(ca.dir, BundleFile), bundle, 0o644)
}

// Where Debian and friends keep the system roots (the first that exists is used).
var systemBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/cert.pem",
}

func load(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("dev CA files are not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, err
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("dev CA key is not a signer")
	}
	return &CA{Cert: cert, CertPEM: certPEM, key: signer}, nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if filepath.Base(path) == BundleFile {
		return os.Rename(f.Name(), path)
	}
	// CA files: first writer wins.
	err = os.Link(f.Name(), path)
	os.Remove(f.Name())
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	return err
}

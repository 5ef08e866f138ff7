// Package azauth turns configuration into an azcore.TokenCredential, in one place, with azidentity.
//
// Kinds:
//
//	"default" (or "")    DefaultAzureCredential: environment, workload identity, managed identity, then the
//	                     developer tools (az, azd, Azure PowerShell). AZURE_TOKEN_CREDENTIALS=prod|dev
//	                     narrows the chain. Its managed-identity and workload-identity links read the client
//	                     id from AZURE_CLIENT_ID, not from Options.ClientID (which New refuses for this kind).
//	"managedidentity"    ManagedIdentityCredential, system-assigned, or user-assigned when ClientID is set.
//	"certificate"        ClientCertificateCredential for TenantID/ClientID with the certificate at
//	                     CertificatePath: PEM (certificate + unencrypted PKCS#8 or PKCS#1 key) or PFX/PKCS#12.
//	                     This is the kind SharePoint Online app-only access requires.
//
// PFX files written by OpenSSL 3 with its defaults (AES-256 / PBKDF2 and a SHA-256 MAC) cannot be read by
// azidentity.ParseCertificates ("pkcs12: unknown digest algorithm"); New says so and how to fix it: export
// with `openssl pkcs12 -export -legacy …` (or -certpbe PBE-SHA1-3DES -keypbe PBE-SHA1-3DES -macalg sha1),
// or use PEM. Encrypted PEM keys are not supported either.
//
// AuthorityHost replaces the Microsoft Entra authority (sovereign clouds, or a local fake authority in
// tests); it must be https.
//
// Errors never contain the certificate password, the key or a token.
package azauth

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// Credential kinds.
const (
	KindDefault         = "default"
	KindManagedIdentity = "managedidentity"
	KindCertificate     = "certificate"
)

// Kinds lists the valid values of Options.Kind ("" means KindDefault).
var Kinds = []string{KindDefault, KindManagedIdentity, KindCertificate}

// Options configures New.
type Options struct {
	// Kind: KindDefault (also ""), KindManagedIdentity or KindCertificate. Case-insensitive.
	Kind string
	// ClientID: the application (client) id for KindCertificate; the user-assigned identity's client id
	// for KindManagedIdentity (empty: system-assigned). Not allowed with KindDefault.
	ClientID string
	// TenantID: required for KindCertificate; optional for KindDefault (the tenant its links use).
	TenantID string
	// CertificatePath: PEM or PFX file for KindCertificate.
	CertificatePath string
	// CertificatePassword of a PFX file. Empty for PEM.
	CertificatePassword string
	// AuthorityHost, e.g. https://login.microsoftonline.us/. Empty: ClientOptions.Cloud's (public cloud).
	AuthorityHost string
	// DisableInstanceDiscovery skips Entra instance discovery (KindDefault, KindCertificate): needed for
	// an authority Entra does not know, such as a test fake or Azure Stack.
	DisableInstanceDiscovery bool
	// ClientOptions for the identity clients (Transport, Retry, Cloud, Logging).
	ClientOptions azcore.ClientOptions
}

// New returns the credential opts describe. It validates and loads what it can (a certificate file is read
// and parsed now) but does not request a token.
func New(opts Options) (azcore.TokenCredential, error) {
	co := opts.ClientOptions
	if opts.AuthorityHost != "" {
		u, err := url.Parse(opts.AuthorityHost)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("azauth: AuthorityHost %q must be an https URL", opts.AuthorityHost)
		}
		host := opts.AuthorityHost
		if !strings.HasSuffix(host, "/") {
			host += "/"
		}
		co.Cloud.ActiveDirectoryAuthorityHost = host
	}
	switch kind := strings.ToLower(strings.TrimSpace(opts.Kind)); kind {
	case "", KindDefault:
		if opts.ClientID != "" {
			return nil, errors.New("azauth: ClientID cannot be used with kind \"default\": DefaultAzureCredential reads AZURE_CLIENT_ID; " +
				"set that, or use kind \"managedidentity\" or \"certificate\"")
		}
		cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
			ClientOptions: co, TenantID: opts.TenantID, DisableInstanceDiscovery: opts.DisableInstanceDiscovery,
		})
		if err != nil {
			return nil, fmt.Errorf("azauth: default credential: %w", err)
		}
		return cred, nil
	case KindManagedIdentity:
		mo := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: co}
		if opts.ClientID != "" {
			mo.ID = azidentity.ClientID(opts.ClientID)
		}
		cred, err := azidentity.NewManagedIdentityCredential(mo)
		if err != nil {
			return nil, fmt.Errorf("azauth: managed identity credential: %w", err)
		}
		return cred, nil
	case KindCertificate:
		return newCertificate(opts, co)
	default:
		return nil, fmt.Errorf("azauth: unknown credential kind %q: valid kinds are %q, %q and %q",
			opts.Kind, KindDefault, KindManagedIdentity, KindCertificate)
	}
}

func newCertificate(opts Options, co azcore.ClientOptions) (azcore.TokenCredential, error) {
	var missing []string
	if opts.TenantID == "" {
		missing = append(missing, "TenantID")
	}
	if opts.ClientID == "" {
		missing = append(missing, "ClientID")
	}
	if opts.CertificatePath == "" {
		missing = append(missing, "CertificatePath")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("azauth: kind \"certificate\" needs %s", strings.Join(missing, ", "))
	}
	data, err := os.ReadFile(opts.CertificatePath)
	if err != nil {
		return nil, fmt.Errorf("azauth: read certificate: %w", err)
	}
	certs, key, err := parseCertificate(data, opts.CertificatePassword)
	if err != nil {
		return nil, fmt.Errorf("azauth: certificate %s: %w", opts.CertificatePath, err)
	}
	cred, err := azidentity.NewClientCertificateCredential(opts.TenantID, opts.ClientID, certs, key,
		&azidentity.ClientCertificateCredentialOptions{ClientOptions: co, DisableInstanceDiscovery: opts.DisableInstanceDiscovery})
	if err != nil {
		return nil, fmt.Errorf("azauth: certificate credential: %w", err)
	}
	return cred, nil
}

// ErrModernPFX is returned (wrapped) for a PFX azidentity cannot read: OpenSSL 3's default algorithms.
var ErrModernPFX = errors.New("the PFX uses algorithms azidentity cannot read (OpenSSL 3 defaults: AES/PBKDF2, SHA-256 MAC); " +
	"re-export it with `openssl pkcs12 -export -legacy ...` (or -certpbe PBE-SHA1-3DES -keypbe PBE-SHA1-3DES -macalg sha1), or use a PEM file with an unencrypted key")

// ErrEncryptedPEM is returned (wrapped) for a PEM file whose private key is encrypted.
var ErrEncryptedPEM = errors.New("the PEM private key is encrypted, which azidentity does not support; " +
	"decrypt it (openssl pkey -in key.pem -out plain.pem) and protect the file instead, or use a PFX")

func parseCertificate(data []byte, password string) ([]*x509.Certificate, crypto.PrivateKey, error) {
	if bytes.Contains(data, []byte("-----BEGIN")) {
		if bytes.Contains(data, []byte("ENCRYPTED")) {
			return nil, nil, ErrEncryptedPEM
		}
		// ParseCertificates only reads PEM when the password is empty.
		certs, key, err := azidentity.ParseCertificates(data, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("not a usable PEM certificate and key: %w", err)
		}
		if key == nil {
			return nil, nil, errors.New("the PEM file holds no private key (put the certificate and its key in one file)")
		}
		return certs, key, nil
	}
	certs, key, err := azidentity.ParseCertificates(data, []byte(password))
	if err != nil {
		msg := err.Error()
		switch {
		case strings.Contains(msg, "unknown digest algorithm"), strings.Contains(msg, "unknown algorithm"),
			strings.Contains(msg, "unknown encryption"), strings.Contains(msg, "unsupported"):
			return nil, nil, ErrModernPFX
		case strings.Contains(msg, "password"):
			return nil, nil, errors.New("wrong PFX password (or the PFX is not readable)")
		}
		return nil, nil, fmt.Errorf("not a usable PFX or PEM file: %w", err)
	}
	if key == nil {
		return nil, nil, errors.New("the file holds no private key")
	}
	return certs, key, nil
}

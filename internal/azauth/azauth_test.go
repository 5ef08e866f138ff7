package azauth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

const (
	tenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	clientID = "8a7b6c5d-0000-4000-8000-000000000001"
)

// fakeAuthority serves the two Entra endpoints a confidential client uses (reference §3).
type fakeAuthority struct {
	srv   *httptest.Server
	mu    sync.Mutex
	forms []map[string]string
}

func newFakeAuthority(t *testing.T) *fakeAuthority {
	t.Helper()
	fa := &fakeAuthority{}
	fa.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		base := fa.srv.URL
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == "GET" && r.URL.Path == "/"+tenant+"/v2.0/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]string{
				"token_endpoint":         base + "/" + tenant + "/oauth2/v2.0/token",
				"authorization_endpoint": base + "/" + tenant + "/oauth2/v2.0/authorize",
				"issuer":                 base + "/" + tenant + "/v2.0",
			})
		case r.Method == "POST" && r.URL.Path == "/"+tenant+"/oauth2/v2.0/token":
			r.ParseForm()
			form := map[string]string{}
			for k := range r.PostForm {
				form[k] = r.PostForm.Get(k)
			}
			fa.mu.Lock()
			fa.forms = append(fa.forms, form)
			fa.mu.Unlock()
			json.NewEncoder(w).Encode(map[string]any{"token_type": "Bearer", "expires_in": 3599, "access_token": "fake-access-token-for-" + form["client_id"]})
		default:
			http.Error(w, `{"error":"not_found"}`, 404)
		}
	}))
	t.Cleanup(fa.srv.Close)
	return fa
}

// writeCert writes a self-signed RSA certificate and its key as PEM (and returns the paths of the PEM
// files with both, with the certificate only, and with the key only).
func writeCert(t *testing.T, dir string) (both, certOnly, keyOnly string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "spomig test app"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	both, certOnly, keyOnly = filepath.Join(dir, "app.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for p, b := range map[string][]byte{both: append(append([]byte{}, certPEM...), keyPEM...), certOnly: certPEM, keyOnly: keyPEM} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return both, certOnly, keyOnly
}

func certOpts(fa *fakeAuthority, path, password string) Options {
	return Options{
		Kind: "Certificate", TenantID: tenant, ClientID: clientID, CertificatePath: path, CertificatePassword: password,
		AuthorityHost: fa.srv.URL, DisableInstanceDiscovery: true,
		ClientOptions: azcore.ClientOptions{Transport: fa.srv.Client()},
	}
}

func vaultToken(t *testing.T, cred azcore.TokenCredential) (azcore.AccessToken, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
}

func TestCertificateGetsTokenFromAuthority(t *testing.T) {
	fa := newFakeAuthority(t)
	both, _, _ := writeCert(t, t.TempDir())
	cred, err := New(certOpts(fa, both, ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cred.(*azidentity.ClientCertificateCredential); !ok {
		t.Fatalf("credential is %T", cred)
	}
	tok, err := vaultToken(t, cred)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Token != "fake-access-token-for-"+clientID || tok.ExpiresOn.Before(time.Now()) {
		t.Fatalf("token %+v", tok)
	}
	fa.mu.Lock()
	defer fa.mu.Unlock()
	if len(fa.forms) != 1 {
		t.Fatalf("%d token requests", len(fa.forms))
	}
	f := fa.forms[0]
	if f["grant_type"] != "client_credentials" || f["client_assertion_type"] != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" ||
		!strings.Contains(f["scope"], "https://vault.azure.net/.default") || f["client_id"] != clientID {
		t.Fatalf("token request %v", f)
	}
	// The assertion is a JWT signed with the certificate (header names it by its SHA-256 thumbprint).
	parts := strings.Split(f["client_assertion"], ".")
	if len(parts) != 3 {
		t.Fatal("client assertion is not a JWT")
	}
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if !strings.Contains(string(hdr), "x5t#S256") {
		t.Fatalf("assertion header %s", hdr)
	}
}

func TestPFX(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	_, certOnly, keyOnly := writeCert(t, dir)
	export := func(name string, extra ...string) string {
		out := filepath.Join(dir, name)
		args := append([]string{"pkcs12", "-export", "-in", certOnly, "-inkey", keyOnly, "-out", out, "-passout", "pass:Pa55word!"}, extra...)
		if b, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
			t.Skipf("openssl %v: %v %s", args, err, b)
		}
		return out
	}
	fa := newFakeAuthority(t)

	// OpenSSL 3 defaults (AES-256-CBC, PBKDF2, SHA-256 MAC): refused with a clear error.
	modern := export("modern.pfx")
	_, err = New(certOpts(fa, modern, "Pa55word!"))
	if !errors.Is(err, ErrModernPFX) || !strings.Contains(err.Error(), "-legacy") {
		t.Fatalf("modern PFX: %v", err)
	}

	// Legacy algorithms: accepted, and a token comes back.
	legacy := export("legacy.pfx", "-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1")
	cred, err := New(certOpts(fa, legacy, "Pa55word!"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vaultToken(t, cred); err != nil {
		t.Fatal(err)
	}

	_, err = New(certOpts(fa, legacy, "wrong-Pa55"))
	if err == nil || strings.Contains(err.Error(), "wrong-Pa55") || strings.Contains(err.Error(), "Pa55word!") {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestManagedIdentity(t *testing.T) {
	var mu sync.Mutex
	var queries []string
	msi := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		mu.Unlock()
		if r.Header.Get("X-IDENTITY-HEADER") != "secret-header" {
			http.Error(w, "no header", 400)
			return
		}
		fmt.Fprintf(w, `{"access_token":"mi-token","expires_on":"%d","resource":"%s","token_type":"Bearer"}`,
			time.Now().Add(time.Hour).Unix(), r.URL.Query().Get("resource"))
	}))
	defer msi.Close()
	t.Setenv("IDENTITY_ENDPOINT", msi.URL+"/msi/token")
	t.Setenv("IDENTITY_HEADER", "secret-header")

	for _, id := range []string{"", "11111111-0000-0000-0000-000000000001"} {
		cred, err := New(Options{Kind: KindManagedIdentity, ClientID: id})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := cred.(*azidentity.ManagedIdentityCredential); !ok {
			t.Fatalf("credential is %T", cred)
		}
		tok, err := vaultToken(t, cred)
		if err != nil || tok.Token != "mi-token" {
			t.Fatalf("client id %q: %v", id, err)
		}
		mu.Lock()
		q := queries[len(queries)-1]
		mu.Unlock()
		if !strings.Contains(q, "resource=https%3A%2F%2Fvault.azure.net") || (id != "" && !strings.Contains(q, id)) || (id == "" && strings.Contains(q, "client_id")) {
			t.Fatalf("client id %q: query %s", id, q)
		}
	}
}

func TestDefault(t *testing.T) {
	for _, kind := range []string{"", "default", " DEFAULT "} {
		cred, err := New(Options{Kind: kind, TenantID: tenant})
		if err != nil {
			t.Fatalf("kind %q: %v", kind, err)
		}
		if _, ok := cred.(*azidentity.DefaultAzureCredential); !ok {
			t.Fatalf("credential is %T", cred)
		}
	}
	_, err := New(Options{ClientID: clientID})
	if err == nil || !strings.Contains(err.Error(), "AZURE_CLIENT_ID") {
		t.Fatalf("default with ClientID: %v", err)
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	both, certOnly, keyOnly := writeCert(t, dir)
	garbage := filepath.Join(dir, "garbage.pfx")
	os.WriteFile(garbage, []byte("this is not a certificate"), 0o600)
	encrypted := filepath.Join(dir, "encrypted.pem")
	os.WriteFile(encrypted, []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n"), 0o600)
	base := Options{Kind: KindCertificate, TenantID: tenant, ClientID: clientID}
	with := func(f func(*Options)) Options { o := base; f(&o); return o }

	for name, tc := range map[string]struct {
		opts Options
		want string
	}{
		"unknown kind":      {Options{Kind: "clientsecret"}, `unknown credential kind "clientsecret": valid kinds are "default", "managedidentity" and "certificate"`},
		"missing fields":    {Options{Kind: KindCertificate}, "needs TenantID, ClientID, CertificatePath"},
		"no such file":      {with(func(o *Options) { o.CertificatePath = filepath.Join(dir, "nope.pem") }), "read certificate"},
		"garbage":           {with(func(o *Options) { o.CertificatePath = garbage }), "not a usable PFX or PEM file"},
		"encrypted PEM":     {with(func(o *Options) { o.CertificatePath = encrypted }), "encrypted"},
		"certificate only":  {with(func(o *Options) { o.CertificatePath = certOnly }), "private key"},
		"key only":          {with(func(o *Options) { o.CertificatePath = keyOnly }), "certificate"},
		"http authority":    {with(func(o *Options) { o.CertificatePath = both; o.AuthorityHost = "http://login.local/" }), "must be an https URL"},
		"PEM with password": {with(func(o *Options) { o.CertificatePath = encrypted; o.CertificatePassword = "pw-XYZ" }), "encrypted"},
	} {
		_, err := New(tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "pw-XYZ") {
			t.Errorf("%s: password in error", name)
		}
	}
	// A PEM file with a (pointless) password still works: the password is ignored for PEM.
	if _, err := New(with(func(o *Options) { o.CertificatePath = both; o.CertificatePassword = "ignored" })); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseCertificate(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), "")
	f.Add([]byte{0x30, 0x82, 0x01, 0x00}, "pw")
	f.Fuzz(func(t *testing.T, data []byte, password string) {
		certs, key, err := parseCertificate(data, password)
		if err == nil && (len(certs) == 0 || key == nil) {
			t.Fatal("success without certificate or key")
		}
		if err != nil && password != "" && len(password) > 3 && strings.Contains(err.Error(), password) {
			t.Fatal("password in error")
		}
	})
}

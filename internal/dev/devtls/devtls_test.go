package devtls

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
)

func TestServerTrustedThroughClientAndBundle(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ca.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	srv.TLS = cfg
	srv.StartTLS()
	defer srv.Close()

	resp, err := ca.HTTPClient().Get(srv.URL)
	if err != nil {
		t.Fatalf("client trusting the CA: %v", err)
	}
	resp.Body.Close()

	// An ordinary client that does not trust the CA must fail: verification is on.
	if _, err := (&http.Client{}).Get(srv.URL); err == nil {
		t.Fatal("a client without the dev CA accepted the certificate")
	}

	// The bundle holds the CA, so SSL_CERT_FILE=<bundle> makes every Go client trust it.
	b, err := os.ReadFile(ca.BundlePath())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("bundle is not PEM")
	}
	if _, err := ca.Cert.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Fatalf("bundle does not hold the CA: %v", err)
	}
}

func TestLoadOrCreateIsStableAcrossCallers(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	certs := make([][]byte, 8)
	for i := range certs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ca, err := LoadOrCreate(dir)
			if err != nil {
				t.Error(err)
				return
			}
			certs[i] = ca.CertPEM
		}()
	}
	wg.Wait()
	for i := range certs {
		if string(certs[i]) != string(certs[0]) {
			t.Fatal("concurrent LoadOrCreate produced different CAs")
		}
	}
	b, _ := pem.Decode(certs[0])
	if b == nil {
		t.Fatal("CA cert not PEM")
	}
}

// Package identity serves the local stack's managed-identity token endpoint: the App Service flavour of
// the protocol that azidentity's ManagedIdentityCredential speaks when IDENTITY_ENDPOINT and
// IDENTITY_HEADER are set (GET <endpoint>?api-version=2019-08-01&resource=<resource>[&client_id=…] with
// header X-IDENTITY-HEADER). The product uses the real credential unmodified; locally the endpoint hands out
// unsigned JWTs whose aud is the requested resource, which the Key Vault and SPO emulators accept (they do
// not verify signatures: there is no Entra ID here).
package identity

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Options configures the endpoint.
type Options struct {
	// Header is the secret the client must send in X-IDENTITY-HEADER (IDENTITY_HEADER).
	Header string
	// TenantID, ObjectID and ClientID go into the tokens' tid, oid and appid claims.
	TenantID, ObjectID, ClientID string
	// Lifetime of a token. Default 1h.
	Lifetime time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Handler returns the token endpoint (mount it at /msi/token).
func Handler(opts Options) http.Handler {
	if opts.Lifetime == 0 {
		opts.Lifetime = time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TenantID == "" {
		opts.TenantID = "72f988bf-0000-4000-8000-000000000001"
	}
	if opts.ObjectID == "" {
		opts.ObjectID = "0b1e7c2d-0000-4000-8000-00000000a11c"
	}
	if opts.ClientID == "" {
		opts.ClientID = "5c1e5a5e-0000-4000-8000-00000000c11e"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail := func(status int, code, msg string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": msg})
		}
		if r.Method != http.MethodGet {
			fail(http.StatusMethodNotAllowed, "invalid_request", "use GET")
			return
		}
		if opts.Header != "" && r.Header.Get("X-IDENTITY-HEADER") != opts.Header {
			fail(http.StatusUnauthorized, "invalid_request", "missing or wrong X-IDENTITY-HEADER")
			return
		}
		q := r.URL.Query()
		if q.Get("api-version") == "" {
			fail(http.StatusBadRequest, "invalid_request", "api-version is required")
			return
		}
		resource := q.Get("resource")
		if resource == "" {
			fail(http.StatusBadRequest, "invalid_request", "resource is required")
			return
		}
		now := opts.Now()
		exp := now.Add(opts.Lifetime)
		appid := opts.ClientID
		if c := q.Get("client_id"); c != "" {
			appid = c
		}
		tok := Token(map[string]any{
			"aud": strings.TrimSuffix(resource, "/"), "iss": "https://sts.windows.net/" + opts.TenantID + "/",
			"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": exp.Unix(),
			"oid": opts.ObjectID, "tid": opts.TenantID, "appid": appid, "idtyp": "app",
			"roles": []string{"Sites.FullControl.All"}, "uti": randID(),
		})
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"access_token": tok,
			"expires_on":   strconv.FormatInt(exp.Unix(), 10),
			"resource":     resource,
			"token_type":   "Bearer",
			"client_id":    appid,
		})
	})
}

// Token builds an unsigned JWT ("alg":"none") with the given claims.
func Token(claims map[string]any) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]string{"alg": "none", "typ": "JWT"}) + "." + enc(claims) + "."
}

// Claims decodes the claims of a JWT without verifying it (the emulators' view of a bearer token).
func Claims(token string) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) < 2 {
		return nil, fmt.Errorf("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("JWT claims are not base64url: %w", err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("JWT claims are not JSON: %w", err)
	}
	return c, nil
}

func randID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

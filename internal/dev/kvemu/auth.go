package kvemu

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Resource is the Key Vault resource the challenge names; a token for it has scope Resource+"/.default".
const Resource = "https://vault.azure.net"

// keyVaultAppID is the application id of Azure Key Vault, also accepted as a token audience.
const keyVaultAppID = "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"

// DefaultTenantID is the tenant the challenge names when Options.TenantID is empty.
const DefaultTenantID = "00000000-0000-0000-0000-000000000000"

// Permissions of a Key Vault access policy for secrets, as the emulator checks them.
const (
	PermGet     = "get"
	PermList    = "list"
	PermSet     = "set"
	PermDelete  = "delete"
	PermRecover = "recover"
	PermPurge   = "purge"
)

// AccessPolicy grants an identity secret permissions, like a Key Vault access policy entry.
type AccessPolicy struct {
	// Identity is the object id (oid claim) or application id (appid or azp claim) of the caller.
	Identity string
	// Permissions are Perm* values; empty grants them all.
	Permissions []string
}

// claims are the token claims the emulator looks at.
type claims struct {
	Aud   any    `json:"aud"` // string or array
	Iss   string `json:"iss"`
	Tid   string `json:"tid"`
	Oid   string `json:"oid"`
	AppID string `json:"appid"`
	Azp   string `json:"azp"`
	Exp   int64  `json:"exp"`
}

func (c *claims) appID() string {
	if c.AppID != "" {
		return c.AppID
	}
	return c.Azp
}

// identity is the caller string of the real service's 403 messages: "appid=…;oid=…;iss=…".
func (c *claims) identity() string {
	var parts []string
	if a := c.appID(); a != "" {
		parts = append(parts, "appid="+a)
	}
	if c.Oid != "" {
		parts = append(parts, "oid="+c.Oid)
	}
	if c.Iss != "" {
		parts = append(parts, "iss="+c.Iss)
	}
	if len(parts) == 0 {
		return "unknown"
	}
	return strings.Join(parts, ";")
}

func (c *claims) audiences() []string {
	switch a := c.Aud.(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, x := range a {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// parseJWT decodes the payload of a JWT without verifying it. ok is false when token is not a JWT.
func parseJWT(token string) (c claims, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c, false
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return c, false
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, false
	}
	return c, true
}

// checkToken validates a bearer token as Options.Strict asks. The error text is safe to return to the
// client: it never contains the token.
func checkToken(token string, tenant string, strict bool, now time.Time) (claims, error) {
	c, isJWT := parseJWT(token)
	if !strict {
		return c, nil
	}
	if !isJWT {
		return c, errors.New("AKV10000: Request is missing a Bearer or PoP token. (the token is not a JWT)")
	}
	auds := c.audiences()
	okAud := slices.ContainsFunc(auds, func(a string) bool {
		a = strings.TrimSuffix(a, "/")
		return a == Resource || a == keyVaultAppID
	})
	if !okAud {
		return c, fmt.Errorf("AKV10022: Invalid audience. Expected %s, found: %s.", Resource, strings.Join(auds, ","))
	}
	if c.Exp != 0 && now.Unix() >= c.Exp {
		return c, errors.New("AKV10032: Token expired.")
	}
	if c.Tid != "" && tenant != "" && !strings.EqualFold(c.Tid, tenant) {
		return c, fmt.Errorf("AKV10032: Invalid issuer. Expected tenant %s, found: %s.", tenant, c.Tid)
	}
	return c, nil
}

// allowed reports whether the access policies grant perm to the caller. No policies: everyone may do everything.
func allowed(policies []AccessPolicy, c claims, perm string) bool {
	if len(policies) == 0 {
		return true
	}
	for _, p := range policies {
		if p.Identity == "" || (p.Identity != c.Oid && p.Identity != c.appID()) {
			continue
		}
		if len(p.Permissions) == 0 || slices.ContainsFunc(p.Permissions, func(x string) bool { return strings.EqualFold(x, perm) || strings.EqualFold(x, "all") }) {
			return true
		}
	}
	return false
}

// Credential is a development azcore.TokenCredential for the emulator. It issues unsigned JWTs (alg
// "none") whose aud is the requested resource and whose tid, oid and appid claims are the fields below,
// so the emulator's access policies and 403 messages have an identity to work with. It is for tests and
// the local stack only: no real service accepts its tokens. The zero value is usable.
type Credential struct {
	TenantID string // tid claim; default DefaultTenantID
	ObjectID string // oid claim; default "00000000-0000-0000-0000-0000000000aa"
	AppID    string // appid claim; default "00000000-0000-0000-0000-0000000000bb"
	// Lifetime of a token; default one hour.
	Lifetime time.Duration

	mu     sync.Mutex
	calls  int
	scopes []string
	tenant string
}

var _ azcore.TokenCredential = (*Credential)(nil)

// GetToken implements azcore.TokenCredential.
func (c *Credential) GetToken(_ context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if len(opts.Scopes) == 0 {
		return azcore.AccessToken{}, errors.New("kvemu credential: no scope requested")
	}
	c.mu.Lock()
	c.calls++
	c.scopes = slices.Clone(opts.Scopes)
	c.tenant = opts.TenantID
	c.mu.Unlock()
	tenant := c.TenantID
	if tenant == "" {
		tenant = DefaultTenantID
	}
	life := c.Lifetime
	if life <= 0 {
		life = time.Hour
	}
	token, exp := Token(strings.TrimSuffix(opts.Scopes[0], "/.default"), tenant,
		cmp.Or(c.ObjectID, "00000000-0000-0000-0000-0000000000aa"), cmp.Or(c.AppID, "00000000-0000-0000-0000-0000000000bb"), life)
	return azcore.AccessToken{Token: token, ExpiresOn: exp}, nil
}

// Calls is how many tokens were issued.
func (c *Credential) Calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// LastRequest returns the scopes and tenant of the last token request.
func (c *Credential) LastRequest() (scopes []string, tenantID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.scopes), c.tenant
}

// Token builds an unsigned JWT (alg "none") for audience with the given claims, valid for life.
func Token(audience, tenantID, objectID, appID string, life time.Duration) (string, time.Time) {
	now := time.Now()
	exp := now.Add(life)
	enc := base64.RawURLEncoding
	hdr, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	body, _ := json.Marshal(map[string]any{
		"aud": audience, "iss": "https://sts.windows.net/" + tenantID + "/", "tid": tenantID,
		"oid": objectID, "appid": appID, "iat": now.Unix(), "nbf": now.Unix(), "exp": exp.Unix(),
	})
	// A non-empty placeholder signature: some parsers reject an empty third segment.
	return enc.EncodeToString(hdr) + "." + enc.EncodeToString(body) + "." + enc.EncodeToString([]byte("kvemu-unsigned")), exp
}

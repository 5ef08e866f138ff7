package kvemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/spomig/spomig/internal/dev/testenv/capture"
)

const apiVersion = "2026-04-01"

var idRE = regexp.MustCompile(`^https://127\.0\.0\.1:\d+/secrets/[0-9a-zA-Z-]+/[0-9a-f]{32}$`)

func client(t *testing.T, srv *Server, cred azcore.TokenCredential, perCall ...policy.Policy) *azsecrets.Client {
	t.Helper()
	c, err := azsecrets.NewClient(srv.URL(), cred, &azsecrets.ClientOptions{
		ClientOptions:                        azcore.ClientOptions{Transport: srv.HTTPClient(), PerCallPolicies: perCall},
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type wireError struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError *struct {
			Code string `json:"code"`
		} `json:"innererror"`
	} `json:"error"`
}

// do sends a raw request; token "" sends no Authorization header.
func do(t *testing.T, srv *Server, method, path, token string, body any) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, srv.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := srv.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func errCode(t *testing.T, b []byte) (code, inner, msg string) {
	t.Helper()
	var we wireError
	if err := json.Unmarshal(b, &we); err != nil {
		t.Fatalf("error body is not JSON: %q", b)
	}
	if we.Error.InnerError != nil {
		inner = we.Error.InnerError.Code
	}
	return we.Error.Code, inner, we.Error.Message
}

func token() string {
	t, _ := Token(Resource, DefaultTenantID, "oid-1", "app-1", time.Hour)
	return t
}

func TestAPIVersionChallengeAndToken(t *testing.T) {
	srv := StartTest(t, Options{TenantID: "11111111-2222-3333-4444-555555555555"})

	resp, b := do(t, srv, "GET", "/secrets/x", token(), nil)
	if code, inner, _ := errCode(t, b); resp.StatusCode != 400 || code != "BadParameter" || inner != "MissingApiVersionParameter" {
		t.Fatalf("no api-version: %d %s", resp.StatusCode, b)
	}

	resp, b = do(t, srv, "GET", "/secrets/x?api-version="+apiVersion, "", nil)
	want := `Bearer authorization="https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555", resource="https://vault.azure.net"`
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != want {
		t.Fatalf("challenge: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if code, _, _ := errCode(t, b); code != "Unauthorized" {
		t.Fatalf("challenge body %s", b)
	}

	req, _ := http.NewRequest("GET", srv.URL()+"/secrets/x?api-version="+apiVersion, nil)
	req.Header.Set("Authorization", "Basic Zm9vOmJhcg==")
	r2, err := srv.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != 401 {
		t.Fatalf("basic auth: %d", r2.StatusCode)
	}

	// Any bearer token is accepted when not strict.
	resp, b = do(t, srv, "GET", "/secrets/x?api-version="+apiVersion, "not-a-jwt", nil)
	if code, _, _ := errCode(t, b); resp.StatusCode != 404 || code != "SecretNotFound" {
		t.Fatalf("lenient token: %d %s", resp.StatusCode, b)
	}
	st := srv.Stats()
	if st.Challenges != 1 || st.Unauthorized != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestStrictToken(t *testing.T) {
	srv := StartTest(t, Options{Strict: true})
	wrongAud, _ := Token("https://storage.azure.com", DefaultTenantID, "o", "a", time.Hour)
	expired, _ := Token(Resource, DefaultTenantID, "o", "a", -time.Minute)
	otherTenant, _ := Token(Resource, "99999999-0000-0000-0000-000000000000", "o", "a", time.Hour)
	good := token()
	for name, tc := range map[string]struct {
		token string
		want  int
	}{
		"not a JWT":    {"opaque", 401},
		"wrong aud":    {wrongAud, 401},
		"expired":      {expired, 401},
		"other tenant": {otherTenant, 401},
		"good":         {good, 404},
		"empty sig":    {good[:strings.LastIndex(good, ".")+1], 404}, // "alg":"none" tokens of internal/dev/identity
	} {
		resp, b := do(t, srv, "GET", "/secrets/x?api-version="+apiVersion, tc.token, nil)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d %s", name, resp.StatusCode, b)
		}
		if resp.StatusCode == 401 && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without challenge", name)
		}
	}
}

// TestSecretsLifecycleWithSDK drives every route through the real azsecrets client.
func TestSecretsLifecycleWithSDK(t *testing.T) {
	ctx := context.Background()
	srv := StartTest(t, Options{})
	cred := &Credential{TenantID: DefaultTenantID}
	c := client(t, srv, cred)

	set1, err := c.SetSecret(ctx, "db-password", azsecrets.SetSecretParameters{
		Value: to.Ptr("s3cr3t-1"), ContentType: to.Ptr("text/plain"), Tags: map[string]*string{"a": to.Ptr("1")},
		SecretAttributes: &azsecrets.SecretAttributes{Expires: to.Ptr(time.Now().Add(time.Hour).Truncate(time.Second))},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !idRE.MatchString(string(*set1.ID)) || set1.ID.Name() != "db-password" || *set1.Value != "s3cr3t-1" {
		t.Fatalf("set bundle id %s", *set1.ID)
	}
	a := set1.Attributes
	if !*a.Enabled || a.Created == nil || a.Updated == nil || a.Expires == nil || *a.RecoveryLevel != "Recoverable+Purgeable" || *a.RecoverableDays != 90 {
		t.Fatalf("attributes %+v", a)
	}
	if set1.KID != nil || set1.Managed != nil {
		t.Fatal("kid/managed must be omitted")
	}
	if scopes, tenant := cred.LastRequest(); len(scopes) != 1 || scopes[0] != "https://vault.azure.net/.default" || tenant != DefaultTenantID {
		t.Fatalf("token request %v %s", scopes, tenant)
	}
	set2, err := c.SetSecret(ctx, "db-password", azsecrets.SetSecretParameters{Value: to.Ptr("s3cr3t-2")}, nil)
	if err != nil {
		t.Fatal(err)
	}

	latest, err := c.GetSecret(ctx, "db-password", "", nil) // GET /secrets/db-password/
	if err != nil || *latest.Value != "s3cr3t-2" {
		t.Fatalf("latest: %v", err)
	}
	v1, err := c.GetSecret(ctx, "db-password", set1.ID.Version(), nil)
	if err != nil || *v1.Value != "s3cr3t-1" || *v1.ContentType != "text/plain" || *v1.Tags["a"] != "1" {
		t.Fatalf("by version: %v", err)
	}
	// Names are case-insensitive.
	if got, err := c.GetSecret(ctx, "DB-PASSWORD", "", nil); err != nil || *got.Value != "s3cr3t-2" {
		t.Fatalf("case-insensitive get: %v", err)
	}
	// Latest without the trailing slash (raw).
	if resp, b := do(t, srv, "GET", "/secrets/db-password?api-version="+apiVersion, token(), nil); resp.StatusCode != 200 || !strings.Contains(string(b), "s3cr3t-2") {
		t.Fatalf("GET without trailing slash: %d", resp.StatusCode)
	}

	var versions []string
	for pg := c.NewListSecretPropertiesVersionsPager("db-password", nil); pg.More(); {
		page, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page.Value {
			versions = append(versions, p.ID.Version())
		}
	}
	if len(versions) != 2 || versions[0] != set1.ID.Version() || versions[1] != set2.ID.Version() {
		t.Fatalf("versions %v", versions)
	}

	// Disable the latest: get is refused; expired-but-enabled is not (exp is informational).
	upd, err := c.UpdateSecretProperties(ctx, "db-password", set2.ID.Version(), azsecrets.UpdateSecretPropertiesParameters{
		SecretAttributes: &azsecrets.SecretAttributes{Enabled: to.Ptr(false)}, Tags: map[string]*string{"b": to.Ptr("2")},
	}, nil)
	if err != nil || upd.Value != nil || *upd.Attributes.Enabled || *upd.Tags["b"] != "2" {
		t.Fatalf("update: %v", err)
	}
	_, err = c.GetSecret(ctx, "db-password", "", nil)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 403 || re.ErrorCode != "Forbidden" || !strings.Contains(err.Error(), "Operation get is not allowed on a disabled secret.") || !strings.Contains(err.Error(), "SecretDisabled") {
		t.Fatalf("disabled get: %v", err)
	}
	if _, err := c.UpdateSecretProperties(ctx, "db-password", set2.ID.Version(), azsecrets.UpdateSecretPropertiesParameters{
		SecretAttributes: &azsecrets.SecretAttributes{Enabled: to.Ptr(true), Expires: to.Ptr(time.Now().Add(-time.Hour))},
	}, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetSecret(ctx, "db-password", "", nil); err != nil || *got.Value != "s3cr3t-2" {
		t.Fatalf("expired secret must still be readable: %v", err)
	}

	// Soft delete.
	del, err := c.DeleteSecret(ctx, "db-password", nil)
	if err != nil {
		t.Fatal(err)
	}
	if del.Value != nil || del.RecoveryID == nil || !strings.HasSuffix(*del.RecoveryID, "/deletedsecrets/db-password") || del.DeletedDate == nil || del.ScheduledPurgeDate == nil {
		t.Fatalf("deleted bundle %+v", del.DeletedSecret)
	}
	if d := del.ScheduledPurgeDate.Sub(*del.DeletedDate); d != 90*24*time.Hour {
		t.Fatalf("scheduled purge after %s", d)
	}
	_, err = c.GetSecret(ctx, "db-password", "", nil)
	if !errors.As(err, &re) || re.StatusCode != 404 || re.ErrorCode != "SecretNotFound" || !strings.Contains(err.Error(), "A secret with (name/id) db-password was not found in this key vault") {
		t.Fatalf("get deleted secret: %v", err)
	}
	_, err = c.SetSecret(ctx, "db-password", azsecrets.SetSecretParameters{Value: to.Ptr("x")}, nil)
	if !errors.As(err, &re) || re.StatusCode != 409 || re.ErrorCode != "Conflict" || !strings.Contains(err.Error(), "currently in a deleted but recoverable state") {
		t.Fatalf("set over soft-deleted: %v", err)
	}
	gd, err := c.GetDeletedSecret(ctx, "db-password", nil)
	if err != nil || gd.Value != nil || gd.ID.Version() != set2.ID.Version() {
		t.Fatalf("get deleted: %v", err)
	}
	n := 0
	for pg := c.NewListDeletedSecretPropertiesPager(nil); pg.More(); {
		page, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page.Value {
			if p.ID.Name() != "db-password" || p.RecoveryID == nil {
				t.Fatalf("deleted item %+v", p)
			}
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d deleted items", n)
	}

	rec, err := c.RecoverDeletedSecret(ctx, "db-password", nil)
	if err != nil || rec.Value != nil || rec.ID.Name() != "db-password" {
		t.Fatalf("recover: %v", err)
	}
	if got, err := c.GetSecret(ctx, "db-password", set1.ID.Version(), nil); err != nil || *got.Value != "s3cr3t-1" {
		t.Fatalf("get after recover: %v", err)
	}

	// Delete and purge: exactly 204, then gone for good.
	if _, err := c.DeleteSecret(ctx, "db-password", nil); err != nil {
		t.Fatal(err)
	}
	resp, b := do(t, srv, "DELETE", "/deletedsecrets/db-password?api-version="+apiVersion, token(), nil)
	if resp.StatusCode != 204 || len(b) != 0 {
		t.Fatalf("purge: %d %q", resp.StatusCode, b)
	}
	_, err = c.GetDeletedSecret(ctx, "db-password", nil)
	if !errors.As(err, &re) || re.StatusCode != 404 {
		t.Fatalf("deleted after purge: %v", err)
	}
	_, err = c.PurgeDeletedSecret(ctx, "db-password", nil)
	if !errors.As(err, &re) || re.StatusCode != 404 {
		t.Fatalf("second purge: %v", err)
	}
	if _, err := c.SetSecret(ctx, "db-password", azsecrets.SetSecretParameters{Value: to.Ptr("again")}, nil); err != nil {
		t.Fatalf("re-create after purge: %v", err)
	}
	if st := srv.Stats(); st.Challenges != 1 {
		t.Fatalf("expected one challenge, got %d", st.Challenges)
	}
}

// addMaxResults makes the SDK ask for small pages, so that it has to follow nextLink.
type addMaxResults int

func (m addMaxResults) Do(req *policy.Request) (*http.Response, error) {
	q := req.Raw().URL.Query()
	if q.Get("$skiptoken") == "" {
		q.Set("maxresults", strconv.Itoa(int(m)))
		req.Raw().URL.RawQuery = q.Encode()
	}
	return req.Next()
}

func TestPaging(t *testing.T) {
	ctx := context.Background()
	srv := StartTest(t, Options{})
	c := client(t, srv, &Credential{})
	names := []string{"a1", "b2", "C3", "d4", "e5", "f6", "g7"}
	for _, n := range names {
		if _, err := c.SetSecret(ctx, n, azsecrets.SetSecretParameters{Value: to.Ptr("v-" + n)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Raw: pages of 3, 3, 1; nextLink is absolute and carries api-version.
	var got []string
	path := "/secrets?api-version=" + apiVersion + "&maxresults=3"
	pages := 0
	for path != "" {
		resp, b := do(t, srv, "GET", path, token(), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("list: %d %s", resp.StatusCode, b)
		}
		var page struct {
			Value []struct {
				ID         string          `json:"id"`
				Value      *string         `json:"value"`
				Attributes json.RawMessage `json:"attributes"`
			} `json:"value"`
			NextLink *string `json:"nextLink"`
		}
		if err := json.Unmarshal(b, &page); err != nil {
			t.Fatal(err)
		}
		pages++
		for _, it := range page.Value {
			if it.Value != nil || strings.Count(strings.TrimPrefix(it.ID, srv.URL()), "/") != 2 || len(it.Attributes) == 0 {
				t.Fatalf("list item %+v", it)
			}
			got = append(got, it.ID[strings.LastIndex(it.ID, "/")+1:])
		}
		path = ""
		if page.NextLink != nil {
			if !strings.HasPrefix(*page.NextLink, srv.URL()+"/secrets?") || !strings.Contains(*page.NextLink, "api-version="+apiVersion) {
				t.Fatalf("nextLink %s", *page.NextLink)
			}
			path = strings.TrimPrefix(*page.NextLink, srv.URL())
		}
	}
	if pages != 3 || strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("%d pages: %v", pages, got)
	}

	// The SDK follows nextLink.
	c2 := client(t, srv, &Credential{}, addMaxResults(2))
	var sdkNames []string
	for pg := c2.NewListSecretPropertiesPager(nil); pg.More(); {
		page, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Value) > 2 {
			t.Fatalf("page of %d", len(page.Value))
		}
		for _, p := range page.Value {
			sdkNames = append(sdkNames, p.ID.Name())
		}
	}
	if strings.Join(sdkNames, ",") != strings.Join(names, ",") {
		t.Fatalf("SDK listing %v", sdkNames)
	}

	// Versions and deleted secrets page the same way.
	for range 2 {
		if _, err := c.SetSecret(ctx, "a1", azsecrets.SetSecretParameters{Value: to.Ptr("again")}, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"e5", "f6", "g7"} {
		if _, err := c.DeleteSecret(ctx, n, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		path  string
		sizes []int
	}{{"/secrets/a1/versions", []int{2, 1}}, {"/deletedsecrets", []int{2, 1}}} {
		path, sizes := tc.path+"?api-version="+apiVersion+"&maxresults=2", []int{}
		for path != "" {
			resp, b := do(t, srv, "GET", path, token(), nil)
			var page struct {
				Value    []json.RawMessage `json:"value"`
				NextLink *string           `json:"nextLink"`
			}
			if resp.StatusCode != 200 || json.Unmarshal(b, &page) != nil {
				t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
			}
			sizes = append(sizes, len(page.Value))
			path = ""
			if page.NextLink != nil {
				path = strings.TrimPrefix(*page.NextLink, srv.URL())
			}
		}
		if fmt.Sprint(sizes) != fmt.Sprint(tc.sizes) {
			t.Fatalf("%s: pages %v, want %v", tc.path, sizes, tc.sizes)
		}
	}

	for _, bad := range []string{"0", "26", "x"} {
		resp, b := do(t, srv, "GET", "/secrets?api-version="+apiVersion+"&maxresults="+bad, token(), nil)
		if code, _, _ := errCode(t, b); resp.StatusCode != 400 || code != "BadParameter" {
			t.Fatalf("maxresults=%s: %d %s", bad, resp.StatusCode, b)
		}
	}
	resp, b := do(t, srv, "GET", "/secrets?api-version="+apiVersion+"&$skiptoken=!!!", token(), nil)
	if resp.StatusCode != 400 {
		t.Fatalf("bad skiptoken: %d %s", resp.StatusCode, b)
	}
}

func TestErrors(t *testing.T) {
	srv := StartTest(t, Options{})
	q := "?api-version=" + apiVersion
	big := strings.Repeat("x", MaxValueBytes+1)
	manyTags := map[string]string{}
	for i := range MaxTags + 1 {
		manyTags[string(rune('a'+i))] = "v"
	}
	cases := []struct {
		name, method, path string
		body               any
		status             int
		code, inner, msg   string
	}{
		{"invalid name", "PUT", "/secrets/bad_name" + q, map[string]string{"value": "v"}, 400, "BadParameter", "", "The request URI contains an invalid name: bad_name"},
		{"name too long", "GET", "/secrets/" + strings.Repeat("a", 128) + q, nil, 400, "BadParameter", "", "invalid name"},
		{"missing value", "PUT", "/secrets/ok" + q, map[string]string{"contentType": "x"}, 400, "BadParameter", "", "value"},
		{"value too large", "PUT", "/secrets/ok" + q, map[string]string{"value": big}, 400, "BadParameter", "", "maximum size"},
		{"too many tags", "PUT", "/secrets/ok" + q, map[string]any{"value": "v", "tags": manyTags}, 400, "BadParameter", "", "tags"},
		{"not JSON", "PUT", "/secrets/ok" + q, "not json", 400, "BadParameter", "", "JSON"},
		{"not found", "GET", "/secrets/nope/" + q, nil, 404, "SecretNotFound", "", "A secret with (name/id) nope was not found in this key vault."},
		{"version not found", "GET", "/secrets/nope/0123456789abcdef0123456789abcdef" + q, nil, 404, "SecretNotFound", "", "nope/0123456789abcdef0123456789abcdef"},
		{"delete not found", "DELETE", "/secrets/nope" + q, nil, 404, "SecretNotFound", "", "nope"},
		{"deleted not found", "GET", "/deletedsecrets/nope" + q, nil, 404, "SecretNotFound", "", "Deleted Secret not found"},
		{"purge not found", "DELETE", "/deletedsecrets/nope" + q, nil, 404, "SecretNotFound", "", "Deleted Secret not found"},
		{"recover not found", "POST", "/deletedsecrets/nope/recover" + q, nil, 404, "SecretNotFound", "", "Deleted Secret not found"},
		{"versions not found", "GET", "/secrets/nope/versions" + q, nil, 404, "SecretNotFound", "", "nope"},
		{"method", "POST", "/secrets/ok" + q, nil, 405, "MethodNotAllowed", "", "POST"},
		{"unknown route", "GET", "/keys/k" + q, nil, 404, "NotFound", "", "/keys/k"},
		{"backup unsupported", "POST", "/secrets/ok/backup" + q, nil, 400, "BadParameter", "", "not supported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := do(t, srv, tc.method, tc.path, token(), tc.body)
			code, inner, msg := errCode(t, b)
			if resp.StatusCode != tc.status || code != tc.code || inner != tc.inner || !strings.Contains(msg, tc.msg) {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("content type %q", ct)
			}
		})
	}
}

func TestPersistenceAcrossRestart(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	data := filepath.Join(root, "kv")
	srv := StartTest(t, Options{DataDir: data})
	c := client(t, srv, &Credential{})
	set, err := c.SetSecret(ctx, "keep-me", azsecrets.SetSecretParameters{Value: to.Ptr("persisted"), Tags: map[string]*string{"t": to.Ptr("1")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetSecret(ctx, "gone", azsecrets.SetSecretParameters{Value: to.Ptr("x")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteSecret(ctx, "gone", nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(data, StateFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", err, fi)
	}
	if _, err := os.Stat(filepath.Join(root, "tls", "ca.pem")); err != nil {
		t.Fatalf("CA not in DataDir/../tls: %v", err)
	}

	srv2 := StartTest(t, Options{DataDir: data})
	c2 := client(t, srv2, &Credential{})
	got, err := c2.GetSecret(ctx, "keep-me", set.ID.Version(), nil)
	if err != nil || *got.Value != "persisted" || *got.Tags["t"] != "1" {
		t.Fatalf("after restart: %v", err)
	}
	if !strings.HasPrefix(string(*got.ID), srv2.URL()+"/secrets/keep-me/") {
		t.Fatalf("id %s does not use the new address", *got.ID)
	}
	if _, err := c2.GetDeletedSecret(ctx, "gone", nil); err != nil {
		t.Fatalf("deleted secret after restart: %v", err)
	}
}

func TestFaultInjection(t *testing.T) {
	srv := StartTest(t, Options{})
	q := "/secrets/nope?api-version=" + apiVersion
	srv.InjectFaults(Fault{Status: 503, Count: 2, RetryAfter: 1500 * time.Millisecond})
	for range 2 {
		resp, b := do(t, srv, "GET", q, token(), nil)
		if code, _, _ := errCode(t, b); resp.StatusCode != 503 || code != "ServiceUnavailable" || resp.Header.Get("Retry-After") != "2" || resp.Header.Get("retry-after-ms") != "1500" {
			t.Fatalf("fault: %d %v %s", resp.StatusCode, resp.Header, b)
		}
	}
	if resp, _ := do(t, srv, "GET", q, token(), nil); resp.StatusCode != 404 {
		t.Fatalf("after faults: %d", resp.StatusCode)
	}

	// The admin endpoint, and the challenge is never consumed by a fault.
	resp, _ := do(t, srv, "POST", "/_emulator/faults", "", map[string]any{"status": 429, "count": 1, "retryAfterMs": 1000})
	if resp.StatusCode != 204 {
		t.Fatalf("admin: %d", resp.StatusCode)
	}
	if resp, _ := do(t, srv, "GET", q, "", nil); resp.StatusCode != 401 {
		t.Fatalf("challenge consumed a fault: %d", resp.StatusCode)
	}
	resp, b := do(t, srv, "GET", q, token(), nil)
	if code, _, msg := errCode(t, b); resp.StatusCode != 429 || code != "Throttled" || !strings.Contains(msg, "too many requests") || resp.Header.Get("Retry-After") != "1" || resp.Header.Get("retry-after-ms") != "" {
		t.Fatalf("429: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	do(t, srv, "POST", "/_emulator/faults", "", map[string]any{"status": 500, "count": 5})
	do(t, srv, "DELETE", "/_emulator/faults", "", nil)
	if resp, _ := do(t, srv, "GET", q, token(), nil); resp.StatusCode != 404 {
		t.Fatalf("faults not cleared: %d", resp.StatusCode)
	}
	resp, b = do(t, srv, "GET", "/_emulator/stats", "", nil)
	var st Stats
	if err := json.Unmarshal(b, &st); err != nil || resp.StatusCode != 200 || st.Faults != 3 || st.Challenges != 1 {
		t.Fatalf("stats %d %s", resp.StatusCode, b)
	}
	if resp, b := do(t, srv, "GET", "/_emulator/health", "", nil); resp.StatusCode != 200 || string(b) != "ok\n" {
		t.Fatalf("health %d %q", resp.StatusCode, b)
	}
}

func TestAccessPolicy(t *testing.T) {
	ctx := context.Background()
	srv := StartTest(t, Options{VaultName: "myvault", AccessPolicies: []AccessPolicy{
		{Identity: "writer-oid"},
		{Identity: "reader-app", Permissions: []string{PermGet}},
	}})
	writer := client(t, srv, &Credential{ObjectID: "writer-oid"})
	reader := client(t, srv, &Credential{ObjectID: "reader-oid", AppID: "reader-app"})
	stranger := client(t, srv, &Credential{ObjectID: "stranger-oid", AppID: "stranger-app"})

	if _, err := writer.SetSecret(ctx, "s", azsecrets.SetSecretParameters{Value: to.Ptr("v")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.GetSecret(ctx, "s", "", nil); err != nil {
		t.Fatalf("reader get: %v", err)
	}
	_, err := reader.DeleteSecret(ctx, "s", nil)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 403 || !strings.Contains(err.Error(), "does not have secrets delete permission on key vault 'myvault;location=local'") {
		t.Fatalf("reader delete: %v", err)
	}
	_, err = stranger.GetSecret(ctx, "s", "", nil)
	want := "The user, group or application 'appid=stranger-app;oid=stranger-oid;iss=https://sts.windows.net/" + DefaultTenantID + "/' does not have secrets get permission"
	if !errors.As(err, &re) || re.StatusCode != 403 || re.ErrorCode != "Forbidden" || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "ForbiddenByPolicy") {
		t.Fatalf("stranger get: %v", err)
	}
	st := srv.Stats()
	if st.Forbidden != 2 || len(st.Identities) != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestAsyncDeleteAndRetention(t *testing.T) {
	ck := &clock{t: time.Now()}
	srv := StartTest(t, Options{Now: ck.Now, DeleteLatency: 5 * time.Second, PurgeLatency: 3 * time.Second})
	q := "?api-version=" + apiVersion
	put := func() (*http.Response, []byte) {
		return do(t, srv, "PUT", "/secrets/s"+q, token(), map[string]string{"value": "v"})
	}
	if resp, b := put(); resp.StatusCode != 200 {
		t.Fatalf("put %d %s", resp.StatusCode, b)
	}
	if resp, _ := do(t, srv, "DELETE", "/secrets/s"+q, token(), nil); resp.StatusCode != 200 {
		t.Fatal("delete")
	}
	// Delete in progress.
	resp, b := do(t, srv, "DELETE", "/deletedsecrets/s"+q, token(), nil)
	if code, inner, msg := errCode(t, b); resp.StatusCode != 409 || code != "Conflict" || inner != "ObjectIsBeingDeleted" || msg != "Secret is currently being deleted." {
		t.Fatalf("purge during delete: %d %s", resp.StatusCode, b)
	}
	if resp, _ := do(t, srv, "GET", "/deletedsecrets/s"+q, token(), nil); resp.StatusCode != 404 {
		t.Fatalf("deleted secret visible too early: %d", resp.StatusCode)
	}
	if resp, b := put(); resp.StatusCode != 409 || !strings.Contains(string(b), "is currently being deleted and cannot be re-created; retry later.") {
		t.Fatalf("re-create during delete: %d %s", resp.StatusCode, b)
	}
	ck.Add(5 * time.Second)
	if resp, _ := do(t, srv, "DELETE", "/deletedsecrets/s"+q, token(), nil); resp.StatusCode != 204 {
		t.Fatalf("purge: %d", resp.StatusCode)
	}
	// Purge in progress.
	if resp, b := put(); resp.StatusCode != 409 || !strings.Contains(string(b), "ObjectIsBeingDeleted") {
		t.Fatalf("re-create during purge: %d %s", resp.StatusCode, b)
	}
	ck.Add(3 * time.Second)
	if resp, b := put(); resp.StatusCode != 200 {
		t.Fatalf("re-create after purge: %d %s", resp.StatusCode, b)
	}

	// Retention: a soft-deleted secret is purged after RecoverableDays.
	do(t, srv, "DELETE", "/secrets/s"+q, token(), nil)
	ck.Add(10 * time.Second)
	if resp, _ := do(t, srv, "GET", "/deletedsecrets/s"+q, token(), nil); resp.StatusCode != 200 {
		t.Fatalf("deleted secret: %d", resp.StatusCode)
	}
	ck.Add(90 * 24 * time.Hour)
	if resp, _ := do(t, srv, "GET", "/deletedsecrets/s"+q, token(), nil); resp.StatusCode != 404 {
		t.Fatalf("deleted secret after retention: %d", resp.StatusCode)
	}
}

func TestLogsCarryNoSecrets(t *testing.T) {
	var buf capture.Buffer
	srv := StartTest(t, Options{Logger: buf.Logger()})
	tok := token()
	do(t, srv, "PUT", "/secrets/s?api-version="+apiVersion, tok, map[string]string{"value": "VALUE-XYZZY"})
	do(t, srv, "GET", "/secrets/s/?api-version="+apiVersion, tok, nil)
	if !strings.Contains(buf.String(), `"path":"/secrets/s"`) {
		t.Fatalf("no request log: %s", buf.String())
	}
	if strings.Contains(buf.String(), "VALUE-XYZZY") || strings.Contains(buf.String(), tok) || strings.Contains(buf.String(), "api-version") {
		t.Fatalf("log leaks: %s", buf.String())
	}
}

func TestHTTPTestHandler(t *testing.T) {
	// The Emulator is a plain http.Handler too (e.g. behind httptest.NewTLSServer).
	emu, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(emu)
	defer ts.Close()
	c, err := azsecrets.NewClient(ts.URL, &Credential{}, &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: ts.Client()}, DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetSecret(context.Background(), "x", azsecrets.SetSecretParameters{Value: to.Ptr("y")}, nil); err != nil {
		t.Fatal(err)
	}
}

func FuzzHandler(f *testing.F) {
	f.Add("PUT", "/secrets/a", `{"value":"v","tags":{"a":"b"},"attributes":{"enabled":false,"exp":1}}`, "")
	f.Add("GET", "/secrets", "", "maxresults=2&$skiptoken=eyJOZXh0TWFya2VyIjoiYSJ9")
	f.Add("PATCH", "/secrets/a/", `{"tags":null}`, "")
	f.Add("POST", "/deletedsecrets/a/recover", "", "")
	f.Add("GET", "/secrets/a/versions", "", "$skiptoken=eyJOZXh0TWFya2VyIjoiLTEifQ")
	emu, err := New(Options{})
	if err != nil {
		f.Fatal(err)
	}
	tok := token()
	f.Fuzz(func(t *testing.T, method, path, body, query string) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " ?#\x00\r\n") || strings.ContainsAny(method, " \r\n\x00") || method == "" {
			return
		}
		req, err := http.NewRequest(method, "https://vault.local"+path+"?api-version=1&"+query, strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		emu.ServeHTTP(rec, req)
		if rec.Code == http.StatusNoContent {
			return
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s: %d non-JSON body %q", method, path, rec.Code, rec.Body.String())
		}
	})
}

func FuzzParseJWT(f *testing.F) {
	f.Add(token())
	f.Add("a.b.c")
	f.Add("e30.eyJhdWQiOlsieCIsMV19.x")
	f.Fuzz(func(t *testing.T, s string) {
		c, _ := parseJWT(s)
		_ = c.identity()
		_ = c.audiences()
		checkToken(s, DefaultTenantID, true, time.Now())
	})
}

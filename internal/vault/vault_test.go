package vault

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azlog "github.com/Azure/azure-sdk-for-go/sdk/azcore/log"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/spomig/spomig/internal/dev/kvemu"
	"github.com/spomig/spomig/internal/dev/testenv/capture"
)

// ---- test plumbing ----

// recorder is an azcore transport over the dev CA's client that records each exchange (method, path, status).
type recorder struct {
	c  *http.Client
	mu sync.Mutex
	ex []string
}

func (r *recorder) Do(req *http.Request) (*http.Response, error) {
	resp, err := r.c.Do(req)
	if err == nil {
		r.mu.Lock()
		r.ex = append(r.ex, fmt.Sprintf("%s %s %d", req.Method, req.URL.Path, resp.StatusCode))
		r.mu.Unlock()
	}
	return resp, err
}

func (r *recorder) log() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ex...)
}

func (r *recorder) count(substr string) int {
	n := 0
	for _, e := range r.log() {
		if strings.Contains(e, substr) {
			n++
		}
	}
	return n
}

// tokenCred wraps the emulator's development credential and remembers every token it hands out.
type tokenCred struct {
	kvemu.Credential
	mu     sync.Mutex
	tokens []string
}

func (c *tokenCred) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, err := c.Credential.GetToken(ctx, o)
	c.mu.Lock()
	c.tokens = append(c.tokens, tok.Token)
	c.mu.Unlock()
	return tok, err
}

type env struct {
	srv  *kvemu.Server
	cust *Custody
	rec  *recorder
	cred *tokenCred
}

type envOpts struct {
	emu   kvemu.Options
	oid   string
	retry policy.RetryOptions
	log   *slog.Logger
	purge time.Duration
}

func newCustody(t *testing.T, srv *kvemu.Server, o envOpts) *env {
	t.Helper()
	rec := &recorder{c: srv.HTTPClient()}
	cred := &tokenCred{Credential: kvemu.Credential{ObjectID: o.oid}}
	if o.retry.RetryDelay == 0 {
		o.retry.RetryDelay = 10 * time.Millisecond
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	cust, err := New(Options{
		VaultURL:                             srv.URL(),
		Credential:                           cred,
		DisableChallengeResourceVerification: true,
		ClientOptions:                        azcore.ClientOptions{Transport: rec},
		Logger:                               o.log,
		Retry:                                o.retry,
		PurgeWait:                            o.purge,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, cust: cust, rec: rec, cred: cred}
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	return newCustody(t, kvemu.StartTest(t, o.emu), o)
}

// raw is a plain azsecrets client on the same emulator, to look at what custody stored.
func raw(t *testing.T, srv *kvemu.Server) *azsecrets.Client {
	t.Helper()
	c, err := azsecrets.NewClient(srv.URL(), &kvemu.Credential{}, &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: srv.HTTPClient()}, DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const (
	site     = "https://contoso.sharepoint.com/sites/Migration/"
	dataSig  = "dAtA+sIg/0123456789abcdefSECRET="
	metaSig  = "mEtA+sIg/0123456789abcdefSECRET="
	queueSig = "qUeUe+sIg/0123456789abcdefSECRET="
	cbSig    = "cAlLbAcK-sIg_0123456789abcdefSECRET"
)

// callbackURL is a Power Automate "When an HTTP request is received" URL, signed with cbSig.
const callbackURL = "https://prod-12.westeurope.logic.azure.com:443/workflows/0123abcd/triggers/manual/paths/invoke" +
	"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=" + cbSig

func sasURL(base, sig string) string {
	return base + "?sv=2020-10-02&se=2030-01-01T00%3A00%3A00Z&sr=c&sp=rw&spr=https&sig=" + url.QueryEscape(sig)
}

func newJobSecret(t *testing.T) JobSecret {
	t.Helper()
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	return JobSecret{
		Key:                  key,
		DataContainerURI:     sasURL("https://spoprovisioned1.blob.core.windows.net/c-data", dataSig),
		MetadataContainerURI: sasURL("https://spoprovisioned1.blob.core.windows.net/c-meta", metaSig),
		QueueURI:             sasURL("https://spoprovisioned1.queue.core.windows.net/q-report", queueSig),
		CallbackURL:          callbackURL,
		ProvisionedAt:        now,
		ExpiresAt:            now.Add(30 * 24 * time.Hour),
	}
}

// ---- tests ----

func TestChallengeThenBearer(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{emu: kvemu.Options{TenantID: "72f988bf-86f1-41af-91ab-2d7cd011db47"}})
	s := newJobSecret(t)
	if _, err := e.cust.PutJob(ctx, "job-1", site, s); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cust.GetJob(ctx, "job-1"); err != nil {
		t.Fatal(err)
	}
	if err := e.cust.PutQueue(ctx, site, s.QueueURI, s.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cust.GetQueue(ctx, site); err != nil {
		t.Fatal(err)
	}
	// One unauthenticated request elicits the challenge; it is resent with the token, and every later
	// request carries the token directly.
	want := []string{"PUT /secrets/spomig-job-job-1 401", "PUT /secrets/spomig-job-job-1 200"}
	if got := e.rec.log(); len(got) != 5 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("exchanges %q", got)
	}
	if n := e.rec.count(" 401"); n != 1 || e.srv.Stats().Challenges != 1 {
		t.Fatalf("%d 401s, %d challenges", n, e.srv.Stats().Challenges)
	}
	scopes, tenant := e.cred.LastRequest()
	if len(scopes) != 1 || scopes[0] != "https://vault.azure.net/.default" || tenant != "72f988bf-86f1-41af-91ab-2d7cd011db47" {
		t.Fatalf("token request %v %q", scopes, tenant)
	}
}

func TestJobAndQueueRoundTrip(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	s := newJobSecret(t)
	id := "0f8fad5b-d9cb-469f-a165-70867728950e"
	ver, err := e.cust.PutJob(ctx, id, site, s)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(ver) {
		t.Fatalf("version %q", ver)
	}
	got, err := e.cust.GetJob(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Key, s.Key) || got.DataContainerURI != s.DataContainerURI || got.MetadataContainerURI != s.MetadataContainerURI ||
		got.QueueURI != s.QueueURI || got.CallbackURL != callbackURL || !got.ProvisionedAt.Equal(s.ProvisionedAt) || !got.ExpiresAt.Equal(s.ExpiresAt) {
		t.Fatalf("got %v want %v", got, s)
	}
	if cb, err := e.cust.GetJobCallbackURL(ctx, id); err != nil || cb != callbackURL {
		t.Fatalf("GetJobCallbackURL: %v (equal %v)", err, cb == callbackURL)
	}

	// What is stored: JSON with the key in base64, the content type, the tags, exp = ExpiresAt.
	stored, err := raw(t, e.srv).GetSecret(ctx, "spomig-job-"+id, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *stored.ContentType != JobContentType || *stored.Tags["jobId"] != id || *stored.Tags["site"] != site ||
		stored.Attributes.Expires == nil || !stored.Attributes.Expires.Equal(s.ExpiresAt) || stored.ID.Version() != ver {
		t.Fatalf("stored %+v %+v", stored.Secret, stored.Attributes)
	}
	var w map[string]any
	if err := json.Unmarshal([]byte(*stored.Value), &w); err != nil || w["key"] != base64.StdEncoding.EncodeToString(s.Key) || w["jobId"] != id ||
		w["callbackUrl"] != callbackURL {
		t.Fatalf("stored value is not the expected JSON: %v", err)
	}

	// A second put is a new version; the latest wins.
	s2 := newJobSecret(t)
	s2.QueueURI = ""
	s2.CallbackURL = ""
	s2.ExpiresAt = time.Time{}
	ver2, err := e.cust.PutJob(ctx, id, site, s2)
	if err != nil || ver2 == ver {
		t.Fatalf("second put %q %v", ver2, err)
	}
	if got, err := e.cust.GetJob(ctx, id); err != nil || !bytes.Equal(got.Key, s2.Key) || got.QueueURI != "" || got.CallbackURL != "" || !got.ExpiresAt.IsZero() {
		t.Fatalf("after second put: %v", err)
	}
	// No callback URL in the secret, or no secret at all: "" and no error.
	for _, jobID := range []string{id, "no-such-job"} {
		if cb, err := e.cust.GetJobCallbackURL(ctx, jobID); err != nil || cb != "" {
			t.Fatalf("GetJobCallbackURL(%s): %v (empty %v)", jobID, err, cb == "")
		}
	}

	// Queue secret: the same site in another spelling finds the same secret.
	if err := e.cust.PutQueue(ctx, site, s.QueueURI, s.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	for _, spelling := range []string{site, "HTTPS://CONTOSO.sharepoint.com/sites/migration", "https://contoso.sharepoint.com/sites/migration//"} {
		uri, err := e.cust.GetQueue(ctx, spelling)
		if err != nil || uri != s.QueueURI {
			t.Fatalf("GetQueue(%q): %v", spelling, err)
		}
	}
	sum := sha256.Sum256([]byte("https://contoso.sharepoint.com/sites/migration"))
	qs, err := raw(t, e.srv).GetSecret(ctx, "spomig-queue-"+hex.EncodeToString(sum[:])[:16], "", nil)
	if err != nil || *qs.ContentType != QueueContentType || !qs.Attributes.Expires.Equal(s.ExpiresAt) || *qs.Tags["site"] != "https://contoso.sharepoint.com/sites/migration" {
		t.Fatalf("queue secret: %v", err)
	}
}

func TestRestartKeepsSecrets(t *testing.T) {
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "kv")
	srv := kvemu.StartTest(t, kvemu.Options{DataDir: data})
	e := newCustody(t, srv, envOpts{})
	s := newJobSecret(t)
	if _, err := e.cust.PutJob(ctx, "job-restart", site, s); err != nil {
		t.Fatal(err)
	}
	if err := e.cust.PutQueue(ctx, site, s.QueueURI, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cust.GetJob(ctx, "job-restart"); err == nil {
		t.Fatal("the stopped emulator still answers")
	}

	srv2 := kvemu.StartTest(t, kvemu.Options{DataDir: data}) // same folder, new port, same CA (DataDir/../tls)
	e2 := newCustody(t, srv2, envOpts{})
	got, err := e2.cust.GetJob(ctx, "job-restart")
	if err != nil || !bytes.Equal(got.Key, s.Key) {
		t.Fatalf("after restart: %v", err)
	}
	if uri, err := e2.cust.GetQueue(ctx, site); err != nil || uri != s.QueueURI {
		t.Fatalf("queue after restart: %v", err)
	}
}

func TestSoftDeleteRecoverPurge(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	s := newJobSecret(t)
	const id = "job-del"
	if _, err := e.cust.PutJob(ctx, id, site, s); err != nil {
		t.Fatal(err)
	}
	if err := e.cust.DeleteJob(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cust.GetJob(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	d, err := e.cust.DeletedJob(ctx, id)
	if err != nil || d.Name != "spomig-job-"+id || d.DeletedAt.IsZero() || d.ScheduledPurgeAt.Sub(d.DeletedAt) != 90*24*time.Hour || !strings.HasSuffix(d.RecoveryID, "/deletedsecrets/spomig-job-"+id) {
		t.Fatalf("deleted: %+v %v", d, err)
	}
	// The name is taken while the secret is recoverable.
	if _, err := e.cust.PutJob(ctx, id, site, s); !errors.Is(err, ErrConflict) {
		t.Fatalf("put over a soft-deleted secret: %v", err)
	}
	if err := e.cust.DeleteJob(ctx, id); err != nil {
		t.Fatalf("second delete must be a no-op: %v", err)
	}
	if err := e.cust.RecoverJob(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got, err := e.cust.GetJob(ctx, id); err != nil || !bytes.Equal(got.Key, s.Key) {
		t.Fatalf("after recover: %v", err)
	}
	if err := e.cust.RecoverJob(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("recover of a live secret: %v", err)
	}

	// Purge: delete, then purge with exactly 204.
	if err := e.cust.PurgeJob(ctx, id); err != nil {
		t.Fatal(err)
	}
	if n := e.rec.count("DELETE /deletedsecrets/spomig-job-" + id + " 204"); n != 1 {
		t.Fatalf("purge exchanges %q", e.rec.log())
	}
	if _, err := e.cust.DeletedJob(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted after purge: %v", err)
	}
	if _, err := e.cust.GetJob(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after purge: %v", err)
	}
	if err := e.cust.PurgeJob(ctx, id); err != nil {
		t.Fatalf("purging nothing must be a no-op: %v", err)
	}
	if err := e.cust.DeleteJob(ctx, "never-existed"); err != nil {
		t.Fatal(err)
	}
	// The name is free again.
	if _, err := e.cust.PutJob(ctx, id, site, s); err != nil {
		t.Fatal(err)
	}
}

func TestPurgeWaitsOutAsyncDelete(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{emu: kvemu.Options{DeleteLatency: 600 * time.Millisecond}})
	if _, err := e.cust.PutJob(ctx, "job-async", site, newJobSecret(t)); err != nil {
		t.Fatal(err)
	}
	if err := e.cust.PurgeJob(ctx, "job-async"); err != nil {
		t.Fatal(err)
	}
	if e.rec.count("DELETE /deletedsecrets/spomig-job-job-async 409") == 0 || e.rec.count("DELETE /deletedsecrets/spomig-job-job-async 204") != 1 {
		t.Fatalf("exchanges %q", e.rec.log())
	}

	// With a wait shorter than the delete, the 409 comes back as ErrConflict.
	e2 := newEnv(t, envOpts{emu: kvemu.Options{DeleteLatency: time.Hour}, purge: 100 * time.Millisecond})
	if _, err := e2.cust.PutJob(ctx, "job-slow", site, newJobSecret(t)); err != nil {
		t.Fatal(err)
	}
	err := e2.cust.PurgeJob(ctx, "job-slow")
	var ve *Error
	if !errors.Is(err, ErrConflict) || !errors.As(err, &ve) || ve.InnerCode != "ObjectIsBeingDeleted" {
		t.Fatalf("purge during a long delete: %v", err)
	}
}

func TestThrottlingIsRetried(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	s := newJobSecret(t)
	if _, err := e.cust.PutJob(ctx, "job-t", site, s); err != nil {
		t.Fatal(err)
	}
	// 429 with Retry-After: 1 (whole seconds, as Key Vault sends it), then a 503, then success.
	e.srv.InjectFaults(kvemu.Fault{Status: 429, Count: 1, RetryAfter: time.Second}, kvemu.Fault{Status: 503, Count: 1, RetryAfter: 20 * time.Millisecond})
	got, err := e.cust.GetJob(ctx, "job-t")
	if err != nil || !bytes.Equal(got.Key, s.Key) {
		t.Fatalf("get through throttling: %v", err)
	}
	log := e.rec.log()
	tail := log[len(log)-3:]
	want := []string{"GET /secrets/spomig-job-job-t/ 429", "GET /secrets/spomig-job-job-t/ 503", "GET /secrets/spomig-job-job-t/ 200"}
	for i := range want {
		if tail[i] != want[i] {
			t.Fatalf("exchanges %q", log)
		}
	}
	if e.srv.Stats().Faults != 2 {
		t.Fatalf("stats %+v", e.srv.Stats())
	}
}

func TestThrottledAfterRetries(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{retry: policy.RetryOptions{MaxRetries: 2}})
	if _, err := e.cust.PutJob(ctx, "job-t", site, newJobSecret(t)); err != nil {
		t.Fatal(err)
	}
	e.srv.InjectFaults(kvemu.Fault{Status: 429, Count: 3, RetryAfter: 30 * time.Millisecond})
	_, err := e.cust.GetJob(ctx, "job-t")
	var te *ThrottledError
	if !errors.As(err, &te) || te.StatusCode != 429 || te.RetryAfter != 30*time.Millisecond || te.Secret != "spomig-job-job-t" {
		t.Fatalf("want ThrottledError, got %v", err)
	}
	if n := e.rec.count("GET /secrets/spomig-job-job-t/ 429"); n != 3 {
		t.Fatalf("%d attempts, want 1 + 2 retries", n)
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.ErrorCode != "Throttled" {
		t.Fatalf("cause: %v", err)
	}

	// A Retry-After beyond MaxRetryDelay is not waited for.
	e2 := newEnv(t, envOpts{retry: policy.RetryOptions{MaxRetryDelay: time.Second}})
	if _, err := e2.cust.PutJob(ctx, "job-u", site, newJobSecret(t)); err != nil {
		t.Fatal(err)
	}
	e2.srv.InjectFaults(kvemu.Fault{Status: 503, Count: 1, RetryAfter: time.Hour})
	_, err = e2.cust.GetJob(ctx, "job-u")
	if !errors.As(err, &te) || te.StatusCode != 503 || te.RetryAfter != time.Hour || e2.rec.count(" 503") != 1 {
		t.Fatalf("long Retry-After: %v %q", err, e2.rec.log())
	}
}

func TestForbiddenNamesTheIdentity(t *testing.T) {
	ctx := context.Background()
	srv := kvemu.StartTest(t, kvemu.Options{VaultName: "spomig-kv", AccessPolicies: []kvemu.AccessPolicy{{Identity: "allowed-oid"}}})
	ok := newCustody(t, srv, envOpts{oid: "allowed-oid"})
	if _, err := ok.cust.PutJob(ctx, "job-f", site, newJobSecret(t)); err != nil {
		t.Fatal(err)
	}
	denied := newCustody(t, srv, envOpts{oid: "11111111-2222-3333-4444-555555555555"})
	_, err := denied.cust.GetJob(ctx, "job-f")
	var fe *ForbiddenError
	if !errors.As(err, &fe) {
		t.Fatalf("want ForbiddenError, got %v", err)
	}
	if !strings.Contains(fe.Identity, "oid=11111111-2222-3333-4444-555555555555") || fe.InnerCode != "ForbiddenByPolicy" || fe.Secret != "spomig-job-job-f" {
		t.Fatalf("forbidden error %+v", fe)
	}
	if !strings.Contains(err.Error(), fe.Identity) || !strings.Contains(err.Error(), "Key Vault Secrets Officer") {
		t.Fatalf("error text %q", err)
	}
	for _, tok := range denied.cred.tokens {
		if strings.Contains(err.Error(), tok) {
			t.Fatal("token in error")
		}
	}
}

func TestIdentityFromMessages(t *testing.T) {
	for _, tc := range []struct{ msg, want string }{
		{"The user, group or application 'appid=04b07795-8ddb-461a-bbee-02f9e1bf7b46;oid=a1b2c3d4-0000-0000-0000-000000000000;numgroups=3;iss=https://sts.windows.net/t/' does not have secrets get permission on key vault 'kv;location=westeurope'.",
			"appid=04b07795-8ddb-461a-bbee-02f9e1bf7b46;oid=a1b2c3d4-0000-0000-0000-000000000000;numgroups=3;iss=https://sts.windows.net/t/"},
		{"Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid=0aa;oid=5bb5bb5b-0000;iss=https://sts.windows.net/t/\r\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'",
			"appid=0aa;oid=5bb5bb5b-0000;iss=https://sts.windows.net/t/"},
		{"Access denied for oid=deadbeef-0000 somewhere", "oid=deadbeef-0000"},
		{"Operation not allowed by purge protection.", ""},
	} {
		if got := identityFrom(tc.msg); got != tc.want {
			t.Errorf("identityFrom(%q) = %q, want %q", tc.msg, got, tc.want)
		}
	}
}

func TestNotFoundAndDisabled(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	_, err := e.cust.GetJob(ctx, "no-such-job")
	var ve *Error
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &ve) || ve.StatusCode != 404 || ve.Code != "SecretNotFound" || ve.Secret != "spomig-job-no-such-job" {
		t.Fatalf("get missing job: %v", err)
	}
	if !strings.HasPrefix(err.Error(), "vault: get job secret spomig-job-no-such-job: 404 SecretNotFound: A secret with (name/id)") {
		t.Fatalf("error text %q", err)
	}
	if _, err := e.cust.GetQueue(ctx, "https://contoso.sharepoint.com/sites/none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get missing queue: %v", err)
	}
	if _, err := e.cust.DeletedJob(ctx, "no-such-job"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted missing job: %v", err)
	}

	if _, err := e.cust.PutJob(ctx, "job-off", site, newJobSecret(t)); err != nil {
		t.Fatal(err)
	}
	rc := raw(t, e.srv)
	if _, err := rc.UpdateSecretProperties(ctx, "spomig-job-job-off", "", azsecrets.UpdateSecretPropertiesParameters{
		SecretAttributes: &azsecrets.SecretAttributes{Enabled: to.Ptr(false)},
	}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cust.GetJob(ctx, "job-off"); !errors.Is(err, ErrDisabled) {
		t.Fatalf("get disabled: %v", err)
	}
}

func TestForeignSecretsAreRefused(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	rc := raw(t, e.srv)
	// A secret under a job's name that belongs to another job id (as a name collision would produce).
	b, _ := json.Marshal(jobWire{Schema: 1, JobID: "other", Key: make([]byte, KeySize), DataContainerURI: "https://a/b", MetadataContainerURI: "https://a/c"})
	if _, err := rc.SetSecret(ctx, JobSecretName("mine"), azsecrets.SetSecretParameters{Value: to.Ptr(string(b)), ContentType: to.Ptr(JobContentType)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cust.GetJob(ctx, "mine"); !errors.Is(err, ErrForeign) {
		t.Fatalf("foreign job: %v", err)
	}
	// A secret with another content type.
	if _, err := rc.SetSecret(ctx, JobSecretName("plain"), azsecrets.SetSecretParameters{Value: to.Ptr("x")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cust.GetJob(ctx, "plain"); !errors.Is(err, ErrForeign) {
		t.Fatalf("foreign content type: %v", err)
	}
	qb, _ := json.Marshal(queueWire{Schema: 1, Site: "https://elsewhere", QueueURI: "https://q"})
	if _, err := rc.SetSecret(ctx, QueueSecretName(site), azsecrets.SetSecretParameters{Value: to.Ptr(string(qb)), ContentType: to.Ptr(QueueContentType)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cust.GetQueue(ctx, site); !errors.Is(err, ErrForeign) {
		t.Fatalf("foreign site: %v", err)
	}
}

func TestValidation(t *testing.T) {
	cred := &kvemu.Credential{}
	for name, o := range map[string]Options{
		"no URL":        {Credential: cred},
		"http URL":      {VaultURL: "http://kv.vault.azure.net", Credential: cred},
		"no credential": {VaultURL: "https://kv.vault.azure.net"},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	c, err := New(Options{VaultURL: "https://kv.vault.azure.net", Credential: cred})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	good := newJobSecret(t)
	short := good
	short.Key = good.Key[:16]
	badURI := good
	badURI.DataContainerURI = "not a url?sig=" + dataSig
	badCallback := good
	badCallback.CallbackURL = "not a url?sig=" + cbSig
	for name, tc := range map[string]struct {
		id string
		s  JobSecret
	}{"empty id": {"", good}, "short key": {"j", short}, "bad URI": {"j", badURI}, "bad callback": {"j", badCallback}} {
		_, err := c.PutJob(ctx, tc.id, site, tc.s)
		if err == nil || strings.Contains(err.Error(), dataSig) || strings.Contains(err.Error(), cbSig) || strings.Contains(err.Error(), "not a url") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := c.PutQueue(ctx, "", "https://q", time.Time{}); err == nil {
		t.Error("empty site accepted")
	}
}

var nameRE = regexp.MustCompile(`^[0-9a-zA-Z-]{1,127}$`)

func TestJobSecretName(t *testing.T) {
	long := strings.Repeat("x", 300)
	max := strings.Repeat("a", 116)
	for _, tc := range []struct{ id, want string }{
		{"0f8fad5b-d9cb-469f-a165-70867728950e", "spomig-job-0f8fad5b-d9cb-469f-a165-70867728950e"},
		{"0F8FAD5B-D9CB-469F-A165-70867728950E", "spomig-job-0F8FAD5B-D9CB-469F-A165-70867728950E"},
		{"job-42", "spomig-job-job-42"},
		{max, "spomig-job-" + max},
		{max + "a", ""},
		{"job_42", ""},
		{"job.42", ""},
		{"job 42", ""},
		{"jöb/42", ""},
		{"", ""},
		{"___", ""},
		{long, ""},
		{"{0f8fad5b-d9cb-469f-a165-70867728950e}", ""},
		{"site/sites/x?job=1&sig=abc", ""},
	} {
		got := JobSecretName(tc.id)
		if !nameRE.MatchString(got) || !strings.HasPrefix(got, JobSecretPrefix) {
			t.Errorf("JobSecretName(%q) = %q: not a valid Key Vault name", tc.id, got)
		}
		if tc.want != "" && got != tc.want {
			t.Errorf("JobSecretName(%q) = %q, want %q", tc.id, got, tc.want)
		}
		if tc.want == "" && !regexp.MustCompile(`-[0-9a-f]{16}$`).MatchString(got) {
			t.Errorf("JobSecretName(%q) = %q: sanitised names end with a hash", tc.id, got)
		}
		if JobSecretName(tc.id) != got {
			t.Errorf("JobSecretName(%q) is not stable", tc.id)
		}
	}
	// Ids that sanitise alike get different names.
	seen := map[string]string{}
	for _, id := range []string{"a_b", "a.b", "a b", "a-b", "a/b", long, long + "y"} {
		n := JobSecretName(id)
		if other, dup := seen[strings.ToLower(n)]; dup {
			t.Errorf("%q and %q share the name %q", id, other, n)
		}
		seen[strings.ToLower(n)] = id
	}
}

func TestSiteHash(t *testing.T) {
	sum := sha256.Sum256([]byte("https://contoso.sharepoint.com/sites/a"))
	want := hex.EncodeToString(sum[:])[:16]
	for _, s := range []string{"https://contoso.sharepoint.com/sites/a", "https://contoso.sharepoint.com/sites/A/", "HTTPS://Contoso.SharePoint.com/sites/a//"} {
		if got := SiteHash(s); got != want {
			t.Errorf("SiteHash(%q) = %s, want %s", s, got, want)
		}
		if QueueSecretName(s) != "spomig-queue-"+want || !nameRE.MatchString(QueueSecretName(s)) {
			t.Errorf("QueueSecretName(%q) = %s", s, QueueSecretName(s))
		}
	}
	if SiteHash("https://contoso.sharepoint.com/sites/b") == want {
		t.Error("different sites share a hash")
	}
}

// secretsOf lists every form a secret of s could take in text.
func secretsOf(s JobSecret) []string {
	out := []string{
		string(s.Key),
		base64.StdEncoding.EncodeToString(s.Key), base64.RawStdEncoding.EncodeToString(s.Key),
		base64.URLEncoding.EncodeToString(s.Key), base64.RawURLEncoding.EncodeToString(s.Key),
		hex.EncodeToString(s.Key), strings.ToUpper(hex.EncodeToString(s.Key)),
		fmt.Sprint(s.Key), fmt.Sprintf("%x", s.Key), fmt.Sprintf("%X", s.Key), fmt.Sprintf("%q", s.Key),
	}
	for _, sig := range []string{dataSig, metaSig, queueSig, cbSig} {
		out = append(out, sig, url.QueryEscape(sig), url.PathEscape(sig), strings.TrimSuffix(sig, "="), "sig="+url.QueryEscape(sig))
	}
	return out
}

func TestJobSecretRedaction(t *testing.T) {
	s := newJobSecret(t)
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "secret", s)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "secret", s, "ptr", &s)
	j, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join([]string{buf.String(), string(j), fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s), fmt.Sprintf("%v %+v", &s, &s)}, "\n")
	for _, sec := range secretsOf(s) {
		if strings.Contains(text, sec) {
			t.Fatalf("redacted forms contain %q:\n%s", sec, text)
		}
	}
	if !strings.Contains(text, "sig=REDACTED") || !strings.Contains(text, "c-data") || !strings.Contains(text, "/workflows/0123abcd/triggers/manual/paths/invoke") {
		t.Fatalf("redacted form lost the useful parts: %s", text)
	}
	if RedactURL("https://a/b?SIG=x&sv=1&sig=y") != "https://a/b?SIG=REDACTED&sv=1&sig=REDACTED" {
		t.Fatal(RedactURL("https://a/b?SIG=x&sv=1&sig=y"))
	}
}

// TestNoSecretsInLogsOrErrors runs a full custody round trip, failures included, and searches everything
// that was logged (custody, the emulator, azcore's own log) and every error text for the key and the SAS
// signatures (and the bearer tokens).
func TestNoSecretsInLogsOrErrors(t *testing.T) {
	var logs capture.Buffer
	logger := logs.Logger()
	azlog.SetListener(func(ev azlog.Event, msg string) { fmt.Fprintf(&logs, "azcore %s: %s\n", ev, msg) })
	t.Cleanup(func() { azlog.SetListener(nil) })

	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "kv")
	srv := kvemu.StartTest(t, kvemu.Options{DataDir: data, Logger: logger.With("component", "kvemu"), DeleteLatency: 300 * time.Millisecond,
		AccessPolicies: []kvemu.AccessPolicy{{Identity: "custody-oid"}, {Identity: "reader-oid", Permissions: []string{kvemu.PermGet}}}})
	e := newCustody(t, srv, envOpts{oid: "custody-oid", log: logger, retry: policy.RetryOptions{MaxRetries: 1}})
	reader := newCustody(t, srv, envOpts{oid: "reader-oid", log: logger})

	s := newJobSecret(t)
	var errs []error
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	_, err := e.cust.PutJob(ctx, "job-log", site, s)
	if err != nil {
		t.Fatal(err)
	}
	keep(e.cust.PutQueue(ctx, site, s.QueueURI, s.ExpiresAt))
	got, err := e.cust.GetJob(ctx, "job-log")
	keep(err)
	logger.Info("caller logs the secret by mistake", "job", got, "again", *got)
	_, err = e.cust.GetQueue(ctx, site)
	keep(err)
	if cb, err := reader.cust.GetJobCallbackURL(ctx, "job-log"); err != nil || cb != callbackURL {
		t.Fatalf("GetJobCallbackURL: %v", err)
	}
	_, err = e.cust.GetJobCallbackURL(ctx, "missing") // 404: "", nil
	keep(err)
	_, err = reader.cust.GetJob(ctx, "job-log")
	keep(err)
	_, err = reader.cust.PutJob(ctx, "job-log", site, s) // 403
	keep(err)
	_, err = e.cust.GetJob(ctx, "missing") // 404
	keep(err)
	srv.InjectFaults(kvemu.Fault{Status: 429, Count: 2, RetryAfter: 10 * time.Millisecond})
	_, err = e.cust.GetJob(ctx, "job-log") // throttled
	keep(err)
	keep(e.cust.DeleteJob(ctx, "job-log"))
	_, err = e.cust.PutJob(ctx, "job-log", site, s) // 409
	keep(err)
	keep(e.cust.RecoverJob(ctx, "job-log")) // 409 while deleting, or ok
	time.Sleep(350 * time.Millisecond)
	keep(e.cust.RecoverJob(ctx, "job-log"))
	keep(e.cust.PurgeJob(ctx, "job-log"))
	if len(errs) < 4 {
		t.Fatalf("expected several failures to inspect, got %v", errs)
	}

	text := logs.String()
	for _, err := range errs {
		text += "\nERROR " + err.Error() + fmt.Sprintf(" %v %+v", err, err)
		var re *azcore.ResponseError
		if errors.As(err, &re) {
			text += "\nCAUSE " + re.Error() // the full azcore text: request URL and response body
		}
	}
	if !strings.Contains(text, "kvemu request") || !strings.Contains(text, "vault: put job secret") || !strings.Contains(text, "azcore Request") {
		t.Fatalf("the capture missed some logs:\n%s", text)
	}
	// The needles are the right ones: the emulator's state file (which holds the values) does contain them.
	state, err := os.ReadFile(filepath.Join(data, kvemu.StateFile))
	if err != nil || !strings.Contains(string(state), url.QueryEscape(queueSig)) {
		t.Fatalf("state file does not hold the queue SAS: %v", err)
	}
	if os.Getenv("VAULT_TEST_DUMP") != "" {
		t.Log(text)
	}
	needles := secretsOf(s)
	e.cred.mu.Lock()
	needles = append(needles, e.cred.tokens...)
	e.cred.mu.Unlock()
	for _, n := range needles {
		if i := strings.Index(text, n); i >= 0 {
			t.Fatalf("secret %q found in logs or errors:\n%s", n, text[max(0, i-300):min(len(text), i+300)])
		}
	}
}

func FuzzJobSecretName(f *testing.F) {
	for _, s := range []string{"", "job-1", "a_b", strings.Repeat("é", 200), "0f8fad5b-d9cb-469f-a165-70867728950e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		n := JobSecretName(id)
		if !nameRE.MatchString(n) {
			t.Fatalf("JobSecretName(%q) = %q", id, n)
		}
	})
}

func FuzzIdentityFrom(f *testing.F) {
	f.Add("The user, group or application 'appid=a;oid=b' does not have")
	f.Add("Caller: appid=x;oid=y\r\n")
	f.Fuzz(func(t *testing.T, msg string) {
		if id := identityFrom(msg); id != "" && !strings.Contains(msg, strings.TrimPrefix(id, "oid=")) {
			t.Fatalf("identity %q not in message", id)
		}
	})
}

// TestFailureShapes maps error responses the emulator does not produce (RBAC 403, purge protection,
// a refused token, a malformed body) from an httptest fake.
func TestFailureShapes(t *testing.T) {
	const leaked = "SECRET-VALUE-0123456789"
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") == "" {
			w.Header().Set("WWW-Authenticate", `Bearer authorization="https://login.microsoftonline.com/t", resource="https://vault.azure.net"`)
			w.WriteHeader(401)
			io.WriteString(w, `{"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}`)
			return
		}
		switch {
		case strings.HasPrefix(r.URL.Path, "/secrets/spomig-job-rbac"):
			w.WriteHeader(403)
			io.WriteString(w, `{"error":{"code":"Forbidden","message":"Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid=0aa0;oid=5bb5bb5b-1111-2222-3333-444444444444;iss=https://sts.windows.net/t/\r\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\nResource: '/subscriptions/x/resourcegroups/rg/providers/microsoft.keyvault/vaults/kv/secrets/spomig-job-rbac'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: kv;location=westeurope\r\n","innererror":{"code":"ForbiddenByRbac"}}}`)
		case r.URL.Path == "/secrets/spomig-job-pp":
			w.WriteHeader(200)
			io.WriteString(w, `{"id":"`+"https://"+r.Host+`/secrets/spomig-job-pp/0123456789abcdef0123456789abcdef","attributes":{"enabled":true}}`)
		case strings.HasPrefix(r.URL.Path, "/deletedsecrets/spomig-job-pp"):
			w.WriteHeader(403)
			io.WriteString(w, `{"error":{"code":"Forbidden","message":"Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.","innererror":{"code":"ForbiddenByPolicy"}}}`)
		case strings.HasPrefix(r.URL.Path, "/secrets/spomig-job-unauth"):
			w.WriteHeader(401)
			io.WriteString(w, `{"error":{"code":"Unauthorized","message":"AKV10022: Invalid audience."}}`)
		case strings.HasPrefix(r.URL.Path, "/secrets/spomig-job-garbage"):
			w.WriteHeader(200)
			io.WriteString(w, `{"value":"`+leaked+`","contentType":`+leaked+`}`)
		default:
			w.WriteHeader(500)
		}
	}))
	defer ts.Close()
	c, err := New(Options{VaultURL: ts.URL, Credential: &kvemu.Credential{}, DisableChallengeResourceVerification: true,
		ClientOptions: azcore.ClientOptions{Transport: ts.Client()}, Logger: slog.New(slog.DiscardHandler), Retry: policy.RetryOptions{MaxRetries: -1}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	_, err = c.GetJob(ctx, "rbac")
	var fe *ForbiddenError
	if !errors.As(err, &fe) || fe.Identity != "appid=0aa0;oid=5bb5bb5b-1111-2222-3333-444444444444;iss=https://sts.windows.net/t/" || fe.InnerCode != "ForbiddenByRbac" {
		t.Fatalf("RBAC 403: %v", err)
	}

	err = c.PurgeJob(ctx, "pp")
	if !errors.As(err, &fe) || fe.Identity != "" || !strings.Contains(err.Error(), "purge protection is enabled") {
		t.Fatalf("purge protection: %v", err)
	}

	_, err = c.GetJob(ctx, "unauth")
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("401 after the challenge: %v", err)
	}

	_, err = c.GetJob(ctx, "garbage")
	if err == nil || strings.Contains(err.Error(), leaked) {
		t.Fatalf("malformed body: %v", err)
	}
}

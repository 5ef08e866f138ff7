package provision_test

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/spomig/spomig/internal/dev/kvemu"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/provision"
	"github.com/spomig/spomig/internal/spo"
	"github.com/spomig/spomig/internal/storageconn"
	"github.com/spomig/spomig/internal/vault"
)

func near(a, b time.Time, d time.Duration) bool { return a.Sub(b) < d && b.Sub(a) < d }

// TestCreate provisions a job against the SPO and Key Vault emulators: containers and key in the vault,
// the site's queue once, the record with references only.
func TestCreate(t *testing.T) {
	f := newFixture(t)
	s := f.service()
	ctx := context.Background()
	j, err := s.Create(ctx, provision.Request{SiteURL: strings.ToUpper(f.siteURL[:8]) + f.siteURL[8:] + "/", Label: " HR ",
		CallbackURL: "https://HOOKS.example.com/done"})
	if err != nil {
		t.Fatal(err)
	}
	if j.State != jobs.StateAwaitingPackage || j.SiteURL != f.siteURL || j.WebID != f.w.Emulator.WebID(f.site) || j.Label != "HR" ||
		j.Source != jobs.SourceAPI || j.CallbackURL != "https://hooks.example.com/done" || !provision.IsGUID(j.ID) {
		t.Errorf("job = %+v", j)
	}
	if j.SecretName != vault.JobSecretName(j.ID) || j.StagingBlob != (jobs.BlobRef{Container: f.staging, Name: j.ID + ".zip"}) {
		t.Errorf("secret %q blob %+v", j.SecretName, j.StagingBlob)
	}
	sec, err := f.custody.GetJob(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(sec.Key) != 32 || sec.DataContainerURI == sec.MetadataContainerURI || !strings.Contains(sec.DataContainerURI, "sig=") ||
		!strings.Contains(sec.QueueURI, "sig=") || sec.CallbackURL != "" {
		t.Errorf("secret = %v (an unsigned callback URL stays in the record only)", sec)
	}
	if !near(sec.ExpiresAt, f.now.Add(72*time.Hour), 10*time.Minute) || !j.ContainersExpireAt.Equal(sec.ExpiresAt) ||
		!near(sec.ProvisionedAt, f.now, time.Minute) {
		t.Errorf("containers expire %v (record %v), provisioned %v; want about now+72h", sec.ExpiresAt, j.ContainersExpireAt, sec.ProvisionedAt)
	}
	q, err := f.custody.GetQueue(ctx, f.siteURL)
	if err != nil || q != sec.QueueURI {
		t.Errorf("site queue %v, secret queue differs", err)
	}
	rec, err := f.store.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if leaks := f.sec.leaked(fmt.Sprintf("%#v", rec)); len(leaks) > 0 || strings.Contains(fmt.Sprint(rec), "sig=") {
		t.Errorf("the record holds a secret: %v", leaks)
	}

	// A second job on the site: new containers and key, the same queue; the web id given is not looked up.
	j2, err := s.Create(ctx, provision.Request{SiteURL: f.siteURL, WebID: strings.ToUpper(f.w.Emulator.WebID(f.site))})
	if err != nil {
		t.Fatal(err)
	}
	sec2, _ := f.custody.GetJob(ctx, j2.ID)
	if j2.ID == j.ID || bytes.Equal(sec2.Key, sec.Key) || sec2.DataContainerURI == sec.DataContainerURI || sec2.QueueURI != sec.QueueURI {
		t.Error("second job: want a new id, key and containers, and the same queue")
	}
	if j2.WebID != f.w.Emulator.WebID(f.site) {
		t.Errorf("web id %q, want lower case", j2.WebID)
	}
	if n := f.sec.count("ProvisionMigrationQueue"); n != 1 {
		t.Errorf("ProvisionMigrationQueue called %d times for one site, want 1", n)
	}
	if n := f.sec.count("ProvisionMigrationContainers"); n != 2 {
		t.Errorf("ProvisionMigrationContainers called %d times, want 2", n)
	}
	if n := f.sec.count("web"); n != 1 {
		t.Errorf("web looked up %d times, want 1", n)
	}
	if f.sec.learnt() < 4 {
		t.Fatal("no secrets learnt: the leak checks would prove nothing")
	}

	// A queue SAS about to expire is replaced.
	s3 := f.service(func(o *provision.Options) { o.RenewBefore = 100 * time.Hour })
	j3, err := s3.Create(ctx, provision.Request{SiteURL: f.siteURL})
	if err != nil {
		t.Fatal(err)
	}
	if n := f.sec.count("ProvisionMigrationQueue"); n != 2 {
		t.Errorf("ProvisionMigrationQueue called %d times, want a new queue SAS (2)", n)
	}
	sec3, _ := f.custody.GetJob(ctx, j3.ID)
	q3, _ := f.custody.GetQueue(ctx, f.siteURL)
	if q3 != sec3.QueueURI {
		t.Error("the renewed queue SAS was not kept for the site")
	}
}

// TestCreateIdempotent: a retried Create with the same JobID returns the job without provisioning again.
func TestCreateIdempotent(t *testing.T) {
	f := newFixture(t)
	s := f.service()
	ctx := context.Background()
	id := provision.DropJobID(f.staging, "hr/package.zip", `"0x8DC"`)
	req := provision.Request{SiteURL: f.siteURL, Source: jobs.SourceDrop, JobID: id,
		StagingBlob: jobs.BlobRef{Container: f.staging, Name: "hr/package.zip"}}
	j1, err := s.Create(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	j2, err := s.Create(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if j1.ID != id || j2.ID != id || !j1.CreatedAt.Equal(j2.CreatedAt) || j2.Source != jobs.SourceDrop || j2.StagingBlob.Name != "hr/package.zip" {
		t.Errorf("retried Create: %+v vs %+v", j1, j2)
	}
	if n := f.sec.count("ProvisionMigrationContainers"); n != 1 {
		t.Errorf("containers provisioned %d times, want 1", n)
	}
	// The same id for another site is refused.
	other := f.w.Emulator.SiteURL(f.site + "-other")
	if _, err := s.Create(ctx, provision.Request{SiteURL: other, JobID: id}); !errors.Is(err, provision.ErrJobIDInUse) {
		t.Errorf("same id, other site: %v", err)
	}
}

// failingJobs fails CreateOrGet a number of times: a crash between the secret and the record.
type failingJobs struct {
	*jobs.Store
	fails atomic.Int32
}

func (f *failingJobs) CreateOrGet(ctx context.Context, j *jobs.Job) (*jobs.Job, bool, error) {
	if f.fails.Add(-1) >= 0 {
		return nil, false, errors.New("simulated crash before the record")
	}
	return f.Store.CreateOrGet(ctx, j)
}

// TestCreateRecoversFromACrash: the secret kept before a crash is reused by the retried Create.
func TestCreateRecoversFromACrash(t *testing.T) {
	f := newFixture(t)
	fj := &failingJobs{Store: f.store}
	fj.fails.Store(1)
	s := f.service(func(o *provision.Options) { o.Jobs = fj })
	ctx := context.Background()
	id := provision.DropJobID(f.staging, "crash.zip", `"1"`)
	req := provision.Request{SiteURL: f.siteURL, Source: jobs.SourceDrop, JobID: id}
	if _, err := s.Create(ctx, req); err == nil {
		t.Fatal("the simulated crash did not fail Create")
	}
	kept, err := f.custody.GetJob(ctx, id)
	if err != nil {
		t.Fatalf("the secret was not kept before the record: %v", err)
	}
	j, err := s.Create(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := f.custody.GetJob(ctx, id)
	if !bytes.Equal(after.Key, kept.Key) || after.DataContainerURI != kept.DataContainerURI || !j.ContainersExpireAt.Equal(kept.ExpiresAt) {
		t.Error("the retried Create did not reuse the kept secret")
	}
	if n := f.sec.count("ProvisionMigrationContainers"); n != 1 {
		t.Errorf("containers provisioned %d times, want 1", n)
	}

	// A kept secret whose containers expire too soon is replaced.
	fj.fails.Store(1)
	id2 := provision.DropJobID(f.staging, "crash2.zip", `"1"`)
	if _, err := s.Create(ctx, provision.Request{SiteURL: f.siteURL, JobID: id2}); err == nil {
		t.Fatal("the simulated crash did not fail Create")
	}
	old, _ := f.custody.GetJob(ctx, id2)
	s2 := f.service(func(o *provision.Options) { o.RenewBefore = 100 * time.Hour })
	if _, err := s2.Create(ctx, provision.Request{SiteURL: f.siteURL, JobID: id2}); err != nil {
		t.Fatal(err)
	}
	fresh, _ := f.custody.GetJob(ctx, id2)
	if bytes.Equal(fresh.Key, old.Key) {
		t.Error("a kept secret expiring within RenewBefore was reused")
	}
}

// TestReprovision: new containers and key for a job not staged yet; refused afterwards.
func TestReprovision(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	later := f.now.Add(2 * time.Hour)
	s := f.service()
	j, err := s.Create(ctx, provision.Request{SiteURL: f.siteURL})
	if err != nil {
		t.Fatal(err)
	}
	old, _ := f.custody.GetJob(ctx, j.ID)
	if _, err := f.store.Update(ctx, j.ID, func(r *jobs.Job) error { return r.Transition(jobs.StateEncrypting, time.Time{}, "") }); err != nil {
		t.Fatal(err)
	}
	s2 := f.service(func(o *provision.Options) { o.Now = func() time.Time { return later } })
	got, err := s2.Reprovision(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	fresh, _ := f.custody.GetJob(ctx, j.ID)
	if bytes.Equal(fresh.Key, old.Key) || fresh.DataContainerURI == old.DataContainerURI || fresh.QueueURI != old.QueueURI {
		t.Error("want a new key and containers, and the same queue")
	}
	if !got.ContainersExpireAt.Equal(fresh.ExpiresAt) || got.State != jobs.StateEncrypting || !near(fresh.ProvisionedAt, later, time.Second) {
		t.Errorf("record %v / secret %v %v", got.ContainersExpireAt, fresh.ExpiresAt, fresh.ProvisionedAt)
	}
	if _, err := f.store.Update(ctx, j.ID, func(r *jobs.Job) error { return r.Transition(jobs.StateStaged, time.Time{}, "") }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reprovision(ctx, j.ID); !errors.Is(err, provision.ErrNotReprovisionable) {
		t.Errorf("staged job: %v", err)
	}
	if _, err := s.Reprovision(ctx, "no-such-job"); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("unknown job: %v", err)
	}
}

// TestSignedCallback: a signed callback URL (Power Automate, Logic Apps) is kept whole in the job's
// secret, and without its query in the record; Reprovision and a retried Create keep it in the secret.
func TestSignedCallback(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const sig, sig2 = "CbSiGnAtUrE0123456789abcdefSECRET", "OtHeRsIgNaTuRe0123456789SECRET"
	path := "/workflows/0123abcd/triggers/manual/paths/invoke"
	query := "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig="
	want := "https://hooks.example.com" + path + query + sig
	noSig := func(where, text string) {
		t.Helper()
		if strings.Contains(text, sig) || strings.Contains(text, sig2) || strings.Contains(strings.ToLower(text), "sig=") {
			t.Errorf("%s holds the callback signature: %s", where, text)
		}
	}
	t.Cleanup(func() { // the logs hold the container SAS redacted (sig=REDACTED), never the callback's
		if text := f.logs.String(); !strings.Contains(text, "signed_callback") || strings.Contains(text, sig) || strings.Contains(text, sig2) {
			t.Error("the logs hold the callback signature, or were not captured")
		}
	})

	fj := &failingJobs{Store: f.store}
	s := f.service(func(o *provision.Options) { o.Jobs = fj })
	j, err := s.Create(ctx, provision.Request{SiteURL: f.siteURL, CallbackURL: "https://HOOKS.example.com:443" + path + query + sig})
	if err != nil {
		t.Fatal(err)
	}
	if j.CallbackURL != "https://hooks.example.com"+path {
		t.Errorf("record callback %q, want the URL without its query", j.CallbackURL)
	}
	sec, err := f.custody.GetJob(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if sec.CallbackURL != want {
		t.Errorf("secret callback: %s", sec) // redacted form
	}
	if cb, err := f.custody.GetJobCallbackURL(ctx, j.ID); err != nil || cb != want {
		t.Errorf("GetJobCallbackURL: %v", err)
	}
	rec, err := f.store.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	noSig("the record", fmt.Sprintf("%#v %+v", rec, j))

	// Reprovision: a new key and containers, the same callback URL.
	fresh, err := s.Reprovision(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	sec2, err := f.custody.GetJob(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(sec2.Key, sec.Key) || sec2.CallbackURL != want || fresh.CallbackURL != j.CallbackURL {
		t.Errorf("after Reprovision: new key %v, callback kept %v", !bytes.Equal(sec2.Key, sec.Key), sec2.CallbackURL == want)
	}

	// A crash before the record, then a retry naming another signed URL: the secret is reused, with the
	// retry's URL.
	fj.fails.Store(1)
	id := provision.DropJobID(f.staging, "signed.zip", `"1"`)
	req := provision.Request{SiteURL: f.siteURL, JobID: id, CallbackURL: "https://hooks.example.com/a?sig=" + sig}
	if _, err := s.Create(ctx, req); err == nil {
		t.Fatal("the simulated crash did not fail Create")
	}
	kept, err := f.custody.GetJob(ctx, id)
	if err != nil || kept.CallbackURL != req.CallbackURL {
		t.Fatalf("kept secret: %v", err)
	}
	req.CallbackURL = "https://hooks.example.com/b?Sig=" + sig2
	j2, err := s.Create(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := f.custody.GetJob(ctx, id)
	if !bytes.Equal(after.Key, kept.Key) || after.CallbackURL != req.CallbackURL || j2.CallbackURL != "https://hooks.example.com/b" {
		t.Errorf("retried Create: key reused %v, callback %s, record %q", bytes.Equal(after.Key, kept.Key), after, j2.CallbackURL)
	}
	noSig("the retried record", fmt.Sprintf("%#v", j2))
}

func storageStatus(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// TestUploadURL: a write-only SAS of the job's blob, with the account key of the connection.
func TestUploadURL(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	s := f.service(func(o *provision.Options) { o.UploadURLTTL = 30 * time.Minute })
	j, err := s.Create(ctx, provision.Request{SiteURL: f.siteURL})
	if err != nil {
		t.Fatal(err)
	}
	u, exp, err := s.UploadURL(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !near(exp, time.Now().Add(30*time.Minute), time.Minute) {
		t.Errorf("expires %v, want in 30 minutes", exp)
	}
	q, _ := url.Parse(u)
	if v := q.Query(); v.Get("sp") != "cw" || v.Get("sr") != "b" || v.Get("spr") != "https,http" {
		t.Errorf("SAS sp=%s sr=%s spr=%s", v.Get("sp"), v.Get("sr"), v.Get("spr"))
	}
	if strings.Contains(f.logs.String(), q.Query().Get("sig")) {
		t.Error("the upload URL's signature is in the logs")
	}
	bb, _ := blockblob.NewClientWithNoCredential(u, nil)
	if _, err := bb.UploadBuffer(ctx, []byte("PK zip"), nil); err != nil {
		t.Fatalf("upload: %v", err)
	}
	bc, _ := blob.NewClientWithNoCredential(u, nil)
	if _, err := bc.DownloadStream(ctx, nil); storageStatus(err) != http.StatusForbidden {
		t.Errorf("read with the upload URL: %v, want 403", err)
	}

	if _, err := f.store.Update(ctx, j.ID, func(r *jobs.Job) error { return r.Transition(jobs.StateEncrypting, time.Time{}, "") }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.UploadURL(ctx, j.ID); !errors.Is(err, provision.ErrNotAwaitingPackage) {
		t.Errorf("encrypting job: %v", err)
	}
	if _, _, err := s.UploadURL(ctx, "no-such-job"); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("unknown job: %v", err)
	}
	// A SAS connection string cannot sign, nor can a missing connection.
	for _, conn := range []*storageconn.Conn{{Name: "x", BlobURL: "https://a.blob.core.windows.net", SAS: "sv=1&sig=x"}, nil} {
		s := f.service(func(o *provision.Options) { o.Storage = conn })
		if _, _, err := s.UploadURL(ctx, j.ID); !errors.Is(err, provision.ErrUploadURLUnavailable) {
			t.Errorf("connection %v: %v", conn, err)
		}
	}
}

// TestUploadURLUserDelegation: with an identity-based connection the URL is a user delegation SAS; the
// delegation key is fetched once and reused. The blob service is a small fake (Azurite has no Entra
// identity), which also checks what the key request asks for.
func TestUploadURLUserDelegation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var keyRequests atomic.Int32
	var keyInfo struct{ Start, Expiry string }
	fake := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("comp") != "userdelegationkey" || r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			http.Error(w, "unexpected", http.StatusBadRequest)
			return
		}
		keyRequests.Add(1)
		body, _ := io.ReadAll(r.Body)
		_ = xml.Unmarshal(body, &keyInfo)
		w.Header().Set("Content-Type", "application/xml")
		fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?><UserDelegationKey><SignedOid>00000000-0000-0000-0000-0000000000aa</SignedOid>`+
			`<SignedTid>00000000-0000-0000-0000-000000000000</SignedTid><SignedStart>%s</SignedStart><SignedExpiry>%s</SignedExpiry>`+
			`<SignedService>b</SignedService><SignedVersion>2025-01-05</SignedVersion><Value>a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U=</Value></UserDelegationKey>`,
			keyInfo.Start, keyInfo.Expiry)
	}))
	defer fake.Close()
	conn := &storageconn.Conn{Name: "AzureWebJobsStorage", BlobURL: fake.URL + "/acct", Credential: &kvemu.Credential{}, CredentialKind: "managedidentity"}
	s := f.service(func(o *provision.Options) {
		o.Storage = conn
		o.BlobClientOptions = &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: fake.Client()}}
	})
	j, err := s.Create(ctx, provision.Request{SiteURL: f.siteURL})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		u, exp, err := s.UploadURL(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := url.Parse(u)
		q := v.Query()
		if q.Get("sp") != "cw" || q.Get("sr") != "b" || q.Get("skoid") == "" || q.Get("sig") == "" || q.Get("spr") != "https" ||
			v.Path != "/acct/"+f.staging+"/"+j.ID+".zip" {
			t.Errorf("URL %d: %s", i, spo.RedactURL(u))
		}
		if ke, _ := time.Parse(time.RFC3339, keyInfo.Expiry); !ke.After(exp) {
			t.Errorf("delegation key expires %v before the SAS %v", ke, exp)
		}
	}
	if n := keyRequests.Load(); n != 1 {
		t.Errorf("%d delegation key requests, want 1 (cached)", n)
	}
}

// TestCreateErrors: validation and upstream failures, none carrying a secret.
func TestCreateErrors(t *testing.T) {
	f := newFixture(t)
	s := f.service()
	ctx := context.Background()
	cases := []struct {
		name string
		req  provision.Request
		is   error
	}{
		{"no site", provision.Request{}, provision.ErrInvalid},
		{"foreign host", provision.Request{SiteURL: "https://evil.example.com/sites/x"}, provision.ErrSiteNotAllowed},
		{"bad web id", provision.Request{SiteURL: f.siteURL, WebID: "x"}, provision.ErrInvalid},
		{"bad job id", provision.Request{SiteURL: f.siteURL, JobID: "a/b"}, provision.ErrInvalid},
		{"bad source", provision.Request{SiteURL: f.siteURL, Source: "mail"}, provision.ErrInvalid},
	}
	for _, c := range cases {
		if _, err := s.Create(ctx, c.req); !errors.Is(err, c.is) {
			t.Errorf("%s: %v, want %v", c.name, err, c.is)
		}
	}
	// Throttled after the containers were handed out: the error names the throttling, not the secrets.
	f.w.Emulator.SetFaults(f.site, spoemu.Faults{Throttle: &spoemu.Throttle{Count: 5, Status: 429, RetryAfter: 9, Methods: []string{"ProvisionMigrationQueue"}}})
	defer f.w.Emulator.SetFaults(f.site, spoemu.Faults{})
	_, err := s.Create(ctx, provision.Request{SiteURL: f.siteURL})
	var te *spo.ThrottledError
	if !errors.As(err, &te) || te.RetryAfterSeconds() != 9 {
		t.Fatalf("throttled queue: %v", err)
	}
	if leaks := f.sec.leaked(err.Error()); len(leaks) > 0 || strings.Contains(err.Error(), "sig=") {
		t.Errorf("error carries a secret: %v", leaks)
	}
	f.w.Emulator.SetFaults(f.site, spoemu.Faults{})
	// Key Vault throttling beyond the retries.
	f.kv.InjectFaults(kvemu.Fault{Status: 429, Count: 10, RetryAfter: 2 * time.Minute})
	defer f.kv.ClearFaults()
	_, err = s.Create(ctx, provision.Request{SiteURL: f.siteURL})
	var vt *vault.ThrottledError
	if !errors.As(err, &vt) {
		t.Fatalf("throttled vault: %v", err)
	}
	if leaks := f.sec.leaked(err.Error()); len(leaks) > 0 {
		t.Errorf("error carries a secret: %v", leaks)
	}
}

func TestPolicyValidate(t *testing.T) {
	p := provision.Policy{AllowedSiteHosts: []string{"Contoso.SharePoint.com", "127.0.0.1:8443"}, CallbackAllowedHosts: []string{"hooks.example.com"}}
	ok := []struct{ in, site string }{
		{"https://contoso.sharepoint.com/sites/hr", "https://contoso.sharepoint.com/sites/hr"},
		{" HTTPS://CONTOSO.sharepoint.com:443/sites/hr/ ", "https://contoso.sharepoint.com/sites/hr"},
		{"https://contoso.sharepoint.com", "https://contoso.sharepoint.com"},
		{"https://contoso.sharepoint.com/sites/a%20b", "https://contoso.sharepoint.com/sites/a%20b"},
		{"https://127.0.0.1:8443/sites/x", "https://127.0.0.1:8443/sites/x"},
	}
	for _, c := range ok {
		r, err := p.Validate(provision.Request{SiteURL: c.in})
		if err != nil || r.SiteURL != c.site || r.Source != jobs.SourceAPI {
			t.Errorf("%q: %q %v, want %q", c.in, r.SiteURL, err, c.site)
		}
	}
	bad := []struct {
		req       provision.Request
		field     string
		forbidden bool
	}{
		{provision.Request{SiteURL: "http://contoso.sharepoint.com/sites/hr"}, "siteUrl", false},
		{provision.Request{SiteURL: "https://contoso.sharepoint.com.evil.com/sites/hr"}, "siteUrl", true},
		{provision.Request{SiteURL: "https://127.0.0.1/sites/x"}, "siteUrl", true},
		{provision.Request{SiteURL: "https://u:p@contoso.sharepoint.com/sites/hr"}, "siteUrl", false},
		{provision.Request{SiteURL: "https://contoso.sharepoint.com/sites/hr?a=1"}, "siteUrl", false},
		{provision.Request{SiteURL: "https://contoso.sharepoint.com/sites/hr#x"}, "siteUrl", false},
		{provision.Request{SiteURL: "https://contoso.sharepoint.com/sites/hr/_layouts/15/x.aspx"}, "siteUrl", false},
		{provision.Request{SiteURL: "https://contoso.sharepoint.com/sites/../x"}, "siteUrl", false},
		{provision.Request{SiteURL: "https://contoso.sharepoint.com/sites/\x01"}, "siteUrl", false},
		{provision.Request{SiteURL: "https://contoso.sharepoint.com/" + strings.Repeat("a", 2100)}, "siteUrl", false},
		{provision.Request{SiteURL: "https:///sites/x"}, "siteUrl", false},
		{provision.Request{SiteURL: "mailto:a@b"}, "siteUrl", false},
		{provision.Request{SiteURL: "https://contoso.sharepoint.com", WebID: "{8f1c2b4e-52e3-4c52-9a5e-2f8c0f3f1a77}"}, "webId", false},
		{provision.Request{SiteURL: "https://contoso.sharepoint.com", Label: strings.Repeat("l", 1025)}, "label", false},
		{provision.Request{SiteURL: "https://contoso.sharepoint.com", Label: "a\nb"}, "label", false},
		{provision.Request{SiteURL: "https://contoso.sharepoint.com", CallbackURL: "https://other.example.com/x"}, "callbackUrl", false},
		{provision.Request{SiteURL: "https://contoso.sharepoint.com", CallbackURL: "http://hooks.example.com/x?SIG=a"}, "callbackUrl", false},
		{provision.Request{SiteURL: "https://contoso.sharepoint.com", CallbackURL: "https://other.example.com/x?SIG=a"}, "callbackUrl", false},
		{provision.Request{SiteURL: "https://contoso.sharepoint.com", CallbackURL: "https://u:p@hooks.example.com/x?SIG=a"}, "callbackUrl", false},
		{provision.Request{SiteURL: "https://contoso.sharepoint.com", CallbackURL: "https://hooks.example.com/x?SIG=a#f"}, "callbackUrl", false},
		{provision.Request{SiteURL: "https://contoso.sharepoint.com", CallbackURL: "/relative"}, "callbackUrl", false},
	}
	for _, c := range bad {
		_, err := p.Validate(c.req)
		var fe *provision.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || fe.Forbidden != c.forbidden {
			t.Errorf("%+v: %v, want a %s error (forbidden %v)", c.req, err, c.field, c.forbidden)
			continue
		}
		if errors.Is(err, provision.ErrSiteNotAllowed) != c.forbidden || errors.Is(err, provision.ErrInvalid) == c.forbidden {
			t.Errorf("%+v: errors.Is mismatch", c.req)
		}
		if strings.Contains(err.Error(), "u:p") || strings.Contains(err.Error(), "SIG=a") {
			t.Errorf("error repeats the value: %v", err)
		}
	}
	// A signed callback URL is accepted as it is (host normalized): Create divides it.
	if r, err := p.Validate(provision.Request{SiteURL: "https://contoso.sharepoint.com", CallbackURL: " https://HOOKS.example.com:443/x?a=1&SIG=a "}); err != nil ||
		r.CallbackURL != "https://hooks.example.com/x?a=1&SIG=a" {
		t.Errorf("signed callback: %q %v", r.CallbackURL, err)
	}
	// No callback host allowed: every callback is refused.
	if _, err := (provision.Policy{AllowedSiteHosts: []string{"c.sharepoint.com"}}).Validate(provision.Request{SiteURL: "https://c.sharepoint.com", CallbackURL: "https://hooks.example.com"}); err == nil {
		t.Error("a callback was accepted with no allowed callback host")
	}
}

func TestIDs(t *testing.T) {
	a, b := provision.NewJobID(), provision.NewJobID()
	if a == b || !provision.IsGUID(a) || a[14] != '4' || !strings.ContainsAny(a[19:20], "89ab") || a != strings.ToLower(a) {
		t.Errorf("NewJobID %q %q", a, b)
	}
	d1 := provision.DropJobID("migration-staging", "x.zip", `"0x1"`)
	if d1 != provision.DropJobID("migration-staging", "x.zip", `"0x1"`) || !provision.IsGUID(d1) || d1[14] != '8' {
		t.Errorf("DropJobID not deterministic or not a v8 GUID: %q", d1)
	}
	for _, other := range []string{
		provision.DropJobID("migration-staging", "x.zip", `"0x2"`),
		provision.DropJobID("migration-staging", "y.zip", `"0x1"`),
		provision.DropJobID("other", "x.zip", `"0x1"`),
		provision.DropJobID("migration-stagingx.zip", "", `"0x1"`),
	} {
		if other == d1 {
			t.Error("DropJobID collides for another blob")
		}
	}
	if !jobs.ValidID(a) || !jobs.ValidID(d1) || len(vault.JobSecretName(a)) != len("spomig-job-")+36 {
		t.Error("ids must be valid job ids and plain secret names")
	}
}

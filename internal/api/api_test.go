package api_test

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/spomig/spomig/internal/api"
	"github.com/spomig/spomig/internal/dev/kvemu"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/spo"
)

func testZip(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.Create("Manifest.xml")
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, `<?xml version="1.0" encoding="utf-8"?><SPObjects xmlns="urn:deployment-manifest-schema"/>`)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func storageStatus(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// TestCreateAndUpload: POST → 201 with Location and an upload URL; the URL uploads a zip with a plain
// azblob client and no credential, and can do nothing else (read, list, delete are refused).
func TestCreateAndUpload(t *testing.T) {
	a := newApp(t)
	before := time.Now()
	r := a.postJSON(fmt.Sprintf(`{"siteUrl": %q, "label": "HR archive", "callbackUrl": "https://%s/done?run=1"}`, a.siteURL+"/", a.callback))
	if r.Status != http.StatusCreated {
		t.Fatalf("POST: %d %s", r.Status, r.Body)
	}
	j := r.job(t)
	suite.learnUpload(j.Upload.URL)
	if loc := r.Header.Get("Location"); loc != a.srv.URL+"/api/migrations/"+j.ID {
		t.Errorf("Location = %q", loc)
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("a 201 carrying a credential must not be cached: Cache-Control %q", r.Header.Get("Cache-Control"))
	}
	if j.State != jobs.StateAwaitingPackage || j.SiteURL != a.siteURL || j.WebID != a.w.Emulator.WebID(a.site) ||
		j.Label != "HR archive" || j.Source != jobs.SourceAPI || j.CallbackURL != "https://"+a.callback+"/done?run=1" {
		t.Errorf("job = %+v", j)
	}
	if j.Links.Self != a.srv.URL+"/api/migrations/"+j.ID || j.Links.Result != j.Links.Self+"/result" || j.Links.Logs != j.Links.Self+"/logs" {
		t.Errorf("links = %+v", j.Links)
	}
	up := j.Upload
	if up.Method != http.MethodPut || up.Headers["x-ms-blob-type"] != "BlockBlob" {
		t.Errorf("upload = %+v", up)
	}
	if up.ExpiresAt.Before(before.Add(59*time.Minute)) || up.ExpiresAt.After(time.Now().Add(61*time.Minute)) {
		t.Errorf("upload expires at %v, want in about an hour", up.ExpiresAt)
	}
	pu, err := url.Parse(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	if q := pu.Query(); q.Get("sp") != "cw" || q.Get("sr") != "b" || q.Get("sig") == "" {
		t.Errorf("upload SAS: sp=%q sr=%q (want a blob SAS with create+write only)", q.Get("sp"), q.Get("sr"))
	}
	if !strings.HasSuffix(pu.Path, "/"+a.staging+"/"+j.ID+".zip") {
		t.Errorf("upload path %q, want the job's blob in %s", pu.Path, a.staging)
	}

	// The record is in the store, with the secret's name only.
	rec, err := a.store.Get(context.Background(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.SecretName != "spomig-job-"+j.ID || rec.ContainersExpireAt.IsZero() {
		t.Errorf("record: secret %q, containers expire %v", rec.SecretName, rec.ContainersExpireAt)
	}

	// Upload with nothing but the URL.
	ctx := context.Background()
	zipBytes := testZip(t)
	bb, err := blockblob.NewClientWithNoCredential(up.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bb.UploadBuffer(ctx, zipBytes, nil); err != nil {
		t.Fatalf("upload with the URL: %v", err)
	}
	got, err := a.blob.DownloadStream(ctx, a.staging, j.ID+".zip", nil)
	if err != nil {
		t.Fatal(err)
	}
	gotBytes, _ := io.ReadAll(got.Body)
	got.Body.Close()
	if !bytes.Equal(gotBytes, zipBytes) {
		t.Fatal("the staged blob differs from what was uploaded")
	}
	// A plain PUT as the 201 tells (method + headers) works too (overwrites the blob).
	req, _ := http.NewRequest(up.Method, up.URL, bytes.NewReader(zipBytes))
	for k, v := range up.Headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("plain PUT to the upload URL: %d", resp.StatusCode)
	}

	// Nothing else is allowed with the URL.
	bc, err := blob.NewClientWithNoCredential(up.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bc.DownloadStream(ctx, nil); storageStatus(err) != http.StatusForbidden {
		t.Errorf("read with the upload URL: %v, want 403", err)
	}
	if _, err := bc.GetProperties(ctx, nil); storageStatus(err) != http.StatusForbidden {
		t.Errorf("get properties with the upload URL: %v, want 403", err)
	}
	if _, err := bc.Delete(ctx, nil); storageStatus(err) != http.StatusForbidden {
		t.Errorf("delete with the upload URL: %v, want 403", err)
	}
	containerURL := strings.TrimSuffix(pu.Scheme+"://"+pu.Host+pu.Path, "/"+j.ID+".zip") + "?" + pu.RawQuery
	cc, err := container.NewClientWithNoCredential(containerURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	pager := cc.NewListBlobsFlatPager(nil)
	if _, err := pager.NextPage(ctx); storageStatus(err) != http.StatusForbidden {
		t.Errorf("list with the upload URL's signature: %v, want 403", err)
	}
	other, _ := blockblob.NewClientWithNoCredential(strings.Replace(up.URL, j.ID+".zip", "other.zip", 1), nil)
	if _, err := other.UploadBuffer(ctx, zipBytes, nil); storageStatus(err) != http.StatusForbidden {
		t.Errorf("upload of another blob with the URL's signature: %v, want 403", err)
	}

	// GET the job: 200, no upload URL any more.
	g := a.do(http.MethodGet, "/api/migrations/"+j.ID, nil, nil)
	if g.Status != http.StatusOK || bytes.Contains(g.Body, []byte("sig=")) || g.job(t).Upload != nil {
		t.Fatalf("GET: %d %s", g.Status, g.Body)
	}
}

// TestSignedCallbackURL: a signed callback URL (Power Automate, Logic Apps) is accepted; the job shows it
// without its query, and its signature is in no response or log (TestMain's scan knows it).
func TestSignedCallbackURL(t *testing.T) {
	a := newApp(t)
	base := "https://" + a.callback + "/workflows/0123abcd/triggers/manual/paths/invoke"
	cb := base + "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=ApIcAlLbAcKsIgNaTuRe0123456789"
	suite.issued.LearnURL("signed callback URL", cb)
	r := a.postJSON(fmt.Sprintf(`{"siteUrl": %q, "callbackUrl": %q}`, a.siteURL, cb))
	if r.Status != http.StatusCreated {
		t.Fatalf("POST: %d %s", r.Status, r.Body)
	}
	j := r.job(t)
	if j.CallbackURL != base {
		t.Errorf("callbackUrl %q, want %q", j.CallbackURL, base)
	}
	if got, err := a.custody.GetJobCallbackURL(context.Background(), j.ID); err != nil || got != cb {
		t.Errorf("the job's secret does not hold the signed URL: %v", err)
	}
	g := a.do(http.MethodGet, "/api/migrations/"+j.ID, nil, nil)
	if g.Status != http.StatusOK || bytes.Contains(bytes.ToLower(g.Body), []byte("sig=")) || g.job(t).CallbackURL != base {
		t.Fatalf("GET: %d %s", g.Status, g.Body)
	}
}

// TestPowerAutomateAsyncResult plays the sequence a Power Automate flow sees: 201, then 202s on the
// result operation (following Location, waiting Retry-After) while the job runs, then 200 once it ends.
func TestPowerAutomateAsyncResult(t *testing.T) {
	for _, end := range []jobs.State{jobs.StateCompleted, jobs.StateCompletedWithErrors, jobs.StateFailed} {
		t.Run(string(end), func(t *testing.T) {
			a := newApp(t)
			j := a.create("flow")
			hdr := map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "spomig.azurewebsites.net"}
			poll := "/api/migrations/" + j.ID + "/result"
			expectAccepted := func(state jobs.State, retryAfter int) {
				t.Helper()
				r := a.do(http.MethodGet, poll, nil, hdr)
				if r.Status != http.StatusAccepted {
					t.Fatalf("%s: %d %s, want 202", state, r.Status, r.Body)
				}
				if got := r.Header.Get("Retry-After"); got != strconv.Itoa(retryAfter) {
					t.Errorf("%s: Retry-After %q, want %d", state, got, retryAfter)
				}
				want := "https://spomig.azurewebsites.net/api/migrations/" + j.ID + "/result"
				if r.Header.Get("Location") != want {
					t.Errorf("%s: Location %q, want %q (absolute, itself)", state, r.Header.Get("Location"), want)
				}
				if got := r.job(t); got.State != state || got.Ended {
					t.Errorf("202 body state %s ended %v, want %s", got.State, got.Ended, state)
				}
				// Follow it, as Power Automate does (through the "front end": the test server).
				loc, _ := url.Parse(r.Header.Get("Location"))
				poll = loc.RequestURI()
			}
			expectAccepted(jobs.StateAwaitingPackage, 30)
			a.transition(j.ID, jobs.StateEncrypting)
			expectAccepted(jobs.StateEncrypting, 10)
			a.transition(j.ID, jobs.StateStaged)
			a.drive(j.ID, func(r *jobs.Job) error {
				r.SPOJobID = "6a5f0c8e-0d6b-4b4e-9e4b-" + r.ID[len(r.ID)-12:]
				return r.Transition(jobs.StateSubmitted, time.Time{}, "CreateMigrationJobEncrypted")
			})
			expectAccepted(jobs.StateSubmitted, 10)
			a.transition(j.ID, jobs.StateQueued)
			a.drive(j.ID, func(r *jobs.Job) error {
				return r.Postpone(time.Time{}, time.Now().Add(10*time.Minute), "JobInQueue:Resource")
			})
			r := a.do(http.MethodGet, poll, nil, hdr)
			if p := r.job(t).Postponed; r.Status != http.StatusAccepted || p == nil || p.Reason != "JobInQueue:Resource" || p.NextPickupTime == nil {
				t.Errorf("postponed: %d %s", r.Status, r.Body)
			}
			a.drive(j.ID, func(r *jobs.Job) error {
				r.FilesTotal, r.FilesDone, r.BytesTotal, r.BytesDone = 8, 2, 4096, 1024
				return r.Transition(jobs.StateRunning, time.Time{}, "JobStart")
			})
			r = a.do(http.MethodGet, poll, nil, hdr)
			if c := r.job(t).Counters; c.Files.Percent == nil || *c.Files.Percent != 25 || c.Bytes.Done != 1024 || c.Objects.Percent != nil {
				t.Errorf("running counters: %s", r.Body)
			}
			expectAccepted(jobs.StateRunning, 30)

			// The job ends; the monitor has fetched its logs.
			ctx := context.Background()
			a.drive(j.ID, func(r *jobs.Job) error {
				r.FilesDone, r.BytesDone = 8, 4096
				if end == jobs.StateCompletedWithErrors {
					r.Errors = 1
					r.AddItemFailure(jobs.ItemFailure{Kind: jobs.ItemError, ObjectType: "File", URL: "/sites/x/Docs/a.txt", ErrorCode: "0x80070005", Message: "denied"})
				}
				r.LogsBlobPrefix = a.reports + "/" + r.ID + "/"
				return r.Transition(end, time.Time{}, "JobEnd")
			})
			if _, err := a.blob.UploadBuffer(ctx, a.reports, j.ID+"/Import-x-1.log", []byte("log line\n"), nil); err != nil {
				t.Fatal(err)
			}
			r = a.do(http.MethodGet, poll, nil, hdr)
			if r.Status != http.StatusOK || r.Header.Get("Location") != "" || r.Header.Get("Retry-After") != "" {
				t.Fatalf("ended: %d %v %s, want 200 without Location", r.Status, r.Header, r.Body)
			}
			final := r.job(t)
			if final.State != end || !final.Ended || final.EndedAt == nil || *final.Counters.Files.Percent != 100 {
				t.Errorf("final = %s", r.Body)
			}
			if end == jobs.StateFailed && final.FailureReason != "JobEnd" {
				t.Errorf("failureReason %q", final.FailureReason)
			}
			if end == jobs.StateCompletedWithErrors && (len(final.FirstErrors) != 1 || final.Counters.Errors != 1) {
				t.Errorf("errors summary: %s", r.Body)
			}
			if len(final.LogFiles) != 1 || final.LogFiles[0].Name != "Import-x-1.log" || final.LogFiles[0].Size != 9 {
				t.Errorf("log files %+v", final.LogFiles)
			}
			var states []jobs.State
			for _, h := range final.History {
				states = append(states, h.State)
			}
			want := []jobs.State{jobs.StateAwaitingPackage, jobs.StateEncrypting, jobs.StateStaged, jobs.StateSubmitted,
				jobs.StateQueued, jobs.StatePostponed, jobs.StateRunning, end}
			if fmt.Sprint(states) != fmt.Sprint(want) {
				t.Errorf("history %v, want %v", states, want)
			}
		})
	}
}

// TestListPaging: five jobs, pages of two, followed through nextLink; the state filter pages too.
func TestListPaging(t *testing.T) {
	a := newApp(t)
	ctx := context.Background()
	created := map[string]bool{}
	for i := range 5 {
		j := &jobs.Job{ID: fmt.Sprintf("0000000%d-0000-4000-8000-000000000000", i), SiteURL: a.siteURL, SecretName: "spomig-job-x", Source: jobs.SourceAPI}
		if err := a.store.Create(ctx, j); err != nil {
			t.Fatal(err)
		}
		created[j.ID] = true
		if i%2 == 1 {
			a.transition(j.ID, jobs.StateEncrypting)
		}
	}
	next := "/api/migrations?top=2"
	var sizes []int
	seen := map[string]bool{}
	for next != "" {
		r := a.do(http.MethodGet, next, nil, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", next, r.Status, r.Body)
		}
		var p api.Page
		r.json(t, &p)
		sizes = append(sizes, len(p.Value))
		for _, j := range p.Value {
			if seen[j.ID] {
				t.Errorf("job %s on two pages", j.ID)
			}
			seen[j.ID] = true
		}
		if (p.NextLink == "") != (p.ContinuationToken == "") {
			t.Errorf("nextLink %q and continuationToken %q disagree", p.NextLink, p.ContinuationToken)
		}
		if p.NextLink != "" && !strings.HasPrefix(p.NextLink, a.srv.URL+"/api/migrations?") {
			t.Errorf("nextLink %q is not absolute", p.NextLink)
		}
		next = p.NextLink
	}
	if fmt.Sprint(sizes) != "[2 2 1]" || len(seen) != 5 {
		t.Errorf("pages %v over %d jobs, want [2 2 1] over 5", sizes, len(seen))
	}
	for id := range created {
		if !seen[id] {
			t.Errorf("job %s never listed", id)
		}
	}

	// The token of a page, by hand, and a state filter.
	r := a.do(http.MethodGet, "/api/migrations?state=Encrypting&top=1", nil, nil)
	var p api.Page
	r.json(t, &p)
	if len(p.Value) != 1 || p.Value[0].State != jobs.StateEncrypting || p.ContinuationToken == "" {
		t.Fatalf("filtered page: %s", r.Body)
	}
	r = a.do(http.MethodGet, "/api/migrations?state=encrypting&top=1&continuationToken="+url.QueryEscape(p.ContinuationToken), nil, nil)
	var p2 api.Page
	r.json(t, &p2)
	if len(p2.Value) != 1 || p2.Value[0].ID == p.Value[0].ID || p2.Value[0].State != jobs.StateEncrypting {
		t.Fatalf("second filtered page: %s", r.Body)
	}
	// A token from another query is refused.
	r = a.do(http.MethodGet, "/api/migrations?state=Running&continuationToken="+url.QueryEscape(p.ContinuationToken), nil, nil)
	if r.Status != http.StatusBadRequest || r.problem(t).Type != api.ProblemTypePrefix+"invalid-continuation-token" {
		t.Errorf("foreign token: %d %s", r.Status, r.Body)
	}
}

// createSPOJob submits the job's containers to the SPO emulator, as the submitter would, and records the
// SPO job id: the job is then Queued at SharePoint (the emulator holds jobs queued for an hour).
func (a *app) createSPOJob(id string) string {
	a.t.Helper()
	ctx := context.Background()
	sec, err := a.custody.GetJob(ctx, id)
	if err != nil {
		a.t.Fatal(err)
	}
	rec, err := a.store.Get(ctx, id)
	if err != nil {
		a.t.Fatal(err)
	}
	spoID, err := a.spo.CreateMigrationJobEncrypted(ctx, rec.SiteURL, spo.CreateJobRequest{
		WebID: rec.WebID, DataContainerURI: sec.DataContainerURI, MetadataContainerURI: sec.MetadataContainerURI,
		QueueURI: sec.QueueURI, Key: sec.Key,
	})
	if err != nil {
		a.t.Fatal(err)
	}
	a.transition(id, jobs.StateEncrypting, jobs.StateStaged)
	a.drive(id, func(j *jobs.Job) error {
		j.SPOJobID = spoID
		return j.Transition(jobs.StateSubmitted, time.Time{}, "CreateMigrationJobEncrypted")
	})
	return spoID
}

// TestCancel: before submission at once; queued at SharePoint through DeleteMigrationJob; ended → 409;
// processing at SharePoint → 409; submission in flight → 409 with Retry-After.
func TestCancel(t *testing.T) {
	a := newApp(t)
	ctx := context.Background()

	t.Run("awaiting package", func(t *testing.T) {
		j := a.create("cancel me")
		before := time.Now().Add(-time.Second)
		r := a.do(http.MethodDelete, "/api/migrations/"+j.ID, nil, nil)
		if r.Status != http.StatusOK || r.job(t).State != jobs.StateCancelled {
			t.Fatalf("DELETE: %d %s", r.Status, r.Body)
		}
		rec, _ := a.store.Get(ctx, j.ID)
		if rec.CleanupAt.Before(before) || rec.CleanupAt.After(time.Now().Add(time.Second)) || rec.EndedAt.IsZero() {
			t.Errorf("CleanupAt %v EndedAt %v: the key's clean-up must be due now", rec.CleanupAt, rec.EndedAt)
		}
		if a.spoRec.Count("DeleteMigrationJob") != 0 || a.spoRec.Count("GetMigrationJobStatus") != 0 {
			t.Error("SharePoint asked about a job it never saw")
		}
		r = a.do(http.MethodDelete, "/api/migrations/"+j.ID, nil, nil)
		if p := r.problem(t); r.Status != http.StatusConflict || !strings.Contains(p.Detail, "already ended (Cancelled)") {
			t.Errorf("second DELETE: %d %s", r.Status, r.Body)
		}
	})

	t.Run("queued at SharePoint", func(t *testing.T) {
		j := a.create("queued")
		spoID := a.createSPOJob(j.ID)
		a.transition(j.ID, jobs.StateQueued)
		if info, ok := a.w.Emulator.Job(spoID); !ok || info.State != spoemu.StateQueued {
			t.Fatalf("SPO job %+v, want queued", info)
		}
		r := a.do(http.MethodDelete, "/api/migrations/"+j.ID, nil, nil)
		if r.Status != http.StatusOK || r.job(t).State != jobs.StateCancelled {
			t.Fatalf("DELETE: %d %s", r.Status, r.Body)
		}
		if a.spoRec.Count("DeleteMigrationJob") != 1 {
			t.Errorf("DeleteMigrationJob called %d times, want 1", a.spoRec.Count("DeleteMigrationJob"))
		}
		if info, _ := a.w.Emulator.Job(spoID); info.Outcome != spoemu.OutcomeCancelled {
			t.Errorf("SPO job outcome %q, want Cancelled", info.Outcome)
		}
		h := r.job(t).History
		if last := h[len(h)-1]; !strings.Contains(last.Reason, "deleted from SharePoint's queue") {
			t.Errorf("last history entry %+v", last)
		}
		// Ended: 409.
		r = a.do(http.MethodDelete, "/api/migrations/"+j.ID, nil, nil)
		if r.Status != http.StatusConflict || r.problem(t).Type != api.ProblemTypePrefix+"cannot-cancel" {
			t.Errorf("DELETE of an ended job: %d %s", r.Status, r.Body)
		}
	})

	t.Run("no longer queued at SharePoint", func(t *testing.T) {
		j := a.create("gone")
		a.transition(j.ID, jobs.StateEncrypting, jobs.StateStaged)
		a.drive(j.ID, func(r *jobs.Job) error {
			r.SPOJobID = "0d9b3f52-7a41-4c65-9e0a-5b8f2d1c3e47" // unknown to SharePoint: reads None
			if err := r.Transition(jobs.StateSubmitted, time.Time{}, "CreateMigrationJobEncrypted"); err != nil {
				return err
			}
			return r.Transition(jobs.StateRunning, time.Time{}, "JobStart")
		})
		r := a.do(http.MethodDelete, "/api/migrations/"+j.ID, nil, nil)
		if r.Status != http.StatusConflict || !strings.Contains(r.problem(t).Detail, "no longer has the job queued") {
			t.Errorf("DELETE: %d %s", r.Status, r.Body)
		}
		if rec, _ := a.store.Get(ctx, j.ID); rec.State != jobs.StateRunning {
			t.Errorf("state %s, want Running (unchanged)", rec.State)
		}
	})

	t.Run("submission in flight", func(t *testing.T) {
		j := a.create("submitting")
		a.transition(j.ID, jobs.StateEncrypting, jobs.StateStaged)
		a.drive(j.ID, func(r *jobs.Job) error { return r.AcquireSubmitLease("submitter-1", time.Now(), 5*time.Minute) })
		r := a.do(http.MethodDelete, "/api/migrations/"+j.ID, nil, nil)
		if r.Status != http.StatusConflict || r.Header.Get("Retry-After") == "" {
			t.Errorf("DELETE: %d %v %s", r.Status, r.Header, r.Body)
		}
		a.drive(j.ID, func(r *jobs.Job) error { r.ReleaseSubmitLease("submitter-1"); return nil })
		r = a.do(http.MethodDelete, "/api/migrations/"+j.ID, nil, nil)
		if r.Status != http.StatusOK {
			t.Errorf("DELETE after the lease: %d %s", r.Status, r.Body)
		}
	})
}

// TestLogs: 404 with the reason before the monitor fetched them; then the index and each file.
func TestLogs(t *testing.T) {
	a := newApp(t)
	ctx := context.Background()
	j := a.create("logs")
	a.transition(j.ID, jobs.StateEncrypting, jobs.StateStaged)
	a.drive(j.ID, func(r *jobs.Job) error {
		r.SPOJobID = "5e0a61b2-8c3d-4f1e-a9b7-c2d4e6f80a13"
		if err := r.Transition(jobs.StateSubmitted, time.Time{}, "CreateMigrationJobEncrypted"); err != nil {
			return err
		}
		return r.Transition(jobs.StateRunning, time.Time{}, "JobStart")
	})
	r := a.do(http.MethodGet, "/api/migrations/"+j.ID+"/logs", nil, nil)
	if p := r.problem(t); r.Status != http.StatusNotFound || p.Detail != "logs are fetched when the job ends; the job is Running" {
		t.Fatalf("before: %d %s", r.Status, r.Body)
	}
	r = a.do(http.MethodGet, "/api/migrations/"+j.ID+"/logs/Import-x-1.log", nil, nil)
	if r.Status != http.StatusNotFound {
		t.Fatalf("file before: %d %s", r.Status, r.Body)
	}
	a.transition(j.ID, jobs.StateCompleted)
	r = a.do(http.MethodGet, "/api/migrations/"+j.ID+"/logs", nil, nil)
	if p := r.problem(t); r.Status != http.StatusNotFound || !strings.Contains(p.Detail, "not been fetched yet") || r.Header.Get("Retry-After") == "" {
		t.Fatalf("ended, not fetched: %d %s", r.Status, r.Body)
	}

	files := map[string]string{
		"Import-" + "5e0a61b2-8c3d-4f1e-a9b7-c2d4e6f80a13" + "-1.log": "2025-05-20 info: started\n",
		"Import-5e0a61b2-8c3d-4f1e-a9b7-c2d4e6f80a13-1.err":           "",
		"Import-5e0a61b2-8c3d-4f1e-a9b7-c2d4e6f80a13-1.wrn":           "warning: renamed\n",
		"items.csv": "url,status\n/sites/x/a.txt,ok\n",
	}
	for name, content := range files {
		if _, err := a.blob.UploadBuffer(ctx, a.reports, j.ID+"/"+name, []byte(content), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.blob.UploadBuffer(ctx, a.reports, j.ID+"/nested/ignored.log", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	a.drive(j.ID, func(r *jobs.Job) error { r.LogsBlobPrefix = r.ID + "/"; return nil })

	r = a.do(http.MethodGet, "/api/migrations/"+j.ID+"/logs", nil, nil)
	var idx api.Logs
	r.json(t, &idx)
	if r.Status != http.StatusOK || len(idx.Files) != len(files) {
		t.Fatalf("index: %d %s", r.Status, r.Body)
	}
	for _, f := range idx.Files {
		content, ok := files[f.Name]
		if !ok || f.Size != int64(len(content)) || f.URL != j.Links.Logs+"/"+f.Name {
			t.Errorf("file %+v", f)
			continue
		}
		fr := a.do(http.MethodGet, f.URL, nil, nil)
		wantCT := "text/plain; charset=utf-8"
		if strings.HasSuffix(f.Name, ".csv") {
			wantCT = "text/csv; charset=utf-8"
		}
		if fr.Status != http.StatusOK || string(fr.Body) != content || fr.Header.Get("Content-Type") != wantCT {
			t.Errorf("GET %s: %d %q %q", f.Name, fr.Status, fr.Header.Get("Content-Type"), fr.Body)
		}
	}
	for _, bad := range []string{"missing.log", "..%2Fsecret", ".hidden", "a%20b"} {
		r := a.do(http.MethodGet, "/api/migrations/"+j.ID+"/logs/"+bad, nil, nil)
		if r.Status != http.StatusNotFound {
			t.Errorf("GET logs/%s: %d %s", bad, r.Status, r.Body)
		}
	}

	// A job that ended before reaching SharePoint has no logs, and says so.
	k := a.create("never submitted")
	a.transition(k.ID, jobs.StateFailed)
	r = a.do(http.MethodGet, "/api/migrations/"+k.ID+"/logs", nil, nil)
	if p := r.problem(t); r.Status != http.StatusNotFound || !strings.Contains(p.Detail, "before it reached SharePoint") {
		t.Errorf("never submitted: %d %s", r.Status, r.Body)
	}
}

// TestErrorStatuses: every error status with its problem body.
func TestErrorStatuses(t *testing.T) {
	a := newApp(t)
	done := a.create("ended")
	a.transition(done.ID, jobs.StateEncrypting, jobs.StateStaged, jobs.StateSubmitted, jobs.StateCompleted)
	json := map[string]string{"Content-Type": "application/json"}
	site := a.siteURL
	cases := []struct {
		name, method, target, body string
		header                     map[string]string
		status                     int
		slug, detail               string
	}{
		{"malformed JSON", "POST", "/api/migrations", `{"siteUrl": `, json, 400, "invalid-json", "the JSON ends too early"},
		{"syntax error", "POST", "/api/migrations", `{"siteUrl" "x"}`, json, 400, "invalid-json", "invalid JSON at byte"},
		{"not an object", "POST", "/api/migrations", `["x"]`, json, 400, "invalid-json", "must be a JSON object"},
		{"empty body", "POST", "/api/migrations", ``, json, 400, "invalid-json", "the body is empty"},
		{"trailing data", "POST", "/api/migrations", `{"siteUrl": "` + site + `"} {}`, json, 400, "invalid-json", "after the JSON object"},
		{"unknown field", "POST", "/api/migrations", `{"siteUrl": "` + site + `", "siteURL": "x"}`, json, 400, "unknown-field", `unknown field "siteURL"`},
		{"repeated field", "POST", "/api/migrations", `{"siteUrl": "` + site + `", "siteUrl": "` + site + `"}`, json, 400, "repeated-field", `"siteUrl" appears twice`},
		{"wrong type", "POST", "/api/migrations", `{"siteUrl": 42}`, json, 400, "invalid-field-type", `"siteUrl" must be a string`},
		{"missing site", "POST", "/api/migrations", `{"label": "x"}`, json, 400, "missing-field", "siteUrl is required"},
		{"bad URL", "POST", "/api/migrations", `{"siteUrl": "not a url"}`, json, 400, "invalid-field", "siteUrl: must be an https URL"},
		{"http site", "POST", "/api/migrations", `{"siteUrl": "` + strings.Replace(site, "https:", "http:", 1) + `"}`, json, 400, "invalid-field", "siteUrl: must be an https URL"},
		{"API path", "POST", "/api/migrations", `{"siteUrl": "` + site + `/_api/web"}`, json, 400, "invalid-field", "not of a page or an API"},
		{"bad GUID", "POST", "/api/migrations", `{"siteUrl": "` + site + `", "webId": "not-a-guid"}`, json, 400, "invalid-field", "webId: is not a GUID"},
		{"callback not https", "POST", "/api/migrations", `{"siteUrl": "` + site + `", "callbackUrl": "http://hooks.example.com/x"}`, json, 400, "invalid-field", "callbackUrl: must be an https URL"},
		{"callback host", "POST", "/api/migrations", `{"siteUrl": "` + site + `", "callbackUrl": "https://evil.example.net/x"}`, json, 400, "invalid-field", "not an allowed callback host"},
		{"signed callback host", "POST", "/api/migrations", `{"siteUrl": "` + site + `", "callbackUrl": "https://evil.example.net/x?sig=abc"}`, json, 400, "invalid-field", "not an allowed callback host"},
		{"site host not allowed", "POST", "/api/migrations", `{"siteUrl": "https://evil.example.com/sites/x"}`, json, 403, "site-not-allowed", `host "evil.example.com" is not an allowed SharePoint host`},
		{"unknown site", "POST", "/api/migrations", `{"siteUrl": "` + site + `/_x"}`, json, 400, "invalid-field", "siteUrl"},
		{"not JSON", "POST", "/api/migrations", `siteUrl=x`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported-media-type", "application/json"},
		{"no content type", "POST", "/api/migrations", `{}`, nil, 415, "unsupported-media-type", "application/json"},
		{"too large", "POST", "/api/migrations", `{"siteUrl": "` + site + `", "label": "` + strings.Repeat("x", 64<<10) + `"}`, json, 413, "body-too-large", "65536 bytes"},
		{"unknown job", "GET", "/api/migrations/7c9e6679-7425-40de-944b-e07fc1f90ae7", "", nil, 404, "job-not-found", "no migration job with this id"},
		{"invalid job id", "GET", "/api/migrations/a%20b", "", nil, 404, "job-not-found", "no migration job"},
		{"unknown job result", "GET", "/api/migrations/7c9e6679-7425-40de-944b-e07fc1f90ae7/result", "", nil, 404, "job-not-found", ""},
		{"unknown job cancel", "DELETE", "/api/migrations/7c9e6679-7425-40de-944b-e07fc1f90ae7", "", nil, 404, "job-not-found", ""},
		{"unknown route", "GET", "/api/nothing", "", nil, 404, "no-route", "no API route at /api/nothing"},
		{"method not allowed", "PUT", "/api/migrations", "{}", json, 405, "method-not-allowed", "allowed: POST, GET"},
		{"method not allowed on job", "POST", "/api/migrations/" + done.ID, "{}", json, 405, "method-not-allowed", "allowed: GET, DELETE"},
		{"cancel ended", "DELETE", "/api/migrations/" + done.ID, "", nil, 409, "cannot-cancel", "already ended (Completed)"},
		{"bad state", "GET", "/api/migrations?state=Sleeping", "", nil, 400, "invalid-query", `unknown state "Sleeping"`},
		{"bad top", "GET", "/api/migrations?top=0", "", nil, 400, "invalid-query", "top must be a whole number from 1 to 1000"},
		{"unknown parameter", "GET", "/api/migrations?filter=x", "", nil, 400, "invalid-query", `unknown query parameter "filter"`},
		{"bad token", "GET", "/api/migrations?continuationToken=garbage", "", nil, 400, "invalid-continuation-token", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body io.Reader
			if c.body != "" || c.method == "POST" {
				body = strings.NewReader(c.body)
			}
			r := a.do(c.method, c.target, body, c.header)
			if r.Status != c.status {
				t.Fatalf("%d %s, want %d", r.Status, r.Body, c.status)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			p := r.problem(t)
			if p.Type != api.ProblemTypePrefix+c.slug || p.Status != c.status || p.Title == "" || !strings.Contains(p.Detail, c.detail) ||
				p.Instance != strings.Split(strings.ReplaceAll(c.target, "%20", " "), "?")[0] {
				t.Errorf("problem %+v, want type …%s and detail containing %q", p, c.slug, c.detail)
			}
			if c.status == 405 && r.Header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

// TestUpstreamFailures: SharePoint and Key Vault throttling beyond the budget → 429/503 with Retry-After;
// other upstream failures → 502 with a safe message; a site SharePoint does not know → 400.
func TestUpstreamFailures(t *testing.T) {
	a := newApp(t)
	body := fmt.Sprintf(`{"siteUrl": %q}`, a.siteURL)
	check := func(t *testing.T, status int, slug, retryAfter, detail string) {
		t.Helper()
		r := a.postJSON(body)
		p := r.problem(t)
		if r.Status != status || p.Type != api.ProblemTypePrefix+slug || r.Header.Get("Retry-After") != retryAfter || !strings.Contains(p.Detail, detail) {
			t.Errorf("%d Retry-After %q %+v, want %d %s Retry-After %q detail ~%q", r.Status, r.Header.Get("Retry-After"), p, status, slug, retryAfter, detail)
		}
	}
	for _, st := range []int{429, 503} {
		t.Run(fmt.Sprintf("SharePoint %d", st), func(t *testing.T) {
			a.w.Emulator.SetFaults(a.site, spoemu.Faults{Throttle: &spoemu.Throttle{Count: 100, Status: st, RetryAfter: 7}})
			defer a.w.Emulator.SetFaults(a.site, spoemu.Faults{})
			check(t, st, "upstream-throttled", "7", "SharePoint asked spomig to slow down")
		})
		t.Run(fmt.Sprintf("Key Vault %d", st), func(t *testing.T) {
			a.kv.InjectFaults(kvemu.Fault{Status: st, Count: 100, RetryAfter: 120 * time.Second})
			defer a.kv.ClearFaults()
			check(t, st, "upstream-throttled", "120", "Key Vault asked spomig to slow down")
		})
	}
	t.Run("Key Vault 500", func(t *testing.T) {
		a.kv.InjectFaults(kvemu.Fault{Status: 500, Count: 100})
		defer a.kv.ClearFaults()
		check(t, 502, "keyvault-error", "", "Key Vault failed to")
	})
	t.Run("site unknown to SharePoint", func(t *testing.T) {
		// The emulator serves every /sites/<name>: ask for one under an unknown managed path instead.
		r := a.postJSON(fmt.Sprintf(`{"siteUrl": %q}`, strings.Replace(a.siteURL, "/sites/", "/nosuchpath/", 1)))
		if p := r.problem(t); r.Status != http.StatusBadRequest || p.Type != api.ProblemTypePrefix+"site-not-found" {
			t.Errorf("%d %s", r.Status, r.Body)
		}
	})
	// After the faults, creating works again.
	if r := a.postJSON(body); r.Status != http.StatusCreated {
		t.Fatalf("after the faults: %d %s", r.Status, r.Body)
	} else {
		suite.learnUpload(r.job(t).Upload.URL)
	}
}

// TestAuditLog: exactly one Info line per call, with method, route template, job id, caller IP, status
// and duration.
func TestAuditLog(t *testing.T) {
	a := newApp(t)
	j := a.create("audit")
	a.do(http.MethodGet, "/api/migrations/"+j.ID, nil, map[string]string{"X-Forwarded-For": "203.0.113.7, 10.0.0.1"})
	a.do(http.MethodGet, "/api/migrations/7c9e6679-7425-40de-944b-e07fc1f90ae7/result", nil, nil)
	a.do(http.MethodPatch, "/api/migrations", nil, nil)
	a.do(http.MethodGet, "/api/nowhere", nil, nil)
	recs := a.logs.Records("api call")
	if len(recs) != 5 {
		t.Fatalf("%d audit lines for 5 calls:\n%s", len(recs), a.logs)
	}
	want := []struct {
		method, route, jobID, ip string
		status                   float64
	}{
		{"POST", "/api/migrations", j.ID, "127.0.0.1", 201},
		{"GET", "/api/migrations/{id}", j.ID, "203.0.113.7", 200},
		{"GET", "/api/migrations/{id}/result", "7c9e6679-7425-40de-944b-e07fc1f90ae7", "127.0.0.1", 404},
		{"PATCH", "(method not allowed)", "", "127.0.0.1", 405},
		{"GET", "(none)", "", "127.0.0.1", 404},
	}
	for i, w := range want {
		r := recs[i]
		if r["level"] != "INFO" || r["method"] != w.method || r["route"] != w.route || r["job_id"] != w.jobID ||
			r["caller_ip"] != w.ip || r["status"] != w.status {
			t.Errorf("audit line %d = %v, want %+v", i, r, w)
		}
		if _, ok := r["duration_ms"].(float64); !ok {
			t.Errorf("audit line %d has no duration_ms", i)
		}
	}
}

// TestNoSecretsInResponsesOrLogs plays every operation, failures included, and then searches every
// response body and header and every log line seen so far for the keys and SAS signatures SharePoint
// issued (raw, base64 and hex forms; sig= values in every encoding) and for the upload SAS we minted
// outside the 201 body. TestMain repeats the search over the whole suite.
func TestNoSecretsInResponsesOrLogs(t *testing.T) {
	a := newApp(t)
	j := a.create("secrets")
	a.do(http.MethodGet, "/api/migrations/"+j.ID, nil, nil)
	a.do(http.MethodGet, "/api/migrations/"+j.ID+"/result", nil, nil)
	a.do(http.MethodGet, "/api/migrations", nil, nil)
	a.do(http.MethodGet, "/api/migrations/"+j.ID+"/logs", nil, nil)
	a.do(http.MethodGet, "/api/openapi.json", nil, nil)
	k := a.create("queued")
	a.createSPOJob(k.ID)
	a.do(http.MethodDelete, "/api/migrations/"+k.ID, nil, nil)
	a.do(http.MethodDelete, "/api/migrations/"+k.ID, nil, nil)
	a.kv.InjectFaults(kvemu.Fault{Status: 429, Count: 100, RetryAfter: 120 * time.Second})
	a.postJSON(fmt.Sprintf(`{"siteUrl": %q}`, a.siteURL))
	a.kv.ClearFaults()
	a.w.Emulator.SetFaults(a.site, spoemu.Faults{Throttle: &spoemu.Throttle{Count: 100, Status: 503, RetryAfter: 3, Methods: []string{"DeleteMigrationJob", "GetMigrationJobStatus"}}})
	m := a.create("throttled cancel")
	a.createSPOJob(m.ID)
	r := a.do(http.MethodDelete, "/api/migrations/"+m.ID, nil, nil)
	if r.Status != http.StatusServiceUnavailable {
		t.Errorf("throttled cancel: %d %s", r.Status, r.Body)
	}
	a.w.Emulator.SetFaults(a.site, spoemu.Faults{})

	issued, uploads := suite.counts()
	if issued < 3*7 || uploads < 3 {
		t.Fatalf("learnt only %d SharePoint secret forms and %d upload signature forms: the scan would prove nothing", issued, uploads)
	}
	// The scan bites: an upload signature outside the 201 is found.
	canary := &suiteCapture{}
	canary.learnUpload(j.Upload.URL)
	canary.addBody("canary", []byte(j.Upload.URL), false)
	if len(canary.leaks()) == 0 {
		t.Fatal("the scan does not find an upload URL outside the 201 body")
	}
	if leaks := suite.leaks(); len(leaks) > 0 {
		t.Fatalf("secrets leaked:\n  %s", strings.Join(leaks, "\n  "))
	}
}

// A POST retried with the same Idempotency-Key (a flow's retry policy, a timed-out script) answers the job
// the first POST created: one job, one provisioning.
func TestIdempotencyKey(t *testing.T) {
	a := newApp(t)
	post := func(key, site string) *response {
		t.Helper()
		h := map[string]string{"Content-Type": "application/json"}
		if key != "" {
			h["Idempotency-Key"] = key
		}
		return a.do(http.MethodPost, "/api/migrations", strings.NewReader(fmt.Sprintf(`{"siteUrl": %q}`, site)), h)
	}
	first := post("flow-run-42", a.siteURL)
	if first.Status != http.StatusCreated {
		t.Fatalf("first POST: %d %s", first.Status, first.Body)
	}
	j1 := first.job(t)
	suite.learnUpload(j1.Upload.URL)
	again := post("flow-run-42", a.siteURL)
	if again.Status != http.StatusCreated {
		t.Fatalf("replay: %d %s", again.Status, again.Body)
	}
	j2 := again.job(t)
	suite.learnUpload(j2.Upload.URL)
	if j2.ID != j1.ID || !j2.CreatedAt.Equal(j1.CreatedAt) {
		t.Fatalf("replay created another job: %s (first %s)", j2.ID, j1.ID)
	}
	other := post("flow-run-43", a.siteURL)
	if other.Status != http.StatusCreated || other.job(t).ID == j1.ID {
		t.Fatalf("another key: %d, same id", other.Status)
	}
	suite.learnUpload(other.job(t).Upload.URL)
	if plain := post("", a.siteURL); plain.Status != http.StatusCreated || plain.job(t).ID == j1.ID {
		t.Fatalf("no key: %d", plain.Status)
	} else {
		suite.learnUpload(plain.job(t).Upload.URL)
	}

	// The same key for another site is a client error, not the first job.
	if r := post("flow-run-42", a.w.Emulator.SiteURL("elsewhere")); r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "idempotency-key-reused") {
		t.Fatalf("key reused for another site: %d %s", r.Status, r.Body)
	}
	// A key that is not printable ASCII.
	if r := post("clé", a.siteURL); r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "invalid-idempotency-key") {
		t.Fatalf("bad key: %d %s", r.Status, r.Body)
	}
	// Once the package has arrived, a replay answers the job as it is, without an upload URL.
	a.transition(j1.ID, jobs.StateEncrypting)
	late := post("flow-run-42", a.siteURL)
	if late.Status != http.StatusOK {
		t.Fatalf("late replay: %d %s", late.Status, late.Body)
	}
	if lj := late.job(t); lj.ID != j1.ID || lj.Upload != nil || lj.State != jobs.StateEncrypting {
		t.Fatalf("late replay answered %+v", lj)
	}
}

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/spomig/spomig/internal/api"
	"github.com/spomig/spomig/internal/dev/devtls"
	"github.com/spomig/spomig/internal/dev/kvemu"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/migpkg"
	"github.com/spomig/spomig/internal/submit"
)

// crashTimeout bounds a job whose handler was killed: the blob trigger's retry waits for the intake's
// 60-second staging-blob lease to expire.
const crashTimeout = 4 * time.Minute

// TestCrashDuringUpload: the handler is killed with SIGKILL while it encrypts and uploads a package
// (some blobs of the job are in its SPO data container, the job is Encrypting). The local host restarts
// the handler; the blob trigger is retried (ErrBusy while the dead invocation's lease on the staging
// blob runs out) and the retry stages the whole package again. The job completes, with exactly one SPO
// job, and every imported file equals its package entry.
func TestCrashDuringUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{Settings: map[string]string{
		"AzureFunctionsJobHost__extensions__queues__visibilityTimeout":  "00:00:05",
		"AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:01",
		"AzureFunctionsJobHost__extensions__blobs__poisonBlobThreshold": "40",
		"SPOMIG_UPLOAD_CONCURRENCY":                                     "1",
	}})
	work := t.TempDir()
	c := e.mustCreate(e.s.SiteURL("crash-upload"), "e2e kill during upload")
	files := genFiles("", 20, 31, 64<<10)
	for i := 0; i < 12; i++ {
		files = append(files, migpkg.BuildFile{Path: fmt.Sprintf("Video/clip %02d.mp4", i), Size: int64(4<<20 + i*77777)})
	}
	zip, err := buildZip(work, "big.zip", migpkgOptions(c), files)
	if err != nil {
		t.Fatal(err)
	}
	sec, err := e.custody().GetJob(context.Background(), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	clear(sec.Key)
	data := e.spoBlob().ServiceClient().NewContainerClient(containerName(sec.DataContainerURI))
	if err := e.upload(c.UploadURL, zip); err != nil {
		t.Fatal(err)
	}

	// Kill once the upload into SharePoint's containers has started.
	deadline := time.Now().Add(jobTimeout)
	for {
		j, _, err := e.job(c.ID)
		if err == nil && j.State != jobs.StateAwaitingPackage && j.State != jobs.StateEncrypting {
			t.Fatalf("the job reached %s before the kill: make the package bigger", j.State)
		}
		if err == nil && j.State == jobs.StateEncrypting && countBlobs(t, data) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upload into the SPO containers never started (state %s)", j.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.killHandler()
	n := countBlobs(t, data)
	if j := e.mustJob(c.ID); j.State != jobs.StateEncrypting {
		t.Fatalf("after the kill the job is %s, want Encrypting", j.State)
	}
	t.Logf("killed with %d of %d content blobs uploaded", n, len(files))

	j := e.waitJob(c.ID, "end", crashTimeout, ended)
	if j.State != jobs.StateCompleted {
		t.Fatalf("ended %s: %s", j.State, j.FailureReason)
	}
	checkCompleted(t, e, j, "crash-upload", zip, files)
	if got := len(e.log.lines(c.ID, "being processed by another invocation")); got == 0 {
		t.Logf("note: the retry did not meet the dead invocation's lease")
	}
}

func countBlobs(t *testing.T, c *container.Client) int {
	t.Helper()
	n := 0
	pager := c.NewListBlobsFlatPager(nil)
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatalf("list blobs: %v", err)
		}
		n += len(page.Segment.BlobItems)
	}
	return n
}

// TestCrashDuringSubmit: the handler is killed at each point of a submission (internal/submit/doc.go,
// "Exactly once"); after the restart the queue redelivers the message. Sites are reached through a
// proxy (spoProxy) so that SharePoint's answer can be held.
//   - before the SharePoint call (the claim written, the job secret being read: Key Vault answers 503 with
//     Retry-After): the claim expires and a redelivery takes it over → Completed, one SPO job;
//   - while it waits on SharePoint's 429 Retry-After for CreateMigrationJobEncrypted: SharePoint refused
//     the call (no job), and the submitter turned its call marker back into a claim before waiting, so
//     the wait is outside the outcome-unknown window: the claim expires, a redelivery takes it over and
//     submits → Completed, exactly one SPO job;
//   - after SharePoint created the job, before its answer arrived → Failed "submission outcome
//     unknown…", never resubmitted: exactly the one SPO job SharePoint created.
func TestCrashDuringSubmit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := devtls.LoadOrCreate(filepath.Join(dir, "tls")) // the stack loads the same CA
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := startSPOProxy(ca)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	e := newEnv(t, envOptions{Dir: dir, Settings: map[string]string{
		"SPOMIG_TENANT_HOST":  proxy.Host(),
		"SPOMIG_SUBMIT_LEASE": "15s",
		"AzureFunctionsJobHost__extensions__queues__visibilityTimeout":  "00:00:03",
		"AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:01",
		"AzureFunctionsJobHost__extensions__queues__maxDequeueCount":    "30",
	}})
	if err := proxy.setTarget(e.s.SPO.URL()); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	prepare := func(site string) (created, string, []migpkg.BuildFile) {
		t.Helper()
		c := e.mustCreate(proxy.SiteURL(site), "e2e kill during submit: "+site)
		files := genFiles("", 15, 41, 32<<10)
		zip, err := buildZip(work, site+".zip", migpkgOptions(c), files)
		if err != nil {
			t.Fatal(err)
		}
		return c, zip, files
	}
	outcomeUnknown := func(t *testing.T, id string) api.Job {
		t.Helper()
		j := e.waitJob(id, "end", crashTimeout, ended)
		t.Logf("ended %s: %s", j.State, j.FailureReason)
		want := submit.ReasonOutcomeUnknown("")
		if j.State != jobs.StateFailed || !strings.HasPrefix(j.FailureReason, want[:60]) {
			t.Fatalf("ended %s (%q), want Failed with the outcome-unknown reason", j.State, j.FailureReason)
		}
		// Every copy of the message is acknowledged; nothing is resubmitted later.
		e.waitQueueEmpty("migration-submit")
		return j
	}

	t.Run("before the SharePoint call", func(t *testing.T) {
		e.pokePaused.Store(true) // nothing else may read Key Vault meanwhile
		defer e.pokePaused.Store(false)
		c, zip, files := prepare("crash-claim")
		faults := e.s.KeyVault.Stats().Faults
		inject := func() {
			e.s.KeyVault.InjectFaults(kvemu.Fault{Status: 503, Count: 1, RetryAfter: 6 * time.Second})
		}
		inject()
		if err := e.upload(c.UploadURL, zip); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(jobTimeout)
		rearmed := 0
		for {
			if st := e.s.KeyVault.Stats(); st.Faults > faults {
				faults = st.Faults
				j := e.mustJob(c.ID)
				if j.State == jobs.StateStaged && j.SPOJobID == "" {
					break // the submitter claimed the job and waits on Key Vault
				}
				// It was the intake reading the key: once its retry is served, the next read of the
				// vault is the submitter's.
				for e.s.KeyVault.Stats().Requests == st.Requests {
					if time.Now().After(deadline) {
						t.Fatal("the intake never retried its read of the job secret")
					}
					time.Sleep(20 * time.Millisecond)
				}
				inject()
				rearmed++
			}
			if time.Now().After(deadline) {
				t.Fatalf("the submitter never read the job secret (state %s)", e.mustJob(c.ID).State)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("the submitter waits on Key Vault (the fault was re-armed %d times after the intake met it)", rearmed)
		e.killHandler()
		e.s.KeyVault.ClearFaults()
		e.pokePaused.Store(false)
		j := e.waitJob(c.ID, "end", crashTimeout, ended)
		if j.State != jobs.StateCompleted {
			t.Fatalf("ended %s: %s", j.State, j.FailureReason)
		}
		checkCompleted(t, e, j, "crash-claim", zip, files)
		if len(e.log.lines(c.ID, "taking over an expired submit claim")) == 0 {
			t.Errorf("no redelivery took the dead attempt's claim over")
		}
	})

	t.Run("while the call waits on throttling", func(t *testing.T) {
		e.s.SPO.SetFaults("crash-throttle", spoemu.Faults{Throttle: &spoemu.Throttle{Count: 1, Status: 429, RetryAfter: 8,
			Methods: []string{"CreateMigrationJobEncrypted"}}})
		c, zip, files := prepare("crash-throttle")
		if err := e.upload(c.UploadURL, zip); err != nil {
			t.Fatal(err)
		}
		// The submitter logs the wait once its lease is a claim again.
		e.waitLogLines(1, "submission throttled: waiting to call again", c.ID)
		if th := e.s.SPO.Faults("crash-throttle").Throttle; th != nil && th.Count > 0 {
			t.Fatalf("the submitter waits, but SharePoint's throttle was not consumed: %+v", th)
		}
		e.killHandler()
		j := e.waitJob(c.ID, "end", crashTimeout, ended)
		if j.State != jobs.StateCompleted {
			t.Fatalf("ended %s: %s", j.State, j.FailureReason)
		}
		checkCompleted(t, e, j, "crash-throttle", zip, files) // exactly one SPO job, the recorded one
		if len(e.log.lines(c.ID, "taking over an expired submit claim")) == 0 {
			t.Errorf("no redelivery took the dead attempt's claim over")
		}
		if n := len(e.log.lines(c.ID, "outcome unknown")); n != 0 {
			t.Errorf("%d log lines say the outcome is unknown", n)
		}
	})

	t.Run("after SharePoint created the job", func(t *testing.T) {
		held, release := proxy.hold("CreateMigrationJobEncrypted")
		defer release()
		c, zip, _ := prepare("crash-answer")
		if err := e.upload(c.UploadURL, zip); err != nil {
			t.Fatal(err)
		}
		select {
		case <-held:
		case <-time.After(jobTimeout):
			t.Fatalf("CreateMigrationJobEncrypted never reached SharePoint (state %s)", e.mustJob(c.ID).State)
		}
		e.killHandler()
		release()
		j := outcomeUnknown(t, c.ID)
		spo := e.spoJobs("/sites/crash-answer")
		if len(spo) != 1 {
			t.Fatalf("SharePoint has %d jobs for the site, want exactly the one it created", len(spo))
		}
		if j.SPOJobID != "" && !strings.EqualFold(j.SPOJobID, spo[0].ID) {
			t.Errorf("the record names SPO job %s, SharePoint created %s", j.SPOJobID, spo[0].ID)
		}
	})
}

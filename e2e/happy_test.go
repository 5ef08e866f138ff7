package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spomig/spomig/internal/api"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/migpkg"
)

// TestHappyPath: a migration created through the API (create → upload to the staging URL → Completed)
// and a self-service drop (a zip with blob metadata siteurl put straight into migration-staging with the
// storage key, no API call) both complete, on one stack at once. For each: exactly one SPO job, the
// counters are SharePoint's, the decrypted import logs are readable through /logs and name the SPO job,
// the result operation answers 200 with the log files, and every imported file equals its package entry
// byte for byte.
func TestHappyPath(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	work := t.TempDir()

	// Build both packages first; the drop's web id is the site's (no API answer to take it from).
	c := e.mustCreate(e.s.SiteURL("hr"), "e2e happy path: file share → hr")
	if c.WebID == "" || c.Job.State != jobs.StateAwaitingPackage {
		t.Fatalf("create answered webId %q, state %s", c.WebID, c.Job.State)
	}
	if c.Job.Upload.Method != http.MethodPut || c.Job.Upload.Headers["x-ms-blob-type"] != "BlockBlob" {
		t.Errorf("upload instructions: %+v", c.Job.Upload)
	}
	apiFiles := genFiles("", 30, 1, 200<<10)
	apiFiles = append(apiFiles, migpkg.BuildFile{Path: "Engineering/Specs/big drawing.pdf", Size: 3<<20 + 12345})
	apiZip, err := buildZip(work, "api.zip", migpkgOptions(c), apiFiles)
	if err != nil {
		t.Fatal(err)
	}
	dropFiles := genFiles("Dropped", 20, 2, 300<<10)
	dropZip, err := buildZip(work, "drop.zip", migpkg.BuilderOptions{SiteURL: e.s.SiteURL("finance"), WebID: e.s.SPO.WebID("finance")}, dropFiles)
	if err != nil {
		t.Fatal(err)
	}
	const dropName = "drops/finance 2024.zip"

	var dropID string
	err = parallel(
		func() error { return e.upload(c.UploadURL, apiZip) },
		func() error {
			return e.drop(dropName, dropZip, map[string]string{"siteurl": e.s.SiteURL("finance"), "label": "e2e drop"})
		},
	)
	if err != nil {
		t.Fatal(err)
	}

	// The drop shows up in GET /api/migrations by itself.
	deadline := time.Now().Add(jobTimeout)
	for dropID == "" {
		all, err := e.list()
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range all {
			if j.Source == jobs.SourceDrop {
				if j.SiteURL != e.s.SiteURL("finance") {
					t.Fatalf("drop job for site %q, want %q", j.SiteURL, e.s.SiteURL("finance"))
				}
				dropID = j.ID
			}
		}
		if dropID == "" && time.Now().After(deadline) {
			t.Fatalf("the drop never appeared in GET /api/migrations")
		}
		time.Sleep(pollEvery)
	}

	for _, tc := range []struct {
		name, id, site, zip string
		files               []migpkg.BuildFile
	}{
		{"api", c.ID, "hr", apiZip, apiFiles},
		{"drop", dropID, "finance", dropZip, dropFiles},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := e.waitEnded(tc.id, jobs.StateCompleted)
			checkCompleted(t, e, j, tc.site, tc.zip, tc.files)
		})
	}
	if !e.stagingExists(dropName) {
		t.Errorf("the dropped zip is gone from migration-staging before the retention")
	}
}

// checkCompleted checks a Completed job against SharePoint's view and its imported files.
func checkCompleted(t *testing.T, e *env, j api.Job, site, zipPath string, files []migpkg.BuildFile) {
	t.Helper()
	spoJobs := e.spoJobs("/sites/" + site)
	if len(spoJobs) != 1 {
		t.Fatalf("site %s: %d SPO jobs, want 1", site, len(spoJobs))
	}
	sj := spoJobs[0]
	if !strings.EqualFold(sj.ID, j.SPOJobID) || sj.Outcome != "Completed" {
		t.Fatalf("SPO job %s (%s), the record names %s", sj.ID, sj.Outcome, j.SPOJobID)
	}
	if j.Counters.Files.Done != int64(len(files)) || j.Counters.Bytes.Done != sumSizes(files) ||
		j.Counters.Objects.Done != sj.Counters.ObjectsProcessed || j.Counters.Errors != 0 {
		t.Errorf("counters %+v; SharePoint: %+v; package: %d files, %d bytes", j.Counters, sj.Counters, len(files), sumSizes(files))
	}
	if j.EndedAt == nil || j.FailureReason != "" {
		t.Errorf("endedAt %v, failureReason %q", j.EndedAt, j.FailureReason)
	}
	// Power Automate's result operation: 200 with the log files once ended.
	status, _, b, err := e.call(http.MethodGet, "/migrations/"+url.PathEscape(j.ID)+"/result", nil)
	if err != nil || status != http.StatusOK {
		t.Fatalf("result: %d %v %s", status, err, b)
	}
	// The decrypted logs.
	files2, err := e.logs(j.ID)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files2 {
		names = append(names, f.Name)
	}
	want := "Import-" + strings.ToLower(j.SPOJobID) + "-1.log"
	found := false
	for _, n := range names {
		found = found || strings.EqualFold(n, want)
	}
	if !found {
		t.Fatalf("logs %v lack %s", names, want)
	}
	text, err := e.logText(j.ID, want)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.ToLower(text), strings.ToLower(j.SPOJobID)) || !strings.Contains(text, "File imported") {
		t.Errorf("log %s does not read as the decrypted import log of SPO job %s:\n%.400s", want, j.SPOJobID, text)
	}
	var res api.Job
	if err := json.Unmarshal(b, &res); err == nil && len(res.LogFiles) == 0 {
		// The result may have been read before the logs were stored; read it again now.
		_, _, b, _ = e.call(http.MethodGet, "/migrations/"+url.PathEscape(j.ID)+"/result", nil)
		if err := json.Unmarshal(b, &res); err != nil || len(res.LogFiles) == 0 {
			t.Errorf("result lists no log files: %s", b)
		}
	}
	if err := verifyImported(e.siteDir(site), zipPath, files); err != nil {
		t.Error(err)
	}
	got, err := importedFiles(e.siteDir(site))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(files) {
		t.Errorf("site %s holds %d files, the package %d", site, len(got), len(files))
	}
}

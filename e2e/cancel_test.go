package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/spomig/spomig/internal/jobs"
)

// TestCancel: a job cancelled before its package arrives stays Cancelled when the package comes anyway
// (the blob trigger leaves it alone, SharePoint never sees a job); a job that has ended cannot be cancelled
// (409 problem).
func TestCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	work := t.TempDir()

	early := e.mustCreate(e.s.SiteURL("cancel-early"), "e2e cancelled before upload")
	status, _, b, err := e.call(http.MethodDelete, "/migrations/"+early.ID, nil)
	if err != nil || status != http.StatusOK {
		t.Fatalf("DELETE: %d %s %v", status, b, err)
	}
	if j := e.mustJob(early.ID); j.State != jobs.StateCancelled {
		t.Fatalf("after DELETE the job is %s", j.State)
	}
	zip, err := buildZip(work, "early.zip", migpkgOptions(early), genFiles("", 5, 7, 20<<10))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.upload(early.UploadURL, zip); err != nil {
		// The upload SAS may still be used: the job, not the URL, decides.
		t.Fatalf("upload after cancel: %v", err)
	}
	e.waitLogLines(1, "blob ignored", early.ID)
	if j := e.mustJob(early.ID); j.State != jobs.StateCancelled {
		t.Fatalf("the package of a cancelled job changed it to %s", j.State)
	}
	if n := len(e.spoJobs("/sites/cancel-early")); n != 0 {
		t.Fatalf("SharePoint saw %d jobs for a cancelled migration", n)
	}

	done := e.mustCreate(e.s.SiteURL("cancel-late"), "e2e cancelled after its end")
	zip2, err := buildZip(work, "late.zip", migpkgOptions(done), genFiles("", 5, 8, 20<<10))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.upload(done.UploadURL, zip2); err != nil {
		t.Fatal(err)
	}
	e.waitEnded(done.ID, jobs.StateCompleted)
	status, _, b, err = e.call(http.MethodDelete, "/migrations/"+done.ID, nil)
	if err != nil || status != http.StatusConflict || !strings.Contains(string(b), "problem") {
		t.Fatalf("DELETE of an ended job: %d %s %v", status, b, err)
	}
	if j := e.mustJob(done.ID); j.State != jobs.StateCompleted {
		t.Fatalf("a refused cancel changed the job to %s", j.State)
	}
}

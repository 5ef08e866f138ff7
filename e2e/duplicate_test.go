package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spomig/spomig/internal/api"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/migpkg"
	"github.com/spomig/spomig/internal/submit"
)

// dupSettings make redeliveries quick: a failed queue message is visible again after 2 s.
var dupSettings = map[string]string{
	"AzureFunctionsJobHost__extensions__queues__visibilityTimeout":  "00:00:02",
	"AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:01",
}

// TestDuplicateDeliveries: every trigger delivered more than once, on one stack.
//   - submit: the same submit message enqueued twice more (base64 JSON on migration-submit) and once
//     more through the admin endpoint, while the product's own message is processed, and again after the
//     end → one SPO job;
//   - blob trigger: the staging blob delivered twice more through the admin endpoint while the normal
//     trigger runs, and again after the end → one consistent package (every file imported intact) and
//     one SPO job; the same for a self-service drop (one record, one SPO job);
//   - MonitorTimer run concurrently, several at once, straight on the handler (as several instances
//     would) for a job with item errors → every event applied once: the error count equals SharePoint's,
//     no item failure kept twice, no transition recorded twice;
//   - the HTTP create retried with the same Idempotency-Key (a flow's retry policy) → one job, answered
//     again with the same id and a fresh upload URL.
func TestDuplicateDeliveries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{Settings: dupSettings})
	work := t.TempDir()
	build := func(name string, c created, files []migpkg.BuildFile, webID string) string {
		if webID == "" {
			webID = c.WebID
		}
		p, err := buildZip(work, name, migpkg.BuilderOptions{SiteURL: c.SiteURL, WebID: webID}, files)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Create and build everything first, then run the three scenarios at once.
	subC := e.mustCreate(e.s.SiteURL("dup-submit"), "e2e duplicate submit")
	subFiles := genFiles("", 60, 11, 64<<10)
	subZip := build("submit.zip", subC, subFiles, "")

	blobC := e.mustCreate(e.s.SiteURL("dup-blob"), "e2e duplicate blob trigger")
	blobFiles := append(genFiles("", 40, 12, 64<<10), migpkg.BuildFile{Path: "Large/one.bin", Size: 6 << 20})
	blobZip := build("blob.zip", blobC, blobFiles, "")

	dropFiles := genFiles("drop", 25, 13, 32<<10)
	dropZip, err := buildZip(work, "drop.zip", migpkg.BuilderOptions{SiteURL: e.s.SiteURL("dup-drop"), WebID: e.s.SPO.WebID("dup-drop")}, dropFiles)
	if err != nil {
		t.Fatal(err)
	}
	const dropName = "drops/dup.zip"

	monC := e.mustCreate(e.s.SiteURL("dup-monitor"), "e2e concurrent monitors")
	monFiles := append(genFiles("Good", 12, 14, 16<<10), genFiles("Bad", 10, 15, 16<<10)...)
	// SharePoint refuses the files of the Bad folder item by item (the emulator's item-error fault, as
	// for a locked file or a blocked type): an event applied twice would show in the error count and in
	// the item failures kept.
	e.s.SPO.SetFaults("dup-monitor", spoemu.Faults{ItemError: &spoemu.ItemError{Match: "/Bad/", Message: "The file is locked for editing"}})
	monZip := build("monitor.zip", monC, monFiles, "")

	var subJob, blobJob, monJob api.Job
	var dropID string
	err = parallel(
		// Submit: the product's message plus two copies on the queue and one through the admin endpoint,
		// all as soon as the job is staged.
		func() error {
			if err := e.upload(subC.UploadURL, subZip); err != nil {
				return err
			}
			if _, err := e.waitJobErr(subC.ID, "staging", jobTimeout, func(j api.Job) bool { return j.State != jobs.StateAwaitingPackage && j.State != jobs.StateEncrypting }); err != nil {
				return err
			}
			if err := parallel(
				func() error { return e.enqueueSubmit(subC.ID) },
				func() error { return e.enqueueSubmit(subC.ID) },
				func() error { return e.invoke("SubmitQueueTrigger", submit.EncodeMessage(subC.ID)) },
			); err != nil {
				return err
			}
			var err error
			subJob, err = e.follow(subC.ID, func(api.Job) {})
			return err
		},
		// Blob trigger: two more deliveries while the normal trigger runs.
		func() error {
			if err := e.upload(blobC.UploadURL, blobZip); err != nil {
				return err
			}
			path := "migration-staging/" + blobC.ID + ".zip"
			if err := parallel(
				func() error { return e.invoke("EncryptBlobTrigger", path) },
				func() error { time.Sleep(500 * time.Millisecond); return e.invoke("EncryptBlobTrigger", path) },
			); err != nil {
				return err
			}
			var err error
			blobJob, err = e.follow(blobC.ID, func(api.Job) {})
			return err
		},
		// A self-service drop delivered three times at once.
		func() error {
			if err := e.drop(dropName, dropZip, map[string]string{"siteurl": e.s.SiteURL("dup-drop")}); err != nil {
				return err
			}
			return parallel(
				func() error { return e.invoke("EncryptBlobTrigger", "migration-staging/"+dropName) },
				func() error { return e.invoke("EncryptBlobTrigger", "migration-staging/"+dropName) },
			)
		},
		// MonitorTimer: four runs at once, every 300 ms, on the handler itself, while the job runs.
		func() error {
			if err := e.upload(monC.UploadURL, monZip); err != nil {
				return err
			}
			base, err := e.handlerURL()
			if err != nil {
				return err
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var runErr error
			var mu sync.Mutex
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						case <-time.After(300 * time.Millisecond):
						}
						if err := e.runMonitorDirect(base, false); err != nil {
							mu.Lock()
							runErr = err
							mu.Unlock()
						}
					}
				}()
			}
			monJob, err = e.follow(monC.ID, func(api.Job) {})
			// A few more concurrent runs after the end (log copies, late events).
			time.Sleep(2 * time.Second)
			close(stop)
			wg.Wait()
			if err != nil {
				return err
			}
			return runErr
		},
	)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("submit message", func(t *testing.T) {
		if subJob.State != jobs.StateCompleted {
			t.Fatalf("ended %s: %s", subJob.State, subJob.FailureReason)
		}
		// Once more after the end: acknowledged, nothing submitted.
		if err := e.enqueueSubmit(subC.ID); err != nil {
			t.Fatal(err)
		}
		e.waitQueueEmpty("migration-submit")
		checkCompleted(t, e, e.mustJob(subC.ID), "dup-submit", subZip, subFiles)
		if n := len(e.log.lines(subC.ID, "already submitted")); n == 0 {
			t.Errorf("no submit attempt was acknowledged as a duplicate: the duplicates were not delivered")
		}
	})
	t.Run("blob trigger", func(t *testing.T) {
		if blobJob.State != jobs.StateCompleted {
			t.Fatalf("ended %s: %s", blobJob.State, blobJob.FailureReason)
		}
		before := len(e.log.lines(blobC.ID, "past staging"))
		if err := e.invoke("EncryptBlobTrigger", "migration-staging/"+blobC.ID+".zip"); err != nil {
			t.Fatal(err)
		}
		e.waitLogLines(before+1, blobC.ID, "past staging")
		checkCompleted(t, e, e.mustJob(blobC.ID), "dup-blob", blobZip, blobFiles)
		staged := 0
		for _, h := range e.mustJob(blobC.ID).History {
			if h.State == jobs.StateStaged {
				staged++
			}
		}
		if staged != 1 {
			t.Errorf("the package was staged %d times", staged)
		}
	})
	t.Run("drop", func(t *testing.T) {
		deadline := time.Now().Add(jobTimeout)
		for {
			all, err := e.list()
			if err != nil {
				t.Fatal(err)
			}
			var drops []api.Job
			for _, j := range all {
				if j.Source == jobs.SourceDrop {
					drops = append(drops, j)
				}
			}
			if len(drops) > 1 {
				t.Fatalf("one drop made %d jobs", len(drops))
			}
			if len(drops) == 1 && drops[0].Ended {
				dropID = drops[0].ID
				if drops[0].State != jobs.StateCompleted {
					t.Fatalf("drop ended %s: %s", drops[0].State, drops[0].FailureReason)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the drop did not end within %s", jobTimeout)
			}
			time.Sleep(pollEvery)
		}
		checkCompleted(t, e, e.mustJob(dropID), "dup-drop", dropZip, dropFiles)
	})
	t.Run("concurrent monitors", func(t *testing.T) {
		if monJob.State != jobs.StateCompletedWithErrors {
			t.Fatalf("ended %s, want CompletedWithErrors (10 file URLs SharePoint refuses): %s", monJob.State, monJob.FailureReason)
		}
		j := e.mustJob(monC.ID)
		spo := e.spoJobs("/sites/dup-monitor")
		if len(spo) != 1 {
			t.Fatalf("%d SPO jobs", len(spo))
		}
		c := spo[0].Counters
		if j.Counters.Errors != 10 || j.Counters.Errors != c.TotalErrors || j.Counters.Warnings != c.TotalWarnings || j.Counters.Objects.Done != c.ObjectsProcessed {
			t.Errorf("record counters %+v, SharePoint's %+v", j.Counters, c)
		}
		seen := map[string]bool{}
		for _, f := range j.FirstErrors {
			k := fmt.Sprintf("%s|%s|%s|%s", f.Kind, f.ObjectType, f.URL, f.Message)
			if seen[k] {
				t.Errorf("item failure kept twice: %s", k)
			}
			seen[k] = true
		}
		if want := min(c.TotalErrors+c.TotalWarnings, jobs.MaxFirstErrors); int64(len(j.FirstErrors)) != want {
			t.Errorf("%d item failures kept, want %d", len(j.FirstErrors), want)
		}
		hist := map[string]int{}
		for _, h := range j.History {
			hist[string(h.State)+" "+h.Reason]++
		}
		for k, n := range hist {
			if n > 1 {
				t.Errorf("history entry %q recorded %d times", k, n)
			}
		}
		var states []string
		for _, h := range j.History {
			if !strings.HasPrefix(h.Reason, submit.NotePrefix) {
				states = append(states, string(h.State))
			}
		}
		t.Logf("history: %s; %d errors", strings.Join(states, " → "), j.Counters.Errors)
	})
	t.Run("http create", func(t *testing.T) {
		post := func() (string, error) {
			req, err := http.NewRequest(http.MethodPost, e.s.APIBase()+"/migrations",
				strings.NewReader(fmt.Sprintf(`{"siteUrl": %q, "label": "e2e idempotent create"}`, e.s.SiteURL("dup-http"))))
			if err != nil {
				return "", err
			}
			req.Header.Set("x-functions-key", e.s.Host.FunctionKey())
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", "flow-run-0001")
			resp, err := e.cli.Do(req)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var j api.Job
			if err := json.Unmarshal(b, &j); err != nil || resp.StatusCode != http.StatusCreated || j.Upload == nil {
				return "", fmt.Errorf("POST with Idempotency-Key: %d %s", resp.StatusCode, b)
			}
			e.record("POST /migrations 201", b, sigOf(j.Upload.URL))
			return j.ID, nil
		}
		var ids [3]string
		if err := parallel(
			func() (err error) { ids[0], err = post(); return err },
			func() (err error) { ids[1], err = post(); return err },
		); err != nil {
			t.Fatal(err)
		}
		var err error
		if ids[2], err = post(); err != nil {
			t.Fatal(err)
		}
		if ids[0] != ids[1] || ids[1] != ids[2] {
			t.Fatalf("one Idempotency-Key, several jobs: %v", ids)
		}
		all, err := e.list()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, j := range all {
			if j.Label == "e2e idempotent create" {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d jobs with the label, want 1", n)
		}
	})
}

func (e *env) mustJob(id string) api.Job {
	e.t.Helper()
	j, b, err := e.job(id)
	if err != nil {
		e.t.Fatalf("%v: %s", err, b)
	}
	return j
}

// waitQueueEmpty waits until an app queue holds no message (visible or not).
func (e *env) waitQueueEmpty(name string) {
	e.t.Helper()
	deadline := time.Now().Add(jobTimeout)
	for {
		n, err := e.queueDepth(name)
		if err == nil && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("queue %s still holds %d messages (%v)", name, n, err)
		}
		time.Sleep(pollEvery)
	}
}

// waitLogLines waits until n captured log lines contain every word.
func (e *env) waitLogLines(n int, words ...string) {
	e.t.Helper()
	deadline := time.Now().Add(jobTimeout)
	for len(e.log.lines(words...)) < n {
		if time.Now().After(deadline) {
			e.t.Fatalf("no log line with %q within %s", words, jobTimeout)
		}
		time.Sleep(pollEvery)
	}
}

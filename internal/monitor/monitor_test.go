package monitor

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/spomig/spomig/functions"
	"github.com/spomig/spomig/internal/crypt"
	"github.com/spomig/spomig/internal/dev/azurite"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/spo"
	"github.com/spomig/spomig/internal/submit"
	"github.com/spomig/spomig/internal/vault"
)

var sourceSets = map[string][]string{
	"queue":    {SourceQueue},
	"progress": {SourceProgress},
	"both":     {SourceQueue, SourceProgress},
}

// A job followed through Queued, Running and Completed, from each source and from both: every state
// is entered once, the counters are SharePoint's, the queue is emptied, the logs are kept.
func TestLifecycle(t *testing.T) {
	for name, sources := range sourceSets {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, worldOptions{gate: true})
			tj := w.newJob(jobOptions{files: []string{"a.txt", "b/c.txt", "b/d.txt"}})
			run := func() { w.runAt(0, func(o *Options) { o.Sources = sources }) }

			w.waitEvent(tj, crypt.EventJobQueued)
			run()
			if j := w.get(tj.id); j.State != jobs.StateQueued || j.LastEventAt.IsZero() {
				t.Fatalf("state %s, last event %s; want Queued", j.State, j.LastEventAt)
			}
			w.release(spoemu.PhaseQueued)
			w.waitEvent(tj, crypt.EventJobStart)
			run()
			if j := w.get(tj.id); j.State != jobs.StateRunning {
				t.Fatalf("state %s, want Running", j.State)
			}
			w.release(spoemu.PhaseProcessing)
			info := w.wait(tj)
			run()
			j := w.get(tj.id)
			if j.State != jobs.StateCompleted {
				t.Fatalf("state %s (%s), want Completed", j.State, j.FailureReason)
			}
			if !slices.Equal(transitions(j), []jobs.State{jobs.StateStaged, jobs.StateSubmitted, jobs.StateQueued, jobs.StateRunning, jobs.StateCompleted}) {
				t.Fatalf("path %v", transitions(j))
			}
			if j.FilesDone != info.Counters.FilesCreated || j.FilesDone != 3 || j.BytesDone != info.Counters.BytesProcessed ||
				j.ObjectsTotal != info.Counters.TotalExpectedSPObjects || j.Errors != 0 {
				t.Fatalf("counters files %d bytes %d objects %d errors %d; emulator %+v", j.FilesDone, j.BytesDone, j.ObjectsTotal, j.Errors, info.Counters)
			}
			if want := len(w.emu.Events(tj.spoJobID)); len(j.SeenEvents) != want {
				t.Fatalf("%d events seen, the emulator emitted %d", len(j.SeenEvents), want)
			}
			if slices.Contains(sources, SourceQueue) {
				if n := w.queueCount(tj.queue); n != 0 {
					t.Fatalf("%d messages left in the report queue", n)
				}
			}
			if j.LogsBlobPrefix != w.reports+"/"+j.ID+"/" {
				t.Fatalf("LogsBlobPrefix %q", j.LogsBlobPrefix)
			}
			w.checkLogs(tj, j)
			// Nothing new: another run changes nothing.
			v := j.Version
			run()
			if j := w.get(tj.id); j.Version != v {
				t.Fatalf("an idle run wrote the record (version %d → %d)", v, j.Version)
			}
			w.checkNoSecrets()
		})
	}
}

// checkLogs compares the reports container with the logs the emulator wrote, decrypted, and
// items.csv with the item failures.
func (w *world) checkLogs(tj *testJob, j *jobs.Job) [][]string {
	w.t.Helper()
	found := 0
	for _, ext := range []string{"log", "err", "wrn"} {
		name := "Import-" + tj.spoJobID + "-1." + ext
		want, ok := w.emulatorLog(tj, name)
		if !ok {
			continue
		}
		found++
		if got := w.readBlob(w.reports, j.ID+"/"+name); !bytes.Equal(got, want) {
			w.t.Fatalf("%s: the stored log differs from the emulator's (%d vs %d bytes)", name, len(got), len(want))
		}
	}
	if found == 0 {
		w.t.Fatal("the emulator wrote no log")
	}
	recs, err := csv.NewReader(bytes.NewReader(w.readBlob(w.reports, j.ID+"/items.csv"))).ReadAll()
	if err != nil {
		w.t.Fatal(err)
	}
	if !slices.Equal(recs[0], itemsHeader) {
		w.t.Fatalf("items.csv header %v", recs[0])
	}
	return recs[1:]
}

// Errors and warnings: the job ends CompletedWithErrors, the items are counted and kept, and
// items.csv lists them as the .err/.wrn logs do, with the object type from the events.
func TestCompletedWithErrors(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOptions{})
	tj := w.newJob(jobOptions{skipData: 1, skipOpt: true})
	info := w.wait(tj)
	if info.Outcome != spoemu.OutcomeCompletedWithErrors {
		t.Fatalf("emulator outcome %s", info.Outcome)
	}
	w.runAt(0, nil)
	j := w.get(tj.id)
	if j.State != jobs.StateCompletedWithErrors || j.Errors != 1 || j.Warnings != 1 || len(j.FirstErrors) != 2 {
		t.Fatalf("state %s, errors %d, warnings %d, kept %+v", j.State, j.Errors, j.Warnings, j.FirstErrors)
	}
	rows := w.checkLogs(tj, j)
	if len(rows) != 2 {
		t.Fatalf("items.csv rows %v", rows)
	}
	var kinds []string
	for _, r := range rows {
		kinds = append(kinds, r[0])
		if r[0] == "error" && (r[1] != "File" || r[3] != "-2147024894" || !strings.Contains(r[4], "does not exist")) {
			t.Fatalf("error row %q", r)
		}
	}
	slices.Sort(kinds)
	if !slices.Equal(kinds, []string{"error", "warning"}) {
		t.Fatalf("kinds %v", kinds)
	}
	w.checkNoSecrets()
}

func TestFatalError(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOptions{emu: func(o *spoemu.Options) {
		o.Faults = spoemu.Faults{Fatal: &spoemu.Fatal{Count: 1, ErrorCode: "-2147213196", Message: "Injected fatal error"}}
	}})
	tj := w.newJob(jobOptions{})
	w.wait(tj)
	w.runAt(0, func(o *Options) { o.Sources = []string{SourceProgress} })
	j := w.get(tj.id)
	if j.State != jobs.StateFailed || !strings.Contains(j.FailureReason, "JobFatalError -2147213196") ||
		!strings.Contains(j.FailureReason, "Injected fatal error") {
		t.Fatalf("state %s, reason %q", j.State, j.FailureReason)
	}
	rows := w.checkLogs(tj, j)
	if len(rows) != 1 || rows[0][0] != "error" || rows[0][3] != "-2147213196" {
		t.Fatalf("items %v", rows)
	}
}

func TestPostponed(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOptions{emu: func(o *spoemu.Options) {
		o.Faults = spoemu.Faults{Postpone: &spoemu.Postpone{Count: 1, Delay: spoemu.Duration(time.Hour), Reason: "JobInQueue:Resource"}}
	}})
	tj := w.newJob(jobOptions{})
	w.waitEvent(tj, crypt.EventJobPostponed)
	before := time.Now()
	w.runAt(0, nil)
	j := w.get(tj.id)
	if j.State != jobs.StatePostponed || !strings.Contains(j.Postponed.Reason, "JobInQueue:Resource") {
		t.Fatalf("state %s, postponed %+v", j.State, j.Postponed)
	}
	if next := j.Postponed.NextPickupTime; next.Before(before.Add(50*time.Minute)) || next.After(time.Now().Add(70*time.Minute)) {
		t.Fatalf("next pickup %s", next)
	}
}

// An event seen twice — the same events sealed again and enqueued twice — is applied once.
func TestEventSeenTwice(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOptions{})
	tj := w.newJob(jobOptions{skipData: 1})
	w.wait(tj)
	w.runAt(0, func(o *Options) { o.Sources = []string{SourceQueue} })
	first := w.get(tj.id)
	if first.State != jobs.StateCompletedWithErrors {
		t.Fatalf("state %s", first.State)
	}
	q, err := azqueue.NewQueueClientWithNoCredential(tj.queue, &azqueue.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: w.ca.HTTPClient()}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for _, e := range w.emu.Events(tj.spoJobID) {
			text, err := crypt.SealEvent([]byte(e), tj.spoJobID, tj.key)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := q.EnqueueMessage(context.Background(), text, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.runAt(0, func(o *Options) { o.Sources = []string{SourceQueue, SourceProgress} })
	j := w.get(tj.id)
	if j.Version != first.Version || j.Errors != first.Errors || len(j.FirstErrors) != len(first.FirstErrors) {
		t.Fatalf("replayed events changed the job: version %d → %d, errors %d → %d", first.Version, j.Version, first.Errors, j.Errors)
	}
	if n := w.queueCount(tj.queue); n != 0 {
		t.Fatalf("%d messages left", n)
	}
}

// Messages of jobs we do not know are left in the queue, and deleted once older than the max age.
func TestUnknownMessages(t *testing.T) {
	for _, tc := range []struct {
		name  string
		shift time.Duration
		left  int
	}{
		{"young: left for their owner", 0, 3},
		{"old: deleted", DefaultUnknownMessageMaxAge + time.Hour, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, worldOptions{gate: true})
			tj := w.newJob(jobOptions{})
			w.waitEvent(tj, crypt.EventJobQueued)
			q, err := azqueue.NewQueueClientWithNoCredential(tj.queue, &azqueue.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: w.ca.HTTPClient()}})
			if err != nil {
				t.Fatal(err)
			}
			other := bytes.Repeat([]byte{7}, 32)
			ev, _ := crypt.MarshalEvent(crypt.EventJobQueued, "0e5f0c8e-0d6b-4b4e-9e4b-7c1c9d1e2f3a", time.Now(), nil)
			sealed, _ := crypt.SealEvent(ev, "0e5f0c8e-0d6b-4b4e-9e4b-7c1c9d1e2f3a", other)
			for _, text := range []string{sealed, crypt.PlainMessage(ev), "not an event at all"} {
				if _, err := q.EnqueueMessage(context.Background(), text, nil); err != nil {
					t.Fatal(err)
				}
			}
			w.runAt(tc.shift, func(o *Options) { o.Sources = []string{SourceQueue} })
			if j := w.get(tj.id); j.State != jobs.StateQueued {
				t.Fatalf("our job is %s", j.State)
			}
			if n := w.queueCount(tj.queue); n != tc.left {
				t.Fatalf("%d messages in the queue, want %d", n, tc.left)
			}
		})
	}
}

// Stuck jobs: a job still queued at SharePoint is noted and waits; a job SharePoint forgot fails.
func TestStuck(t *testing.T) {
	t.Run("still queued", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t, worldOptions{gate: true})
		tj := w.newJob(jobOptions{})
		w.waitEvent(tj, crypt.EventJobQueued)
		w.runAt(0, nil)
		w.runAt(7*time.Hour, nil)
		j := w.get(tj.id)
		checks, _ := notes(j, noteStatusCheck)
		if j.State != jobs.StateQueued || len(checks) != 1 || !strings.Contains(checks[0], "Queued") {
			t.Fatalf("state %s, checks %q", j.State, checks)
		}
		w.runAt(8*time.Hour, nil) // an hour after the check: not asked again
		if checks, _ := notes(w.get(tj.id), noteStatusCheck); len(checks) != 1 {
			t.Fatalf("checks %q", checks)
		}
		w.runAt(14*time.Hour, nil)
		if checks, _ := notes(w.get(tj.id), noteStatusCheck); len(checks) != 2 {
			t.Fatalf("checks %q", checks)
		}
	})
	t.Run("missed end found", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t, worldOptions{})
		tj := w.newJob(jobOptions{noQueue: true}) // queue source only, and no queue: no event ever arrives
		w.wait(tj)
		queueOnly := func(o *Options) { o.Sources = []string{SourceQueue} }
		w.runAt(0, queueOnly)
		if j := w.get(tj.id); j.State != jobs.StateSubmitted {
			t.Fatalf("state %s", j.State)
		}
		w.runAt(7*time.Hour, queueOnly)
		if j := w.get(tj.id); j.State != jobs.StateCompleted {
			t.Fatalf("state %s (%s), want Completed from the progress log", j.State, j.FailureReason)
		}
	})
	t.Run("status expired", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t, worldOptions{emu: func(o *spoemu.Options) { o.JobRetention = time.Millisecond }})
		tj := w.newJob(jobOptions{noQueue: true})
		w.wait(tj)
		time.Sleep(5 * time.Millisecond) // past the emulator's retention
		w.runAt(7*time.Hour, func(o *Options) { o.Sources = []string{SourceQueue} })
		j := w.get(tj.id)
		if j.State != jobs.StateFailed || !strings.Contains(j.FailureReason, "job status expired") {
			t.Fatalf("state %s, reason %q", j.State, j.FailureReason)
		}
	})
	t.Run("job not found", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t, worldOptions{})
		j := &jobs.Job{ID: "lost-" + time.Now().Format("150405.000000"), SiteURL: w.siteURL, WebID: w.emu.WebID(w.site),
			SPOJobID: "0a1b2c3d-0000-4000-8000-000000000001", State: jobs.StateSubmitted}
		if err := w.store.Create(context.Background(), j); err != nil {
			t.Fatal(err)
		}
		w.runAt(0, nil)
		if got := w.get(j.ID); got.State != jobs.StateSubmitted {
			t.Fatalf("failed before StuckAfter: %s", got.FailureReason)
		}
		w.runAt(7*time.Hour, nil)
		got := w.get(j.ID)
		if got.State != jobs.StateFailed || !strings.Contains(got.FailureReason, "job not found") {
			t.Fatalf("state %s, reason %q", got.State, got.FailureReason)
		}
	})
	t.Run("none without an end", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t, worldOptions{})
		j := &jobs.Job{ID: "none-" + time.Now().Format("150405.000000"), SiteURL: w.siteURL, WebID: w.emu.WebID(w.site),
			SPOJobID: "0a1b2c3d-0000-4000-8000-000000000002", State: jobs.StateSubmitted}
		if err := w.store.Create(context.Background(), j); err != nil {
			t.Fatal(err)
		}
		m := w.monitor(func(o *Options) {
			o.SPO = silentSPO{}
			o.Now = func() time.Time { return time.Now().Add(7 * time.Hour) }
		})
		if err := m.Run(context.Background(), false); err != nil {
			t.Fatal(err)
		}
		got := w.get(j.ID)
		if got.State != jobs.StateFailed || !strings.Contains(got.FailureReason, "None") || !strings.Contains(got.FailureReason, "no JobEnd") {
			t.Fatalf("state %s, reason %q", got.State, got.FailureReason)
		}
	})
}

// silentSPO answers every status None and has no events.
type silentSPO struct{}

func (silentSPO) GetMigrationJobProgress(_ context.Context, _, _, token string) (spo.Progress, error) {
	return spo.Progress{NextToken: token}, nil
}

func (silentSPO) GetMigrationJobStatus(context.Context, string, string) (spo.JobState, error) {
	return 0, nil
}

// A poisoned submit message, as the host writes it (base64 text), fails its job with the last error.
func TestPoisonedSubmission(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOptions{})
	tj := w.newJob(jobOptions{noSubmit: true})
	if _, err := w.store.Update(context.Background(), tj.id, func(j *jobs.Job) error {
		addNote(j, time.Now(), "submit failed: spo: CreateMigrationJobEncrypted: throttled (HTTP 429), retry after 2m0s")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	other := w.newJob(jobOptions{noSubmit: true}) // its attempt is still running
	if _, err := w.store.Update(context.Background(), other.id, func(j *jobs.Job) error {
		j.SubmitLease = jobs.Lease{Owner: "call/live", Expiry: time.Now().Add(time.Hour)}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pq := w.queue.NewQueueClient(w.poison)
	if _, err := pq.Create(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{tj.id, other.id, "no-such-job"} {
		if _, err := pq.EnqueueMessage(context.Background(), submit.EncodeQueueMessage(id), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pq.EnqueueMessage(context.Background(), "garbage", nil); err != nil {
		t.Fatal(err)
	}
	w.runAt(0, nil)
	j := w.get(tj.id)
	if j.State != jobs.StateFailed || j.FailureReason != "submission failed 5 times: spo: CreateMigrationJobEncrypted: throttled (HTTP 429), retry after 2m0s" {
		t.Fatalf("state %s, reason %q", j.State, j.FailureReason)
	}
	if o := w.get(other.id); o.State != jobs.StateStaged {
		t.Fatalf("the job with a live attempt is %s", o.State)
	}
	p, err := pq.GetProperties(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := *p.ApproximateMessagesCount; n != 1 {
		t.Fatalf("%d poison messages left, want 1 (the live attempt's)", n)
	}
}

// Callbacks: the report is POSTed after the end, retried after a failure, never to a host not allowed.
func TestCallback(t *testing.T) {
	t.Parallel()
	cb := newCallbackServer(t, 500, 200)
	w := newWorld(t, worldOptions{})
	tj := w.newJob(jobOptions{callback: cb.url + "/hooks/done?run=1"})
	refused := w.newJob(jobOptions{callback: "https://elsewhere.example.com/x"})
	w.wait(tj)
	w.wait(refused)
	opts := func(o *Options) {
		o.CallbackAllowedHosts = []string{cb.host}
		o.CallbackClient = cb.client
		o.Sources = []string{SourceProgress}
	}
	w.runAt(0, opts)
	if failed, _ := notes(w.get(tj.id), noteCallbackFailed); len(failed) != 1 || !strings.Contains(failed[0], "500") {
		t.Fatalf("failed attempts %q", failed)
	}
	w.runAt(10*time.Second, opts) // within the backoff: no attempt
	if cb.count() != 1 {
		t.Fatalf("%d attempts", cb.count())
	}
	w.runAt(2*time.Minute, opts)
	j := w.get(tj.id)
	if done, _ := notes(j, noteCallbackDone); len(done) != 1 || cb.count() != 2 {
		t.Fatalf("delivered %v after %d attempts", done, cb.count())
	}
	body := cb.last()
	if body.ID != tj.id || body.State != jobs.StateCompleted || body.SPOJobID != tj.spoJobID || body.LogsBlobPrefix == "" {
		t.Fatalf("report %+v", body)
	}
	w.runAt(time.Hour, opts)
	if cb.count() != 2 {
		t.Fatalf("delivered again: %d attempts", cb.count())
	}
	if gaveUp, _ := notes(w.get(refused.id), noteCallbackGaveUp); len(gaveUp) != 1 || !strings.Contains(gaveUp[0], "not allowed") {
		t.Fatalf("refused callback notes %q", gaveUp)
	}
}

// Clean-up: after Retention the secret goes, and for a completed job the staged package; a job with
// CleanupAt (a cancel) is cleaned up at that time.
func TestCleanup(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOptions{})
	done := w.newJob(jobOptions{})
	failed := w.newJob(jobOptions{noSubmit: true})
	if _, err := w.store.Update(context.Background(), failed.id, func(j *jobs.Job) error {
		return j.Transition(jobs.StateCancelled, time.Now(), "cancelled by the caller")
	}); err != nil {
		t.Fatal(err)
	}
	w.wait(done)
	w.runAt(0, nil)
	if j := w.get(done.id); j.State != jobs.StateCompleted || !j.CleanedUpAt.IsZero() {
		t.Fatalf("state %s, cleaned up %s", j.State, j.CleanedUpAt)
	}
	if _, err := w.custody.GetJob(context.Background(), done.id); err != nil {
		t.Fatalf("the secret went before the retention: %v", err)
	}
	// The cancel asks for an immediate clean-up.
	if _, err := w.store.Update(context.Background(), failed.id, func(j *jobs.Job) error {
		j.CleanupAt = time.Now()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	w.runAt(time.Minute, nil)
	c := w.get(failed.id)
	if c.CleanedUpAt.IsZero() {
		t.Fatal("the cancelled job was not cleaned up")
	}
	if _, err := w.custody.GetJob(context.Background(), failed.id); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("secret of the cancelled job: %v", err)
	}
	if _, err := w.blob.ServiceClient().NewContainerClient(w.staging).NewBlobClient(failed.id+".zip").GetProperties(context.Background(), nil); err != nil {
		t.Fatalf("the package of a job that did not complete was deleted: %v", err)
	}
	w.runAt(DefaultRetention+time.Hour, nil)
	j := w.get(done.id)
	if j.CleanedUpAt.IsZero() || j.LogsBlobPrefix == "" {
		t.Fatalf("cleaned up %s, logs %q", j.CleanedUpAt, j.LogsBlobPrefix)
	}
	if _, err := w.custody.GetJob(context.Background(), done.id); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("secret: %v", err)
	}
	if _, err := w.blob.ServiceClient().NewContainerClient(w.staging).NewBlobClient(done.id+".zip").GetProperties(context.Background(), nil); storageStatus(err) != 404 {
		t.Fatalf("staged package: %v", err)
	}
}

// Overlapping runs over the same jobs are harmless.
func TestOverlappingRuns(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOptions{})
	var tjs []*testJob
	for range 3 {
		tjs = append(tjs, w.newJob(jobOptions{skipData: 1}))
	}
	for _, tj := range tjs {
		w.wait(tj)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.monitor(nil).Run(context.Background(), false); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	w.runAt(0, nil)
	for _, tj := range tjs {
		j := w.get(tj.id)
		if j.State != jobs.StateCompletedWithErrors || j.Errors != 1 || len(j.FirstErrors) != 1 {
			t.Fatalf("state %s, errors %d, kept %d", j.State, j.Errors, len(j.FirstErrors))
		}
		if got := transitions(j); !slices.Equal(got, []jobs.State{jobs.StateStaged, jobs.StateSubmitted, jobs.StateQueued, jobs.StateRunning, jobs.StateCompletedWithErrors}) {
			t.Fatalf("path %v", got)
		}
		if n := w.queueCount(tj.queue); n != 0 {
			t.Fatalf("%d messages left", n)
		}
	}
	w.checkNoSecrets()
}

// When the metadata container can no longer be read, the report is kept from the events.
func TestLogsUnavailable(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOptions{})
	tj := w.newJob(jobOptions{skipData: 1})
	w.wait(tj)
	u, err := url.Parse(tj.meta)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.blob.DeleteContainer(context.Background(), strings.TrimPrefix(u.Path, "/"+azurite.Account+"/"), nil); err != nil {
		t.Fatal(err)
	}
	w.runAt(0, nil)
	j := w.get(tj.id)
	if j.State != jobs.StateCompletedWithErrors || j.LogsBlobPrefix == "" {
		t.Fatalf("state %s, logs %q", j.State, j.LogsBlobPrefix)
	}
	if stored, _ := notes(j, noteLogs); len(stored) != 1 || !strings.Contains(stored[0], "no longer readable") {
		t.Fatalf("notes %q", stored)
	}
	recs, err := csv.NewReader(bytes.NewReader(w.readBlob(w.reports, j.ID+"/items.csv"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[1][0] != "error" || recs[1][1] != "File" || recs[1][3] != "-2147024894" {
		t.Fatalf("items %q", recs)
	}
}

// signedVault keeps one job's signed callback URL beside its key.
type signedVault struct {
	*vault.Custody
	jobID, url string
}

func (v signedVault) GetJobCallbackURL(_ context.Context, jobID string) (string, error) {
	if jobID == v.jobID {
		return v.url, nil
	}
	return "", nil
}

// A signed callback URL kept in the vault is used, and its signature never reaches the logs.
func TestSignedCallbackFromTheVault(t *testing.T) {
	t.Parallel()
	cb := newCallbackServer(t, 202)
	w := newWorld(t, worldOptions{})
	// The record names the callback without its query (provision's form); the vault has the signed URL.
	tj := w.newJob(jobOptions{callback: cb.url + "/workflows/run"})
	w.wait(tj)
	const sig = "CALLBACKSIGSECRET"
	w.secrets = append(w.secrets, sig)
	w.runAt(0, func(o *Options) {
		o.Vault = signedVault{Custody: w.custody, jobID: tj.id, url: cb.url + "/workflows/run?api-version=1&sp=%2Ftriggers&sig=" + sig}
		o.CallbackAllowedHosts = []string{cb.host}
		o.CallbackClient = cb.client
	})
	if done, _ := notes(w.get(tj.id), noteCallbackDone); len(done) != 1 || cb.count() != 1 {
		t.Fatalf("delivered %v after %d attempts", done, cb.count())
	}
	w.checkNoSecrets()
}

var (
	_ functions.Monitor = (*Monitor)(nil)
	// The custody keeps signed callback URLs: the monitor reads them through it.
	_ CallbackURLVault = (*vault.Custody)(nil)
)

// A job provisioned with a signed callback URL (kept whole in its Key Vault secret, without its query in
// the record) is notified once, at the full signed URL, straight through *vault.Custody.
func TestSignedCallbackFromCustody(t *testing.T) {
	t.Parallel()
	cb := newCallbackServer(t, 200)
	w := newWorld(t, worldOptions{})
	const sig = "CuStOdYcAlLbAcKsIgSECRET0123456789"
	path, query := "/workflows/0123abcd/triggers/manual/paths/invoke", "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig="+sig
	w.secrets = append(w.secrets, sig)
	tj := w.newJob(jobOptions{callback: cb.url + path, signedCallback: cb.url + path + query})
	plain := w.newJob(jobOptions{}) // no callback anywhere: nothing is POSTed for it
	w.wait(tj)
	w.wait(plain)
	opts := func(o *Options) {
		o.CallbackAllowedHosts = []string{cb.host}
		o.CallbackClient = cb.client
		o.Sources = []string{SourceProgress}
	}
	w.runAt(0, opts)
	w.runAt(time.Hour, opts) // delivered: never again
	if done, _ := notes(w.get(tj.id), noteCallbackDone); len(done) != 1 || cb.count() != 1 {
		t.Fatalf("delivered %v after %d POSTs, want once", done, cb.count())
	}
	if got := cb.targets[0]; got != path+query {
		t.Fatalf("POSTed to %s, want the full signed URL", vault.RedactURL(cb.url+got))
	}
	if body := cb.last(); body.ID != tj.id || body.State != jobs.StateCompleted {
		t.Fatalf("report %+v", body)
	}
	if j := w.get(plain.id); j.CallbackURL != "" {
		t.Fatalf("plain job callback %q", j.CallbackURL)
	}
	w.checkNoSecrets()
	for _, id := range []string{tj.id, plain.id} {
		if text := fmt.Sprintf("%#v", w.get(id)); strings.Contains(text, sig) {
			t.Fatal("the record holds the signature")
		}
	}
}

// A run out of budget stops starting work and leaves the jobs as they were; the next run goes on.
func TestBudgetExhausted(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOptions{})
	tj := w.newJob(jobOptions{})
	w.wait(tj)
	m := w.monitor(func(o *Options) { o.Budget = time.Nanosecond })
	if err := m.Run(context.Background(), false); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err) // the listing of active jobs may already be cut short
	}
	if j := w.get(tj.id); j.State != jobs.StateSubmitted {
		t.Fatalf("state %s", j.State)
	}
	w.runAt(0, nil)
	if j := w.get(tj.id); j.State != jobs.StateCompleted || j.LogsBlobPrefix == "" {
		t.Fatalf("state %s, logs %q", j.State, j.LogsBlobPrefix)
	}
}

package monitor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/vault"
)

// finishEnded does the end-of-job work for the jobs that ended in this run.
func (r *run) finishEnded(ctx context.Context) {
	for _, id := range r.ended {
		if !r.before(0.9) {
			return
		}
		j, err := r.m.opts.Jobs.Get(ctx, id)
		if err != nil {
			r.log.WarnContext(ctx, "cannot read an ended job", "job_id", id, "err", err.Error())
			continue
		}
		r.finish(ctx, j)
	}
}

// sweepDue: in the first minute of every SweepInterval, on a past-due run, or when this process has
// not swept for SweepInterval (its first run included).
func (r *run) sweepDue(pastDue bool) bool {
	iv := r.m.opts.SweepInterval
	now := r.now()
	last := r.m.lastSweep.Load()
	return pastDue || iv <= time.Minute || now.Sub(now.Truncate(iv)) < time.Minute ||
		last == 0 || time.Since(time.Unix(0, last)) >= iv
}

// sweep visits the ended jobs that were not cleaned up or still owe a callback, then drains the report
// queues of their sites that this run has not read (late or repeated events of ended jobs would
// otherwise stay there until a new job of the site starts, or they expire).
func (r *run) sweep(ctx context.Context) {
	r.m.lastSweep.Store(time.Now().UnixNano())
	var recent []*jobs.Job
	seen := map[string]bool{}
	for j, err := range r.m.opts.Jobs.All(ctx, jobs.StateCompleted, jobs.StateCompletedWithErrors, jobs.StateFailed, jobs.StateCancelled) {
		if err != nil {
			r.log.WarnContext(ctx, "cannot list ended jobs", "err", err.Error())
			return
		}
		if !r.before(0.95) {
			return
		}
		if !r.pending(j) {
			continue
		}
		r.finish(ctx, j)
		if site := vault.NormalizeSite(j.SiteURL); r.m.useQueue && j.SPOJobID != "" && j.CleanedUpAt.IsZero() && !seen[site] {
			seen[site] = true
			recent = append(recent, &jobs.Job{ID: j.ID, SiteURL: j.SiteURL})
		}
	}
	if len(recent) > 0 {
		r.drainQueues(ctx, recent, 0.95)
	}
}

// pending reports whether an ended job still has work: logs, callback or clean-up.
func (r *run) pending(j *jobs.Job) bool {
	if !j.CleanedUpAt.IsZero() {
		return r.callbackPending(j)
	}
	return true
}

// finish does what an ended job still needs, in order: its logs (while the secret exists), its
// callback, its clean-up once due.
func (r *run) finish(ctx context.Context, j *jobs.Job) {
	if !j.Terminal() {
		return
	}
	if j.SPOJobID != "" && j.LogsBlobPrefix == "" && j.CleanedUpAt.IsZero() {
		switch err := r.storeLogs(ctx, j); {
		case err == nil:
		case errors.Is(err, errLogsNotYet):
			r.log.InfoContext(ctx, "no import log yet; looking again later", "job_id", j.ID)
		default:
			r.log.WarnContext(ctx, "cannot store the job's logs; looking again later", "job_id", j.ID, "err", err.Error())
		}
		if cur, err := r.m.opts.Jobs.Get(ctx, j.ID); err == nil {
			j = cur
		}
	}
	if r.callbackPending(j) {
		r.callback(ctx, j)
		if cur, err := r.m.opts.Jobs.Get(ctx, j.ID); err == nil {
			j = cur
		}
	}
	if r.cleanupDue(j) {
		r.cleanup(ctx, j)
	}
}

// ---- clean-up ----

func (r *run) cleanupDue(j *jobs.Job) bool {
	if !j.Terminal() || !j.CleanedUpAt.IsZero() {
		return false
	}
	now := r.now()
	if !j.CleanupAt.IsZero() {
		return !now.Before(j.CleanupAt)
	}
	return !j.EndedAt.IsZero() && now.Sub(j.EndedAt) >= r.m.opts.Retention
}

// cleanup deletes the job's Key Vault secret (soft delete; purged too with PurgeSecrets) and, when the
// job Completed, its staged package. The record stays, with CleanedUpAt.
func (r *run) cleanup(ctx context.Context, j *jobs.Job) {
	if err := r.m.opts.Vault.DeleteJob(ctx, j.ID); err != nil {
		r.log.WarnContext(ctx, "cannot delete the job secret", "job_id", j.ID, "err", err.Error())
		return
	}
	what := "secret deleted"
	if r.m.opts.PurgeSecrets {
		if err := r.m.opts.Vault.PurgeJob(ctx, j.ID); err != nil {
			r.log.WarnContext(ctx, "cannot purge the job secret", "job_id", j.ID, "err", err.Error())
			return
		}
		what = "secret deleted and purged"
	}
	if s, ok := r.secrets[j.ID]; ok {
		clear(s.Key)
		delete(r.secrets, j.ID)
	}
	if j.State == jobs.StateCompleted && j.StagingBlob.Container != "" && j.StagingBlob.Name != "" {
		_, err := r.m.opts.Storage.Blob.DeleteBlob(ctx, j.StagingBlob.Container, j.StagingBlob.Name, nil)
		switch {
		case err == nil:
			what += ", staged package deleted"
		case bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound):
		default:
			r.log.WarnContext(ctx, "cannot delete the staged package", "job_id", j.ID, "err", errText(err))
			return
		}
	}
	if _, err := r.update(ctx, j.ID, func(j *jobs.Job) error {
		if j.CleanedUpAt.IsZero() {
			now := r.now()
			j.CleanedUpAt = now
			addNote(j, now, noteCleanedUp+what)
		}
		return nil
	}); err != nil {
		r.log.WarnContext(ctx, "cannot record the clean-up", "job_id", j.ID, "err", err.Error())
		return
	}
	r.stats.cleaned++
	r.log.InfoContext(ctx, "job cleaned up", "job_id", j.ID, "done", what)
}

// ---- callbacks ----

// Report is the JSON body POSTed to a job's callback URL when it ends. It holds no secret.
type Report struct {
	ID             string             `json:"id"`
	Label          string             `json:"label,omitempty"`
	State          jobs.State         `json:"state"`
	SiteURL        string             `json:"siteUrl"`
	SPOJobID       string             `json:"spoJobId,omitempty"`
	FailureReason  string             `json:"failureReason,omitempty"`
	CreatedAt      time.Time          `json:"createdAt"`
	EndedAt        time.Time          `json:"endedAt"`
	FilesDone      int64              `json:"filesDone"`
	BytesDone      int64              `json:"bytesDone"`
	ObjectsDone    int64              `json:"objectsDone"`
	ObjectsTotal   int64              `json:"objectsTotal"`
	Errors         int64              `json:"errors"`
	Warnings       int64              `json:"warnings"`
	FirstErrors    []jobs.ItemFailure `json:"firstErrors,omitempty"`
	LogsBlobPrefix string             `json:"logsBlobPrefix,omitempty"`
}

// NewReport is the final report of an ended job.
func NewReport(j *jobs.Job) Report {
	return Report{ID: j.ID, Label: j.Label, State: j.State, SiteURL: j.SiteURL, SPOJobID: j.SPOJobID,
		FailureReason: j.FailureReason, CreatedAt: j.CreatedAt, EndedAt: j.EndedAt, FilesDone: j.FilesDone,
		BytesDone: j.BytesDone, ObjectsDone: j.ObjectsDone, ObjectsTotal: j.ObjectsTotal, Errors: j.Errors,
		Warnings: j.Warnings, FirstErrors: j.FirstErrors, LogsBlobPrefix: j.LogsBlobPrefix}
}

// callbackPending: the job has a callback that was neither delivered nor abandoned.
func (r *run) callbackPending(j *jobs.Job) bool {
	if !j.Terminal() {
		return false
	}
	if done, _ := notes(j, noteCallbackDone); len(done) > 0 {
		return false
	}
	if gaveUp, _ := notes(j, noteCallbackGaveUp); len(gaveUp) > 0 {
		return false
	}
	// The record names every callback (a signed one without its query: the full URL is in the vault).
	return j.CallbackURL != ""
}

// callback POSTs the job's report to its callback URL: one attempt per run, with a short timeout,
// after a backoff that doubles with each failed attempt; it gives up after CallbackMaxAttempts. Each
// attempt is first claimed on the record through its ETag (a "sending" note), so that overlapping runs
// (the run that saw the end, sweeps, a past-due run) never POST the same report twice: a run that finds
// an attempt in flight, or the callback delivered or abandoned, leaves it alone.
func (r *run) callback(ctx context.Context, j *jobs.Job) {
	if !r.callbackDue(j) {
		return
	}
	target, err := r.callbackURL(ctx, j)
	if err != nil {
		r.log.WarnContext(ctx, "cannot read the job's callback URL", "job_id", j.ID, "err", err.Error())
		return
	}
	if target == "" {
		if j.CallbackURL == "" { // nothing anywhere: remember it, so that sweeps stop asking
			r.noteCallback(ctx, j.ID, noteCallbackGaveUp+"no callback URL")
		}
		return
	}
	safe := redactURL(target)
	if why := r.callbackRefused(target); why != "" {
		r.log.WarnContext(ctx, "callback refused", "job_id", j.ID, "url", safe, "why", why)
		r.noteCallback(ctx, j.ID, noteCallbackGaveUp+why)
		return
	}
	attempt := 0
	if _, err := r.update(ctx, j.ID, func(cur *jobs.Job) error {
		if !r.callbackDue(cur) {
			return errCallbackTaken
		}
		failed, _ := notes(cur, noteCallbackFailed)
		attempt = len(failed) + 1
		addNote(cur, r.now(), fmt.Sprintf("%sattempt %d", noteCallbackSending, attempt))
		return nil
	}); err != nil {
		if !errors.Is(err, errCallbackTaken) {
			r.log.WarnContext(ctx, "cannot claim the callback", "job_id", j.ID, "err", err.Error())
		}
		return
	}
	cbCtx, cancel := context.WithTimeout(ctx, r.m.opts.CallbackTimeout)
	defer cancel()
	err = r.post(cbCtx, target, j)
	if err == nil {
		r.stats.callbacks++
		r.log.InfoContext(ctx, "callback delivered", "job_id", j.ID, "url", safe, "attempt", attempt)
		r.noteCallback(ctx, j.ID, noteCallbackDone)
		return
	}
	text := errText(err)
	r.log.WarnContext(ctx, "callback failed", "job_id", j.ID, "url", safe, "attempt", attempt, "err", text)
	r.noteCallback(ctx, j.ID, fmt.Sprintf("%sattempt %d: %s", noteCallbackFailed, attempt, text))
	if attempt >= r.m.opts.CallbackMaxAttempts {
		r.noteCallback(ctx, j.ID, fmt.Sprintf("%safter %d attempts", noteCallbackGaveUp, attempt))
	}
}

// errCallbackTaken aborts a claim: another run is sending, or the callback is settled or backing off.
var errCallbackTaken = errors.New("callback not due")

// callbackDue: per the record alone, an attempt may start now — not delivered or abandoned, no attempt
// in flight (a "sending" note newer than the last failure and younger than the callback timeout plus a
// minute), and the backoff after the last failure has passed.
func (r *run) callbackDue(j *jobs.Job) bool {
	if done, _ := notes(j, noteCallbackDone); len(done) > 0 {
		return false
	}
	if gaveUp, _ := notes(j, noteCallbackGaveUp); len(gaveUp) > 0 {
		return false
	}
	failed, failedAt := notes(j, noteCallbackFailed)
	var lastFailed time.Time
	if n := len(failed); n > 0 {
		lastFailed = failedAt[n-1]
		if r.now().Before(lastFailed.Add(r.m.opts.CallbackBackoff << min(n-1, 20))) {
			return false
		}
	}
	if _, sendingAt := notes(j, noteCallbackSending); len(sendingAt) > 0 {
		last := sendingAt[len(sendingAt)-1]
		if last.After(lastFailed) && r.now().Before(last.Add(r.m.opts.CallbackTimeout+time.Minute)) {
			return false
		}
	}
	return true
}

func (r *run) callbackURL(ctx context.Context, j *jobs.Job) (string, error) {
	if cv, ok := r.m.opts.Vault.(CallbackURLVault); ok && j.CleanedUpAt.IsZero() {
		u, err := cv.GetJobCallbackURL(ctx, j.ID)
		if err != nil {
			return "", err
		}
		if u != "" {
			return u, nil
		}
	}
	return j.CallbackURL, nil
}

// callbackRefused says why a callback URL may not be used ("" when it may): https only, on an allowed
// host, no user information.
func (r *run) callbackRefused(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "":
		return "the callback URL is not an absolute URL"
	case !strings.EqualFold(u.Scheme, "https"):
		return "the callback URL is not https"
	case u.User != nil:
		return "the callback URL carries user information"
	}
	host := normHost(u.Host)
	for _, h := range r.m.opts.CallbackAllowedHosts {
		if normHost(strings.TrimSpace(h)) == host {
			return ""
		}
	}
	return "the callback host " + host + " is not allowed"
}

func normHost(h string) string {
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if host, port, err := net.SplitHostPort(h); err == nil && port == "443" {
		return host
	}
	return h
}

func (r *run) post(ctx context.Context, target string, j *jobs.Job) error {
	body, err := json.Marshal(NewReport(j))
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return errors.New("cannot build the request")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "spomig-monitor")
	resp, err := r.m.opts.CallbackClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // its text quotes the URL
			return errors.New(ue.Op + " callback: " + errText(ue.Err))
		}
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("the callback answered %s", resp.Status)
	}
	return nil
}

func (r *run) noteCallback(ctx context.Context, id, text string) {
	if _, err := r.update(ctx, id, func(j *jobs.Job) error {
		if text == noteCallbackDone {
			if done, _ := notes(j, noteCallbackDone); len(done) > 0 {
				return nil // delivered once is recorded once
			}
		}
		addNote(j, r.now(), text)
		return nil
	}); err != nil {
		r.log.WarnContext(ctx, "cannot record a callback attempt", "job_id", id, "err", err.Error())
	}
}

// redactURL is a URL for the logs: its query (a signature, perhaps) dropped.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.RawQuery != "" {
		u.RawQuery = "REDACTED"
	}
	u.User = nil
	return u.String()
}

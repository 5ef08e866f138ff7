package submit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/spo"
	"github.com/spomig/spomig/internal/vault"
)

// Jobs is the part of the job store the submitter uses (*jobs.Store).
type Jobs interface {
	Get(ctx context.Context, id string) (*jobs.Job, error)
	Update(ctx context.Context, id string, mutate func(*jobs.Job) error) (*jobs.Job, error)
}

// Vault reads a job's key and container SAS URIs, and a site's report queue (*vault.Custody).
type Vault interface {
	GetJob(ctx context.Context, jobID string) (*vault.JobSecret, error)
	GetQueue(ctx context.Context, site string) (string, error)
}

// SPO creates migration jobs (*spo.Client).
type SPO interface {
	CreateMigrationJobEncrypted(ctx context.Context, siteURL string, req spo.CreateJobRequest) (string, error)
}

var (
	_ Jobs  = (*jobs.Store)(nil)
	_ Vault = (*vault.Custody)(nil)
	_ SPO   = (*spo.Client)(nil)
)

// Defaults of Options.
const (
	DefaultLease           = 5 * time.Minute
	DefaultMaxDequeueCount = 5
	DefaultThrottleBudget  = 2 * time.Minute
	// maxThrottleRetries bounds the calls after throttled answers within one attempt, as
	// spo.DefaultMaxRetries bounds the client's own retries (a Retry-After of 0 is legal).
	maxThrottleRetries = spo.DefaultMaxRetries
	// minLease is the shortest lease accepted: the SharePoint call needs time within it.
	minLease = 10 * time.Second
	// resultWriteTimeout bounds the retries of the result write after SharePoint created a job.
	resultWriteTimeout = 30 * time.Second
)

// Lease owner prefixes: the two phases of an attempt (see the package documentation).
const (
	ownerClaim = "claim/"
	ownerCall  = "call/"
)

// Errors of Submit. Each is returned wrapped; the queue redelivers the message.
var (
	// ErrInProgress: another attempt holds the job's submit lease.
	ErrInProgress = errors.New("submission in progress in another attempt")
	// ErrNotStaged: the job is not staged yet (AwaitingPackage or Encrypting).
	ErrNotStaged = errors.New("job is not staged yet")
)

// Options configures New.
type Options struct {
	// Jobs, Vault and SPO are required.
	Jobs  Jobs
	Vault Vault
	SPO   SPO
	// Lease is how long a claim holds before another attempt may take it over (SPOMIG_SUBMIT_LEASE).
	// The SharePoint call must finish within it: it runs with a deadline of Lease minus a margin
	// (a fifth, at least 5s). Default 5m, at least 10s.
	Lease time.Duration
	// MaxDequeueCount is the host's maxDequeueCount (host.json extensions.queues): on that delivery a
	// failed attempt marks the job Failed. Default 5.
	MaxDequeueCount int64
	// ThrottleBudget is the total time one attempt may wait on the Retry-After of throttled (429/503)
	// CreateMigrationJobEncrypted answers before it calls again; the waits happen under a "claim/"
	// lease, outside the outcome-unknown window (see the package documentation). A wait that does not
	// fit in what is left of it, in the lease (Lease minus the call margin), in the context's deadline,
	// or that would follow the 10th retry, ends the attempt: the lease is released and Submit returns
	// the *spo.ThrottledError, so the queue redelivers the message. During the waits the attempt keeps
	// the job key (32 bytes) and the SAS URIs in memory. Default 2m; a negative value disables waiting.
	ThrottleBudget time.Duration
	// Logger receives one line per outcome. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock of leases and history. Default time.Now.
	Now func() time.Time
	// NewAttemptID returns an id unique to one Submit call (the lease owner). Default: host name, process
	// id and 64 random bits.
	NewAttemptID func() string
}

func (o *Options) setDefaults() {
	if o.Lease == 0 {
		o.Lease = DefaultLease
	}
	if o.MaxDequeueCount <= 0 {
		o.MaxDequeueCount = DefaultMaxDequeueCount
	}
	if o.ThrottleBudget == 0 {
		o.ThrottleBudget = DefaultThrottleBudget
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.NewAttemptID == nil {
		o.NewAttemptID = newAttemptID
	}
}

// Submitter submits staged jobs; it implements functions.Submitter. It is safe for concurrent use.
type Submitter struct {
	opts Options
	log  *slog.Logger
}

// New returns a Submitter.
func New(opts Options) (*Submitter, error) {
	opts.setDefaults()
	switch {
	case opts.Jobs == nil:
		return nil, errors.New("submit: Jobs is required")
	case opts.Vault == nil:
		return nil, errors.New("submit: Vault is required")
	case opts.SPO == nil:
		return nil, errors.New("submit: SPO is required")
	case opts.Lease < minLease:
		return nil, fmt.Errorf("submit: Lease %s is shorter than %s", opts.Lease, minLease)
	}
	return &Submitter{opts: opts, log: opts.Logger}, nil
}

// Submit handles one migration-submit message (see the package documentation). It returns nil when
// the message is done with: the job was submitted (now or before), ended, does not exist, or failed
// for good (the record says why). An error asks the host to deliver the message again.
func (s *Submitter) Submit(ctx context.Context, messageText string, dequeueCount int64) error {
	msg, err := ParseMessage(messageText)
	if err != nil {
		// Redelivery cannot fix it and it names no job to fail.
		s.log.ErrorContext(ctx, "submit message dropped", "err", err.Error(), "dequeue_count", dequeueCount)
		return nil
	}
	a := &attempt{s: s, jobID: msg.JobID, id: s.opts.NewAttemptID(), dequeueCount: dequeueCount}
	a.log = s.log.With("job_id", a.jobID, "attempt", a.id, "dequeue_count", dequeueCount)
	return a.run(ctx)
}

// attempt is one Submit call.
type attempt struct {
	s            *Submitter
	log          *slog.Logger
	jobID        string
	id           string
	dequeueCount int64
}

func (a *attempt) claimOwner() string { return ownerClaim + a.id }
func (a *attempt) callOwner() string  { return ownerCall + a.id }
func (a *attempt) now() time.Time     { return a.s.opts.Now() }

// done is a mutator's way of saying "nothing to do, acknowledge": the reason is logged.
type done struct{ reason string }

func (d *done) Error() string { return d.reason }

func (a *attempt) run(ctx context.Context) error {
	// 1. Claim.
	var site, webID string
	var abandoned bool
	_, err := a.s.opts.Jobs.Update(ctx, a.jobID, func(j *jobs.Job) error {
		site, webID, abandoned = "", "", false // the mutator may run more than once
		if err := ready(j); err != nil {
			return err
		}
		now := a.now()
		l := j.SubmitLease
		switch {
		case l.Owner == "" || l.Owner == a.claimOwner():
		case now.Before(l.Expiry):
			return fmt.Errorf("%w (lease %s until %s)", ErrInProgress, l.Owner, l.Expiry.UTC().Format(time.RFC3339))
		case strings.HasPrefix(l.Owner, ownerCall):
			failOutcomeUnknown(j, now, l)
			abandoned = true
			return nil
		default:
			a.log.WarnContext(ctx, "taking over an expired submit claim", "previous_owner", l.Owner,
				"expired", l.Expiry)
		}
		j.SubmitLease = jobs.Lease{}
		if err := j.AcquireSubmitLease(a.claimOwner(), now, a.s.opts.Lease); err != nil {
			return err
		}
		site, webID = j.SiteURL, j.WebID
		return nil
	})
	if err != nil {
		return a.finishEarly(ctx, err)
	}
	if abandoned {
		a.log.ErrorContext(ctx, "submission outcome unknown: job failed, not resubmitted",
			"reason", "an earlier attempt did not record the result of its SharePoint call")
		return nil
	}

	// Everything that can fail without touching SharePoint happens before the call marker.
	req, err := a.request(ctx, site, webID)
	if err != nil {
		return a.failed(ctx, err, permanentBeforeCall(err))
	}
	defer clear(req.Key)

	// 2.–3. One SharePoint call per iteration, each inside its own call marker. A throttled answer
	// (SharePoint did not process the request: no job) turns the lease back into a claim before the
	// wait, so that the wait is not part of the outcome-unknown window.
	var waited time.Duration
	for retries := 0; ; retries++ {
		// 2. Call marker.
		callDeadline, err := a.markCall(ctx)
		if err != nil {
			return a.finishEarly(ctx, err)
		}
		if err := ctx.Err(); err != nil { // cancelled meanwhile (host shutdown): nothing was sent
			return a.failed(ctx, err, false)
		}

		spoJobID, phase, callErr := a.call(ctx, site, req, callDeadline)

		// 3. Result.
		if callErr == nil {
			return a.record(ctx, spoJobID)
		}
		var te *spo.ThrottledError
		if !errors.As(callErr, &te) {
			switch classify(callErr, phase) {
			case notCreatedPermanent:
				return a.failed(ctx, callErr, true)
			case notCreated:
				return a.failed(ctx, callErr, false)
			}
			return a.unknown(ctx, callErr)
		}

		// Throttled: wait and call again, if the wait fits.
		wait := te.RetryAfter
		if why := a.waitRefused(ctx, wait, waited, retries); why != "" {
			a.log.InfoContext(ctx, "submission throttled: not waiting", "status", te.StatusCode,
				"retry_after", wait, "waited", waited, "why", why)
			return a.failed(ctx, callErr, false)
		}
		if err := a.reclaim(ctx); err != nil {
			if errors.Is(err, ErrInProgress) || errors.Is(err, jobs.ErrNotFound) || errors.As(err, new(*done)) {
				return a.finishEarly(ctx, err)
			}
			// The lease still says "call/": release it, the call certainly created no job.
			a.log.WarnContext(ctx, "submission throttled: the claim could not be renewed", "err", err.Error())
			return a.failed(ctx, callErr, false)
		}
		a.log.InfoContext(ctx, "submission throttled: waiting to call again", "status", te.StatusCode,
			"retry_after", wait, "waited", waited, "retry", retries+1)
		if err := sleepContext(ctx, wait); err != nil {
			return a.failed(ctx, fmt.Errorf("%w; waiting %s to call again: %w", callErr, wait, err), false)
		}
		waited += wait
	}
}

// callMargin is how long before the lease expires a SharePoint call must be done, and a throttle wait
// over (a fifth of the lease, at least 5s).
func (a *attempt) callMargin() time.Duration {
	return max(a.s.opts.Lease/5, 5*time.Second)
}

// markCall turns the attempt's claim into the call marker "call/<attempt>" with a fresh expiry (write
// 2) and returns the deadline of the call, which keeps it inside the lease.
func (a *attempt) markCall(ctx context.Context) (time.Time, error) {
	var callDeadline time.Time
	_, err := a.s.opts.Jobs.Update(ctx, a.jobID, func(j *jobs.Job) error {
		if err := ready(j); err != nil {
			return err
		}
		now := a.now()
		if !j.HoldsSubmitLease(a.claimOwner(), now) {
			return fmt.Errorf("%w: the claim expired before the call (lease %s)", ErrInProgress, j.SubmitLease.Owner)
		}
		j.ReleaseSubmitLease(a.claimOwner())
		if err := j.AcquireSubmitLease(a.callOwner(), now, a.s.opts.Lease); err != nil {
			return err
		}
		callDeadline = now.Add(a.s.opts.Lease - a.callMargin())
		return nil
	})
	return callDeadline, err
}

// call makes one CreateMigrationJobEncrypted request: the client does not wait out throttling itself
// (spo.WithoutThrottleRetry), a 429/503 comes back as *spo.ThrottledError at once. The trace tells how
// far the request got: prepared, written, or answered.
func (a *attempt) call(ctx context.Context, site string, req spo.CreateJobRequest, deadline time.Time) (string, int32, error) {
	var phase atomic.Int32
	callCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	callCtx = httptrace.WithClientTrace(callCtx, &httptrace.ClientTrace{
		GetConn:              func(string) { phase.Store(phasePrepared) },
		WroteHeaders:         func() { phase.Store(phaseWritten) },
		GotFirstResponseByte: func() { phase.Store(phaseAnswered) },
	})
	spoJobID, err := a.s.opts.SPO.CreateMigrationJobEncrypted(spo.WithoutThrottleRetry(callCtx), site, req)
	return spoJobID, phase.Load(), err
}

// waitRefused says why the attempt does not wait a throttled call's Retry-After and call again, or "".
func (a *attempt) waitRefused(ctx context.Context, wait, waited time.Duration, retries int) string {
	switch {
	case a.s.opts.ThrottleBudget < 0:
		return "throttle waits disabled"
	case waited+wait > a.s.opts.ThrottleBudget:
		return fmt.Sprintf("beyond the throttle budget of %s", a.s.opts.ThrottleBudget)
	case retries >= maxThrottleRetries:
		return fmt.Sprintf("%d retries made", retries)
	case wait > a.s.opts.Lease-a.callMargin():
		return fmt.Sprintf("longer than the lease of %s allows", a.s.opts.Lease)
	}
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
		return "beyond the invocation's deadline"
	}
	return ""
}

// reclaim turns the call marker back into a claim after a throttled answer (SharePoint processed
// nothing), with a fresh expiry that covers the wait: no other delivery takes the job over meanwhile.
// The write goes through the record's ETag and checks that the lease still names this call, so an
// attempt that lost its lease stops here (ErrInProgress) and one that finds the job done acknowledges.
func (a *attempt) reclaim(ctx context.Context) error {
	_, err := a.s.opts.Jobs.Update(ctx, a.jobID, func(j *jobs.Job) error {
		if err := ready(j); err != nil {
			return err
		}
		if j.SubmitLease.Owner != a.callOwner() {
			return fmt.Errorf("%w: the lease was taken over during the call (lease %s)", ErrInProgress, j.SubmitLease.Owner)
		}
		j.SubmitLease = jobs.Lease{}
		return j.AcquireSubmitLease(a.claimOwner(), a.now(), a.s.opts.Lease)
	})
	return err
}

// sleepContext waits d or until ctx is done, returning ctx.Err() then.
func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ready checks that the job still waits for submission; a *done or ErrNotStaged otherwise.
func ready(j *jobs.Job) error {
	switch {
	case j.SPOJobID != "":
		return &done{fmt.Sprintf("already submitted as SPO job %s (state %s)", j.SPOJobID, j.State)}
	case j.Terminal():
		return &done{fmt.Sprintf("job already ended (%s)", j.State)}
	case j.State == jobs.StateStaged:
		return nil
	case j.State == jobs.StateAwaitingPackage || j.State == jobs.StateEncrypting:
		return fmt.Errorf("%w (state %s)", ErrNotStaged, j.State)
	}
	return &done{fmt.Sprintf("job is %s", j.State)}
}

// finishEarly turns the error of a claim or call-marker write into Submit's result.
func (a *attempt) finishEarly(ctx context.Context, err error) error {
	var d *done
	switch {
	case errors.As(err, &d):
		a.log.InfoContext(ctx, "submit message acknowledged", "reason", d.reason)
		return nil
	case errors.Is(err, jobs.ErrNotFound):
		a.log.WarnContext(ctx, "submit message for an unknown job acknowledged")
		return nil
	case errors.Is(err, ErrInProgress), errors.Is(err, ErrNotStaged):
		a.log.InfoContext(ctx, "submit deferred", "reason", err.Error())
		return fmt.Errorf("submit job %s: %w", a.jobID, err)
	}
	a.log.WarnContext(ctx, "submit attempt failed", "err", err.Error())
	return fmt.Errorf("submit job %s: %w", a.jobID, err)
}

// request builds the CreateMigrationJobEncrypted arguments from the job secret: its queue, else the
// site's. The caller clears Key.
func (a *attempt) request(ctx context.Context, site, webID string) (spo.CreateJobRequest, error) {
	sec, err := a.s.opts.Vault.GetJob(ctx, a.jobID)
	if err != nil {
		return spo.CreateJobRequest{}, fmt.Errorf("read the job secret: %w", err)
	}
	req := spo.CreateJobRequest{WebID: webID, DataContainerURI: sec.DataContainerURI,
		MetadataContainerURI: sec.MetadataContainerURI, QueueURI: sec.QueueURI, Key: sec.Key}
	if req.QueueURI == "" {
		switch q, err := a.s.opts.Vault.GetQueue(ctx, site); {
		case err == nil:
			req.QueueURI = q
		case errors.Is(err, vault.ErrNotFound): // no report queue: the monitor reads GetMigrationJobProgress
		default:
			clear(req.Key)
			return spo.CreateJobRequest{}, fmt.Errorf("read the site queue: %w", err)
		}
	}
	if webID == "" {
		clear(req.Key)
		return spo.CreateJobRequest{}, errNoWebID
	}
	return req, nil
}

var errNoWebID = errors.New("the job record has no web id")

// permanentBeforeCall reports errors of request that retrying cannot fix.
func permanentBeforeCall(err error) bool {
	return errors.Is(err, vault.ErrNotFound) || errors.Is(err, vault.ErrForeign) || errors.Is(err, errNoWebID)
}

// detached is the context of the writes that record an attempt's outcome: they must happen even when
// the invocation is being cancelled (a host shutdown), or the outcome would look unknown.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), resultWriteTimeout)
}

// record stores the SPO job id: Submitted. The write is retried (with a detached context), because the
// job exists at SharePoint now; if it cannot be written, the id is logged for the operator and the
// next delivery marks the job Failed (outcome unknown).
func (a *attempt) record(ctx context.Context, spoJobID string) error {
	wctx, cancel := detached(ctx)
	defer cancel()
	mutate := func(j *jobs.Job) error {
		now := a.now()
		switch {
		case strings.EqualFold(j.SPOJobID, spoJobID):
			return nil
		case j.SPOJobID != "":
			return fmt.Errorf("the record holds SPO job %s", j.SPOJobID)
		case j.State == jobs.StateStaged:
			// The lease still names this attempt: every takeover of a "call/" lease fails the job.
			if j.SubmitLease.Owner != a.callOwner() {
				addNote(j, now, "lease of attempt "+a.id+" was "+j.SubmitLease.Owner+" when its SPO job was recorded")
			}
			j.SPOJobID = spoJobID
			j.SubmitLease = jobs.Lease{}
			return j.Transition(jobs.StateSubmitted, now, "CreateMigrationJobEncrypted: SPO job "+spoJobID)
		}
		// The attempt was given up meanwhile (the job failed or was cancelled): keep the id for the
		// manual check the failure reason asks for.
		j.SPOJobID = spoJobID
		addNote(j, now, fmt.Sprintf("SharePoint created job %s for attempt %s after the job was %s; it is not monitored", spoJobID, a.id, j.State))
		return nil
	}
	var err error
	for try := 0; try < 5; try++ {
		var j *jobs.Job
		if j, err = a.s.opts.Jobs.Update(wctx, a.jobID, mutate); err == nil {
			if j.State == jobs.StateSubmitted {
				a.log.InfoContext(ctx, "job submitted", "spo_job_id", spoJobID)
			} else {
				a.log.ErrorContext(ctx, "SharePoint job created after the submission was given up", "spo_job_id", spoJobID, "state", string(j.State))
			}
			return nil
		}
		if errors.Is(err, jobs.ErrNotFound) || errors.Is(err, jobs.ErrSPOJobIDInUse) || wctx.Err() != nil {
			break
		}
		t := time.NewTimer(time.Duration(1<<try) * 200 * time.Millisecond)
		select {
		case <-wctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	a.log.ErrorContext(ctx, "SharePoint job created but not recorded: reconcile by hand", "spo_job_id", spoJobID, "err", err.Error())
	return fmt.Errorf("submit job %s: record SPO job %s: %w", a.jobID, spoJobID, err)
}

// failed records a failure that created no SharePoint job: the lease is released and the error noted;
// a permanent failure, or one on the last delivery, fails the job. It returns Submit's result.
func (a *attempt) failed(ctx context.Context, cause error, permanent bool) error {
	text := errorText(cause)
	last := a.dequeueCount >= a.s.opts.MaxDequeueCount
	wctx, cancel := detached(ctx)
	defer cancel()
	_, err := a.s.opts.Jobs.Update(wctx, a.jobID, func(j *jobs.Job) error {
		if j.SPOJobID != "" || j.Terminal() {
			return nil
		}
		now := a.now()
		addNote(j, now, notePrefixFailed+text)
		if o := j.SubmitLease.Owner; o != "" && o != a.claimOwner() && o != a.callOwner() {
			return nil // our claim expired and another attempt took over: it decides
		}
		j.SubmitLease = jobs.Lease{}
		switch {
		case permanent:
			return j.Transition(jobs.StateFailed, now, "submission refused: "+text)
		case last:
			return j.Transition(jobs.StateFailed, now, fmt.Sprintf("submission failed %d times: %s", a.dequeueCount, text))
		}
		return nil
	})
	if err != nil {
		// The lease stays until it expires; the next delivery retries (a claim, not a call, when the
		// failure came before the call; an unrecorded call is failed as outcome unknown).
		a.log.ErrorContext(ctx, "submit failure not recorded", "cause", text, "err", err.Error())
		return fmt.Errorf("submit job %s: %w (recording it failed: %v)", a.jobID, cause, err)
	}
	switch {
	case permanent:
		a.log.ErrorContext(ctx, "submission refused: job failed", "err", text)
		return nil
	case last:
		a.log.ErrorContext(ctx, "submission failed on the last delivery: job failed", "err", text)
	default:
		a.log.WarnContext(ctx, "submission failed, will be retried", "err", text)
	}
	return fmt.Errorf("submit job %s: %w", a.jobID, cause)
}

// unknown handles a call whose outcome is unknown: the job is failed, never resubmitted.
func (a *attempt) unknown(ctx context.Context, cause error) error {
	text := errorText(cause)
	wctx, cancel := detached(ctx)
	defer cancel()
	_, err := a.s.opts.Jobs.Update(wctx, a.jobID, func(j *jobs.Job) error {
		if j.SubmitLease.Owner != a.callOwner() || j.SPOJobID != "" || j.Terminal() {
			return nil
		}
		now := a.now()
		addNote(j, now, notePrefixFailed+text)
		j.ReleaseSubmitLease(a.callOwner())
		return j.Transition(jobs.StateFailed, now, ReasonOutcomeUnknown("attempt "+a.id+" at "+now.UTC().Format(time.RFC3339)+": "+text))
	})
	if err != nil {
		a.log.ErrorContext(ctx, "submission outcome unknown and not recorded", "cause", text, "err", err.Error())
		return fmt.Errorf("submit job %s: outcome unknown: %w (recording it failed: %v)", a.jobID, cause, err)
	}
	a.log.ErrorContext(ctx, "submission outcome unknown: job failed, not resubmitted", "err", text)
	return nil
}

// Call outcomes.
type outcome int

const (
	notCreated          outcome = iota // retry may succeed
	notCreatedPermanent                // retry cannot succeed
	inDoubt                            // SharePoint may have created the job
)

// Phases of the last HTTP attempt of the call, from net/http/httptrace.
const (
	phaseNone     int32 = iota // no request was prepared
	phasePrepared              // a connection was being obtained
	phaseWritten               // the request headers were written: SharePoint may be acting on it
	phaseAnswered              // the answer started to arrive
)

// classify tells what a failed CreateMigrationJobEncrypted means, given the phase of its last HTTP
// attempt.
func classify(err error, phase int32) outcome {
	var te *spo.ThrottledError
	var se *spo.Error
	switch {
	case errors.As(err, &te):
		return notCreated // every attempt was answered 429/503 (run waits and calls again itself)
	case errors.As(err, &se):
		switch {
		case se.StatusCode == http.StatusBadRequest || se.StatusCode == http.StatusNotFound:
			return notCreatedPermanent
		case se.StatusCode >= 500 && se.Code == 0 && se.StatusCode != http.StatusServiceUnavailable:
			return inDoubt // a gateway answered (502, 504…): SharePoint may have acted
		}
		return notCreated
	case errors.Is(err, spo.ErrSiteNotHTTPS), errors.Is(err, spo.ErrSiteNotAllowed),
		errors.Is(err, spo.ErrStorageHostNotAllowed), errors.Is(err, spo.ErrSameContainer),
		errors.Is(err, spo.ErrBadKey), errors.Is(err, spo.ErrBadID):
		return notCreatedPermanent // refused before sending
	case errors.Is(err, spo.ErrJobNotCreated):
		return notCreated // SharePoint answered null: no job
	case errors.Is(err, spo.ErrBadAnswer):
		return inDoubt // a 2xx we cannot read
	}
	switch phase {
	case phaseNone, phasePrepared:
		return notCreated // the last request never reached a connection (dial, TLS, token…)
	case phaseAnswered:
		// An answer arrived but the call failed without an error answer: either the client's own wait
		// after a 429/503 was cut short (its "waiting … after HTTP 4xx/5xx" error: not created; run's
		// calls do not wait, see spo.WithoutThrottleRetry, but an SPO that does is still classified), or
		// reading a body failed (perhaps a 2xx: in doubt).
		if strings.Contains(err.Error(), ": waiting ") {
			return notCreated
		}
	}
	return inDoubt
}

// ReasonOutcomeUnknown is the failure reason of a job whose CreateMigrationJobEncrypted call may have
// created a SharePoint job that was never recorded (see the package documentation); detail says which
// attempt and why.
func ReasonOutcomeUnknown(detail string) string {
	return "submission outcome unknown: a SharePoint job may exist for this package; check the site's " +
		"migration jobs and the Import-*.log files of the job's metadata container before submitting it again " +
		"(not resubmitted, to avoid a second import): " + detail
}

// failOutcomeUnknown fails a Staged job whose "call/" lease l expired without a result.
func failOutcomeUnknown(j *jobs.Job, now time.Time, l jobs.Lease) {
	detail := fmt.Sprintf("attempt %s called CreateMigrationJobEncrypted and did not record the answer before its lease expired at %s",
		strings.TrimPrefix(l.Owner, ownerCall), l.Expiry.UTC().Format(time.RFC3339))
	addNote(j, now, notePrefixFailed+detail)
	j.SubmitLease = jobs.Lease{}
	_ = j.Transition(jobs.StateFailed, now, ReasonOutcomeUnknown(detail))
}

// ResolvePoisoned applies the rule for a job whose submit message reached the poison queue after
// maxDequeueCount deliveries; use it inside jobs.Store.Update. It reports whether the poison message is
// done with (it may be deleted): false while an attempt holds an unexpired lease (look again later).
//
//   - submitted, ended, or not staged (the stager owns it and will enqueue again): nothing to do;
//   - an expired "call/" lease: Failed, outcome unknown (never resubmitted);
//   - otherwise: Failed, "submission failed <maxDequeueCount> times: <last error recorded>".
func ResolvePoisoned(j *jobs.Job, now time.Time, maxDequeueCount int) (done bool) {
	if j.SPOJobID != "" || j.Terminal() || j.State != jobs.StateStaged {
		return true
	}
	l := j.SubmitLease
	if l.Owner != "" && now.Before(l.Expiry) {
		return false
	}
	if strings.HasPrefix(l.Owner, ownerCall) {
		failOutcomeUnknown(j, now, l)
		return true
	}
	j.SubmitLease = jobs.Lease{}
	last := LastError(j)
	if last == "" {
		last = "no error recorded"
	}
	_ = j.Transition(jobs.StateFailed, now, fmt.Sprintf("submission failed %d times: %s", maxDequeueCount, last))
	return true
}

// ---- History notes ----

// NotePrefix starts the Reason of a History entry that records an event without a state change (its
// State is the job's state at the time). Other packages (the monitor) use the same convention.
const NotePrefix = "note: "

const notePrefixFailed = NotePrefix + "submit failed: "

// addNote appends a note to the job's History.
func addNote(j *jobs.Job, at time.Time, text string) {
	j.History = append(j.History, jobs.Transition{State: j.State, At: at.UTC(), Reason: NotePrefix + strings.TrimPrefix(text, NotePrefix)})
	if over := len(j.History) - jobs.MaxHistory; over > 0 {
		j.History = append(j.History[:1], j.History[1+over:]...)
	}
}

// LastError returns the error of the last failed submit attempt recorded on the job, or "".
func LastError(j *jobs.Job) string {
	for i := len(j.History) - 1; i >= 0; i-- {
		if r, ok := strings.CutPrefix(j.History[i].Reason, notePrefixFailed); ok {
			return r
		}
	}
	return ""
}

// ---- helpers ----

var sigRE = regexp.MustCompile(`(?i)(sig(?:=|%3d))[^&#\s"'<>]*`)

// errorText is an error's text for records and logs: one line, signatures redacted.
func errorText(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	return sigRE.ReplaceAllString(s, "${1}REDACTED")
}

func newAttemptID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	host, _ := os.Hostname()
	if host == "" {
		host = "host"
	}
	if len(host) > 64 {
		host = host[:64]
	}
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

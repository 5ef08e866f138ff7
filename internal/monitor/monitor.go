package monitor

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/spo"
	"github.com/spomig/spomig/internal/submit"
	"github.com/spomig/spomig/internal/vault"
)

// Jobs is the part of the job store the monitor uses (*jobs.Store).
type Jobs interface {
	Get(ctx context.Context, id string) (*jobs.Job, error)
	GetBySPOJobID(ctx context.Context, spoJobID string) (*jobs.Job, error)
	Update(ctx context.Context, id string, mutate func(*jobs.Job) error) (*jobs.Job, error)
	ListActive(ctx context.Context) iter.Seq2[*jobs.Job, error]
	All(ctx context.Context, states ...jobs.State) iter.Seq2[*jobs.Job, error]
}

// Vault keeps the job keys and SAS URIs (*vault.Custody).
type Vault interface {
	GetJob(ctx context.Context, jobID string) (*vault.JobSecret, error)
	GetQueue(ctx context.Context, site string) (string, error)
	DeleteJob(ctx context.Context, jobID string) error
	PurgeJob(ctx context.Context, jobID string) error
}

// CallbackURLVault is implemented by a Vault that keeps a job's signed callback URL (one with sig=, which
// the record refuses) beside its key. When the Vault implements it and answers a URL, that URL is
// notified instead of Job.CallbackURL.
type CallbackURLVault interface {
	GetJobCallbackURL(ctx context.Context, jobID string) (string, error)
}

// SPO follows migration jobs (*spo.Client).
type SPO interface {
	GetMigrationJobProgress(ctx context.Context, siteURL, jobID, nextToken string) (spo.Progress, error)
	GetMigrationJobStatus(ctx context.Context, siteURL, jobID string) (spo.JobState, error)
}

var (
	_ Jobs  = (*jobs.Store)(nil)
	_ Vault = (*vault.Custody)(nil)
	_ SPO   = (*spo.Client)(nil)
)

// Storage is the app's own storage account (AzureWebJobsStorage): the reports container, the staged
// packages and the submit poison queue.
type Storage struct {
	Blob  *azblob.Client
	Queue *azqueue.ServiceClient
}

// Event sources (Options.Sources).
const (
	SourceQueue    = "queue"    // the SPO report queue of each site
	SourceProgress = "progress" // GetMigrationJobProgress
)

// Defaults of Options.
const (
	DefaultReportsContainer     = "migration-reports"
	DefaultBudget               = 45 * time.Second
	DefaultStuckAfter           = 6 * time.Hour
	DefaultUnknownMessageMaxAge = 72 * time.Hour
	DefaultRetention            = 7 * 24 * time.Hour
	DefaultMaxDequeueCount      = 5
	DefaultVisibilityTimeout    = 60 * time.Second
	DefaultLogGrace             = 15 * time.Minute
	DefaultSweepInterval        = 15 * time.Minute
	DefaultCallbackMaxAttempts  = 5
	DefaultCallbackTimeout      = 10 * time.Second
	DefaultCallbackBackoff      = time.Minute
	// DefaultMaxProgressPages bounds the GetMigrationJobProgress pages read per job and run.
	DefaultMaxProgressPages = 20
)

// Options configures New.
type Options struct {
	// Jobs, Vault, SPO and Storage (both clients) are required.
	Jobs    Jobs
	Vault   Vault
	SPO     SPO
	Storage Storage

	// ReportsContainer receives the decrypted logs and items.csv, under "<job id>/". Default
	// "migration-reports". It is created when missing.
	ReportsContainer string
	// PoisonQueue is where the host moves submit messages that failed MaxDequeueCount times. Default
	// "migration-submit-poison".
	PoisonQueue string
	// Sources are the event sources: "queue", "progress" or both (SPOMIG_MONITOR_SOURCES). Default both.
	Sources []string
	// Budget bounds one run (SPOMIG_MONITOR_BUDGET); keep it well below the function timeout and the
	// timer period. Default 45s. Phases stop starting new work at fixed fractions of it (poison queue
	// 15%, report queues 40%, progress 65%, status checks 75%, ended jobs 90%, sweep 95%); work under
	// way is cut at 100% and done again by a later run.
	Budget time.Duration
	// StuckAfter is how long an active job may go without an event before GetMigrationJobStatus is asked
	// (SPOMIG_STUCK_AFTER). Default 6h.
	StuckAfter time.Duration
	// UnknownMessageMaxAge: report-queue messages of jobs we do not know (another app may share the
	// site's queue) are left alone until they are this old (InsertionTime), then deleted
	// (SPOMIG_UNKNOWN_MESSAGE_MAX_AGE). Default 72h.
	UnknownMessageMaxAge time.Duration
	// Retention is how long after its end a job keeps its Key Vault secret and, when Completed, its
	// staged package (SPOMIG_RETENTION). Default 168h. A job's CleanupAt, when set (a cancel), wins.
	Retention time.Duration
	// PurgeSecrets purges the deleted secret too. Default false: the secret is soft-deleted and stays
	// recoverable for the vault's retention period (90 days by default), so that the logs SharePoint
	// still keeps in the metadata container can be decrypted again if needed; purging needs the purge
	// permission and fails on vaults with purge protection.
	PurgeSecrets bool
	// MaxDequeueCount is the host's maxDequeueCount, quoted in the failure reason of poisoned
	// submissions. Default 5.
	MaxDequeueCount int
	// VisibilityTimeout hides a dequeued message (report or poison queue) while it is handled. Default
	// 60s; at least 1s.
	VisibilityTimeout time.Duration
	// LogGrace is how long after a job's end its logs are waited for when none can be found yet; then
	// the report is stored with what there is. Default 15m.
	LogGrace time.Duration
	// SweepInterval is how often a run also visits the ended jobs that still have work (logs not
	// stored, callback pending, clean-up due): in the first minute of every interval, on a past-due run
	// and on the first run of a process. Default 15m. A visit lists every ended job, a page of 100
	// records at a time (the table has no index of the jobs not cleaned up), so it costs one read per
	// ended job kept in the table.
	SweepInterval time.Duration
	// MaxProgressPages bounds the GetMigrationJobProgress pages read per job and run. Default 20.
	MaxProgressPages int

	// CallbackAllowedHosts are the hosts a job's callback URL may name (https only,
	// SPOMIG_CALLBACK_ALLOWED_HOSTS). Empty: no callback is sent.
	CallbackAllowedHosts []string
	// CallbackMaxAttempts bounds the POSTs of one callback. Default 5.
	CallbackMaxAttempts int
	// CallbackTimeout bounds one POST. Default 10s.
	CallbackTimeout time.Duration
	// CallbackBackoff is the wait before the second attempt, doubled after each failure (attempts are
	// made in runs: the one that saw the end, then sweeps). Default 1m.
	CallbackBackoff time.Duration
	// CallbackClient sends the callbacks. Default: an http.Client that never follows redirects. A client
	// given here is copied and its copy never follows redirects either.
	CallbackClient *http.Client

	// SASTransport sends the requests made through SharePoint's SAS URIs (report queues, metadata
	// containers), e.g. an *http.Client trusting a development CA. Default: azcore's.
	SASTransport policy.Transporter

	// Logger receives one summary line per run and one line per notable change. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock of the rules (records, ages, retention). Default time.Now. The budget always
	// runs on the real clock.
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.ReportsContainer == "" {
		o.ReportsContainer = DefaultReportsContainer
	}
	if o.PoisonQueue == "" {
		o.PoisonQueue = submit.DefaultPoisonQueue
	}
	if len(o.Sources) == 0 {
		o.Sources = []string{SourceQueue, SourceProgress}
	}
	if o.Budget <= 0 {
		o.Budget = DefaultBudget
	}
	if o.StuckAfter <= 0 {
		o.StuckAfter = DefaultStuckAfter
	}
	if o.UnknownMessageMaxAge <= 0 {
		o.UnknownMessageMaxAge = DefaultUnknownMessageMaxAge
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.MaxDequeueCount <= 0 {
		o.MaxDequeueCount = DefaultMaxDequeueCount
	}
	if o.VisibilityTimeout <= 0 {
		o.VisibilityTimeout = DefaultVisibilityTimeout
	}
	o.VisibilityTimeout = max(o.VisibilityTimeout, time.Second)
	if o.LogGrace <= 0 {
		o.LogGrace = DefaultLogGrace
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = DefaultSweepInterval
	}
	if o.MaxProgressPages <= 0 {
		o.MaxProgressPages = DefaultMaxProgressPages
	}
	if o.CallbackMaxAttempts <= 0 {
		o.CallbackMaxAttempts = DefaultCallbackMaxAttempts
	}
	if o.CallbackTimeout <= 0 {
		o.CallbackTimeout = DefaultCallbackTimeout
	}
	if o.CallbackBackoff <= 0 {
		o.CallbackBackoff = DefaultCallbackBackoff
	}
	c := &http.Client{}
	if o.CallbackClient != nil {
		cc := *o.CallbackClient
		c = &cc
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	o.CallbackClient = c
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Monitor drives submitted jobs to their end; it implements functions.Monitor. It is safe for
// concurrent use, and overlapping runs (in one process or several) are harmless: every change goes
// through the record's ETag and the event dedup set.
type Monitor struct {
	opts                  Options
	log                   *slog.Logger
	useQueue, useProgress bool
	lastSweep             atomic.Int64 // unix nanoseconds of this process's last sweep (real clock)
	reportsReady          atomic.Bool
}

// New returns a Monitor. It does no I/O.
func New(opts Options) (*Monitor, error) {
	opts.setDefaults()
	switch {
	case opts.Jobs == nil:
		return nil, errors.New("monitor: Jobs is required")
	case opts.Vault == nil:
		return nil, errors.New("monitor: Vault is required")
	case opts.SPO == nil:
		return nil, errors.New("monitor: SPO is required")
	case opts.Storage.Blob == nil || opts.Storage.Queue == nil:
		return nil, errors.New("monitor: Storage.Blob and Storage.Queue are required")
	}
	m := &Monitor{opts: opts, log: opts.Logger}
	for _, s := range opts.Sources {
		switch strings.ToLower(strings.TrimSpace(s)) {
		case SourceQueue:
			m.useQueue = true
		case SourceProgress:
			m.useProgress = true
		case "both":
			m.useQueue, m.useProgress = true, true
		default:
			return nil, fmt.Errorf("monitor: unknown event source %q (want %s, %s or both)", s, SourceQueue, SourceProgress)
		}
	}
	return m, nil
}

// Run is one monitoring pass (MonitorTimer, every minute), within Options.Budget:
//
//  1. poisoned submit messages fail their jobs (ResolvePoisoned);
//  2. the report queues of the sites with active jobs are drained;
//  3. GetMigrationJobProgress is read from each active job's stored token;
//  4. active jobs without an event for StuckAfter are checked with GetMigrationJobStatus;
//  5. jobs that ended in this run get their logs, report and callback;
//  6. when a sweep is due, ended jobs with work left are visited (logs, callback, clean-up).
//
// Problems with one job or one queue are logged and left for the next run; Run returns an error only
// when it could not list the active jobs.
func (m *Monitor) Run(ctx context.Context, pastDue bool) error {
	r := newRun(m)
	defer r.close()
	ctx, cancel := context.WithDeadline(ctx, r.deadline)
	defer cancel()

	r.resolvePoison(ctx)
	active, err := r.listActive(ctx)
	if err != nil {
		m.log.ErrorContext(ctx, "monitor: cannot list active jobs", "err", err.Error())
		return fmt.Errorf("monitor: list active jobs: %w", err)
	}
	if m.useQueue {
		r.drainQueues(ctx, active, 0.4)
	}
	if m.useProgress {
		r.pollProgress(ctx, active)
	}
	r.checkStuck(ctx, active)
	r.finishEnded(ctx)
	if r.sweepDue(pastDue) {
		r.sweep(ctx)
	}
	m.log.InfoContext(ctx, "monitor run", "past_due", pastDue, "active", len(active), "events", r.stats.events,
		"messages_deleted", r.stats.deleted, "messages_left", r.stats.left, "ended", r.stats.ended,
		"logs_stored", r.stats.logs, "callbacks", r.stats.callbacks, "cleaned_up", r.stats.cleaned,
		"poison", r.stats.poison, "elapsed_ms", time.Since(r.start).Milliseconds(), "budget_left_ms", time.Until(r.deadline).Milliseconds())
	return nil
}

// run is the state of one Run: the job snapshots, the secrets read (zeroed by close) and counters.
type run struct {
	m        *Monitor
	log      *slog.Logger
	start    time.Time // real clock
	deadline time.Time // real clock

	jobs      map[string]*jobs.Job // latest known record per job id
	bySPO     map[string]string    // lower-case SPO job id → job id ("" when unknown)
	secrets   map[string]*vault.JobSecret
	secErrs   map[string]error
	ended     []string         // jobs that reached a terminal state in this run
	gone      map[string]error // GetMigrationJobProgress: job not found / status expired
	drained   map[string]bool  // report queues read in this run (queueKey)
	sitesRead map[string]bool  // sites whose queue secret was read in this run
	stopSPO   bool             // SharePoint throttled us beyond the client's budget: no more calls this run

	stats struct {
		events, deleted, left, ended, logs, callbacks, cleaned, poison int
	}
}

func newRun(m *Monitor) *run {
	now := time.Now()
	return &run{m: m, log: m.log, start: now, deadline: now.Add(m.opts.Budget),
		jobs: map[string]*jobs.Job{}, bySPO: map[string]string{}, secrets: map[string]*vault.JobSecret{},
		secErrs: map[string]error{}, gone: map[string]error{}, drained: map[string]bool{}, sitesRead: map[string]bool{}}
}

// close zeroes the keys read in the run.
func (r *run) close() {
	for _, s := range r.secrets {
		clear(s.Key)
	}
	clear(r.secrets)
}

func (r *run) now() time.Time { return r.m.opts.Now() }

// before reports whether less than frac of the budget has elapsed (real clock).
func (r *run) before(frac float64) bool {
	return time.Since(r.start) < time.Duration(frac*float64(r.m.opts.Budget))
}

// listActive reads the active jobs (Submitted, Queued, Postponed, Running).
func (r *run) listActive(ctx context.Context) ([]*jobs.Job, error) {
	var out []*jobs.Job
	for j, err := range r.m.opts.Jobs.ListActive(ctx) {
		if err != nil {
			return nil, err
		}
		r.track(j)
		out = append(out, j)
	}
	return out, nil
}

// track remembers the latest record of a job and its SPO job id.
func (r *run) track(j *jobs.Job) {
	r.jobs[j.ID] = j
	if j.SPOJobID != "" {
		r.bySPO[strings.ToLower(j.SPOJobID)] = j.ID
	}
}

// current returns the latest known record of an active job of this run.
func (r *run) current(id string) *jobs.Job { return r.jobs[id] }

// secret returns the job's secret, read once per run. Its key is zeroed when the run ends.
func (r *run) secret(ctx context.Context, jobID string) (*vault.JobSecret, error) {
	if s, ok := r.secrets[jobID]; ok {
		return s, nil
	}
	if err, ok := r.secErrs[jobID]; ok {
		return nil, err
	}
	s, err := r.m.opts.Vault.GetJob(ctx, jobID)
	if err != nil {
		r.secErrs[jobID] = err
		return nil, err
	}
	r.secrets[jobID] = s
	return s, nil
}

// update applies mutate to a job and tracks the result; a job that reaches a terminal state in this
// run is queued for finishing.
func (r *run) update(ctx context.Context, jobID string, mutate func(*jobs.Job) error) (*jobs.Job, error) {
	var wasTerminal bool
	j, err := r.m.opts.Jobs.Update(ctx, jobID, func(j *jobs.Job) error {
		wasTerminal = j.Terminal()
		return mutate(j)
	})
	if err != nil {
		return nil, err
	}
	if _, ok := r.jobs[jobID]; ok || j.SPOJobID != "" {
		r.track(j)
	}
	if !wasTerminal && j.Terminal() && !slices.Contains(r.ended, jobID) {
		r.ended = append(r.ended, jobID)
		r.stats.ended++
		level := slog.LevelInfo
		if j.State == jobs.StateFailed {
			level = slog.LevelWarn
		}
		r.log.Log(ctx, level, "job ended", "job_id", j.ID, "spo_job_id", j.SPOJobID, "state", string(j.State),
			"reason", j.FailureReason, "errors", j.Errors, "warnings", j.Warnings)
	}
	return j, nil
}

// throttled notes a SharePoint answer beyond the client's retry budget: no more SharePoint calls in
// this run (SharePoint asks us to slow down; the next run goes on).
func (r *run) throttled(ctx context.Context, err error) bool {
	if !spo.IsThrottled(err) {
		return false
	}
	if !r.stopSPO {
		r.log.WarnContext(ctx, "SharePoint throttles the monitor: no more calls in this run", "err", err.Error())
	}
	r.stopSPO = true
	return true
}

// ---- secrets in errors ----

var sigRE = regexp.MustCompile(`(?i)(sig(?:=|%3d))[^&#\s"'<>]*`)

// errText is an error for a log line or a record: a storage error as its status and code (the SDK's
// text spans lines and transport errors quote the URL, SAS included), anything else on one line with
// signatures redacted.
func errText(err error) string {
	if err == nil {
		return ""
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return fmt.Sprintf("HTTP %d %s", re.StatusCode, re.ErrorCode)
	}
	return sigRE.ReplaceAllString(strings.Join(strings.Fields(err.Error()), " "), "${1}REDACTED")
}

// storageStatus is the HTTP status of a storage error (0 when it is not a service answer).
func storageStatus(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

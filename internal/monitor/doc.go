// Package monitor is the domain of MonitorTimer: every minute, Monitor.Run follows the submitted jobs
// to their end within a time budget (Options.Budget), then keeps their decrypted logs, notifies their
// callbacks and cleans up after them.
//
// # Event sources
//
// SharePoint reports a job's life as events (reference §4), from two sources, either or both
// (Options.Sources):
//
//   - the report queue of the site (SourceQueue): the queue URI comes from the vault's site queue
//     secret; messages are read in batches of 32 and hidden for VisibilityTimeout; each is decrypted
//     with the key of its job (found by SPO job id; the keys read in a run are kept for the run only
//     and zeroed after it). A job's events of a batch are applied in one record update, and their
//     messages deleted only once that update committed. Messages of jobs we do not know are left for
//     their owner (another app may share the site's queue) and deleted once older than
//     UnknownMessageMaxAge; messages of our jobs whose secret was cleaned up are deleted.
//   - GetMigrationJobProgress (SourceProgress): read page by page from the job's stored ProgressToken;
//     a page's events and the next token are stored in one update.
//
// The same event read from both sources, or twice from one, is applied once: its Event.DedupKey is
// marked in Job.SeenEvents by the update that applies it. The dedup set keeps the last
// jobs.MaxSeenEvents keys; an older event seen again is harmless, as the rules below are monotonic.
//
// # State rules
//
// See applyEvent. In short: JobQueued → Queued, JobPostponed → Postponed (NextPickupTime and reason
// kept), JobStart → Running, JobProgress → counters, JobError/JobWarning → counted and the first
// jobs.MaxFirstErrors kept in detail, JobFatalError → Failed, JobEnd → Completed or
// CompletedWithErrors (errors reported), JobCancelled/JobDeleted → Cancelled, JobLogFileCreate → the
// log file name is remembered. Events come out of order: nothing moves backwards and counters take
// the maximum. Job.LastEventAt is when the monitor last applied a new event of the job (our clock,
// not SharePoint's, so that a skewed event time cannot make a job look stuck).
//
// # Stuck jobs
//
// An active job with no new event for StuckAfter is checked with GetMigrationJobStatus: Queued or
// Processing is noted and the job waits on; None without a JobEnd, or SharePoint's job-not-found or
// status-expired codes, fail it with that reason (see checkStuck).
//
// # Poisoned submissions
//
// Each run also reads the submit poison queue and fails the jobs whose submission the host gave up on
// (submit.ResolvePoisoned), with the last error the submitter recorded.
//
// # End of a job
//
// When a job ends (in the run that saw it end, else in a later sweep): its import logs are copied from
// the metadata container, decrypted, to <ReportsContainer>/<job id>/, with <job id>/items.csv (kind,
// objectType, url, errorCode, message) parsed from the .err/.wrn (else .log) lines, or from the item
// failures kept on the record; Job.LogsBlobPrefix is set (see storeLogs). The callback, if any, gets
// the final report (Report) by POST, with bounded retries. After Retention (or at CleanupAt, set by a
// cancel) the job's Key Vault secret is deleted and, when it Completed, its staged package; the record
// stays, with CleanedUpAt.
//
// # What the record remembers
//
// The log file names, the status checks and the callback attempts are notes in Job.History (entries
// whose Reason starts with submit.NotePrefix and whose State is the job's state at the time), written
// in the same update as what they record.
//
// # Concurrency and budget
//
// Overlapping runs, in one process or several, are harmless: every change is a jobs.Store.Update
// (ETag), events are deduplicated in the same update, a progress token only moves from the value
// the run read, and a queue message another run deleted first is simply gone. Phases stop starting
// work at fixed fractions of the budget; an interrupted copy or callback is done again later.
//
// # Secrets
//
// Keys live in memory for one run and are zeroed after it. SAS URIs are never logged: storage errors
// are reduced to their status and code, other errors have sig= redacted, and callback URLs are logged
// without their query.
package monitor

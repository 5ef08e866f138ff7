package monitor

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spomig/spomig/internal/crypt"
	"github.com/spomig/spomig/internal/jobs"
)

// applyEvent applies one SPO event to the record (inside jobs.Store.Update, so that the dedup mark,
// the state and the counters are written together). It reports whether the event was new. The rules:
//
//	JobQueued         → Queued (from Submitted; from Postponed only when the event is newer than the postponement)
//	JobPostponed      → Postponed, with NextPickupTime and the reason (from Submitted; from Queued only when newer)
//	JobStart          → Running
//	JobProgress       → counters (and Running)
//	JobError/Warning  → one item failure: counted, the first jobs.MaxFirstErrors kept in detail
//	JobFatalError     → Failed (the error code and message are the reason)
//	JobEnd            → counters, then Completed, or CompletedWithErrors when errors were reported
//	JobCancelled/Deleted → Cancelled
//	JobLogFileCreate  → the log file name is remembered (a note)
//
// Events arrive late, twice and out of order: an event already applied (Event.DedupKey in
// Job.SeenEvents) is skipped, nothing moves backwards (the state machine refuses it, and Queued ⇄
// Postponed compare event times), counters only grow (maximum), and a terminal job keeps its state
// while its counters and item details may still be completed.
func applyEvent(j *jobs.Job, ev crypt.Event, now time.Time) bool {
	if !j.MarkEventSeen(ev.DedupKey()) {
		return false
	}
	j.LastEventAt = now
	at := ev.Time
	if at.IsZero() {
		at = now
	}
	switch v := ev.View().(type) {
	case crypt.JobQueued:
		switch j.State {
		case jobs.StateSubmitted:
			_ = j.Transition(jobs.StateQueued, at, "JobQueued")
		case jobs.StatePostponed:
			if ev.Time.IsZero() || ev.Time.After(enteredAt(j, jobs.StatePostponed)) {
				_ = j.Transition(jobs.StateQueued, at, "JobQueued")
			}
		}
	case crypt.JobPostponed:
		reason := postponeReason(v)
		switch j.State {
		case jobs.StateSubmitted:
			_ = j.Postpone(at, v.NextPickupTime, reason)
		case jobs.StateQueued:
			if ev.Time.IsZero() || ev.Time.After(enteredAt(j, jobs.StateQueued)) {
				_ = j.Postpone(at, v.NextPickupTime, reason)
			}
		case jobs.StatePostponed:
			if v.NextPickupTime.After(j.Postponed.NextPickupTime) {
				_ = j.Postpone(at, v.NextPickupTime, reason)
			}
		}
	case crypt.JobStart:
		toRunning(j, at, "JobStart")
	case crypt.JobProgress:
		addCounters(j, v.Counters)
		toRunning(j, at, "JobProgress")
	case crypt.JobError:
		itemFailure(j, jobs.ItemError, v)
	case crypt.JobWarning:
		itemFailure(j, jobs.ItemWarning, crypt.JobError(v))
	case crypt.JobFatalError:
		if !j.Terminal() {
			_ = j.Transition(jobs.StateFailed, at, fatalReason(crypt.JobError(v)))
		}
	case crypt.JobEnd:
		addCounters(j, v.Counters)
		if !j.Terminal() {
			to := jobs.StateCompleted
			if j.Errors > 0 {
				to = jobs.StateCompletedWithErrors
			}
			_ = j.Transition(to, at, fmt.Sprintf("JobEnd: %d errors, %d warnings", j.Errors, j.Warnings))
		}
	case crypt.JobCancelled:
		reason := "JobCancelled"
		if v.CancelledByUser {
			reason += " (by the user)"
		}
		if !j.Terminal() {
			_ = j.Transition(jobs.StateCancelled, at, reason)
		}
	case crypt.JobDeleted:
		if !j.Terminal() {
			_ = j.Transition(jobs.StateCancelled, at, "JobDeleted")
		}
	case crypt.JobLogFileCreate:
		if name, ok := logFileName(v.FileName); ok {
			if names, _ := notes(j, noteLogFile); !slices.Contains(names, name) {
				addNote(j, now, noteLogFile+name)
			}
		}
	}
	return true
}

func toRunning(j *jobs.Job, at time.Time, reason string) {
	switch j.State {
	case jobs.StateSubmitted, jobs.StateQueued, jobs.StatePostponed:
		_ = j.Transition(jobs.StateRunning, at, reason)
	}
}

// addCounters takes the maximum of each counter the event carries (absent counters are 0).
func addCounters(j *jobs.Job, c crypt.Counters) {
	j.FilesDone = max(j.FilesDone, c.FilesCreated)
	j.BytesDone = max(j.BytesDone, c.BytesProcessed)
	j.ObjectsDone = max(j.ObjectsDone, c.ObjectsProcessed)
	j.ObjectsTotal = max(j.ObjectsTotal, c.TotalExpectedSPObjects)
	j.BytesTotal = max(j.BytesTotal, c.TotalExpectedBytes)
	j.Errors = max(j.Errors, c.TotalErrors)
	j.Warnings = max(j.Warnings, c.TotalWarnings)
}

// itemFailure keeps the detail of one JobError or JobWarning and counts it. The counters are SPO's
// totals (JobProgress, JobEnd); an item event raises them to at least the number of failures of its
// kind kept in detail, so that they are right before the next JobProgress without ever counting an
// item twice.
func itemFailure(j *jobs.Job, kind jobs.ItemKind, v crypt.JobError) {
	j.AddItemFailure(jobs.ItemFailure{Kind: kind, ObjectType: v.ObjectType, URL: v.URL, ErrorCode: v.ErrorCode, Message: v.Message})
	n := int64(0)
	for _, f := range j.FirstErrors {
		if f.Kind == kind {
			n++
		}
	}
	if kind == jobs.ItemWarning {
		j.Warnings = max(j.Warnings, n)
	} else {
		j.Errors = max(j.Errors, n)
	}
}

func postponeReason(v crypt.JobPostponed) string {
	var b strings.Builder
	b.WriteString("JobPostponed")
	if v.Reason != "" {
		b.WriteString(": " + v.Reason)
	}
	if v.JobsInQueue > 0 {
		fmt.Fprintf(&b, " (%d jobs in the queue)", v.JobsInQueue)
	}
	return b.String()
}

func fatalReason(v crypt.JobError) string {
	var b strings.Builder
	b.WriteString("JobFatalError")
	if v.ErrorCode != "" {
		b.WriteString(" " + v.ErrorCode)
	}
	if v.ErrorType != "" {
		b.WriteString(" " + v.ErrorType)
	}
	if v.Message != "" {
		b.WriteString(": " + v.Message)
	}
	return b.String()
}

// logFileRE is what a log blob name SharePoint reports may look like: a plain name, no path.
var logFileRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,250}$`)

// logFileName checks a JobLogFileCreate FileName: a plain blob name at the root of the metadata
// container (it is fetched through the container SAS and stored under the job's report prefix).
func logFileName(name string) (string, bool) {
	name = strings.TrimSpace(name)
	if !logFileRE.MatchString(name) || path.Base(name) != name || strings.Contains(name, "..") {
		return "", false
	}
	return name, true
}

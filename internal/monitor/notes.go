package monitor

import (
	"strings"
	"time"

	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/submit"
)

// The record has no fields for what the monitor must remember besides the state and counters (log
// file names, status checks, callback attempts), so it keeps them as notes: History entries whose
// State is the job's state at the time and whose Reason starts with submit.NotePrefix. A note is
// written in the same Update as what it records. Kinds, each a prefix after "note: ":
const (
	noteLogFile         = "log file: "           // a JobLogFileCreate file name
	noteStatusCheck     = "status check: "       // a GetMigrationJobStatus answer of a job without events
	noteLogs            = "logs: "               // the logs were stored (or could not be)
	noteCallbackSending = "callback sending: "   // an attempt claimed through the record's ETag before its POST
	noteCallbackFailed  = "callback failed: "    // one failed callback attempt
	noteCallbackDone    = "callback delivered"   // the callback was answered 2xx
	noteCallbackGaveUp  = "callback abandoned: " // no more attempts
	noteCleanedUp       = "cleaned up: "         // secret (and staged zip) deleted
)

// addNote appends a note to j's History (the first entry and the most recent ones are kept).
func addNote(j *jobs.Job, at time.Time, text string) {
	j.History = append(j.History, jobs.Transition{State: j.State, At: at.UTC(), Reason: submit.NotePrefix + text})
	if over := len(j.History) - jobs.MaxHistory; over > 0 {
		j.History = append(j.History[:1], j.History[1+over:]...)
	}
}

// notes returns the texts (after the kind) and times of the notes of one kind, oldest first.
func notes(j *jobs.Job, kind string) (texts []string, times []time.Time) {
	for _, h := range j.History {
		if r, ok := strings.CutPrefix(h.Reason, submit.NotePrefix+kind); ok {
			texts = append(texts, r)
			times = append(times, h.At)
		}
	}
	return texts, times
}

// lastNoteAt is the time of the last note of a kind, zero when none.
func lastNoteAt(j *jobs.Job, kind string) time.Time {
	_, times := notes(j, kind)
	if len(times) == 0 {
		return time.Time{}
	}
	return times[len(times)-1]
}

// isNote reports whether a History entry is a note rather than a transition.
func isNote(h jobs.Transition) bool { return strings.HasPrefix(h.Reason, submit.NotePrefix) }

// enteredAt is the time of the last transition into state s, zero when none.
func enteredAt(j *jobs.Job, s jobs.State) time.Time {
	for i := len(j.History) - 1; i >= 0; i-- {
		if h := j.History[i]; h.State == s && !isNote(h) {
			return h.At
		}
	}
	return time.Time{}
}

package monitor

import (
	"context"
	"fmt"
	"time"

	"github.com/spomig/spomig/internal/crypt"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/spo"
)

// pollProgress reads GetMigrationJobProgress for every active job that is still active.
func (r *run) pollProgress(ctx context.Context, active []*jobs.Job) {
	for _, a := range active {
		if !r.before(0.65) || r.stopSPO {
			return
		}
		if j := r.current(a.ID); j != nil && !j.Terminal() && j.SPOJobID != "" {
			r.pollJob(ctx, j, 0.65)
		}
	}
}

// pollJob reads the job's progress pages from its stored token, applying each page and storing the
// next token in one update, until nothing is new (the same token comes back), MaxProgressPages or the
// fraction until of the budget. Not found and expired answers are remembered for the status check.
func (r *run) pollJob(ctx context.Context, j *jobs.Job, until float64) {
	for page := 0; page < r.m.opts.MaxProgressPages && r.before(until); page++ {
		tok := j.ProgressToken
		p, err := r.m.opts.SPO.GetMigrationJobProgress(ctx, j.SiteURL, j.SPOJobID, tok)
		switch {
		case err == nil:
		case r.throttled(ctx, err):
			return
		case spo.IsJobNotFound(err), spo.IsStatusExpired(err):
			r.gone[j.ID] = err
			return
		default:
			r.log.WarnContext(ctx, "cannot read the job's progress", "job_id", j.ID, "spo_job_id", j.SPOJobID, "err", err.Error())
			return
		}
		evs := make([]crypt.Event, 0, len(p.Events))
		for _, raw := range p.Events {
			ev, err := crypt.ParseEvent(raw)
			if err != nil {
				r.log.WarnContext(ctx, "unreadable progress event skipped", "job_id", j.ID, "err", err.Error())
				continue
			}
			evs = append(evs, ev)
		}
		if len(evs) == 0 && (p.NextToken == tok || p.NextToken == "") {
			return
		}
		next, err := r.applyEvents(ctx, j.ID, evs, &progressAdvance{from: tok, to: p.NextToken})
		if err != nil {
			r.log.WarnContext(ctx, "cannot apply progress events", "job_id", j.ID, "err", err.Error())
			return
		}
		j = next
		if p.NextToken == tok || p.NextToken == "" {
			return
		}
	}
}

// checkStuck asks GetMigrationJobStatus about active jobs without an event for StuckAfter (counted
// from the last event, the submission or the last such check, whichever is latest):
//
//   - Queued or Processing: the check is noted and the job waits on;
//   - None without a JobEnd (SharePoint forgot the job, or it ended and its end was missed): when the
//     progress log is not a source, it is read once more for a missed end; then the job fails;
//   - job not found, status expired (GetMigrationJobProgress's codes): the job fails with that reason.
func (r *run) checkStuck(ctx context.Context, active []*jobs.Job) {
	for _, a := range active {
		if !r.before(0.75) || r.stopSPO {
			return
		}
		j := r.current(a.ID)
		if j == nil || j.Terminal() || j.SPOJobID == "" {
			continue
		}
		now := r.now()
		quiet := latest(j.LastEventAt, enteredAt(j, jobs.StateSubmitted), lastNoteAt(j, noteStatusCheck))
		if quiet.IsZero() { // the submission fell out of the capped history before any event
			quiet = j.CreatedAt
		}
		if now.Sub(quiet) < r.m.opts.StuckAfter {
			continue
		}
		r.checkJob(ctx, j, now.Sub(quiet))
	}
}

func (r *run) checkJob(ctx context.Context, j *jobs.Job, silent time.Duration) {
	state, err := r.m.opts.SPO.GetMigrationJobStatus(ctx, j.SiteURL, j.SPOJobID)
	switch {
	case err == nil:
	case r.throttled(ctx, err):
		return
	case spo.IsJobNotFound(err), spo.IsStatusExpired(err):
		r.gone[j.ID] = err
		state = spo.JobStateNone
	default:
		r.log.WarnContext(ctx, "cannot read the job's status", "job_id", j.ID, "spo_job_id", j.SPOJobID, "err", err.Error())
		return
	}
	silentFor := silent.Round(time.Minute)
	if state != spo.JobStateNone {
		if _, err := r.update(ctx, j.ID, func(j *jobs.Job) error {
			if !j.Terminal() {
				addNote(j, r.now(), fmt.Sprintf("%sSharePoint reports %s after %s without an event", noteStatusCheck, state, silentFor))
			}
			return nil
		}); err != nil {
			r.log.WarnContext(ctx, "cannot note a status check", "job_id", j.ID, "err", err.Error())
			return
		}
		r.log.InfoContext(ctx, "job without events is still at SharePoint", "job_id", j.ID, "spo_job_id", j.SPOJobID,
			"spo_state", state.String(), "silent", silentFor)
		return
	}
	// None: one last look at the progress log for an end we missed.
	if _, gone := r.gone[j.ID]; !gone && !r.m.useProgress {
		r.pollJob(ctx, j, 0.8)
		if cur := r.current(j.ID); cur != nil && cur.Terminal() {
			return
		}
	}
	reason := fmt.Sprintf("SharePoint reports the job as None (no longer queued or processing) after %s without an event, and no JobEnd was received", silentFor)
	if gerr, ok := r.gone[j.ID]; ok {
		what := "job not found"
		if spo.IsStatusExpired(gerr) {
			what = "job status expired"
		}
		reason = fmt.Sprintf("SharePoint no longer knows the job (%s: %s) after %s without an event", what, gerr.Error(), silentFor)
	}
	if _, err := r.update(ctx, j.ID, func(j *jobs.Job) error {
		if j.Terminal() {
			return nil
		}
		return j.Transition(jobs.StateFailed, r.now(), reason)
	}); err != nil {
		r.log.WarnContext(ctx, "cannot fail a stuck job", "job_id", j.ID, "err", err.Error())
	}
}

// latest is the latest of ts (zero when all are zero).
func latest(ts ...time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}

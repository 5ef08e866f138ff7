package monitor

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spomig/spomig/internal/crypt"
	"github.com/spomig/spomig/internal/jobs"
)

const spoID = "6a5f0c8e-0d6b-4b4e-9e4b-7c1c9d1e2f3a"

var t0 = time.Date(2025, 5, 20, 9, 0, 0, 0, time.UTC)

// ev builds an SPO event at t0+sec seconds.
func ev(t *testing.T, name string, sec int, fields map[string]string) crypt.Event {
	t.Helper()
	raw, err := crypt.MarshalEvent(name, spoID, t0.Add(time.Duration(sec)*time.Second), fields)
	if err != nil {
		t.Fatal(err)
	}
	e, err := crypt.ParseEvent(raw)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func submittedJob() *jobs.Job {
	return &jobs.Job{ID: "j1", SPOJobID: spoID, State: jobs.StateSubmitted,
		History: []jobs.Transition{{State: jobs.StateSubmitted, At: t0.Add(-time.Minute)}}}
}

func transitions(j *jobs.Job) []jobs.State {
	var s []jobs.State
	for _, h := range j.History {
		if !isNote(h) {
			s = append(s, h.State)
		}
	}
	return s
}

func TestApplyEvent(t *testing.T) {
	now := t0.Add(time.Hour)
	progress := func(sec int, files, errs, warns string) crypt.Event {
		return ev(t, crypt.EventJobProgress, sec, map[string]string{"FilesCreated": files, "BytesProcessed": "1000",
			"ObjectsProcessed": files, "TotalExpectedSPObjects": "10", "TotalExpectedBytes": "5000", "TotalErrors": errs, "TotalWarnings": warns})
	}
	itemErr := func(sec int, url string) crypt.Event {
		return ev(t, crypt.EventJobError, sec, map[string]string{"ObjectType": "File", "Url": url, "ErrorCode": "-2147024894", "Message": "missing"})
	}
	itemWarn := func(sec int) crypt.Event {
		return ev(t, crypt.EventJobWarning, sec, map[string]string{"ErrorCode": "-2147024894", "Message": "optional file missing"})
	}
	end := func(sec int, errs string) crypt.Event {
		return ev(t, crypt.EventJobEnd, sec, map[string]string{"FilesCreated": "9", "TotalErrors": errs, "TotalWarnings": "1", "ObjectsProcessed": "10"})
	}
	queued := ev(t, crypt.EventJobQueued, 0, nil)
	postponed := ev(t, crypt.EventJobPostponed, 10, map[string]string{"NextPickupTime": crypt.FormatEventTime(t0.Add(time.Hour)),
		"JobsInQueue": "3", "Reason": "JobInQueue:Resource"})
	start := ev(t, crypt.EventJobStart, 20, nil)
	for _, tc := range []struct {
		name      string
		events    []crypt.Event
		state     jobs.State
		path      []jobs.State
		files     int64
		errs      int64
		warns     int64
		kept      int
		reasonHas string
	}{
		{name: "queued", events: []crypt.Event{queued}, state: jobs.StateQueued, path: []jobs.State{jobs.StateSubmitted, jobs.StateQueued}},
		{name: "postponed", events: []crypt.Event{queued, postponed}, state: jobs.StatePostponed,
			path: []jobs.State{jobs.StateSubmitted, jobs.StateQueued, jobs.StatePostponed}},
		{name: "postponed then queued again", events: []crypt.Event{queued, postponed, ev(t, crypt.EventJobQueued, 15, map[string]string{"x": "1"})},
			state: jobs.StateQueued, path: []jobs.State{jobs.StateSubmitted, jobs.StateQueued, jobs.StatePostponed, jobs.StateQueued}},
		{name: "stale queued after postponed", events: []crypt.Event{postponed, queued}, state: jobs.StatePostponed,
			path: []jobs.State{jobs.StateSubmitted, jobs.StatePostponed}},
		{name: "stale postponed after queued", events: []crypt.Event{ev(t, crypt.EventJobQueued, 30, nil), postponed}, state: jobs.StateQueued,
			path: []jobs.State{jobs.StateSubmitted, jobs.StateQueued}},
		{name: "start before queued", events: []crypt.Event{start, queued}, state: jobs.StateRunning,
			path: []jobs.State{jobs.StateSubmitted, jobs.StateRunning}},
		{name: "progress counts and runs", events: []crypt.Event{queued, progress(30, "5", "0", "0")}, state: jobs.StateRunning,
			path: []jobs.State{jobs.StateSubmitted, jobs.StateQueued, jobs.StateRunning}, files: 5},
		{name: "counters take the maximum", events: []crypt.Event{start, progress(40, "7", "0", "0"), progress(30, "5", "0", "0")},
			state: jobs.StateRunning, files: 7},
		{name: "item errors are not terminal", events: []crypt.Event{start, itemErr(25, "a"), itemErr(26, "b"), itemWarn(27)},
			state: jobs.StateRunning, errs: 2, warns: 1, kept: 3},
		{name: "item errors and totals do not add up twice", events: []crypt.Event{start, progress(30, "5", "2", "0"), itemErr(25, "a"), itemErr(26, "b")},
			state: jobs.StateRunning, files: 5, errs: 2, kept: 2},
		{name: "fatal", events: []crypt.Event{start, ev(t, crypt.EventJobFatalError, 30, map[string]string{"ErrorCode": "-2147213196",
			"ErrorType": "Microsoft.SharePoint.SPException", "Message": "Injected fatal error"})},
			state: jobs.StateFailed, reasonHas: "JobFatalError -2147213196 Microsoft.SharePoint.SPException: Injected fatal error"},
		{name: "end without errors", events: []crypt.Event{queued, start, end(60, "0")}, state: jobs.StateCompleted,
			path: []jobs.State{jobs.StateSubmitted, jobs.StateQueued, jobs.StateRunning, jobs.StateCompleted}, files: 9, warns: 1},
		{name: "end with errors", events: []crypt.Event{start, itemErr(30, "a"), end(60, "1")}, state: jobs.StateCompletedWithErrors,
			files: 9, errs: 1, warns: 1, kept: 1},
		{name: "end straight after submission", events: []crypt.Event{end(60, "0")}, state: jobs.StateCompleted,
			path: []jobs.State{jobs.StateSubmitted, jobs.StateCompleted}, files: 9, warns: 1},
		{name: "nothing moves back after the end", events: []crypt.Event{end(60, "0"), start, queued, postponed}, state: jobs.StateCompleted,
			path: []jobs.State{jobs.StateSubmitted, jobs.StateCompleted}, files: 9, warns: 1},
		{name: "late item error after the end is still counted", events: []crypt.Event{end(60, "0"), itemErr(30, "a")}, state: jobs.StateCompleted,
			files: 9, errs: 1, warns: 1, kept: 1},
		{name: "fatal then end stays failed", events: []crypt.Event{ev(t, crypt.EventJobFatalError, 30, map[string]string{"Message": "x"}), end(31, "0")},
			state: jobs.StateFailed, reasonHas: "JobFatalError: x", files: 9, warns: 1},
		{name: "cancelled", events: []crypt.Event{queued, ev(t, crypt.EventJobCancelled, 5, map[string]string{"CancelledByUser": "true"}),
			ev(t, crypt.EventJobDeleted, 6, nil)}, state: jobs.StateCancelled,
			path: []jobs.State{jobs.StateSubmitted, jobs.StateQueued, jobs.StateCancelled}},
		{name: "deleted", events: []crypt.Event{ev(t, crypt.EventJobDeleted, 6, nil)}, state: jobs.StateCancelled},
		{name: "unknown events are only marked", events: []crypt.Event{ev(t, "JobSomethingNew", 6, nil)}, state: jobs.StateSubmitted,
			path: []jobs.State{jobs.StateSubmitted}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := submittedJob()
			for _, e := range tc.events {
				if !applyEvent(j, e, now) {
					t.Fatalf("%s was not new", e.Name)
				}
			}
			if j.State != tc.state {
				t.Fatalf("state %s (%s), want %s", j.State, j.FailureReason, tc.state)
			}
			if tc.path != nil && !slices.Equal(transitions(j), tc.path) {
				t.Fatalf("path %v, want %v", transitions(j), tc.path)
			}
			if j.FilesDone != tc.files || j.Errors != tc.errs || j.Warnings != tc.warns || len(j.FirstErrors) != tc.kept {
				t.Fatalf("files %d errors %d warnings %d kept %d; want %d %d %d %d", j.FilesDone, j.Errors, j.Warnings,
					len(j.FirstErrors), tc.files, tc.errs, tc.warns, tc.kept)
			}
			if !strings.Contains(j.FailureReason, tc.reasonHas) {
				t.Fatalf("reason %q, want %q", j.FailureReason, tc.reasonHas)
			}
			if !j.LastEventAt.Equal(now) {
				t.Fatalf("LastEventAt %s", j.LastEventAt)
			}
			// Every event again: nothing is new, nothing changes.
			before := j.Clone()
			for _, e := range tc.events {
				if applyEvent(j, e, now.Add(time.Hour)) {
					t.Fatalf("%s applied twice", e.Name)
				}
			}
			if j.State != before.State || j.Errors != before.Errors || len(j.History) != len(before.History) || !j.LastEventAt.Equal(now) {
				t.Fatalf("a replay changed the job")
			}
		})
	}
}

func TestApplyPostponement(t *testing.T) {
	j := submittedJob()
	next := t0.Add(2 * time.Hour)
	applyEvent(j, ev(t, crypt.EventJobPostponed, 10, map[string]string{"NextPickupTime": crypt.FormatEventTime(next),
		"JobsInQueue": "4", "Reason": "JobInQueue:DBMaint"}), t0)
	if j.State != jobs.StatePostponed || !j.Postponed.NextPickupTime.Equal(next) ||
		j.Postponed.Reason != "JobPostponed: JobInQueue:DBMaint (4 jobs in the queue)" {
		t.Fatalf("state %s, postponed %+v", j.State, j.Postponed)
	}
	later := next.Add(time.Hour)
	applyEvent(j, ev(t, crypt.EventJobPostponed, 20, map[string]string{"NextPickupTime": crypt.FormatEventTime(later)}), t0)
	if !j.Postponed.NextPickupTime.Equal(later) {
		t.Fatalf("postponed %+v", j.Postponed)
	}
	applyEvent(j, ev(t, crypt.EventJobStart, 30, nil), t0)
	if j.State != jobs.StateRunning || !j.Postponed.NextPickupTime.IsZero() {
		t.Fatalf("state %s, postponed %+v", j.State, j.Postponed)
	}
}

func TestApplyLogFileCreate(t *testing.T) {
	j := submittedJob()
	for i, name := range []string{"Import-" + spoID + "-1.log", "Import-" + spoID + "-1.log", "../../x.log", "a/b.log", "Import-" + spoID + "-2.log"} {
		applyEvent(j, ev(t, crypt.EventJobLogFileCreate, i, map[string]string{"FileName": name}), t0)
	}
	names, _ := notes(j, noteLogFile)
	if !slices.Equal(names, []string{"Import-" + spoID + "-1.log", "Import-" + spoID + "-2.log"}) {
		t.Fatalf("log files %v", names)
	}
	id, extra := logNames(j)
	if id != spoID || len(extra) != 0 {
		t.Fatalf("logNames = %q, %v", id, extra)
	}
	applyEvent(j, ev(t, crypt.EventJobLogFileCreate, 9, map[string]string{"FileName": "Other-1.txt"}), t0)
	if _, extra := logNames(j); !slices.Equal(extra, []string{"Other-1.txt"}) {
		t.Fatalf("extra %v", extra)
	}
}

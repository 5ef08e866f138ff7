package funchost

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/robfig/cron/v3"
)

// schedule is a timer schedule: NCRONTAB (6 fields with seconds, or 5) through robfig/cron, or a TimeSpan.
type schedule interface {
	Next(time.Time) time.Time
}

type constantSchedule time.Duration

func (c constantSchedule) Next(t time.Time) time.Time { return t.Add(time.Duration(c)) }

var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// parseSchedule returns the schedule and whether it is a cron expression (AdjustForDST) or a TimeSpan.
func parseSchedule(expr string, loc *time.Location) (schedule, bool, error) {
	expr = strings.TrimSpace(expr)
	if fields := strings.Fields(expr); len(fields) == 5 || len(fields) == 6 {
		s, err := cronParser.Parse(expr)
		if err != nil {
			return nil, false, fmt.Errorf("schedule %q: %w", expr, err)
		}
		if spec, ok := s.(*cron.SpecSchedule); ok {
			spec.Location = loc
		}
		return s, true, nil
	}
	if d, err := parseTimeSpan(expr); err == nil && d > 0 {
		return constantSchedule(d), false, nil
	}
	return nil, false, fmt.Errorf("the schedule expression %q was not recognized as a valid cron expression or timespan string", expr)
}

// scheduleStatus is the host's ScheduleStatus, stored in azure-webjobs-hosts/timers/<hostId>/<timer>/status.
type scheduleStatus struct {
	Last, Next, LastUpdated time.Time
}

// minDate is DateTime.MinValue, the host's "unset" value; anything below a year later counts as unset.
var minDate = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)

func unset(t time.Time) bool { return t.Before(minDate.AddDate(1, 0, 0)) }

func (s scheduleStatus) MarshalJSON() ([]byte, error) {
	f := func(t time.Time) string {
		if unset(t) {
			return nsQuote("0001-01-01T00:00:00+00:00")
		}
		return nsQuote(t.Format("2006-01-02T15:04:05.9999999-07:00"))
	}
	return []byte(`{"Last":` + f(s.Last) + `,"Next":` + f(s.Next) + `,"LastUpdated":` + f(s.LastUpdated) + `}`), nil
}

func (s *scheduleStatus) UnmarshalJSON(b []byte) error {
	var raw map[string]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	parse := func(v string) time.Time {
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.9999999", "2006-01-02T15:04:05"} {
			if t, err := time.Parse(layout, v); err == nil {
				return t
			}
		}
		return minDate
	}
	for k, v := range raw {
		switch strings.ToLower(k) {
		case "last":
			s.Last = parse(v)
		case "next":
			s.Next = parse(v)
		case "lastupdated":
			s.LastUpdated = parse(v)
		}
	}
	return nil
}

// timerListener is TimerListener with the storage schedule monitor.
type timerListener struct {
	h            *Host
	fn           *function
	sched        schedule
	cronExpr     bool
	useMonitor   bool
	runOnStartup bool
	loc          *time.Location
	statusBlob   *blockblob.Client

	status  scheduleStatus // guarded by fn.runMu once running
	startup *startupInvocation
}

type startupInvocation struct {
	pastDue  bool
	original time.Time
}

func newTimerListener(h *Host, fn *function) (*timerListener, error) {
	t := fn.cfg.Trigger
	loc := time.Local
	for _, k := range []string{"WEBSITE_TIME_ZONE", "TZ"} {
		if v, ok := h.app.Settings.get(k); ok && v != "" {
			if l, err := time.LoadLocation(v); err == nil {
				loc = l
				break
			}
		}
	}
	s, isCron, err := parseSchedule(t.Schedule, loc)
	if err != nil {
		return nil, err
	}
	tl := &timerListener{h: h, fn: fn, sched: s, cronExpr: isCron, runOnStartup: t.RunOnStartup, loc: loc, useMonitor: true}
	if t.UseMonitor != nil {
		tl.useMonitor = *t.UseMonitor
	}
	// Sub-minute schedules never use the monitor (TimerSchedule.Create).
	now := time.Now().In(loc)
	if isCron {
		first := s.Next(now)
		if second := s.Next(first); !second.After(now.Add(time.Minute)) {
			tl.useMonitor = false
		}
	} else if time.Duration(s.(constantSchedule)) < time.Minute {
		tl.useMonitor = false
	}
	return tl, nil
}

func (tl *timerListener) timerName() string { return tl.fn.id }

func (tl *timerListener) start(ctx context.Context) error {
	h := tl.h
	now := time.Now().In(tl.loc)
	if tl.useMonitor {
		sc, err := h.conns.get("AzureWebJobsStorage")
		if err != nil {
			return err
		}
		bs, err := sc.blobService()
		if err != nil {
			return err
		}
		cc := bs.NewContainerClient(hostsContainer)
		if _, err := cc.Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
			return err
		}
		tl.statusBlob = cc.NewBlockBlobClient("timers/" + h.hostID + "/" + tl.timerName() + "/status")
		st, err := tl.readStatus(ctx)
		if err != nil {
			return fmt.Errorf("read schedule status: %w", err)
		}
		if st != nil {
			h.log.Info(fmt.Sprintf("Function '%s' initial status: Last='%s', Next='%s', LastUpdated='%s'", tl.fn.cfg.Name,
				newtonsoftTime(st.Last), newtonsoftTime(st.Next), newtonsoftTime(st.LastUpdated)))
		}
		pastDue, status := tl.checkPastDue(ctx, now, st)
		tl.status = status
		if pastDue > 0 {
			tl.startup = &startupInvocation{pastDue: true, original: status.Next}
		}
	} else {
		tl.status = scheduleStatus{Last: minDate, Next: tl.sched.Next(now), LastUpdated: minDate}
	}
	if tl.startup == nil && tl.runOnStartup {
		tl.startup = &startupInvocation{}
	}
	var next []string
	t := now
	for range 5 {
		t = tl.sched.Next(t)
		next = append(next, t.Format("2006-01-02T15:04:05-07:00"))
	}
	h.log.Info(fmt.Sprintf("The next 5 occurrences of the '%s' schedule (%s) will be:\n%s", tl.fn.cfg.Name,
		tl.fn.cfg.Trigger.Schedule, strings.Join(next, "\n")))
	return nil
}

func (tl *timerListener) readStatus(ctx context.Context) (*scheduleStatus, error) {
	dl, err := tl.statusBlob.DownloadStream(ctx, nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound) {
			return nil, nil
		}
		return nil, err
	}
	defer dl.Body.Close()
	b, err := io.ReadAll(io.LimitReader(dl.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	st := &scheduleStatus{}
	if err := json.Unmarshal(stripBOM(b), st); err != nil {
		return nil, fmt.Errorf("status blob: %w", err)
	}
	// GetSafeStatusAsync: values below the threshold are "unset".
	for _, p := range []*time.Time{&st.Last, &st.Next, &st.LastUpdated} {
		if unset(*p) {
			*p = minDate
		}
	}
	return st, nil
}

func (tl *timerListener) writeStatus(ctx context.Context, st scheduleStatus) {
	b, _ := json.Marshal(st)
	if _, err := tl.statusBlob.UploadBuffer(ctx, b, nil); err != nil {
		tl.h.log.Error(fmt.Sprintf("Function '%s' failed to update the timer trigger status: %v", tl.fn.cfg.Name, err))
	}
}

// checkPastDue is ScheduleMonitor.CheckPastDueAsync.
func (tl *timerListener) checkPastDue(ctx context.Context, now time.Time, last *scheduleStatus) (time.Duration, scheduleStatus) {
	var recordedNext time.Time
	var st scheduleStatus
	if last == nil {
		next := tl.sched.Next(now)
		st = scheduleStatus{Last: minDate, Next: next, LastUpdated: now}
		tl.writeStatus(ctx, st)
		recordedNext = next
	} else {
		st = *last
		var expected, lastUpdated time.Time
		switch {
		case !unset(st.Last):
			expected, lastUpdated = tl.sched.Next(st.Last.In(tl.loc)), st.Last
		case !unset(st.LastUpdated):
			expected, lastUpdated = tl.sched.Next(st.LastUpdated.In(tl.loc)), st.LastUpdated
		default:
			expected, lastUpdated = tl.sched.Next(now), now
		}
		if !st.Next.Equal(expected) {
			// The schedule changed: recompute, without making it past due.
			if now.After(expected) {
				expected, lastUpdated = tl.sched.Next(now), now
			}
			st = scheduleStatus{Last: minDate, Next: expected, LastUpdated: lastUpdated}
			tl.writeStatus(ctx, st)
		}
		recordedNext = st.Next
	}
	st.Last, st.Next, st.LastUpdated = st.Last.In(tl.loc), st.Next.In(tl.loc), st.LastUpdated.In(tl.loc)
	if now.After(recordedNext) {
		return now.Sub(recordedNext), st
	}
	return 0, st
}

func (tl *timerListener) run() {
	h := tl.h
	for h.pollCtx.Err() == nil {
		var wait time.Duration
		if tl.startup == nil {
			tl.fn.runMu.Lock()
			wait = time.Until(tl.status.Next)
			tl.fn.runMu.Unlock()
			if wait <= 0 {
				wait = time.Nanosecond
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-h.pollCtx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		su := tl.startup
		tl.startup = nil
		switch {
		case su != nil && su.pastDue:
			h.log.Info(fmt.Sprintf("Timer for '%s' is past due (original schedule %s): invoking now", tl.fn.cfg.Name, newtonsoftTime(su.original)))
			tl.fire(time.Now().In(tl.loc), true, true, "")
		case su != nil:
			h.log.Info(fmt.Sprintf("Function '%s' is configured to run on startup: invoking now", tl.fn.cfg.Name))
			tl.fire(time.Now().In(tl.loc), false, true, "")
		default:
			tl.fire(time.Now().In(tl.loc), false, false, "")
		}
	}
}

// fire runs one invocation (one at a time per function) and, for listener invocations, records the new status.
// reason is set for admin invocations, which do not move the schedule.
func (tl *timerListener) fire(at time.Time, pastDue, unscheduled bool, reason string) error {
	h := tl.h
	tl.fn.runMu.Lock()
	defer tl.fn.runMu.Unlock()
	if h.pollCtx.Err() != nil {
		return context.Canceled
	}
	if reason == "" {
		reason = "Timer fired at " + newtonsoftTime(at)
	}
	inv := h.newInvocation(tl.fn, reason)
	statusJSON := "null"
	if tl.useMonitor {
		b, _ := json.Marshal(tl.status)
		statusJSON = string(b)
	}
	inv.data = append(inv.data, field{name: tl.fn.cfg.Trigger.Name, raw: json.RawMessage(fmt.Sprintf(
		`{"Schedule":{"AdjustForDST":%t},"ScheduleStatus":%s,"IsPastDue":%t}`, tl.cronExpr, statusJSON, pastDue))})
	inv.bd.set("TimerTrigger", at.Format("01/02/2006 15:04:05"))
	_, err := h.execute(h.execCtx, inv)
	if strings.HasPrefix(reason, "This function was programmatically called") {
		return err
	}
	adjusted := at
	if !pastDue && !unscheduled && tl.status.Next.After(at) {
		adjusted = tl.status.Next
	}
	tl.status = scheduleStatus{Last: adjusted, Next: tl.sched.Next(adjusted), LastUpdated: adjusted}
	if tl.useMonitor {
		ctx, cancel := completionCtx()
		tl.writeStatus(ctx, tl.status)
		cancel()
	}
	return err
}

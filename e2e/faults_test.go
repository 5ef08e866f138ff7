package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spomig/spomig/internal/api"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/migpkg"
)

// TestSharePointFaults: what SharePoint does to a job, on four sites of one stack at once.
//   - 429 and 503 with Retry-After on every REST call of the site (provisioning, submission, progress):
//     the job still completes, and the throttles were really consumed.
//   - A postponed job (JobPostponed): the API shows Postponed with SharePoint's next pickup time, then
//     the job completes.
//   - A fatal job error (JobFatalError): Failed, with SharePoint's message in the reason.
func TestSharePointFaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	work := t.TempDir()
	const fatalMessage = "e2e: the content database is read-only"

	type tc struct {
		site   string
		faults spoemu.Faults // set before the create
		again  spoemu.Faults // set once created (submission and monitoring)
		want   jobs.State
	}
	throttle := func(status, n int) spoemu.Faults {
		return spoemu.Faults{Throttle: &spoemu.Throttle{Count: n, Status: status, RetryAfter: 1}}
	}
	cases := []tc{
		{site: "throttled429", faults: throttle(429, 2), again: throttle(429, 4), want: jobs.StateCompleted},
		{site: "throttled503", faults: throttle(503, 2), again: throttle(503, 4), want: jobs.StateCompleted},
		{site: "postponed", want: jobs.StateCompleted,
			again: spoemu.Faults{Postpone: &spoemu.Postpone{Count: 1, Delay: spoemu.Duration(8 * time.Second), Reason: "JobInQueue:Resource"}}},
		{site: "fatal", again: spoemu.Faults{Fatal: &spoemu.Fatal{Count: 1, Message: fatalMessage}}, want: jobs.StateFailed},
	}
	creates := make([]created, len(cases))
	finals := make([]api.Job, len(cases))
	var postponed *api.Job // the first answer showing the postponed job Postponed
	var mu sync.Mutex
	fns := make([]func() error, len(cases))
	for i, c := range cases {
		e.s.SPO.SetFaults(c.site, c.faults)
		fns[i] = func() error {
			cr, err := e.create(e.s.SiteURL(c.site), "e2e faults: "+c.site)
			if err != nil {
				return fmt.Errorf("%s: %w", c.site, err)
			}
			creates[i] = cr
			if th := e.s.SPO.Faults(c.site).Throttle; th != nil && th.Count > 0 {
				return fmt.Errorf("%s: the create did not meet the throttle (%d left)", c.site, th.Count)
			}
			e.s.SPO.SetFaults(c.site, c.again)
			files := genFiles("", 40, uint64(i), 16<<10)
			zip, err := buildZip(work, c.site+".zip", migpkg.BuilderOptions{SiteURL: cr.SiteURL, WebID: cr.WebID}, files)
			if err != nil {
				return err
			}
			if err := e.upload(cr.UploadURL, zip); err != nil {
				return err
			}
			finals[i], err = e.follow(cr.ID, func(j api.Job) {
				mu.Lock()
				defer mu.Unlock()
				if j.State == jobs.StatePostponed && postponed == nil {
					postponed = &j
				}
			})
			return err
		}
	}
	if err := parallel(fns...); err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		t.Run(c.site, func(t *testing.T) {
			j := finals[i]
			if j.State != c.want {
				t.Fatalf("ended %s, want %s (reason %q)", j.State, c.want, j.FailureReason)
			}
			if th := e.s.SPO.Faults(c.site).Throttle; th != nil && th.Count > 0 {
				t.Errorf("%d throttled answers were never asked for", th.Count)
			}
			spo := e.spoJobs("/sites/" + c.site)
			if len(spo) != 1 {
				t.Fatalf("%d SPO jobs, want 1", len(spo))
			}
			if c.want == jobs.StateFailed {
				t.Logf("failure reason: %s", j.FailureReason)
				if !strings.Contains(j.FailureReason, fatalMessage) || !strings.Contains(j.FailureReason, "JobFatalError") {
					t.Errorf("failure reason %q does not carry SharePoint's fatal error", j.FailureReason)
				}
				if spo[0].Outcome != spoemu.OutcomeFailed {
					t.Errorf("SPO job outcome %s", spo[0].Outcome)
				}
				return
			}
			if spo[0].Outcome != spoemu.OutcomeCompleted || !strings.EqualFold(spo[0].ID, j.SPOJobID) {
				t.Errorf("SPO job %s %s; record %s", spo[0].ID, spo[0].Outcome, j.SPOJobID)
			}
		})
	}
	t.Run("postponed shown", func(t *testing.T) {
		if postponed == nil {
			t.Fatal("the API never showed the postponed job Postponed")
		}
		p := postponed.Postponed
		if p == nil || p.NextPickupTime == nil {
			t.Fatalf("Postponed without a next pickup time: %+v", p)
		}
		if next := *p.NextPickupTime; next.Before(creates[2].Job.CreatedAt) || next.After(time.Now()) {
			t.Errorf("next pickup time %s is not SharePoint's (~8 s after the postponement)", next)
		}
		if !strings.Contains(p.Reason, "JobInQueue:Resource") {
			t.Errorf("postpone reason %q", p.Reason)
		}
		t.Logf("shown Postponed until %s (%s)", p.NextPickupTime.Format(time.RFC3339), p.Reason)
	})
	// The postponed job's history shows the postponement before the completion.
	j, _, err := e.job(creates[2].ID)
	if err != nil {
		t.Fatal(err)
	}
	var seq []string
	for _, h := range j.History {
		if !strings.HasPrefix(h.Reason, "note: ") {
			seq = append(seq, string(h.State))
		}
	}
	if s := strings.Join(seq, ","); !strings.Contains(s, "Postponed") || !strings.HasSuffix(s, "Completed") {
		t.Errorf("postponed job's history: %s", s)
	}
}

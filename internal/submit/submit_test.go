package submit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spomig/spomig/functions"
	"github.com/spomig/spomig/internal/dev/testenv/capture"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/spo"
	"github.com/spomig/spomig/internal/vault"
)

// Delivering one message eight times at once creates one SharePoint job, recorded on the job.
func TestConcurrentDeliveriesCreateOneJob(t *testing.T) {
	store := newStore(t)
	v := newFakeVault()
	release := make(chan struct{})
	fs := &fakeSPO{answer: func(ctx context.Context, n int) (string, error) {
		<-release // hold the winner inside the call while the others try
		return "6a5f0c8e-0d6b-4b4e-9e4b-7c1c9d1e2f3a", nil
	}}
	s := newSubmitter(t, Options{Jobs: store, Vault: v, SPO: fs})
	j := stagedJob(t, store, nil)
	v.put(j.ID, secret())

	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Submit(context.Background(), EncodeMessage(j.ID), 1)
		}()
	}
	// Every delivery but the winner's comes back with ErrInProgress while the winner is in the call.
	deadline := time.Now().Add(30 * time.Second)
	for fs.count() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	inProgress := 0
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, ErrInProgress):
			inProgress++
		default:
			t.Fatalf("Submit: %v", err)
		}
	}
	// The deferred deliveries come back later and are acknowledged.
	for range inProgress {
		if err := submitUntilDone(t, s, EncodeMessage(j.ID)); err != nil {
			t.Fatal(err)
		}
	}
	if n := fs.count(); n != 1 {
		t.Fatalf("CreateMigrationJobEncrypted called %d times, want 1", n)
	}
	got := get(t, store, j.ID)
	if got.State != jobs.StateSubmitted || got.SPOJobID != "6a5f0c8e-0d6b-4b4e-9e4b-7c1c9d1e2f3a" || got.SubmitLease.Owner != "" {
		t.Fatalf("record: state %s, SPO job %q, lease %+v", got.State, got.SPOJobID, got.SubmitLease)
	}
	if v.reads != 1 {
		t.Fatalf("the job secret was read %d times, want 1 (by the lease holder only)", v.reads)
	}
	// The request: the secret's key, containers and queue, the record's web id.
	r := fs.reqs[0]
	if r.WebID != testWebID || r.DataContainerURI != testData || r.MetadataContainerURI != testMeta || r.QueueURI != testQueue ||
		string(fs.keys[0]) != string(testKey) {
		t.Fatalf("request %v", r)
	}
}

func TestSiteQueueWhenTheSecretHasNone(t *testing.T) {
	for _, tc := range []struct {
		name  string
		queue string // the site's queue in the vault
		want  string
	}{
		{"site queue", testQueue, testQueue},
		{"no queue at all", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newStore(t)
			v := newFakeVault()
			fs := &fakeSPO{}
			j := stagedJob(t, store, nil)
			sec := secret()
			sec.QueueURI = ""
			v.put(j.ID, sec)
			if tc.queue != "" {
				v.queues[vault.NormalizeSite(testSite)] = tc.queue
			}
			s := newSubmitter(t, Options{Jobs: store, Vault: v, SPO: fs})
			if err := s.Submit(context.Background(), EncodeMessage(j.ID), 1); err != nil {
				t.Fatal(err)
			}
			if fs.reqs[0].QueueURI != tc.want {
				t.Fatalf("queue %q, want %q", fs.reqs[0].QueueURI, tc.want)
			}
		})
	}
}

// A claim left by a crash before the SharePoint call is taken over once it expired; a live one is not.
func TestClaims(t *testing.T) {
	past, future := time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name      string
		lease     jobs.Lease
		wantErr   error
		wantState jobs.State
		wantCalls int
	}{
		{"crashed claim, expired", jobs.Lease{Owner: "claim/dead", Expiry: past}, nil, jobs.StateSubmitted, 1},
		{"foreign lease, expired", jobs.Lease{Owner: "someone", Expiry: past}, nil, jobs.StateSubmitted, 1},
		{"live claim", jobs.Lease{Owner: "claim/other", Expiry: future}, ErrInProgress, jobs.StateStaged, 0},
		{"live call", jobs.Lease{Owner: "call/other", Expiry: future}, ErrInProgress, jobs.StateStaged, 0},
		{"crashed call, expired", jobs.Lease{Owner: "call/dead", Expiry: past}, nil, jobs.StateFailed, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newStore(t)
			v := newFakeVault()
			fs := &fakeSPO{}
			j := stagedJob(t, store, func(j *jobs.Job) { j.SubmitLease = tc.lease })
			v.put(j.ID, secret())
			s := newSubmitter(t, Options{Jobs: store, Vault: v, SPO: fs})
			err := s.Submit(context.Background(), EncodeMessage(j.ID), 2)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("Submit = %v, want %v", err, tc.wantErr)
			}
			got := get(t, store, j.ID)
			if got.State != tc.wantState || fs.count() != tc.wantCalls {
				t.Fatalf("state %s after %d calls, want %s after %d", got.State, fs.count(), tc.wantState, tc.wantCalls)
			}
			if tc.wantState == jobs.StateFailed {
				if !strings.Contains(got.FailureReason, "outcome unknown") || !strings.Contains(got.FailureReason, "dead") {
					t.Fatalf("reason %q", got.FailureReason)
				}
				if got.SubmitLease.Owner != "" {
					t.Fatalf("lease %+v left", got.SubmitLease)
				}
			}
		})
	}
}

// Messages that need no submission are acknowledged without calling SharePoint.
func TestAcknowledged(t *testing.T) {
	store := newStore(t)
	v := newFakeVault()
	fs := &fakeSPO{}
	s := newSubmitter(t, Options{Jobs: store, Vault: v, SPO: fs})
	submitted := stagedJob(t, store, func(j *jobs.Job) {
		j.State, j.SPOJobID = jobs.StateSubmitted, "11111111-2222-3333-4444-555555555555"
	})
	running := stagedJob(t, store, func(j *jobs.Job) {
		j.State, j.SPOJobID = jobs.StateRunning, "11111111-2222-3333-4444-666666666666"
	})
	failed := stagedJob(t, store, func(j *jobs.Job) { j.State, j.FailureReason = jobs.StateFailed, "x" })
	cancelled := stagedJob(t, store, func(j *jobs.Job) { j.State = jobs.StateCancelled })
	for name, text := range map[string]string{
		"submitted": EncodeMessage(submitted.ID), "running": EncodeMessage(running.ID),
		"failed": EncodeMessage(failed.ID), "cancelled": EncodeMessage(cancelled.ID),
		"unknown job": EncodeMessage("no-such-job"), "malformed": "not a message", "empty": "",
	} {
		if err := s.Submit(context.Background(), text, 1); err != nil {
			t.Errorf("%s: Submit = %v, want nil", name, err)
		}
	}
	// Not staged yet: redelivered.
	for _, st := range []jobs.State{jobs.StateAwaitingPackage, jobs.StateEncrypting} {
		j := stagedJob(t, store, func(j *jobs.Job) { j.State = st })
		if err := s.Submit(context.Background(), EncodeMessage(j.ID), 1); !errors.Is(err, ErrNotStaged) {
			t.Errorf("%s: Submit = %v, want ErrNotStaged", st, err)
		}
	}
	if fs.count() != 0 || v.reads != 0 {
		t.Fatalf("%d calls, %d secret reads; want none", fs.count(), v.reads)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// Each failure is recorded on the job; what cannot have created a job releases the lease for a retry,
// what can have is never retried.
func TestFailures(t *testing.T) {
	spoErr := func(status int, code int64) error {
		return &spo.Error{StatusCode: status, Code: code, Method: "CreateMigrationJobEncrypted", Message: "boom sig=LEAKED"}
	}
	for _, tc := range []struct {
		name      string
		answer    error
		wrote     bool
		vaultErr  error
		noSecret  bool
		dequeue   int64
		wantErr   bool // Submit returns an error (redelivery)
		wantState jobs.State
		wantLast  string // in LastError
		wantWhy   string // in FailureReason
	}{
		{name: "throttled", answer: &spo.ThrottledError{Method: "CreateMigrationJobEncrypted", StatusCode: 429, RetryAfter: time.Hour},
			wrote: true, dequeue: 1, wantErr: true, wantState: jobs.StateStaged, wantLast: "throttled"},
		{name: "throttled on the last delivery", answer: &spo.ThrottledError{Method: "CreateMigrationJobEncrypted", StatusCode: 503, RetryAfter: time.Hour},
			wrote: true, dequeue: 5, wantErr: true, wantState: jobs.StateFailed, wantLast: "throttled", wantWhy: "submission failed 5 times: spo: CreateMigrationJobEncrypted: throttled"},
		{name: "server error", answer: spoErr(500, -1), wrote: true, dequeue: 2, wantErr: true, wantState: jobs.StateStaged, wantLast: "HTTP 500"},
		{name: "access denied", answer: spoErr(403, spo.CodeAccessDenied), wrote: true, dequeue: 1, wantErr: true, wantState: jobs.StateStaged, wantLast: "HTTP 403"},
		{name: "argument refused", answer: spoErr(400, -2147024809), wrote: true, dequeue: 1, wantState: jobs.StateFailed, wantLast: "HTTP 400", wantWhy: "submission refused: spo: CreateMigrationJobEncrypted: HTTP 400"},
		{name: "refused before sending", answer: fmt.Errorf("spo: CreateMigrationJobEncrypted: data container: %w", spo.ErrStorageHostNotAllowed), dequeue: 1, wantState: jobs.StateFailed, wantWhy: "submission refused"},
		{name: "null answer", answer: fmt.Errorf("spo: CreateMigrationJobEncrypted: %w", spo.ErrJobNotCreated), wrote: true, dequeue: 1, wantErr: true, wantState: jobs.StateStaged, wantLast: "job not created"},
		{name: "not sent (dial)", answer: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, dequeue: 1, wantErr: true, wantState: jobs.StateStaged, wantLast: "connection refused"},
		{name: "sent, no answer", answer: &net.OpError{Op: "read", Net: "tcp", Err: timeoutErr{}}, wrote: true, dequeue: 1, wantState: jobs.StateFailed, wantWhy: "outcome unknown"},
		{name: "unreadable 2xx", answer: fmt.Errorf("spo: CreateMigrationJobEncrypted: %w", spo.ErrBadAnswer), wrote: true, dequeue: 1, wantState: jobs.StateFailed, wantWhy: "outcome unknown"},
		{name: "gateway timeout", answer: spoErr(504, 0), wrote: true, dequeue: 1, wantState: jobs.StateFailed, wantWhy: "outcome unknown"},
		{name: "deadline while sending", answer: context.DeadlineExceeded, wrote: true, dequeue: 1, wantState: jobs.StateFailed, wantWhy: "outcome unknown"},
		{name: "vault unavailable", vaultErr: errors.New("vault: get job secret: 503 ServiceUnavailable"), dequeue: 1, wantErr: true, wantState: jobs.StateStaged, wantLast: "503"},
		{name: "secret gone", noSecret: true, dequeue: 1, wantState: jobs.StateFailed, wantWhy: "submission refused: read the job secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newStore(t)
			v := newFakeVault()
			v.jobErr = tc.vaultErr
			fs := &fakeSPO{wrote: tc.wrote}
			if tc.answer != nil {
				fs.answer = func(context.Context, int) (string, error) { return "", tc.answer }
			}
			j := stagedJob(t, store, nil)
			if !tc.noSecret {
				v.put(j.ID, secret())
			}
			var logs capture.Buffer
			s := newSubmitter(t, Options{Jobs: store, Vault: v, SPO: fs, Logger: logs.Logger()})
			err := s.Submit(context.Background(), EncodeMessage(j.ID), tc.dequeue)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Submit = %v, want error %t", err, tc.wantErr)
			}
			got := get(t, store, j.ID)
			if got.State != tc.wantState {
				t.Fatalf("state %s (%s), want %s", got.State, got.FailureReason, tc.wantState)
			}
			if got.SubmitLease.Owner != "" {
				t.Fatalf("lease %+v not released", got.SubmitLease)
			}
			if !strings.Contains(LastError(got), tc.wantLast) {
				t.Fatalf("last error %q, want %q", LastError(got), tc.wantLast)
			}
			if !strings.Contains(got.FailureReason, tc.wantWhy) {
				t.Fatalf("reason %q, want %q", got.FailureReason, tc.wantWhy)
			}
			for _, text := range []string{got.FailureReason, LastError(got), logs.String()} {
				if strings.Contains(text, "LEAKED") || strings.Contains(text, testSig) {
					t.Fatalf("a signature leaked: %s", text)
				}
			}
			if got.State == jobs.StateStaged {
				// The lease was released: the next delivery tries again.
				fs.answer, v.jobErr = nil, nil
				if err := s.Submit(context.Background(), EncodeMessage(j.ID), tc.dequeue+1); err != nil {
					t.Fatal(err)
				}
				if got := get(t, store, j.ID); got.State != jobs.StateSubmitted {
					t.Fatalf("retry: state %s", got.State)
				}
			} else if n := fs.count(); n > 1 {
				t.Fatalf("%d calls", n)
			}
		})
	}
}

// When the attempt lost its job meanwhile (failed as outcome unknown by another delivery), the SPO job
// id that SharePoint returned is still kept for the manual check.
func TestLateAnswerIsKept(t *testing.T) {
	store := newStore(t)
	v := newFakeVault()
	var j *jobs.Job
	fs := &fakeSPO{}
	fs.answer = func(ctx context.Context, n int) (string, error) {
		_, err := store.Update(ctx, j.ID, func(j *jobs.Job) error {
			return j.Transition(jobs.StateFailed, time.Now(), "given up")
		})
		return "6a5f0c8e-0d6b-4b4e-9e4b-7c1c9d1e2f3b", err
	}
	j = stagedJob(t, store, nil)
	v.put(j.ID, secret())
	s := newSubmitter(t, Options{Jobs: store, Vault: v, SPO: fs})
	if err := s.Submit(context.Background(), EncodeMessage(j.ID), 1); err != nil {
		t.Fatal(err)
	}
	got := get(t, store, j.ID)
	if got.State != jobs.StateFailed || got.SPOJobID != "6a5f0c8e-0d6b-4b4e-9e4b-7c1c9d1e2f3b" {
		t.Fatalf("state %s, SPO job %q", got.State, got.SPOJobID)
	}
	if last := got.History[len(got.History)-1]; !strings.Contains(last.Reason, "not monitored") {
		t.Fatalf("last history entry %+v", last)
	}
}

func TestResolvePoisoned(t *testing.T) {
	now := time.Now()
	withNote := func(j *jobs.Job) { addNote(j, now.Add(-time.Minute), notePrefixFailed+"spo: throttled") }
	for _, tc := range []struct {
		name      string
		job       func(*jobs.Job)
		wantDone  bool
		wantState jobs.State
		wantWhy   string
	}{
		{"failed attempts", withNote, true, jobs.StateFailed, "submission failed 5 times: spo: throttled"},
		{"no error recorded", nil, true, jobs.StateFailed, "submission failed 5 times: no error recorded"},
		{"expired claim", func(j *jobs.Job) {
			withNote(j)
			j.SubmitLease = jobs.Lease{Owner: "claim/x", Expiry: now.Add(-time.Second)}
		}, true, jobs.StateFailed, "submission failed 5 times"},
		{"expired call", func(j *jobs.Job) { j.SubmitLease = jobs.Lease{Owner: "call/x", Expiry: now.Add(-time.Second)} },
			true, jobs.StateFailed, "outcome unknown"},
		{"live lease", func(j *jobs.Job) { j.SubmitLease = jobs.Lease{Owner: "call/x", Expiry: now.Add(time.Minute)} },
			false, jobs.StateStaged, ""},
		{"submitted", func(j *jobs.Job) { j.State, j.SPOJobID = jobs.StateSubmitted, "x" }, true, jobs.StateSubmitted, ""},
		{"ended", func(j *jobs.Job) { j.State = jobs.StateCancelled }, true, jobs.StateCancelled, ""},
		{"not staged", func(j *jobs.Job) { j.State = jobs.StateEncrypting }, true, jobs.StateEncrypting, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := &jobs.Job{ID: "j", State: jobs.StateStaged}
			if tc.job != nil {
				tc.job(j)
			}
			done := ResolvePoisoned(j, now, 5)
			if done != tc.wantDone || j.State != tc.wantState || !strings.Contains(j.FailureReason, tc.wantWhy) {
				t.Fatalf("done %t, state %s, reason %q", done, j.State, j.FailureReason)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	store := newStore(t)
	for _, o := range []Options{
		{Vault: newFakeVault(), SPO: &fakeSPO{}},
		{Jobs: store, SPO: &fakeSPO{}},
		{Jobs: store, Vault: newFakeVault()},
		{Jobs: store, Vault: newFakeVault(), SPO: &fakeSPO{}, Lease: time.Second},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

var _ functions.Submitter = (*Submitter)(nil)

// An invocation cancelled during the call (a host shutdown) still records the outcome: nothing sent is
// retried later; something sent is never resubmitted.
func TestCancelledInvocationStillRecords(t *testing.T) {
	for _, tc := range []struct {
		name  string
		wrote bool
		want  jobs.State
	}{
		{"before the request was written", false, jobs.StateStaged},
		{"after the request was written", true, jobs.StateFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newStore(t)
			v := newFakeVault()
			ctx, cancel := context.WithCancel(context.Background())
			fs := &fakeSPO{wrote: tc.wrote, answer: func(callCtx context.Context, n int) (string, error) {
				cancel()
				<-callCtx.Done()
				return "", callCtx.Err()
			}}
			j := stagedJob(t, store, nil)
			v.put(j.ID, secret())
			s := newSubmitter(t, Options{Jobs: store, Vault: v, SPO: fs})
			err := s.Submit(ctx, EncodeMessage(j.ID), 1)
			got := get(t, store, j.ID)
			if got.State != tc.want || got.SubmitLease.Owner != "" {
				t.Fatalf("Submit = %v; state %s, lease %+v", err, got.State, got.SubmitLease)
			}
			if (err != nil) != (tc.want == jobs.StateStaged) {
				t.Fatalf("Submit = %v", err)
			}
		})
	}
}

package submit

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spomig/spomig/internal/dev/testenv/capture"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/spo"
)

// hookedJobs is the job store seen by a Submitter: it records the lease after every successful Update,
// runs after (when set) once the write is done, and refuses every write once killed (a dead process).
type hookedJobs struct {
	*jobs.Store
	mu     sync.Mutex
	leases []jobs.Lease
	after  func(j *jobs.Job)
	killed atomic.Bool
}

var _ Jobs = (*hookedJobs)(nil)

func (h *hookedJobs) Update(ctx context.Context, id string, mutate func(*jobs.Job) error) (*jobs.Job, error) {
	if h.killed.Load() {
		return nil, errors.New("the process was killed")
	}
	j, err := h.Store.Update(ctx, id, mutate)
	if err != nil {
		return j, err
	}
	h.mu.Lock()
	h.leases = append(h.leases, j.SubmitLease)
	h.mu.Unlock()
	if h.after != nil {
		h.after(j)
	}
	return j, nil
}

// owners lists the lease owner after each write, the attempt id replaced by "A" ("" for no lease).
func (h *hookedJobs) owners() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, l := range h.leases {
		o, _, _ := strings.Cut(l.Owner, "/")
		if l.Owner != "" {
			o += "/A"
		}
		out = append(out, o)
	}
	return out
}

// fakeClock is a Submitter's Options.Now that the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func throttled(status int, after time.Duration) error {
	return &spo.ThrottledError{Method: "CreateMigrationJobEncrypted", StatusCode: status, RetryAfter: after}
}

// Throttled twice, then created: one SharePoint job; every call runs under its own call marker and
// every wait under a renewed claim (call → claim → call …); the key is sent whole each time.
func TestThrottledTwiceThenCreated(t *testing.T) {
	store := newStore(t)
	v := newFakeVault()
	clock := &fakeClock{t: time.Now()}
	hj := &hookedJobs{Store: store}
	var j *jobs.Job
	var duringCall []string // the lease owner at SharePoint, read from the record
	fs := &fakeSPO{}
	fs.answer = func(ctx context.Context, n int) (string, error) {
		duringCall = append(duringCall, get(t, store, j.ID).SubmitLease.Owner)
		clock.advance(time.Minute) // each call "takes" a minute of the lease clock
		switch n {
		case 1:
			return "", throttled(429, 20*time.Millisecond)
		case 2:
			return "", throttled(503, 10*time.Millisecond)
		}
		return "6a5f0c8e-0d6b-4b4e-9e4b-7c1c9d1e2f3d", nil
	}
	j = stagedJob(t, store, nil)
	v.put(j.ID, secret())
	var logs capture.Buffer
	s := newSubmitter(t, Options{Jobs: hj, Vault: v, SPO: fs, Now: clock.now, Logger: logs.Logger()})
	if err := s.Submit(context.Background(), EncodeMessage(j.ID), 1); err != nil {
		t.Fatal(err)
	}
	if n := fs.count(); n != 3 {
		t.Fatalf("CreateMigrationJobEncrypted called %d times, want 3", n)
	}
	got := get(t, store, j.ID)
	if got.State != jobs.StateSubmitted || got.SPOJobID != "6a5f0c8e-0d6b-4b4e-9e4b-7c1c9d1e2f3d" || got.SubmitLease.Owner != "" {
		t.Fatalf("record: state %s, SPO job %q, lease %+v", got.State, got.SPOJobID, got.SubmitLease)
	}
	want := []string{"claim/A", "call/A", "claim/A", "call/A", "claim/A", "call/A", ""}
	if o := hj.owners(); !reflect.DeepEqual(o, want) {
		t.Fatalf("lease after each write %v, want %v", o, want)
	}
	for i, o := range duringCall {
		if !strings.HasPrefix(o, ownerCall) {
			t.Errorf("call %d ran under lease %q, want the call marker", i+1, o)
		}
	}
	// Each re-claim renews the lease: it expires Lease after the re-claim, later than the claim before.
	for _, i := range []int{2, 4} {
		prev, cur := hj.leases[i-2].Expiry, hj.leases[i].Expiry
		if !cur.After(prev) {
			t.Errorf("write %d: claim expiry %s not renewed (was %s)", i+1, cur, prev)
		}
	}
	for i, k := range fs.keys {
		if string(k) != string(testKey) {
			t.Fatalf("call %d was sent another key", i+1)
		}
	}
	if n := strings.Count(logs.String(), "submission throttled: waiting to call again"); n != 2 {
		t.Errorf("%d throttle waits logged, want 2:\n%s", n, logs.String())
	}
	if strings.Contains(got.FailureReason+LastError(got), "outcome unknown") {
		t.Fatalf("record mentions an unknown outcome: %q %q", got.FailureReason, LastError(got))
	}
}

// The attempt is killed while it waits on a Retry-After: its record is left with a claim (not a call
// marker), so a redelivery defers while the claim lasts and takes it over once it expired, and submits:
// no "outcome unknown", one SharePoint job.
func TestKilledWhileWaitingOnRetryAfter(t *testing.T) {
	store := newStore(t)
	v := newFakeVault()
	fs := &fakeSPO{answer: func(ctx context.Context, n int) (string, error) {
		if n == 1 {
			return "", throttled(429, 5*time.Second)
		}
		return "6a5f0c8e-0d6b-4b4e-9e4b-7c1c9d1e2f3e", nil
	}}
	j := stagedJob(t, store, nil)
	v.put(j.ID, secret())

	// The dying attempt: once the claim is back after the throttled call, every write fails and the
	// invocation ends (what SIGKILL does, from the record's point of view).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hj := &hookedJobs{Store: store}
	hj.after = func(j *jobs.Job) {
		if strings.HasPrefix(j.SubmitLease.Owner, ownerClaim) && fs.count() == 1 {
			hj.killed.Store(true)
			cancel()
		}
	}
	dying := newSubmitter(t, Options{Jobs: hj, Vault: v, SPO: fs, Lease: 10 * time.Second})
	if err := dying.Submit(ctx, EncodeMessage(j.ID), 1); err == nil {
		t.Fatal("the killed attempt reported success")
	}
	left := get(t, store, j.ID)
	if left.State != jobs.StateStaged || !strings.HasPrefix(left.SubmitLease.Owner, ownerClaim) {
		t.Fatalf("the killed attempt left state %s, lease %+v; want Staged with a claim", left.State, left.SubmitLease)
	}
	if want := []string{"claim/A", "call/A", "claim/A"}; !reflect.DeepEqual(hj.owners(), want) {
		t.Fatalf("lease after each write %v, want %v", hj.owners(), want)
	}

	// A redelivery while the renewed claim lasts defers; one after it expired takes it over.
	var logs capture.Buffer
	s := newSubmitter(t, Options{Jobs: store, Vault: v, SPO: fs, Lease: 10 * time.Second, Logger: logs.Logger()})
	if err := s.Submit(context.Background(), EncodeMessage(j.ID), 2); !errors.Is(err, ErrInProgress) {
		t.Fatalf("redelivery during the claim: %v, want ErrInProgress", err)
	}
	later := newSubmitter(t, Options{Jobs: store, Vault: v, SPO: fs, Lease: 10 * time.Second, Logger: logs.Logger(),
		Now: func() time.Time { return time.Now().Add(time.Minute) }})
	if err := later.Submit(context.Background(), EncodeMessage(j.ID), 3); err != nil {
		t.Fatalf("redelivery after the claim expired: %v", err)
	}
	got := get(t, store, j.ID)
	if got.State != jobs.StateSubmitted || got.SPOJobID != "6a5f0c8e-0d6b-4b4e-9e4b-7c1c9d1e2f3e" {
		t.Fatalf("state %s (%s), SPO job %q", got.State, got.FailureReason, got.SPOJobID)
	}
	if n := fs.count(); n != 2 {
		t.Fatalf("CreateMigrationJobEncrypted called %d times, want 2 (one refused, one created)", n)
	}
	if !strings.Contains(logs.String(), "taking over an expired submit claim") {
		t.Errorf("no takeover of the claim logged:\n%s", logs.String())
	}
	for _, h := range got.History {
		if strings.Contains(h.Reason, "outcome unknown") {
			t.Fatalf("history mentions an unknown outcome: %q", h.Reason)
		}
	}
}

// What interrupts a throttle wait, or refuses it: the lease is released (or left to whoever took it)
// and the error returned for a redelivery; never an unknown outcome.
func TestThrottleWaitLimits(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      Options
		waits     []time.Duration // RetryAfter of the throttled answers, then created
		hook      func(h *hookedJobs, s *jobs.Store, id string, cancel context.CancelFunc)
		wantCalls int
		wantErr   error // errors.Is; nil: a *spo.ThrottledError
		wantLease string
	}{
		{name: "beyond the throttle budget", opts: Options{ThrottleBudget: 25 * time.Millisecond},
			waits: []time.Duration{10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond}, wantCalls: 3},
		{name: "waiting disabled", opts: Options{ThrottleBudget: -1},
			waits: []time.Duration{time.Millisecond}, wantCalls: 1},
		{name: "longer than the lease allows", opts: Options{Lease: 10 * time.Second},
			waits: []time.Duration{6 * time.Second}, wantCalls: 1},
		{name: "retries exhausted", waits: make([]time.Duration, maxThrottleRetries+1), wantCalls: maxThrottleRetries + 1},
		{name: "cancelled during the wait", waits: []time.Duration{time.Hour / 60},
			hook: func(h *hookedJobs, _ *jobs.Store, _ string, cancel context.CancelFunc) {
				h.after = func(j *jobs.Job) {
					if strings.HasPrefix(j.SubmitLease.Owner, ownerClaim) && len(h.leases) > 1 {
						cancel()
					}
				}
			}, wantCalls: 1, wantErr: context.Canceled},
		{name: "claim taken over during the wait", waits: []time.Duration{10 * time.Millisecond},
			hook: func(h *hookedJobs, s *jobs.Store, id string, _ context.CancelFunc) {
				h.after = func(j *jobs.Job) {
					if strings.HasPrefix(j.SubmitLease.Owner, ownerClaim) && len(h.leases) > 1 {
						_, err := s.Update(context.Background(), id, func(j *jobs.Job) error {
							j.SubmitLease = jobs.Lease{Owner: "claim/other", Expiry: time.Now().Add(time.Hour)}
							return nil
						})
						if err != nil {
							panic(err)
						}
					}
				}
			}, wantCalls: 1, wantErr: ErrInProgress, wantLease: "claim/other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newStore(t)
			v := newFakeVault()
			fs := &fakeSPO{answer: func(ctx context.Context, n int) (string, error) {
				if n <= len(tc.waits) {
					return "", throttled(429, tc.waits[n-1])
				}
				return "6a5f0c8e-0d6b-4b4e-9e4b-7c1c9d1e2f3f", nil
			}}
			j := stagedJob(t, store, nil)
			v.put(j.ID, secret())
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			hj := &hookedJobs{Store: store}
			if tc.hook != nil {
				tc.hook(hj, store, j.ID, cancel)
			}
			opts := tc.opts
			opts.Jobs, opts.Vault, opts.SPO = hj, v, fs
			s := newSubmitter(t, opts)
			err := s.Submit(ctx, EncodeMessage(j.ID), 1)
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Submit = %v, want %v", err, tc.wantErr)
				}
			case !spo.IsThrottled(err):
				t.Fatalf("Submit = %v, want a *spo.ThrottledError", err)
			}
			if n := fs.count(); n != tc.wantCalls {
				t.Fatalf("%d calls, want %d", n, tc.wantCalls)
			}
			got := get(t, store, j.ID)
			if got.State != jobs.StateStaged || got.SubmitLease.Owner != tc.wantLease {
				t.Fatalf("state %s (%s), lease %+v; want Staged, lease %q", got.State, got.FailureReason, got.SubmitLease, tc.wantLease)
			}
			if tc.wantLease == "" {
				// The lease was released: the next delivery submits.
				fs.answer = nil
				if err := s.Submit(context.Background(), EncodeMessage(j.ID), 2); err != nil {
					t.Fatal(err)
				}
				if got := get(t, store, j.ID); got.State != jobs.StateSubmitted {
					t.Fatalf("retry: state %s", got.State)
				}
			}
		})
	}
}

// With the real client: SharePoint throttles twice, then creates the job. The client does not wait
// itself (nothing reaches its Sleep); the submitter does, between two call markers.
func TestThrottledWithTheRealClient(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch requests.Add(1) {
		case 1:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		case 2:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"value":"6a5f0c8e-0d6b-4b4e-9e4b-7c1c9d1e2f40"}`))
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	var clientSlept atomic.Int32
	client, err := spo.New(spo.Options{Credential: tokenCred{}, TenantHost: host, HTTPClient: srv.Client(),
		Sleep: func(ctx context.Context, d time.Duration) error { clientSlept.Add(1); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	store := newStore(t)
	v := newFakeVault()
	j := stagedJob(t, store, func(j *jobs.Job) { j.SiteURL = "https://" + host + "/sites/hr" })
	v.put(j.ID, secret())
	hj := &hookedJobs{Store: store}
	s := newSubmitter(t, Options{Jobs: hj, Vault: v, SPO: client})
	if err := s.Submit(context.Background(), EncodeMessage(j.ID), 1); err != nil {
		t.Fatal(err)
	}
	got := get(t, store, j.ID)
	if got.State != jobs.StateSubmitted || got.SPOJobID != "6a5f0c8e-0d6b-4b4e-9e4b-7c1c9d1e2f40" {
		t.Fatalf("state %s (%s), SPO job %q", got.State, LastError(got), got.SPOJobID)
	}
	if n := requests.Load(); n != 3 {
		t.Fatalf("SharePoint saw %d requests, want 3", n)
	}
	if n := clientSlept.Load(); n != 0 {
		t.Fatalf("the client slept %d times inside the call", n)
	}
	want := []string{"claim/A", "call/A", "claim/A", "call/A", "claim/A", "call/A", ""}
	if o := hj.owners(); !reflect.DeepEqual(o, want) {
		t.Fatalf("lease after each write %v, want %v", o, want)
	}
}

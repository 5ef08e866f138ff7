package jobs

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

func TestNewValidatesOptions(t *testing.T) {
	svc, err := aztables.NewServiceClientWithNoCredential("http://127.0.0.1:1/devstoreaccount1", nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		table string
		ok    bool
	}{
		{"", true}, {"migrationjobs", true}, {"ab", false}, {"1jobs", false}, {"migration-jobs", false},
	}
	for _, tt := range tests {
		s, err := New(svc, Options{Table: tt.table})
		if (err == nil) != tt.ok {
			t.Errorf("table %q: %v", tt.table, err)
		}
		if err == nil && tt.table == "" && s.Table() != DefaultTable {
			t.Errorf("default table %q", s.Table())
		}
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("nil client accepted")
	}
}

func TestEnsureTableIsIdempotent(t *testing.T) {
	s := newStore(t, Options{})
	for range 2 {
		if err := s.EnsureTable(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCreateGetUpdateRoundTrip(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2025, 5, 20, 12, 0, 0, 987654321, testLocation)
	s := newStore(t, Options{Now: func() time.Time { return now }})

	want := fullJob(newID("rt"))
	if err := s.Create(ctx, want); err != nil {
		t.Fatal(err)
	}
	if want.Version != 1 || !want.UpdatedAt.Equal(now.Truncate(100)) || want.UpdatedAt.Location() != time.UTC || want.SPOJobID != strings.ToLower(want.SPOJobID) {
		t.Fatalf("Create did not fill in defaults: %+v", want)
	}
	got, err := s.Get(ctx, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Get after Create:\n got %+v\nwant %+v", got, want)
	}

	// Update every kind of field.
	later := now.Add(time.Hour)
	s.opts.Now = func() time.Time { return later }
	updated, err := s.Update(ctx, want.ID, func(j *Job) error {
		j.FilesDone, j.BytesDone, j.ObjectsDone, j.Errors, j.Warnings = 120, 1<<40, 150, 3, 4
		j.ProgressToken = "token-0043"
		j.LastEventAt = later
		j.MarkEventSeen("JobEnd|05/20/2025 10:00:00.000")
		j.AddItemFailure(ItemFailure{Kind: ItemError, ObjectType: "ListItem", URL: "/sites/hr/Lists/x/1_.000", ErrorCode: "0x1", Message: "boom"})
		j.ReleaseSubmitLease("host-1/invocation-7")
		j.LogsBlobPrefix = "migration-reports/x/"
		return j.Transition(StateCompletedWithErrors, later, "JobEnd")
	})
	if err != nil {
		t.Fatal(err)
	}
	if updated.Version != 2 || !updated.UpdatedAt.Equal(later.Truncate(100)) || updated.State != StateCompletedWithErrors || !updated.EndedAt.Equal(later.Truncate(100)) {
		t.Fatalf("updated %+v", updated)
	}
	got, err = s.Get(ctx, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, updated) {
		t.Fatalf("Get after Update:\n got %+v\nwant %+v", got, updated)
	}
	if len(got.FirstErrors) != 3 || len(got.SeenEvents) != 3 || len(got.History) != 6 || got.SubmitLease != (Lease{}) {
		t.Fatalf("lists %d %d %d lease %+v", len(got.FirstErrors), len(got.SeenEvents), len(got.History), got.SubmitLease)
	}
	// The state index row is the same record.
	page, _, err := s.List(ctx, ListOptions{State: []State{StateCompletedWithErrors}})
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 1 || !reflect.DeepEqual(&page[0], updated) {
		t.Fatalf("List: %+v", page)
	}
	// The stored rows never carry secret-like names.
	for _, rk := range []string{mainRowKey(want.ID), stateRowKey(StateCompletedWithErrors, want.ID), spoRowKey(want.SPOJobID)} {
		resp, err := s.table.GetEntity(ctx, partitionKey, rk, nil)
		if err != nil {
			t.Fatalf("row %s: %v", rk, err)
		}
		checkNoSecretNames(t, resp.Value)
	}
}

func TestCreateExistsAndCreateOrGet(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, Options{})
	j := &Job{ID: newID("ex"), SiteURL: "https://contoso.sharepoint.com/sites/a"}
	if err := s.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	if j.State != StateAwaitingPackage || len(j.History) != 1 || j.History[0].Reason != "created" {
		t.Fatalf("defaults: %+v", j)
	}
	if err := s.Create(ctx, &Job{ID: j.ID}); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create: %v", err)
	}
	got, created, err := s.CreateOrGet(ctx, &Job{ID: j.ID, SiteURL: "https://other"})
	if err != nil || created || got.SiteURL != j.SiteURL {
		t.Fatalf("CreateOrGet existing: %+v %v %v", got, created, err)
	}
	fresh := &Job{ID: newID("ex")}
	got, created, err = s.CreateOrGet(ctx, fresh)
	if err != nil || !created || got.ID != fresh.ID || got.Version != 1 {
		t.Fatalf("CreateOrGet new: %+v %v %v", got, created, err)
	}
	if err := s.Create(ctx, &Job{ID: "bad/id"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad id: %v", err)
	}
	if err := s.Create(ctx, &Job{ID: newID("ex"), CallbackURL: "https://x/y?sig=abc"}); !errors.Is(err, ErrSecret) {
		t.Fatalf("signed callback: %v", err)
	}
}

func TestGetNotFound(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, Options{})
	for _, id := range []string{"missing", "", "bad/id", strings.Repeat("x", 200)} {
		if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%.20q): %v", id, err)
		}
		if _, err := s.Update(ctx, id, func(*Job) error { return nil }); !errors.Is(err, ErrNotFound) {
			t.Errorf("Update(%.20q): %v", id, err)
		}
		if _, err := s.GetBySPOJobID(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetBySPOJobID(%.20q): %v", id, err)
		}
	}
	if err := s.Delete(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete: %v", err)
	}
}

func TestGetBySPOJobID(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, Options{})
	a := &Job{ID: newID("spo"), State: StateStaged}
	b := &Job{ID: newID("spo"), State: StateStaged}
	for _, j := range []*Job{a, b} {
		if err := s.Create(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	const spoA, spoA2 = "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0", "11111111-2222-3333-4444-555555555555"

	if _, err := s.GetBySPOJobID(ctx, spoA); !errors.Is(err, ErrNotFound) {
		t.Fatalf("before submission: %v", err)
	}
	if _, err := s.Update(ctx, a.ID, func(j *Job) error {
		j.SPOJobID = spoA
		return j.Transition(StateSubmitted, time.Now(), "")
	}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{spoA, strings.ToLower(spoA)} {
		got, err := s.GetBySPOJobID(ctx, q)
		if err != nil || got.ID != a.ID || got.State != StateSubmitted {
			t.Fatalf("GetBySPOJobID(%s): %+v %v", q, got, err)
		}
	}
	// Another job cannot take the same SPO job id, and its record stays unchanged.
	if _, err := s.Update(ctx, b.ID, func(j *Job) error { j.SPOJobID = strings.ToLower(spoA); return nil }); !errors.Is(err, ErrSPOJobIDInUse) {
		t.Fatalf("duplicate SPO job id: %v", err)
	}
	if got, _ := s.Get(ctx, b.ID); got.SPOJobID != "" || got.Version != 1 {
		t.Fatalf("b changed: %+v", got)
	}
	if err := s.Create(ctx, &Job{ID: newID("spo"), SPOJobID: spoA}); !errors.Is(err, ErrSPOJobIDInUse) {
		t.Fatalf("Create with duplicate SPO job id: %v", err)
	}
	// A resubmission moves the index.
	if _, err := s.Update(ctx, a.ID, func(j *Job) error { j.SPOJobID = spoA2; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetBySPOJobID(ctx, spoA); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old SPO job id: %v", err)
	}
	if got, err := s.GetBySPOJobID(ctx, spoA2); err != nil || got.ID != a.ID {
		t.Fatalf("new SPO job id: %+v %v", got, err)
	}
	// Now b may take the old one.
	if _, err := s.Update(ctx, b.ID, func(j *Job) error { j.SPOJobID = spoA; return nil }); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetBySPOJobID(ctx, spoA); err != nil || got.ID != b.ID {
		t.Fatalf("b by SPO job id: %+v %v", got, err)
	}
	// Delete removes every row.
	if err := s.Delete(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetBySPOJobID(ctx, spoA2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after Delete: %v", err)
	}
	if _, err := s.Get(ctx, a.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after Delete: %v", err)
	}
	if page, _, _ := s.List(ctx, ListOptions{State: []State{StateSubmitted}}); len(page) != 0 {
		t.Fatalf("state row left after Delete: %+v", page)
	}
}

func TestUpdateMutatorErrorAndNoChange(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, Options{})
	j := &Job{ID: newID("mu"), State: StateRunning}
	if err := s.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	abort := errors.New("abort")
	tests := []struct {
		name        string
		mutate      func(*Job) error
		wantErr     error
		wantVersion int64
	}{
		{"mutator error aborts", func(j *Job) error { j.FilesDone = 99; return abort }, abort, 1},
		{"illegal transition aborts", func(j *Job) error { return j.Transition(StateQueued, time.Now(), "") }, ErrIllegalTransition, 1},
		{"same state is a no-op without a write", func(j *Job) error { return j.Transition(StateRunning, time.Now(), "JobStart again") }, nil, 1},
		{"first event is written", func(j *Job) error { j.MarkEventSeen("k"); return nil }, nil, 2},
		{"replayed event is a no-op", func(j *Job) error {
			if !j.MarkEventSeen("k") {
				return nil
			}
			j.FilesDone++
			return nil
		}, nil, 2},
		{"changing the id is refused", func(j *Job) error { j.ID = "other"; return nil }, ErrInvalid, 2},
		{"invalid record is refused", func(j *Job) error { j.Source = "ftp"; return nil }, ErrInvalid, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Update(ctx, j.ID, tt.mutate)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			got, err := s.Get(ctx, j.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Version != tt.wantVersion || got.FilesDone != 0 || got.State != StateRunning {
				t.Fatalf("stored %+v", got)
			}
		})
	}
}

// TestConcurrentIncrements: 20 writers × 10 increments of the same record; no update is lost.
func TestConcurrentIncrements(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, Options{})
	j := &Job{ID: newID("inc"), State: StateRunning}
	if err := s.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	const writers, increments = 20, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*increments)
	for w := range writers {
		wg.Go(func() {
			for i := range increments {
				_, err := s.Update(ctx, j.ID, func(j *Job) error {
					j.FilesDone++
					j.BytesDone += 10
					j.MarkEventSeen(fmt.Sprintf("w%d-%d", w, i))
					return nil
				})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.FilesDone != writers*increments || got.BytesDone != 10*writers*increments || got.Version != 1+writers*increments || len(got.SeenEvents) != MaxSeenEvents {
		t.Fatalf("FilesDone %d BytesDone %d Version %d seen %d", got.FilesDone, got.BytesDone, got.Version, len(got.SeenEvents))
	}
}

// TestConcurrentConflictingTransitions: many writers race a Running job to different terminal states;
// exactly one transition is applied, writers of another state get ErrIllegalTransition from the
// winner's terminal state, writers of the same state a no-op.
func TestConcurrentConflictingTransitions(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, Options{})
	j := &Job{ID: newID("race"), State: StateRunning}
	if err := s.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	targets := []State{StateCompleted, StateFailed, StateCompletedWithErrors, StateCancelled}
	const writers = 24
	type result struct {
		target State
		won    bool
		err    error
	}
	results := make([]result, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			target := targets[w%len(targets)]
			var sawRunning bool
			_, err := s.Update(ctx, j.ID, func(j *Job) error {
				sawRunning = j.State == StateRunning // the last call is the one that counts
				return j.Transition(target, time.Now(), fmt.Sprint("writer ", w))
			})
			results[w] = result{target: target, won: err == nil && sawRunning, err: err}
		})
	}
	wg.Wait()
	final, err := s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	winners := 0
	for w, r := range results {
		switch {
		case r.won:
			winners++
			if r.target != final.State {
				t.Errorf("writer %d won with %s, final %s", w, r.target, final.State)
			}
		case r.target == final.State:
			if r.err != nil {
				t.Errorf("writer %d (same state): %v", w, r.err)
			}
		default:
			var te *TransitionError
			if !errors.As(r.err, &te) || !errors.Is(r.err, ErrIllegalTransition) || te.From != final.State || te.To != r.target {
				t.Errorf("writer %d (%s): %v", w, r.target, r.err)
			}
		}
	}
	terminalEntries := 0
	for _, h := range final.History {
		if h.State.Terminal() {
			terminalEntries++
		}
	}
	if winners != 1 || terminalEntries != 1 || final.Version != 2 || !final.State.Terminal() {
		t.Fatalf("winners %d, terminal history entries %d, version %d, state %s", winners, terminalEntries, final.Version, final.State)
	}
}

func TestUpdateGivesUpAfterMaxAttempts(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, Options{MaxUpdateAttempts: 3, RetryBaseDelay: time.Millisecond})
	j := &Job{ID: newID("gu"), State: StateRunning}
	if err := s.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	calls := 0
	_, err := s.Update(ctx, j.ID, func(x *Job) error {
		calls++
		// A competing writer changes the record after every read of ours.
		if _, err := s.Update(ctx, j.ID, func(y *Job) error { y.FilesDone++; return nil }); err != nil {
			return err
		}
		x.Warnings++
		return nil
	})
	if !errors.Is(err, ErrConflict) || calls != 3 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
	got, _ := s.Get(ctx, j.ID)
	if got.FilesDone != 3 || got.Warnings != 0 {
		t.Fatalf("%+v", got)
	}
}

// TestIndexRowRepair: a missing state index row does not block updates; it is rebuilt.
func TestIndexRowRepair(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, Options{})
	j := &Job{ID: newID("rep"), State: StateQueued}
	if err := s.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	if _, err := s.table.DeleteEntity(ctx, partitionKey, stateRowKey(StateQueued, j.ID), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, j.ID, func(j *Job) error { return j.Transition(StateRunning, time.Now(), "") }); err != nil {
		t.Fatal(err)
	}
	page, _, err := s.List(ctx, ListOptions{State: []State{StateRunning}})
	if err != nil || len(page) != 1 || page[0].ID != j.ID {
		t.Fatalf("%+v %v", page, err)
	}
}

// TestRecordAtCapsSaves: every list at its cap and every field at its bound still saves and reads back,
// and no property exceeds the service's 64 KiB string limit.
func TestRecordAtCapsSaves(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, Options{})
	at := time.Date(2025, 5, 20, 9, 0, 0, 0, time.UTC)
	j := fullJob(newID("cap"))
	j.Label = strings.Repeat("L", maxLabelBytes)
	j.SiteURL = "https://contoso.sharepoint.com/sites/" + strings.Repeat("s", maxURLBytes-37)
	j.CallbackURL = "https://hooks.example.com/" + strings.Repeat("c", maxURLBytes-26)
	j.ProgressToken = strings.Repeat("T", maxTokenBytes)
	j.LogsBlobPrefix = strings.Repeat("p", maxNameBytes)
	j.StagingBlob.Name = strings.Repeat("n", maxNameBytes)
	j.WebID = strings.Repeat("w", maxSmallBytes)
	j.History = j.History[:1]
	for i := range MaxHistory + 10 {
		j.History = append(j.History, Transition{State: StateRunning, At: at.Add(time.Duration(i) * time.Second),
			Reason: fmt.Sprintf("%04d<&>", i) + strings.Repeat("r", MaxReasonBytes-7)})
	}
	j.SeenEvents = nil
	for i := range MaxSeenEvents {
		j.MarkEventSeen(fmt.Sprintf("%04d", i) + strings.Repeat("e", MaxEventKeyBytes-4))
	}
	j.FirstErrors = nil
	for i := range MaxFirstErrors {
		j.AddItemFailure(ItemFailure{Kind: ItemWarning,
			ObjectType: strings.Repeat("o", MaxItemObjectTypeBytes),
			URL:        fmt.Sprintf("/%04d/", i) + strings.Repeat("u", MaxItemURLBytes-6),
			ErrorCode:  strings.Repeat("c", MaxItemErrorCodeBytes),
			Message:    strings.Repeat("m", MaxItemMessageBytes)})
	}
	j.FailureReason = strings.Repeat("f", MaxReasonBytes)
	j.Postponed = Postponement{NextPickupTime: at, Reason: strings.Repeat("q", MaxReasonBytes)}

	if err := s.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	if len(j.History) != MaxHistory || len(j.SeenEvents) != MaxSeenEvents || len(j.FirstErrors) != MaxFirstErrors {
		t.Fatalf("caps: history %d seen %d errors %d", len(j.History), len(j.SeenEvents), len(j.FirstErrors))
	}
	updated, err := s.Update(ctx, j.ID, func(j *Job) error {
		j.MarkEventSeen("one more")
		return j.Transition(StateCompleted, at, strings.Repeat("z", 2*MaxReasonBytes))
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, updated) {
		t.Fatal("record at the caps did not read back equal")
	}
	if len(got.History) != MaxHistory || got.History[0].Reason != "created" || len(got.SeenEvents) != MaxSeenEvents || len(got.FirstErrors) != MaxFirstErrors {
		t.Fatalf("caps after update: history %d seen %d errors %d", len(got.History), len(got.SeenEvents), len(got.FirstErrors))
	}
	props, err := got.prepare()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for name, v := range props {
		if s, ok := v.(string); ok {
			if n := utf16Bytes(s); n > 64<<10 {
				t.Errorf("property %s is %d bytes of UTF-16", name, n)
			}
			total += utf16Bytes(s)
		}
	}
	if total > 256<<10 {
		t.Errorf("entity strings total %d bytes of UTF-16", total)
	}
	t.Logf("entity at the caps: %d bytes of UTF-16 strings, %d properties", total, len(props))
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, Options{})
	j := &Job{ID: newID("del"), State: StateRunning, SPOJobID: "abc"}
	if err := s.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, j.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
	// Every row is gone: the id and the SPO job id can be used again.
	again := &Job{ID: j.ID, State: StateQueued, SPOJobID: "abc"}
	if err := s.Create(ctx, again); err != nil {
		t.Fatal(err)
	}
	if page, _, err := s.List(ctx, ListOptions{State: []State{StateRunning}}); err != nil || len(page) != 0 {
		t.Fatalf("%+v %v", page, err)
	}
}

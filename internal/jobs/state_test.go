package jobs

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// legal is the specification of the state machine, written out independently of the implementation:
// every legal move between two different states. Everything else (except re-entering the same
// state, a no-op) must be refused.
var legal = func() map[[2]State]bool {
	m := map[[2]State]bool{}
	add := func(from State, to ...State) {
		for _, t := range to {
			m[[2]State{from, t}] = true
		}
	}
	A, E, St, Su, Q, P, R := StateAwaitingPackage, StateEncrypting, StateStaged, StateSubmitted, StateQueued, StatePostponed, StateRunning
	C, CE, F, X := StateCompleted, StateCompletedWithErrors, StateFailed, StateCancelled
	add(A, E, St, F, X)
	add(E, St, F, X)
	add(St, Su, F, X)
	add(Su, Q, P, R, C, CE, F, X)
	add(Q, P, R, C, CE, F, X)
	add(P, Q, R, C, CE, F, X)
	add(R, C, CE, F, X)
	return m
}()

func TestTransitionTable(t *testing.T) {
	at := time.Date(2025, 5, 20, 9, 0, 0, 0, time.UTC)
	for _, from := range States() {
		for _, to := range States() {
			t.Run(fmt.Sprintf("%s→%s", from, to), func(t *testing.T) {
				j := &Job{ID: "j", State: from, History: []Transition{{State: from, At: at}}}
				before := j.Clone()
				err := j.Transition(to, at.Add(time.Minute), "because")
				switch {
				case from == to:
					if err != nil {
						t.Fatalf("re-entering %s: %v", from, err)
					}
					if !reflect.DeepEqual(j, before) {
						t.Fatalf("re-entering %s changed the job: %+v", from, j)
					}
				case legal[[2]State{from, to}]:
					if err != nil {
						t.Fatalf("legal transition refused: %v", err)
					}
					if j.State != to || len(j.History) != 2 || j.History[1].State != to || !j.History[1].At.Equal(at.Add(time.Minute)) {
						t.Fatalf("state %s, history %+v", j.State, j.History)
					}
					if CanTransition(from, to) != true {
						t.Fatal("CanTransition disagrees")
					}
				default:
					var te *TransitionError
					if !errors.Is(err, ErrIllegalTransition) || !errors.As(err, &te) || te.From != from || te.To != to {
						t.Fatalf("illegal transition: got %v", err)
					}
					if !reflect.DeepEqual(j, before) {
						t.Fatalf("refused transition changed the job: %+v", j)
					}
					if CanTransition(from, to) {
						t.Fatal("CanTransition disagrees")
					}
				}
			})
		}
	}
}

func TestTransitionUnknownStates(t *testing.T) {
	tests := []struct{ from, to State }{
		{StateRunning, "Paused"},
		{"", StateRunning},
		{"Paused", StateFailed},
	}
	for _, tt := range tests {
		j := &Job{ID: "j", State: tt.from}
		if err := j.Transition(tt.to, time.Now(), ""); !errors.Is(err, ErrIllegalTransition) {
			t.Errorf("%q→%q: %v", tt.from, tt.to, err)
		}
	}
}

func TestTransitionEffects(t *testing.T) {
	at := time.Date(2025, 5, 20, 9, 0, 0, 123456789, time.UTC)
	tests := []struct {
		name   string
		from   State
		to     State
		reason string
		check  func(t *testing.T, j *Job)
	}{
		{"failed records the reason", StateQueued, StateFailed, "JobFatalError: sig=abc&x=1", func(t *testing.T, j *Job) {
			if j.FailureReason != "JobFatalError: sig=REDACTED&x=1" || !j.EndedAt.Equal(normTime(at)) {
				t.Fatalf("reason %q ended %v", j.FailureReason, j.EndedAt)
			}
		}},
		{"failed without reason", StateStaged, StateFailed, "", func(t *testing.T, j *Job) {
			if j.FailureReason != "unspecified" {
				t.Fatalf("reason %q", j.FailureReason)
			}
		}},
		{"completed sets EndedAt", StateRunning, StateCompleted, "JobEnd", func(t *testing.T, j *Job) {
			if !j.EndedAt.Equal(normTime(at)) || j.FailureReason != "" {
				t.Fatalf("%+v", j)
			}
		}},
		{"leaving Postponed clears it", StatePostponed, StateRunning, "", func(t *testing.T, j *Job) {
			if j.Postponed != (Postponement{}) {
				t.Fatalf("postponed %+v", j.Postponed)
			}
		}},
		{"long reason is cut", StateRunning, StateCancelled, strings.Repeat("é", MaxReasonBytes), func(t *testing.T, j *Job) {
			if r := j.History[len(j.History)-1].Reason; len(r) != MaxReasonBytes || !strings.HasPrefix(r, "éé") {
				t.Fatalf("reason of %d bytes", len(r))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := &Job{ID: "j", State: tt.from, Postponed: Postponement{NextPickupTime: at, Reason: "busy"}}
			if err := j.Transition(tt.to, at, tt.reason); err != nil {
				t.Fatal(err)
			}
			tt.check(t, j)
		})
	}
}

func TestPostpone(t *testing.T) {
	at := time.Date(2025, 5, 20, 9, 0, 0, 0, time.UTC)
	j := &Job{ID: "j", State: StateQueued}
	if err := j.Postpone(at, at.Add(time.Hour), "tenant busy"); err != nil {
		t.Fatal(err)
	}
	if err := j.Postpone(at, at.Add(2*time.Hour), "still busy"); err != nil { // same state: info updated
		t.Fatal(err)
	}
	if j.State != StatePostponed || !j.Postponed.NextPickupTime.Equal(at.Add(2*time.Hour)) || j.Postponed.Reason != "still busy" || len(j.History) != 1 {
		t.Fatalf("%+v", j)
	}
	j.State = StateRunning
	if err := j.Postpone(at, at, ""); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("Running→Postponed: %v", err)
	}
}

func TestHistoryKeepsFirstAndMostRecent(t *testing.T) {
	at := time.Date(2025, 5, 20, 9, 0, 0, 0, time.UTC)
	j := &Job{ID: "j", State: StateQueued, History: []Transition{{State: StateAwaitingPackage, At: at, Reason: "created"}}}
	for i := range 3 * MaxHistory {
		to := StatePostponed
		if j.State == StatePostponed {
			to = StateQueued
		}
		if err := j.Transition(to, at.Add(time.Duration(i+1)*time.Second), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	if len(j.History) != MaxHistory || j.History[0].Reason != "created" || j.History[MaxHistory-1].Reason != fmt.Sprint(3*MaxHistory-1) {
		t.Fatalf("history of %d: first %+v last %+v", len(j.History), j.History[0], j.History[len(j.History)-1])
	}
}

func TestStatePredicates(t *testing.T) {
	for _, s := range States() {
		wantTerminal := s == StateCompleted || s == StateCompletedWithErrors || s == StateFailed || s == StateCancelled
		wantActive := s == StateSubmitted || s == StateQueued || s == StatePostponed || s == StateRunning
		if s.Terminal() != wantTerminal || s.Active() != wantActive || !s.Valid() {
			t.Errorf("%s: terminal %v active %v", s, s.Terminal(), s.Active())
		}
	}
	if State("Paused").Valid() {
		t.Error("unknown state valid")
	}
}

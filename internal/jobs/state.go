package jobs

import (
	"errors"
	"fmt"
	"slices"
)

// State is the state of a migration job. The values are persisted (property State) and appear in the
// HTTP API; never rename one.
type State string

// The states, in pipeline order.
const (
	// StateAwaitingPackage: the record and the SPO containers exist; the caller has not uploaded the package yet.
	StateAwaitingPackage State = "AwaitingPackage"
	// StateEncrypting: EncryptBlobTrigger is validating, encrypting and staging the package.
	StateEncrypting State = "Encrypting"
	// StateStaged: every blob is encrypted in the SPO containers; the job waits for submission.
	StateStaged State = "Staged"
	// StateSubmitted: CreateMigrationJobEncrypted returned an SPO job id (Job.SPOJobID).
	StateSubmitted State = "Submitted"
	// StateQueued: SPO reported JobQueued.
	StateQueued State = "Queued"
	// StatePostponed: SPO reported JobPostpone (see Job.Postponed).
	StatePostponed State = "Postponed"
	// StateRunning: SPO reported JobStart (or progress).
	StateRunning State = "Running"
	// StateCompleted: SPO reported JobEnd without errors. Terminal.
	StateCompleted State = "Completed"
	// StateCompletedWithErrors: SPO reported JobEnd with item errors (Job.Errors, Job.FirstErrors). Terminal.
	StateCompletedWithErrors State = "CompletedWithErrors"
	// StateFailed: the job failed (Job.FailureReason), in our pipeline or in SPO (JobFatalError). Terminal.
	StateFailed State = "Failed"
	// StateCancelled: the job was cancelled. Terminal.
	StateCancelled State = "Cancelled"
)

// ErrIllegalTransition is matched (errors.Is) by every *TransitionError.
var ErrIllegalTransition = errors.New("illegal state transition")

// TransitionError reports a transition the state machine refuses.
type TransitionError struct {
	From, To State
}

func (e *TransitionError) Error() string {
	if e.From.Terminal() {
		return fmt.Sprintf("illegal state transition from terminal state %s to %s", e.From, e.To)
	}
	return fmt.Sprintf("illegal state transition from %s to %s", e.From, e.To)
}

// Is makes errors.Is(err, ErrIllegalTransition) true.
func (e *TransitionError) Is(target error) bool { return target == ErrIllegalTransition }

// stateInfo is the persisted ordinal of each state: it orders the state index rows (see the package
// documentation), so it is part of the table format. Never renumber; give a new state a new number.
var stateInfo = map[State]int{
	StateAwaitingPackage:     0,
	StateEncrypting:          1,
	StateStaged:              2,
	StateSubmitted:           3,
	StateQueued:              4,
	StatePostponed:           5,
	StateRunning:             6,
	StateCompleted:           7,
	StateCompletedWithErrors: 8,
	StateFailed:              9,
	StateCancelled:           10,
}

// States returns every state in pipeline order.
func States() []State {
	return []State{StateAwaitingPackage, StateEncrypting, StateStaged, StateSubmitted, StateQueued,
		StatePostponed, StateRunning, StateCompleted, StateCompletedWithErrors, StateFailed, StateCancelled}
}

// ActiveStates returns the states the monitor watches: submitted to SPO and not ended
// (Submitted, Queued, Postponed, Running).
func ActiveStates() []State {
	return []State{StateSubmitted, StateQueued, StatePostponed, StateRunning}
}

// Valid reports whether s is one of the named states.
func (s State) Valid() bool { _, ok := stateInfo[s]; return ok }

// Terminal reports whether s is final: Completed, CompletedWithErrors, Failed or Cancelled.
func (s State) Terminal() bool {
	switch s {
	case StateCompleted, StateCompletedWithErrors, StateFailed, StateCancelled:
		return true
	}
	return false
}

// Active reports whether s is one of ActiveStates.
func (s State) Active() bool { return slices.Contains(ActiveStates(), s) }

func (s State) String() string { return string(s) }

// transitions lists, for each non-terminal state, the states it may move to (besides itself, which is
// always a no-op, and Failed and Cancelled, which every non-terminal state may reach).
//
// Before submission we drive every step ourselves, so the order is strict apart from skipping
// Encrypting (a package can be staged by a path that never reports it): a job can never reach SPO's
// states without having been Staged, nor be Submitted without an SPO job id being recorded by the
// caller. From Submitted on, states follow SPO's events, which the monitor may see late, out of order
// or not at all (JobStart before JobQueued, JobEnd straight after submission), so every forward move is
// legal; Queued and Postponed may alternate. Nothing moves backwards and terminal states are final.
var transitions = map[State][]State{
	StateAwaitingPackage: {StateEncrypting, StateStaged},
	StateEncrypting:      {StateStaged},
	StateStaged:          {StateSubmitted},
	StateSubmitted:       {StateQueued, StatePostponed, StateRunning, StateCompleted, StateCompletedWithErrors},
	StateQueued:          {StatePostponed, StateRunning, StateCompleted, StateCompletedWithErrors},
	StatePostponed:       {StateQueued, StateRunning, StateCompleted, StateCompletedWithErrors},
	StateRunning:         {StateCompleted, StateCompletedWithErrors},
}

// CanTransition reports whether a job in state from may move to state to. Re-entering the same state
// is allowed (it is a no-op), also for terminal states.
func CanTransition(from, to State) bool {
	if !from.Valid() || !to.Valid() {
		return false
	}
	if from == to {
		return true
	}
	if from.Terminal() {
		return false
	}
	if to == StateFailed || to == StateCancelled {
		return true
	}
	return slices.Contains(transitions[from], to)
}

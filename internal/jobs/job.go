package jobs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Caps of the record's lists and free-text fields. They keep every JSON list property under
// MaxJSONPropertyBytes and the whole entity far below the 1 MiB entity limit (at the caps an entity is
// about 100 KB of JSON, 200 KB as the service counts strings, in UTF-16; an update writes it twice in
// one entity group transaction, whose limit is 4 MiB).
// Longer texts are cut (at a rune boundary); the lists drop entries as documented on each field.
const (
	// MaxHistory is the number of transitions kept in Job.History: the first (creation) and the most recent.
	MaxHistory = 50
	// MaxSeenEvents is the number of event keys kept in Job.SeenEvents (the most recent).
	MaxSeenEvents = 200
	// MaxFirstErrors is the number of item errors and warnings kept in Job.FirstErrors (the first).
	MaxFirstErrors = 16

	// MaxReasonBytes bounds a transition reason, FailureReason and Postponed.Reason.
	MaxReasonBytes = 512
	// MaxEventKeyBytes bounds an event key kept verbatim; a longer (or non printable-ASCII) key is
	// replaced by a hash of it, so dedup still works.
	MaxEventKeyBytes = 128
	// Bounds of the ItemFailure fields.
	MaxItemObjectTypeBytes = 64
	MaxItemURLBytes        = 1024
	MaxItemErrorCodeBytes  = 128
	MaxItemMessageBytes    = 512

	// MaxJSONPropertyBytes bounds the UTF-8 JSON text of a list property (History, SeenEvents,
	// FirstErrors). Azure Tables limits a string property to 64 KiB of UTF-16, which UTF-8 text of at
	// most 32 KiB always fits; entries are dropped until the JSON fits (see the fields' documentation).
	MaxJSONPropertyBytes = 30 << 10

	// Bounds of the other string fields; a longer value makes a write fail with ErrInvalid.
	maxIDBytes       = 128
	maxLabelBytes    = 1024
	maxURLBytes      = 2048
	maxNameBytes     = 1024
	maxTokenBytes    = 8192
	maxSmallBytes    = 256
	maxSecretNameLen = 127 // Key Vault's limit
)

// Source tells how a package arrived.
type Source string

const (
	// SourceAPI: provisioned by POST /api/migrations, uploaded by the caller.
	SourceAPI Source = "api"
	// SourceDrop: dropped straight into the staging container.
	SourceDrop Source = "drop"
)

// BlobRef names a blob.
type BlobRef struct {
	Container string
	Name      string
}

// Transition is one entry of Job.History.
type Transition struct {
	State  State     `json:"state"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
}

// ItemKind tells an item error from a warning.
type ItemKind string

const (
	ItemError   ItemKind = "error"
	ItemWarning ItemKind = "warning"
)

// ItemFailure is one item error or warning SPO reported (JobError / JobWarning events).
type ItemFailure struct {
	Kind       ItemKind `json:"kind"`
	ObjectType string   `json:"objectType,omitempty"`
	URL        string   `json:"url,omitempty"`
	ErrorCode  string   `json:"errorCode,omitempty"`
	Message    string   `json:"message,omitempty"`
}

// Postponement is SPO's JobPostpone information while a job is Postponed.
type Postponement struct {
	NextPickupTime time.Time
	Reason         string
}

// Lease is a time-bounded claim, e.g. on the submission of a job (see Job.AcquireSubmitLease).
type Lease struct {
	Owner  string
	Expiry time.Time
}

// Job is the durable record of one migration job. It holds names and references only: never the
// encryption key, a SAS or any other secret (the key and SAS URIs live in the Key Vault secret named
// SecretName). A write refuses a record whose identifying fields contain a SAS signature (ErrSecret)
// and redacts signatures from free-text fields (reasons, item messages and URLs).
type Job struct {
	// ID is our own job id (a GUID), the row key of the record. Letters, digits, '-', '_' and '.'; at most 128 bytes.
	ID    string
	Label string
	// SiteURL and WebID are the destination site and web.
	SiteURL string
	WebID   string
	// SPOJobID is the job id CreateMigrationJob returned; empty before submission. Stored lower case;
	// unique across jobs (ErrSPOJobIDInUse).
	SPOJobID string
	// SecretName is the name of the job's Key Vault secret (spomig-job-<id>); never its value.
	SecretName string
	// StagingBlob is the package in the staging container and StagingETag the ETag that was staged.
	StagingBlob BlobRef
	StagingETag string
	Source      Source
	// CallbackURL is notified when the job ends. It must not carry a signature (sig=): a signed URL
	// is a secret and belongs in the Key Vault secret.
	CallbackURL string

	// State is the current state; change it with Transition, never directly.
	State State
	// History holds the transitions, oldest first: the first one and the most recent, at most MaxHistory.
	History []Transition

	// Counters, from SPO's progress and JobEnd events.
	FilesTotal, FilesDone     int64
	BytesTotal, BytesDone     int64
	ObjectsTotal, ObjectsDone int64
	Errors, Warnings          int64

	// ProgressToken is the NextToken of GetMigrationJobProgress.
	ProgressToken string
	// LastEventAt is the time of the last SPO event applied.
	LastEventAt time.Time
	// SeenEvents holds the keys of the most recent events applied (at most MaxSeenEvents), oldest first,
	// for exactly-once application; see MarkEventSeen.
	SeenEvents []string
	// FirstErrors holds the first MaxFirstErrors item errors and warnings in detail; see AddItemFailure.
	FirstErrors []ItemFailure
	// FailureReason is set by the transition to Failed.
	FailureReason string
	// Postponed is the current postponement while State is Postponed, zero otherwise.
	Postponed Postponement
	// SubmitLease makes submission exactly-once; see AcquireSubmitLease.
	SubmitLease Lease

	// CreatedAt is set by Create, UpdatedAt by every write, EndedAt by the transition to a terminal state.
	CreatedAt, UpdatedAt, EndedAt time.Time
	// LogsBlobPrefix is where the decrypted logs and reports of the job are (migration-reports).
	LogsBlobPrefix string
	// CleanupAt is when the job's containers and secret are due for deletion, CleanedUpAt when that happened.
	CleanupAt, CleanedUpAt time.Time
	// ContainersExpireAt is when the SPO containers' SAS expire.
	ContainersExpireAt time.Time

	// Version counts the writes of the record (1 after Create). It is informational (e.g. an HTTP ETag);
	// concurrency control uses the table's ETag.
	Version int64
}

// Errors of the record's methods.
var (
	// ErrInvalid reports a record that cannot be stored (a missing or malformed field).
	ErrInvalid = errors.New("invalid job record")
	// ErrSecret reports a record field that would hold a secret (a SAS signature).
	ErrSecret = errors.New("job record would hold a secret")
	// ErrLeaseHeld reports a lease that another owner holds and that has not expired.
	ErrLeaseHeld = errors.New("lease held by another owner")
)

// Transition moves the job to state to at time at (now when zero), recording reason in History.
// Re-entering the current state is a no-op and returns nil (triggers are idempotent). An illegal move
// returns a *TransitionError (errors.Is(err, ErrIllegalTransition)) and leaves the job unchanged.
// Moving to Failed sets FailureReason (reason, or "unspecified" when empty); moving to a terminal
// state sets EndedAt; leaving Postponed clears Postponed.
func (j *Job) Transition(to State, at time.Time, reason string) error {
	if !CanTransition(j.State, to) {
		return &TransitionError{From: j.State, To: to}
	}
	if j.State == to {
		return nil
	}
	if at.IsZero() {
		at = time.Now()
	}
	at = normTime(at)
	reason = cleanText(reason, MaxReasonBytes)
	if to == StateFailed && reason == "" {
		reason = "unspecified"
	}
	if j.State == StatePostponed {
		j.Postponed = Postponement{}
	}
	j.State = to
	j.History = append(j.History, Transition{State: to, At: at, Reason: reason})
	j.History = capHistory(j.History)
	switch {
	case to == StateFailed:
		j.FailureReason = reason
		j.EndedAt = at
	case to.Terminal():
		j.EndedAt = at
	}
	return nil
}

// Postpone moves the job to Postponed (like Transition) and records SPO's next pickup time and
// reason. When the job is already Postponed it only updates that information.
func (j *Job) Postpone(at, nextPickup time.Time, reason string) error {
	if err := j.Transition(StatePostponed, at, reason); err != nil {
		return err
	}
	j.Postponed = Postponement{NextPickupTime: normTime(nextPickup), Reason: cleanText(reason, MaxReasonBytes)}
	return nil
}

// Terminal reports whether the job has ended.
func (j *Job) Terminal() bool { return j.State.Terminal() }

// MarkEventSeen records the event key and reports whether it is new: false means the event was
// already applied and must be skipped. Only the most recent MaxSeenEvents keys are remembered.
func (j *Job) MarkEventSeen(key string) bool {
	k := eventKey(key)
	if slices.Contains(j.SeenEvents, k) {
		return false
	}
	j.SeenEvents = append(j.SeenEvents, k)
	if over := len(j.SeenEvents) - MaxSeenEvents; over > 0 {
		j.SeenEvents = slices.Delete(j.SeenEvents, 0, over)
	}
	return true
}

// HasSeenEvent reports whether the event key is among the remembered ones.
func (j *Job) HasSeenEvent(key string) bool { return slices.Contains(j.SeenEvents, eventKey(key)) }

// AddItemFailure keeps f in FirstErrors if fewer than MaxFirstErrors are kept and reports whether it
// did. It does not touch the Errors and Warnings counters, which come from SPO's totals. The fields
// are cut to their bounds and signatures redacted.
func (j *Job) AddItemFailure(f ItemFailure) bool {
	if len(j.FirstErrors) >= MaxFirstErrors {
		return false
	}
	j.FirstErrors = append(j.FirstErrors, cleanItem(f))
	return true
}

// AcquireSubmitLease claims the submission of the job for owner until now+ttl. It fails with
// ErrLeaseHeld while another owner's lease has not expired; the same owner renews its lease. Use it
// inside Store.Update, so that exactly one claimant wins.
func (j *Job) AcquireSubmitLease(owner string, now time.Time, ttl time.Duration) error {
	if owner == "" {
		return fmt.Errorf("%w: empty lease owner", ErrInvalid)
	}
	if j.SubmitLease.Owner != "" && j.SubmitLease.Owner != owner && now.Before(j.SubmitLease.Expiry) {
		return ErrLeaseHeld
	}
	j.SubmitLease = Lease{Owner: owner, Expiry: normTime(now.Add(ttl))}
	return nil
}

// HoldsSubmitLease reports whether owner holds an unexpired submit lease at now.
func (j *Job) HoldsSubmitLease(owner string, now time.Time) bool {
	return owner != "" && j.SubmitLease.Owner == owner && now.Before(j.SubmitLease.Expiry)
}

// ReleaseSubmitLease clears the submit lease if owner holds it.
func (j *Job) ReleaseSubmitLease(owner string) {
	if j.SubmitLease.Owner == owner {
		j.SubmitLease = Lease{}
	}
}

// FilesPercent is FilesDone as a percentage of FilesTotal, in [0, 100]; ok is false while the total is unknown.
func (j *Job) FilesPercent() (pct float64, ok bool) { return percent(j.FilesDone, j.FilesTotal) }

// BytesPercent is BytesDone as a percentage of BytesTotal, in [0, 100]; ok is false while the total is unknown.
func (j *Job) BytesPercent() (pct float64, ok bool) { return percent(j.BytesDone, j.BytesTotal) }

// ObjectsPercent is ObjectsDone as a percentage of ObjectsTotal, in [0, 100]; ok is false while the total is unknown.
func (j *Job) ObjectsPercent() (pct float64, ok bool) { return percent(j.ObjectsDone, j.ObjectsTotal) }

func percent(done, total int64) (float64, bool) {
	if total <= 0 {
		return 0, false
	}
	p := float64(done) * 100 / float64(total)
	return min(max(p, 0), 100), true
}

// Clone returns a deep copy of j.
func (j *Job) Clone() *Job {
	c := *j
	c.History = slices.Clone(j.History)
	c.SeenEvents = slices.Clone(j.SeenEvents)
	c.FirstErrors = slices.Clone(j.FirstErrors)
	return &c
}

// ---- normalization and validation (run before every write) ----

// sigRE finds secrets in text: SAS signatures and storage account keys.
var sigRE = regexp.MustCompile(`(?i)\b(sig|accountkey)=[^&\s"'<>;]*`)

// redact replaces the values of sig= and AccountKey= in s.
func redact(s string) string {
	if !sigRE.MatchString(s) {
		return s
	}
	return sigRE.ReplaceAllStringFunc(s, func(m string) string {
		return m[:strings.IndexByte(m, '=')+1] + "REDACTED"
	})
}

// cleanText redacts secrets and cuts s to at most n bytes at a rune boundary, replacing invalid UTF-8.
func cleanText(s string, n int) string {
	return truncate(redact(strings.ToValidUTF8(s, "\uFFFD")), n)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func cleanItem(f ItemFailure) ItemFailure {
	if f.Kind != ItemWarning {
		f.Kind = ItemError
	}
	f.ObjectType = cleanText(f.ObjectType, MaxItemObjectTypeBytes)
	f.URL = cleanText(f.URL, MaxItemURLBytes)
	f.ErrorCode = cleanText(f.ErrorCode, MaxItemErrorCodeBytes)
	f.Message = cleanText(f.Message, MaxItemMessageBytes)
	return f
}

// eventKey keeps short printable-ASCII keys verbatim and hashes the others.
func eventKey(k string) string {
	if len(k) <= MaxEventKeyBytes && printableASCII(k) && !strings.HasPrefix(k, "sha256:") {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	return "sha256:" + hex.EncodeToString(sum[:16])
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// normTime is UTC at the 100 ns resolution of Azure Tables, without a monotonic reading.
func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(100 * time.Nanosecond)
}

func capHistory(h []Transition) []Transition {
	if over := len(h) - MaxHistory; over > 0 {
		h = slices.Delete(h, 1, 1+over)
	}
	return h
}

// normalize brings j into its stored form: times in UTC at 100 ns, lists capped, free text cut and
// redacted, SPOJobID lower case.
func (j *Job) normalize() {
	j.SPOJobID = strings.ToLower(j.SPOJobID)
	j.FailureReason = cleanText(j.FailureReason, MaxReasonBytes)
	j.Postponed.Reason = cleanText(j.Postponed.Reason, MaxReasonBytes)
	for _, t := range []*time.Time{&j.LastEventAt, &j.Postponed.NextPickupTime, &j.SubmitLease.Expiry,
		&j.CreatedAt, &j.UpdatedAt, &j.EndedAt, &j.CleanupAt, &j.CleanedUpAt, &j.ContainersExpireAt} {
		*t = normTime(*t)
	}
	for i := range j.History {
		j.History[i].At = normTime(j.History[i].At)
		j.History[i].Reason = cleanText(j.History[i].Reason, MaxReasonBytes)
	}
	j.History = capHistory(j.History)
	for i, k := range j.SeenEvents {
		j.SeenEvents[i] = eventKey(k)
	}
	if over := len(j.SeenEvents) - MaxSeenEvents; over > 0 {
		j.SeenEvents = slices.Delete(j.SeenEvents, 0, over)
	}
	if len(j.FirstErrors) > MaxFirstErrors {
		j.FirstErrors = j.FirstErrors[:MaxFirstErrors]
	}
	for i := range j.FirstErrors {
		j.FirstErrors[i] = cleanItem(j.FirstErrors[i])
	}
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// ValidID reports whether id can be a job id (or an SPO job id): 1 to 128 letters, digits, '-', '_' or '.'.
func ValidID(id string) bool { return idRE.MatchString(id) }

// validate checks a normalized record.
func (j *Job) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	if !ValidID(j.ID) {
		return bad("id %q is not 1 to %d letters, digits, '-', '_' or '.'", truncate(j.ID, 64), maxIDBytes)
	}
	if j.SPOJobID != "" && !ValidID(j.SPOJobID) {
		return bad("SPO job id is not 1 to %d letters, digits, '-', '_' or '.'", maxIDBytes)
	}
	if !j.State.Valid() {
		return bad("unknown state %q", truncate(string(j.State), 32))
	}
	if j.Source != "" && j.Source != SourceAPI && j.Source != SourceDrop {
		return bad("unknown source %q", truncate(string(j.Source), 32))
	}
	fields := []struct {
		name  string
		value string
		max   int
	}{
		{"Label", j.Label, maxLabelBytes},
		{"SiteURL", j.SiteURL, maxURLBytes},
		{"WebID", j.WebID, maxSmallBytes},
		{"SecretName", j.SecretName, maxSecretNameLen},
		{"StagingBlob.Container", j.StagingBlob.Container, maxSmallBytes},
		{"StagingBlob.Name", j.StagingBlob.Name, maxNameBytes},
		{"StagingETag", j.StagingETag, maxSmallBytes},
		{"CallbackURL", j.CallbackURL, maxURLBytes},
		{"ProgressToken", j.ProgressToken, maxTokenBytes},
		{"SubmitLease.Owner", j.SubmitLease.Owner, maxSmallBytes},
		{"LogsBlobPrefix", j.LogsBlobPrefix, maxNameBytes},
	}
	for _, f := range fields {
		if len(f.value) > f.max {
			return bad("%s is longer than %d bytes", f.name, f.max)
		}
		if !utf8.ValidString(f.value) {
			return bad("%s is not valid UTF-8", f.name)
		}
		if strings.ContainsFunc(f.value, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return bad("%s contains control characters", f.name)
		}
		if sigRE.MatchString(f.value) {
			return fmt.Errorf("%w: %s contains a signature or account key; keep it in the Key Vault secret", ErrSecret, f.name)
		}
	}
	for _, t := range []time.Time{j.LastEventAt, j.Postponed.NextPickupTime, j.SubmitLease.Expiry, j.CreatedAt,
		j.UpdatedAt, j.EndedAt, j.CleanupAt, j.CleanedUpAt, j.ContainersExpireAt} {
		if !t.IsZero() && (t.Year() < 1601 || t.Year() > 9999) {
			return bad("time %s outside the range Azure Tables stores (1601 to 9999)", t.Format(time.RFC3339))
		}
	}
	for _, h := range j.History {
		if !h.State.Valid() {
			return bad("unknown state %q in history", truncate(string(h.State), 32))
		}
	}
	return nil
}

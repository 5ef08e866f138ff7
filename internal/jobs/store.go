package jobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// DefaultTable is the table of the job records.
const DefaultTable = "migrationjobs"

// Errors of the Store. Errors returned by the Store wrap them with context; test with errors.Is.
var (
	// ErrNotFound reports a job (or SPO job id) without a record.
	ErrNotFound = errors.New("job not found")
	// ErrExists reports a Create of a job id that already has a record.
	ErrExists = errors.New("job already exists")
	// ErrSPOJobIDInUse reports a write that would give a second job the SPO job id of another.
	ErrSPOJobIDInUse = errors.New("SPO job id already recorded for another job")
	// ErrConflict reports an Update that kept losing to concurrent writers for MaxUpdateAttempts attempts.
	ErrConflict = errors.New("too many concurrent updates of the job")
)

// Options configures a Store. The zero value is usable.
type Options struct {
	// Table is the table name. Default DefaultTable ("migrationjobs").
	Table string
	// Logger receives retries (debug) and index repairs (warn). Default slog.Default().
	Logger *slog.Logger
	// MaxUpdateAttempts bounds the read-modify-write attempts of Update and Delete when the record's
	// ETag keeps changing underneath (HTTP 412). Default 30.
	MaxUpdateAttempts int
	// RetryBaseDelay and RetryMaxDelay shape the backoff between attempts: a random delay ("full
	// jitter") up to RetryBaseDelay·2^attempt, at most RetryMaxDelay. Defaults 10ms and 1s.
	RetryBaseDelay, RetryMaxDelay time.Duration
	// Now is the clock of CreatedAt and UpdatedAt. Default time.Now.
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.Table == "" {
		o.Table = DefaultTable
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxUpdateAttempts <= 0 {
		o.MaxUpdateAttempts = 30
	}
	if o.RetryBaseDelay <= 0 {
		o.RetryBaseDelay = 10 * time.Millisecond
	}
	if o.RetryMaxDelay <= 0 {
		o.RetryMaxDelay = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Store keeps job records in an Azure table. It is safe for concurrent use, also across processes:
// every change is conditional on the record's ETag.
type Store struct {
	svc   *aztables.ServiceClient
	table *aztables.Client
	opts  Options
}

var tableNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{2,62}$`)

// New returns a Store over the table opts.Table of client. It does no I/O; see EnsureTable.
func New(client *aztables.ServiceClient, opts Options) (*Store, error) {
	if client == nil {
		return nil, errors.New("jobs: nil table service client")
	}
	opts.setDefaults()
	if !tableNameRE.MatchString(opts.Table) {
		return nil, fmt.Errorf("jobs: invalid table name %q (3 to 63 letters and digits, starting with a letter)", opts.Table)
	}
	return &Store{svc: client, table: client.NewClient(opts.Table), opts: opts}, nil
}

// Table is the name of the store's table.
func (s *Store) Table() string { return s.opts.Table }

// EnsureTable creates the table if it does not exist.
func (s *Store) EnsureTable(ctx context.Context) error {
	_, err := s.svc.CreateTable(ctx, s.opts.Table, nil)
	if err == nil || hasCode(err, aztables.TableAlreadyExists) {
		return nil
	}
	return fmt.Errorf("create table %s: %w", s.opts.Table, err)
}

// Create stores a new record. It fills in the defaults (State AwaitingPackage, CreatedAt and
// UpdatedAt now, a first History entry, Version 1) in j itself. It fails with ErrExists if the id has
// a record, ErrSPOJobIDInUse if another job has j.SPOJobID, ErrInvalid or ErrSecret for a record that
// cannot be stored.
func (s *Store) Create(ctx context.Context, j *Job) error {
	now := normTime(s.opts.Now())
	if j.State == "" {
		j.State = StateAwaitingPackage
	}
	if j.CreatedAt.IsZero() {
		j.CreatedAt = now
	}
	if len(j.History) == 0 {
		j.History = []Transition{{State: j.State, At: normTime(j.CreatedAt), Reason: "created"}}
	}
	j.UpdatedAt = now
	j.Version = 1
	props, err := j.prepare()
	if err != nil {
		return err
	}
	ops, err := s.writeOps(ctx, nil, j, props, "", false)
	if err != nil {
		return err
	}
	_, err = s.table.SubmitTransaction(ctx, ops, nil)
	if err == nil {
		return nil
	}
	if st, _ := batchStatus(err); st == http.StatusConflict {
		if _, _, gerr := s.get(ctx, j.ID); gerr == nil {
			return fmt.Errorf("create job %s: %w", j.ID, ErrExists)
		}
		return fmt.Errorf("create job %s: SPO job %s: %w", j.ID, j.SPOJobID, ErrSPOJobIDInUse)
	}
	return fmt.Errorf("create job %s: %w", j.ID, err)
}

// CreateOrGet creates j, or returns the existing record of j.ID (created false). It makes provisioning
// idempotent: a retried request finds its record; the caller decides whether the existing record matches.
func (s *Store) CreateOrGet(ctx context.Context, j *Job) (job *Job, created bool, err error) {
	err = s.Create(ctx, j)
	if err == nil {
		return j.Clone(), true, nil
	}
	if !errors.Is(err, ErrExists) {
		return nil, false, err
	}
	existing, err := s.Get(ctx, j.ID)
	if err != nil {
		return nil, false, err
	}
	return existing, false, nil
}

// Get returns the record of a job, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*Job, error) {
	j, _, err := s.get(ctx, id)
	return j, err
}

func (s *Store) get(ctx context.Context, id string) (*Job, azcore.ETag, error) {
	if !ValidID(id) {
		return nil, "", fmt.Errorf("get job %q: %w", truncate(id, 64), ErrNotFound)
	}
	resp, err := s.table.GetEntity(ctx, partitionKey, mainRowKey(id), nil)
	if err != nil {
		if hasStatus(err, http.StatusNotFound) {
			return nil, "", fmt.Errorf("get job %s: %w", id, ErrNotFound)
		}
		return nil, "", fmt.Errorf("get job %s: %w", id, err)
	}
	j, err := decodeJob(resp.Value)
	if err != nil {
		return nil, "", err
	}
	return j, resp.ETag, nil
}

// GetBySPOJobID returns the record of the job SPO knows as spoJobID (case-insensitive), or
// ErrNotFound. It costs two point reads: the SPO index row, then the record.
func (s *Store) GetBySPOJobID(ctx context.Context, spoJobID string) (*Job, error) {
	if !ValidID(spoJobID) {
		return nil, fmt.Errorf("get SPO job %q: %w", truncate(spoJobID, 64), ErrNotFound)
	}
	resp, err := s.table.GetEntity(ctx, partitionKey, spoRowKey(spoJobID), nil)
	if err != nil {
		if hasStatus(err, http.StatusNotFound) {
			return nil, fmt.Errorf("get SPO job %s: %w", spoJobID, ErrNotFound)
		}
		return nil, fmt.Errorf("get SPO job %s: %w", spoJobID, err)
	}
	var e aztables.EDMEntity
	if err := e.UnmarshalJSON(resp.Value); err != nil {
		return nil, fmt.Errorf("get SPO job %s: decode index row: %w", spoJobID, err)
	}
	id, _ := e.Properties[pJobID].(string)
	j, err := s.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("get SPO job %s: %w", spoJobID, err)
	}
	if !strings.EqualFold(j.SPOJobID, spoJobID) {
		return nil, fmt.Errorf("get SPO job %s: index row is stale: %w", spoJobID, ErrNotFound)
	}
	return j, nil
}

// Update applies mutate to the current record of job id and stores the result if the record did not
// change meanwhile (If-Match on its ETag); when it did, Update re-reads and calls mutate again, at
// most MaxUpdateAttempts times with jittered backoff, then fails with ErrConflict. So mutate may run
// several times: it must only change the *Job it is given. If mutate returns an error, Update
// returns it unchanged and stores nothing. If mutate changes nothing, nothing is written (idempotent
// triggers cost no write). Update returns the stored record.
func (s *Store) Update(ctx context.Context, id string, mutate func(*Job) error) (*Job, error) {
	repair := false
	for attempt := 0; ; attempt++ {
		cur, etag, err := s.get(ctx, id)
		if err != nil {
			return nil, err
		}
		next := cur.Clone()
		if err := mutate(next); err != nil {
			return nil, err
		}
		if next.ID != cur.ID {
			return nil, fmt.Errorf("update job %s: %w: the mutator changed the id", id, ErrInvalid)
		}
		// Compare the stored forms, without the fields every write changes.
		next.Version, next.UpdatedAt = cur.Version, cur.UpdatedAt
		before, berr := cur.Clone().prepare() // a stored record that no longer validates counts as changed
		after, err := next.prepare()
		if err != nil {
			return nil, err
		}
		if berr == nil && equalProps(before, after) {
			return next, nil
		}
		next.Version = cur.Version + 1
		next.UpdatedAt = normTime(s.opts.Now())
		after[pVersion] = aztables.EDMInt64(next.Version)
		after[pUpdatedAt] = aztables.EDMDateTime(next.UpdatedAt)

		ops, err := s.writeOps(ctx, cur, next, after, etag, repair)
		if err != nil {
			return nil, err
		}
		_, err = s.table.SubmitTransaction(ctx, ops, nil)
		if err == nil {
			return next, nil
		}
		switch st, code := batchStatus(err); {
		case st == http.StatusPreconditionFailed:
			s.opts.Logger.DebugContext(ctx, "job update conflict, retrying", "job", id, "attempt", attempt+1)
		case st == http.StatusConflict:
			return nil, fmt.Errorf("update job %s: SPO job %s: %w", id, next.SPOJobID, ErrSPOJobIDInUse)
		case st == http.StatusNotFound && !repair:
			// A row to delete was missing (or the record vanished, which the re-read reports).
			s.opts.Logger.WarnContext(ctx, "job index row missing, repairing", "job", id, "code", code)
			repair = true
		default:
			return nil, fmt.Errorf("update job %s: %w", id, err)
		}
		if attempt+1 >= s.opts.MaxUpdateAttempts {
			return nil, fmt.Errorf("update job %s after %d attempts: %w", id, attempt+1, ErrConflict)
		}
		if err := s.backoff(ctx, attempt); err != nil {
			return nil, err
		}
	}
}

// Delete removes the record of job id and its index rows. It returns ErrNotFound if there is none.
func (s *Store) Delete(ctx context.Context, id string) error {
	repair := false
	for attempt := 0; ; attempt++ {
		cur, etag, err := s.get(ctx, id)
		if err != nil {
			return err
		}
		ops := []aztables.TransactionAction{}
		add := func(rk string, ifMatch *azcore.ETag) error {
			if repair && ifMatch == nil && !s.exists(ctx, rk) {
				return nil
			}
			b, err := entityJSON(rk, nil)
			if err != nil {
				return err
			}
			ops = append(ops, aztables.TransactionAction{ActionType: aztables.TransactionTypeDelete, Entity: b, IfMatch: ifMatch})
			return nil
		}
		if err := add(mainRowKey(id), &etag); err != nil {
			return err
		}
		if err := add(stateRowKey(cur.State, id), nil); err != nil {
			return err
		}
		if cur.SPOJobID != "" {
			if err := add(spoRowKey(cur.SPOJobID), nil); err != nil {
				return err
			}
		}
		_, err = s.table.SubmitTransaction(ctx, ops, nil)
		if err == nil {
			return nil
		}
		switch st, _ := batchStatus(err); {
		case st == http.StatusPreconditionFailed:
		case st == http.StatusNotFound && !repair:
			repair = true
		default:
			return fmt.Errorf("delete job %s: %w", id, err)
		}
		if attempt+1 >= s.opts.MaxUpdateAttempts {
			return fmt.Errorf("delete job %s after %d attempts: %w", id, attempt+1, ErrConflict)
		}
		if err := s.backoff(ctx, attempt); err != nil {
			return err
		}
	}
}

// writeOps is the entity group transaction that moves the rows of cur (nil: none yet) to next:
// the record (inserted, or replaced If-Match etag), its state index row (a full copy) and its SPO
// index row. In repair mode, deletes of rows that do not exist are left out.
func (s *Store) writeOps(ctx context.Context, cur, next *Job, props map[string]any, etag azcore.ETag, repair bool) ([]aztables.TransactionAction, error) {
	var ops []aztables.TransactionAction
	put := func(t aztables.TransactionType, rk string, p map[string]any, ifMatch *azcore.ETag) error {
		b, err := entityJSON(rk, p)
		if err != nil {
			return err
		}
		ops = append(ops, aztables.TransactionAction{ActionType: t, Entity: b, IfMatch: ifMatch})
		return nil
	}
	del := func(rk string) error {
		if repair && !s.exists(ctx, rk) {
			return nil
		}
		return put(aztables.TransactionTypeDelete, rk, nil, nil)
	}

	if cur == nil {
		if err := put(aztables.TransactionTypeAdd, mainRowKey(next.ID), props, nil); err != nil {
			return nil, err
		}
	} else {
		if err := put(aztables.TransactionTypeUpdateReplace, mainRowKey(next.ID), props, &etag); err != nil {
			return nil, err
		}
	}
	// State index row: a full copy of the record, so that List reads a page in one query.
	if cur != nil && cur.State != next.State {
		if err := del(stateRowKey(cur.State, cur.ID)); err != nil {
			return nil, err
		}
	}
	// Without If-Match an UpdateReplace is an insert-or-replace (it also heals a missing row).
	if err := put(aztables.TransactionTypeInsertReplace, stateRowKey(next.State, next.ID), props, nil); err != nil {
		return nil, err
	}
	// SPO index row: points to the record; Add fails (409) if another job holds the SPO job id.
	var curSPO string
	if cur != nil {
		curSPO = cur.SPOJobID
	}
	if curSPO != next.SPOJobID {
		if curSPO != "" {
			if err := del(spoRowKey(curSPO)); err != nil {
				return nil, err
			}
		}
		if next.SPOJobID != "" {
			if err := put(aztables.TransactionTypeAdd, spoRowKey(next.SPOJobID), map[string]any{pJobID: next.ID}, nil); err != nil {
				return nil, err
			}
		}
	}
	return ops, nil
}

func (s *Store) exists(ctx context.Context, rowKey string) bool {
	_, err := s.table.GetEntity(ctx, partitionKey, rowKey, nil)
	return err == nil || !hasStatus(err, http.StatusNotFound)
}

func (s *Store) backoff(ctx context.Context, attempt int) error {
	ceil := s.opts.RetryMaxDelay
	if attempt < 30 {
		ceil = min(ceil, s.opts.RetryBaseDelay<<attempt)
	}
	t := time.NewTimer(rand.N(ceil) + time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ---- service errors ----

func hasCode(err error, code aztables.TableErrorCode) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.ErrorCode == string(code)
}

func hasStatus(err error, status int) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == status
}

var (
	innerStatusRE = regexp.MustCompile(`(?m)^HTTP/1\.[01] ([0-9]{3}) `)
	innerCodeRE   = regexp.MustCompile(`"code"\s*:\s*"([A-Za-z]+)"`)
)

// batchStatus is the status and error code of a failed request. An entity group transaction fails
// with 202 Accepted around a multipart body that holds the failed operation's response; its status
// and code are read from there.
func batchStatus(err error) (int, string) {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return 0, ""
	}
	if re.StatusCode != http.StatusAccepted || re.RawResponse == nil {
		return re.StatusCode, re.ErrorCode
	}
	body, perr := runtime.Payload(re.RawResponse)
	if perr != nil {
		return re.StatusCode, re.ErrorCode
	}
	st := re.StatusCode
	if m := innerStatusRE.FindSubmatch(body); m != nil {
		st, _ = strconv.Atoi(string(m[1]))
	}
	code := re.ErrorCode
	if m := innerCodeRE.FindSubmatch(body); m != nil {
		code = string(m[1])
	}
	return st, code
}

// ---- helpers ----

func equalProps(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	ja, err1 := entityJSON("x", a)
	jb, err2 := entityJSON("x", b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/provision"
	"github.com/spomig/spomig/internal/spo"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// jobID reads {id}; an id that cannot exist answers 404 at once.
func (s *server) jobID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := mux.Vars(r)["id"]
	if !jobs.ValidID(id) {
		s.problem(w, r, problem{Status: http.StatusNotFound, Slug: "job-not-found", Title: "Job not found",
			Detail: "there is no migration job with this id"})
		return "", false
	}
	return id, true
}

// create serves POST /api/migrations.
func (s *server) create(w http.ResponseWriter, r *http.Request) {
	max := s.opts.MaxBodyBytes
	tooLarge := problem{Status: http.StatusRequestEntityTooLarge, Slug: "body-too-large", Title: "Body too large",
		Detail: fmt.Sprintf("the request body is larger than %d bytes", max)}
	if r.ContentLength > max {
		s.problem(w, r, tooLarge)
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		s.problem(w, r, problem{Status: http.StatusUnsupportedMediaType, Slug: "unsupported-media-type", Title: "Unsupported media type",
			Detail: "send the body as Content-Type: application/json"})
		return
	}
	body, err := DecodeCreateRequest(http.MaxBytesReader(w, r.Body, max))
	var (
		mbe *http.MaxBytesError
		re  *RequestError
	)
	switch {
	case errors.As(err, &mbe):
		s.problem(w, r, tooLarge)
		return
	case errors.As(err, &re):
		s.problem(w, r, problem{Status: http.StatusBadRequest, Slug: re.slug, Title: re.Title, Detail: re.Detail})
		return
	case err != nil:
		auditOf(r.Context()).err = err
		s.problem(w, r, problem{Status: http.StatusBadRequest, Slug: "unreadable-body", Title: "Unreadable body", Detail: "the request body could not be read"})
		return
	}
	// Idempotency-Key: a retried POST with the same key answers the job the first one created.
	var jobID string
	if key, present := r.Header["Idempotency-Key"]; present {
		k := strings.TrimSpace(strings.Join(key, ","))
		if k == "" || len(k) > maxIdempotencyKey || !printableASCII(k) {
			s.problem(w, r, problem{Status: http.StatusBadRequest, Slug: "invalid-idempotency-key", Title: "Invalid Idempotency-Key",
				Detail: fmt.Sprintf("the Idempotency-Key header must be 1 to %d printable ASCII characters", maxIdempotencyKey)})
			return
		}
		jobID = provision.IdempotentJobID(k)
	}
	ctx := r.Context()
	j, err := s.opts.Provisioner.Create(ctx, provision.Request{
		SiteURL: body.SiteURL, WebID: body.WebID, Label: body.Label, CallbackURL: body.CallbackURL, Source: jobs.SourceAPI,
		JobID: jobID,
	})
	if errors.Is(err, provision.ErrJobIDInUse) {
		s.problem(w, r, problem{Status: http.StatusConflict, Slug: "idempotency-key-reused", Title: "Idempotency-Key reused",
			Detail: "this Idempotency-Key was used for a migration of another site; use a new key for a new migration"})
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	auditOf(ctx).jobID = j.ID
	uploadURL, expires, err := s.opts.Provisioner.UploadURL(ctx, j.ID)
	if jobID != "" && errors.Is(err, provision.ErrNotAwaitingPackage) {
		// A replay after the package arrived: the job as it is now, without an upload URL.
		v := jobView(j, s.baseURL(r))
		w.Header().Set("Location", v.Links.Self)
		writeJSON(w, http.StatusOK, v)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v := jobView(j, s.baseURL(r))
	v.Upload = &Upload{URL: uploadURL, Method: http.MethodPut, Headers: map[string]string{"x-ms-blob-type": "BlockBlob"}, ExpiresAt: expires.UTC()}
	w.Header().Set("Location", v.Links.Self)
	writeJSON(w, http.StatusCreated, v)
}

// maxIdempotencyKey bounds the Idempotency-Key header.
const maxIdempotencyKey = 255

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// list serves GET /api/migrations.
func (s *server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	bad := func(detail string) {
		s.problem(w, r, problem{Status: http.StatusBadRequest, Slug: "invalid-query", Title: "Invalid query parameter", Detail: detail})
	}
	for k := range q {
		switch k {
		case "state", "top", "continuationToken", "code": // code: the function key, read by the host
		default:
			if len(k) > maxFieldNameBytes {
				k = k[:maxFieldNameBytes] + "…"
			}
			bad(fmt.Sprintf("unknown query parameter %q; the parameters are state, top and continuationToken", k))
			return
		}
	}
	opts := jobs.ListOptions{ContinuationToken: q.Get("continuationToken")}
	var stateNames []string
	for _, v := range q["state"] {
		for name := range strings.SplitSeq(v, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			st, ok := parseState(name)
			if !ok {
				bad(fmt.Sprintf("unknown state %q; the states are %s", truncateText(name, 40), stateList()))
				return
			}
			opts.State = append(opts.State, st)
			stateNames = append(stateNames, string(st))
		}
	}
	if v := q.Get("top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > jobs.MaxListTop {
			bad(fmt.Sprintf("top must be a whole number from 1 to %d", jobs.MaxListTop))
			return
		}
		opts.Top = n
	}
	page, next, err := s.opts.Jobs.List(r.Context(), opts)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	base := s.baseURL(r)
	out := Page{Value: make([]Job, 0, len(page))}
	for i := range page {
		out.Value = append(out.Value, jobView(&page[i], base))
	}
	if next != "" {
		out.ContinuationToken = next
		nq := url.Values{}
		if len(stateNames) > 0 {
			nq.Set("state", strings.Join(stateNames, ","))
		}
		if opts.Top > 0 {
			nq.Set("top", strconv.Itoa(opts.Top))
		}
		nq.Set("continuationToken", next)
		out.NextLink = base + "/migrations?" + nq.Encode()
	}
	writeJSON(w, http.StatusOK, out)
}

func parseState(name string) (jobs.State, bool) {
	for _, st := range jobs.States() {
		if strings.EqualFold(string(st), name) {
			return st, true
		}
	}
	return "", false
}

func stateList() string {
	var names []string
	for _, st := range jobs.States() {
		names = append(names, string(st))
	}
	return strings.Join(names, ", ")
}

func truncateText(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// job reads the job the request names; when it cannot, it has answered (400 for a malformed id, 404, …).
func (s *server) job(w http.ResponseWriter, r *http.Request) (*jobs.Job, bool) {
	id, ok := s.jobID(w, r)
	if !ok {
		return nil, false
	}
	j, err := s.opts.Jobs.Get(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return nil, false
	}
	return j, true
}

// get serves GET /api/migrations/{id}.
func (s *server) get(w http.ResponseWriter, r *http.Request) {
	j, ok := s.job(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, jobView(j, s.baseURL(r)))
}

// result serves GET /api/migrations/{id}/result: 202 + Location (itself) + Retry-After while the job runs,
// 200 with the job and its log files once it has ended, whatever the outcome (the state says which).
func (s *server) result(w http.ResponseWriter, r *http.Request) {
	j, ok := s.job(w, r)
	if !ok {
		return
	}
	v := jobView(j, s.baseURL(r))
	if !j.Terminal() {
		after := s.opts.RetryAfter
		switch j.State {
		case jobs.StateEncrypting, jobs.StateStaged, jobs.StateSubmitted:
			after = s.opts.RetryAfterStaged
		}
		w.Header().Set("Location", v.Links.Result)
		w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(after)))
		writeJSON(w, http.StatusAccepted, v)
		return
	}
	if prefix, ok := s.logsPrefix(j); ok {
		files, err := s.opts.Reports.List(r.Context(), prefix)
		if err != nil {
			auditOf(r.Context()).err = fmt.Errorf("list log files (answered without them): %w", err)
		}
		v.LogFiles = logFiles(files, v.Links.Logs)
	}
	writeJSON(w, http.StatusOK, v)
}

// cancel serves DELETE /api/migrations/{id}.
//
// A job SharePoint has not seen yet is cancelled at once. A submitted job is cancelled only while
// SharePoint still has it queued: DeleteMigrationJob first, then the record. SharePoint cannot stop a job
// it is processing, and a job it no longer lists has ended (the monitor records how), so both answer 409.
// While a submission is in flight (a submit lease without an SPO job id yet) the answer is 409 with
// Retry-After: cancelling then could leave a job running at SharePoint that the record calls cancelled.
// The job's Key Vault secret is scheduled for deletion (CleanupAt = now; the monitor deletes it).
func (s *server) cancel(w http.ResponseWriter, r *http.Request) {
	id, ok := s.jobID(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	conflict := func(detail string, after time.Duration) {
		s.problem(w, r, problem{Status: http.StatusConflict, Slug: "cannot-cancel", Title: "Job cannot be cancelled", Detail: detail, RetryAfter: after})
	}
	errSubmitted := errors.New("submitted meanwhile")
	errSubmitting := errors.New("submission in flight")
	deletedAt := "" // the SPO job id deleted at SharePoint
	for attempt := 0; attempt < 3; attempt++ {
		j, err := s.opts.Jobs.Get(ctx, id)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if j.Terminal() {
			conflict(fmt.Sprintf("the job has already ended (%s)", j.State), 0)
			return
		}
		if j.SPOJobID != "" && j.SPOJobID != deletedAt {
			st, err := s.opts.SPO.GetMigrationJobStatus(ctx, j.SiteURL, j.SPOJobID)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			switch st {
			case spo.JobStateQueued:
				deleted, err := s.opts.SPO.DeleteMigrationJob(ctx, j.SiteURL, j.SPOJobID)
				if err != nil {
					s.fail(w, r, err)
					return
				}
				if !deleted {
					conflict("SharePoint did not delete the job: it has probably started; follow it with GET "+jobView(j, s.baseURL(r)).Links.Self, 0)
					return
				}
				deletedAt = j.SPOJobID
			case spo.JobStateProcessing:
				conflict("SharePoint is processing the job and cannot stop it; wait for its result", 0)
				return
			default:
				conflict("SharePoint no longer has the job queued: it has ended or is ending, and its outcome will be recorded shortly", 0)
				return
			}
		}
		now := s.opts.Now().UTC()
		var retryAfter time.Duration
		updated, err := s.opts.Jobs.Update(ctx, id, func(j *jobs.Job) error {
			if j.Terminal() {
				return &jobs.TransitionError{From: j.State, To: jobs.StateCancelled}
			}
			if j.SPOJobID != "" && j.SPOJobID != deletedAt {
				return errSubmitted
			}
			if j.SPOJobID == "" && j.SubmitLease.Owner != "" && j.SubmitLease.Expiry.After(now) {
				retryAfter = j.SubmitLease.Expiry.Sub(now)
				return errSubmitting
			}
			reason := "cancelled through the API"
			if deletedAt != "" {
				reason = "cancelled through the API; deleted from SharePoint's queue"
			}
			if err := j.Transition(jobs.StateCancelled, now, reason); err != nil {
				return err
			}
			j.CleanupAt = now
			return nil
		})
		var te *jobs.TransitionError
		switch {
		case errors.Is(err, errSubmitted):
			continue // submitted between our look and our write: go through SharePoint
		case errors.Is(err, errSubmitting):
			conflict("the job is being submitted to SharePoint right now; retry in a moment", retryAfter)
			return
		case errors.As(err, &te) && te.From.Terminal():
			conflict(fmt.Sprintf("the job has already ended (%s)", te.From), 0)
			return
		case err != nil:
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, jobView(updated, s.baseURL(r)))
		return
	}
	s.fail(w, r, jobs.ErrConflict)
}

// logsPrefix is the blob prefix of the job's logs in the reports container; false until the monitor
// has fetched them (LogsBlobPrefix empty). A prefix that starts with the container name is taken as
// "<container>/<prefix>".
func (s *server) logsPrefix(j *jobs.Job) (string, bool) {
	p := j.LogsBlobPrefix
	if p == "" {
		return "", false
	}
	p = strings.TrimPrefix(p, s.opts.ReportsContainer+"/")
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p, true
}

func logFiles(files []ReportFile, logsURL string) []LogFile {
	out := make([]LogFile, 0, len(files))
	for _, f := range files {
		out = append(out, LogFile{Name: f.Name, Size: f.Size, URL: logsURL + "/" + url.PathEscape(f.Name)})
	}
	return out
}

// noLogs answers 404 before the logs exist, saying why.
func (s *server) noLogs(w http.ResponseWriter, r *http.Request, j *jobs.Job) {
	p := problem{Status: http.StatusNotFound, Slug: "logs-not-available", Title: "Logs not available"}
	switch {
	case !j.Terminal():
		p.Detail = fmt.Sprintf("logs are fetched when the job ends; the job is %s", j.State)
	case j.SPOJobID == "":
		p.Detail = fmt.Sprintf("the job ended (%s) before it reached SharePoint; there are no import logs", j.State)
	default:
		p.Detail = fmt.Sprintf("the job has ended (%s); its logs have not been fetched yet", j.State)
		p.RetryAfter = time.Minute
	}
	s.problem(w, r, p)
}

// jobLogsPrefix reads the job of the request and the prefix of its stored logs; when there is none it
// has answered (the job's error, or 404 with the reason the logs are not there yet).
func (s *server) jobLogsPrefix(w http.ResponseWriter, r *http.Request, id string) (*jobs.Job, string, bool) {
	j, err := s.opts.Jobs.Get(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return nil, "", false
	}
	prefix, ok := s.logsPrefix(j)
	if !ok {
		s.noLogs(w, r, j)
		return nil, "", false
	}
	return j, prefix, true
}

// listLogs serves GET /api/migrations/{id}/logs.
func (s *server) listLogs(w http.ResponseWriter, r *http.Request) {
	id, ok := s.jobID(w, r)
	if !ok {
		return
	}
	j, prefix, ok := s.jobLogsPrefix(w, r, id)
	if !ok {
		return
	}
	files, err := s.opts.Reports.List(r.Context(), prefix)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, Logs{Files: logFiles(files, jobView(j, s.baseURL(r)).Links.Logs)})
}

// validLogName accepts a plain file name: letters, digits, '.', '-', '_', not starting with '.'.
func validLogName(n string) bool {
	if n == "" || len(n) > 255 || n[0] == '.' {
		return false
	}
	for _, c := range n {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// getLog serves GET /api/migrations/{id}/logs/{name}, streaming the file.
func (s *server) getLog(w http.ResponseWriter, r *http.Request) {
	id, ok := s.jobID(w, r)
	if !ok {
		return
	}
	notFound := func() {
		s.problem(w, r, problem{Status: http.StatusNotFound, Slug: "log-not-found", Title: "Log file not found",
			Detail: "the job has no log file of this name; GET its logs for the list"})
	}
	name := mux.Vars(r)["name"]
	if !validLogName(name) {
		notFound()
		return
	}
	_, prefix, ok := s.jobLogsPrefix(w, r, id)
	if !ok {
		return
	}
	body, size, err := s.opts.Reports.Open(r.Context(), prefix+name)
	if errors.Is(err, ErrReportNotFound) {
		notFound()
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer body.Close()
	ct := "text/plain; charset=utf-8"
	if strings.EqualFold(path.Ext(name), ".csv") {
		ct = "text/csv; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.Header().Set("Content-Disposition", fmt.Sprintf("inline; filename=%q", name))
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, body); err != nil {
		auditOf(r.Context()).err = fmt.Errorf("stream log file: %w", err)
	}
}

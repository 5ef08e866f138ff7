package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"runtime/debug"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/provision"
	"github.com/spomig/spomig/internal/spo"
)

// Jobs is the job store the API reads and updates (*jobs.Store).
type Jobs interface {
	Get(ctx context.Context, id string) (*jobs.Job, error)
	Update(ctx context.Context, id string, mutate func(*jobs.Job) error) (*jobs.Job, error)
	List(ctx context.Context, opts jobs.ListOptions) ([]jobs.Job, string, error)
}

// Provisioner creates jobs and mints their upload URLs (*provision.Service).
type Provisioner interface {
	Create(ctx context.Context, req provision.Request) (*jobs.Job, error)
	UploadURL(ctx context.Context, jobID string) (url string, expires time.Time, err error)
}

// SPO is the part of the SharePoint client that cancelling uses (*spo.Client).
type SPO interface {
	GetMigrationJobStatus(ctx context.Context, siteURL, jobID string) (spo.JobState, error)
	DeleteMigrationJob(ctx context.Context, siteURL, jobID string) (bool, error)
}

// ReportFile is one file of a job's decrypted logs.
type ReportFile struct {
	Name string // blob name relative to the listed prefix
	Size int64
}

// Reports reads the decrypted import logs the monitor keeps in the reports container (*BlobReports).
type Reports interface {
	// List returns the files directly under prefix (names relative to it), at most MaxLogFiles.
	List(ctx context.Context, prefix string) ([]ReportFile, error)
	// Open streams one blob; ErrReportNotFound when it does not exist. The caller closes the reader.
	Open(ctx context.Context, name string) (io.ReadCloser, int64, error)
}

var (
	_ Jobs        = (*jobs.Store)(nil)
	_ Provisioner = (*provision.Service)(nil)
	_ SPO         = (*spo.Client)(nil)
	_ Reports     = (*BlobReports)(nil)
)

// Defaults of Options.
const (
	DefaultMaxBodyBytes     = 64 << 10
	DefaultRetryAfter       = 30 * time.Second
	DefaultRetryAfterStaged = 10 * time.Second
	DefaultReportsContainer = "migration-reports"
	DefaultVersion          = "dev"
)

// Options configures New.
type Options struct {
	// Jobs, Provisioner, SPO and Reports are required; without one of them every request is answered 503.
	Jobs        Jobs
	Provisioner Provisioner
	SPO         SPO
	Reports     Reports

	// ReportsContainer is the container Reports reads, stripped from a job's LogsBlobPrefix when the
	// prefix starts with it. Default DefaultReportsContainer.
	ReportsContainer string
	// MaxBodyBytes bounds a request body (413 beyond). Default 64 KiB. Memory: one body per request.
	MaxBodyBytes int64
	// RetryAfter is the poll interval the result operation asks for while a job runs at SharePoint;
	// RetryAfterStaged while spomig itself is encrypting or submitting it. Defaults 30s and 10s.
	RetryAfter, RetryAfterStaged time.Duration
	// Version is the API version in the OpenAPI document (info.version). Default "dev".
	Version string
	// BaseURL is the public scheme://host[:port] of the app (no path), e.g.
	// "https://"+$WEBSITE_HOSTNAME, for the absolute URLs of answers (Location, links, nextLink) and the
	// OpenAPI host. Empty: taken from each request's forwarding headers (see baseURL).
	BaseURL string

	// Logger receives one audit line per request. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock of state changes (cancel). Default time.Now.
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.ReportsContainer == "" {
		o.ReportsContainer = DefaultReportsContainer
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = DefaultRetryAfter
	}
	if o.RetryAfterStaged <= 0 {
		o.RetryAfterStaged = DefaultRetryAfterStaged
	}
	if o.Version == "" {
		o.Version = DefaultVersion
	}
	o.BaseURL = strings.TrimRight(o.BaseURL, "/")
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Operation ids, also the route names of the router and the operationIds of the OpenAPI document.
const (
	OpCreate     = "CreateMigration"
	OpList       = "ListMigrations"
	OpGet        = "GetMigration"
	OpCancel     = "CancelMigration"
	OpResult     = "GetMigrationResult"
	OpListLogs   = "ListMigrationLogs"
	OpGetLog     = "GetMigrationLog"
	OpGetOpenAPI = "GetOpenAPIDocument"
)

// Route is one route of the API.
type Route struct {
	Name, Method, Path string // Path is the mux template, e.g. /api/migrations/{id}
}

// Routes lists the routes New serves, in the order they are registered.
func Routes() []Route {
	return []Route{
		{OpCreate, http.MethodPost, "/api/migrations"},
		{OpList, http.MethodGet, "/api/migrations"},
		{OpGet, http.MethodGet, "/api/migrations/{id}"},
		{OpCancel, http.MethodDelete, "/api/migrations/{id}"},
		{OpResult, http.MethodGet, "/api/migrations/{id}/result"},
		{OpListLogs, http.MethodGet, "/api/migrations/{id}/logs"},
		{OpGetLog, http.MethodGet, "/api/migrations/{id}/logs/{name}"},
		{OpGetOpenAPI, http.MethodGet, "/api/openapi.json"},
	}
}

type server struct {
	opts   Options
	log    *slog.Logger
	router *mux.Router
	broken string // why the API cannot serve (a missing dependency); "" when it can
}

// New returns the API handler. It does no I/O. Without Jobs, Provisioner, SPO or Reports every request is
// answered 503 with a problem naming what is missing (and logged), rather than a crash of the handler.
func New(opts Options) http.Handler {
	opts.setDefaults()
	s := &server{opts: opts, log: opts.Logger}
	var missing []string
	for name, v := range map[string]any{"Jobs": opts.Jobs, "Provisioner": opts.Provisioner, "SPO": opts.SPO, "Reports": opts.Reports} {
		if v == nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		s.broken = "the API is not configured: missing " + strings.Join(missing, ", ")
	}
	s.router = s.newRouter()
	return s
}

// Router exposes the routes of an API handler made by New, for tests that walk them; nil for any other
// handler.
func Router(h http.Handler) *mux.Router {
	if s, ok := h.(*server); ok {
		return s.router
	}
	return nil
}

func (s *server) newRouter() *mux.Router {
	// SkipClean: a path with "..", "//" or "/./" is answered 404 (no route), never redirected.
	r := mux.NewRouter().SkipClean(true)
	handlers := map[string]http.HandlerFunc{
		OpCreate:     s.create,
		OpList:       s.list,
		OpGet:        s.get,
		OpCancel:     s.cancel,
		OpResult:     s.result,
		OpListLogs:   s.listLogs,
		OpGetLog:     s.getLog,
		OpGetOpenAPI: s.openAPI,
	}
	for _, rt := range Routes() {
		r.HandleFunc(rt.Path, handlers[rt.Name]).Methods(rt.Method).Name(rt.Name)
	}
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		s.problem(w, req, problem{Status: http.StatusNotFound, Slug: "no-route", Title: "No such route",
			Detail: fmt.Sprintf("no API route at %s; see /api/openapi.json", safePath(req.URL.Path))})
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		allowed := s.allowedMethods(req)
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		s.problem(w, req, problem{Status: http.StatusMethodNotAllowed, Slug: "method-not-allowed", Title: "Method not allowed",
			Detail: fmt.Sprintf("%s is not allowed on %s; allowed: %s", safeMethod(req.Method), safePath(req.URL.Path), strings.Join(allowed, ", "))})
	})
	return r
}

// allowedMethods lists the methods of the routes whose path matches the request's.
func (s *server) allowedMethods(req *http.Request) []string {
	var out []string
	for _, rt := range Routes() {
		probe := req.Clone(req.Context())
		probe.Method = rt.Method
		var m mux.RouteMatch
		if route := s.router.Get(rt.Name); route != nil && route.Match(probe, &m) {
			out = append(out, rt.Method)
		}
	}
	return out
}

// auditKey carries the *audit of a request in its context.
type auditKey struct{}

// audit is what the audit line of one request reports; handlers fill in the job id and the error.
type audit struct {
	jobID string
	err   error
}

func auditOf(ctx context.Context) *audit {
	if a, ok := ctx.Value(auditKey{}).(*audit); ok {
		return a
	}
	return &audit{}
}

// ServeHTTP serves one request and writes its audit line.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	a := &audit{}
	r = r.WithContext(context.WithValue(r.Context(), auditKey{}, a))
	sw := &statusWriter{ResponseWriter: w}
	route := "(none)"
	var m mux.RouteMatch
	if s.router.Match(r, &m) && m.Route != nil {
		if tpl, err := m.Route.GetPathTemplate(); err == nil {
			route = tpl
		}
		if id := m.Vars["id"]; jobs.ValidID(id) {
			a.jobID = id
		}
	} else if errors.Is(m.MatchErr, mux.ErrMethodMismatch) {
		route = "(method not allowed)"
	}
	defer func() {
		if p := recover(); p != nil {
			a.err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
			if sw.status == 0 {
				s.problem(sw, r, problem{Status: http.StatusInternalServerError, Slug: "internal", Title: "Internal error",
					Detail: "the request failed unexpectedly; see the handler log"})
			}
		}
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		attrs := []slog.Attr{
			slog.String("method", safeMethod(r.Method)),
			slog.String("route", route),
			slog.String("job_id", a.jobID),
			slog.String("caller_ip", callerIP(r)),
			slog.Int("status", status),
			slog.Int64("duration_ms", time.Since(start).Milliseconds()),
		}
		if a.err != nil {
			attrs = append(attrs, slog.String("err", redact(a.err.Error())))
		}
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "api call", attrs...)
	}()
	if s.broken != "" {
		a.err = errors.New(s.broken)
		sw.Header().Set("Retry-After", "30")
		s.problem(sw, r, problem{Status: http.StatusServiceUnavailable, Slug: "not-configured", Title: "API not configured", Detail: s.broken})
		return
	}
	s.router.ServeHTTP(sw, r)
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer (Flush, deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// callerIP is the first hop of X-Forwarded-For (the client as the front end saw it), else the peer
// address.
func callerIP(r *http.Request) string {
	if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
		first := strings.TrimSpace(strings.Split(xff, ",")[0])
		if host, _, err := net.SplitHostPort(first); err == nil {
			first = host
		}
		if ip := net.ParseIP(strings.Trim(first, "[]")); ip != nil {
			return ip.String()
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.String()
	}
	return "unknown"
}

// sigRE finds SAS signatures (and account keys) in free text.
var sigRE = regexp.MustCompile(`(?i)\b(sig|accountkey)=[^&\s"'<>;]*`)

// redact removes SAS signature values from text bound for a log.
func redact(s string) string {
	return sigRE.ReplaceAllString(s, "${1}=REDACTED")
}

// safePath is a request path fit for a problem detail: bounded, printable.
func safePath(p string) string {
	p = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, p)
	if len(p) > 200 {
		p = p[:200] + "…"
	}
	return redact(p)
}

func safeMethod(m string) string {
	if len(m) > 16 || strings.ContainsFunc(m, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return "(invalid)"
	}
	return m
}

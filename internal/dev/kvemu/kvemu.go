package kvemu

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spomig/spomig/internal/dev/devtls"
)

// Limits of the real service that the emulator enforces.
const (
	MaxValueBytes   = 25 * 1024 // a secret value is at most 25 KiB
	MaxTags         = 15
	MaxTagNameLen   = 512
	MaxTagValueLen  = 256
	MaxResults      = 25 // maxresults of the list operations: 1..25, default 25
	maxRequestBytes = 1 << 20
)

var nameRE = regexp.MustCompile(`^[0-9a-zA-Z-]{1,127}$`)

// Options configures New and Start. The zero value is an in-memory emulator for tenant DefaultTenantID.
type Options struct {
	// DataDir keeps the state (StateFile) across restarts. Empty: in memory only.
	// Cost: the whole state is held in memory and rewritten on every change (secrets are small, ≤25 KiB each).
	DataDir string
	// TenantID named in the challenge. Default DefaultTenantID.
	TenantID string
	// VaultName appears in 403 messages. Default "kvemu".
	VaultName string
	// Strict requires a JWT bearer token whose aud is https://vault.azure.net (or the Key Vault app id),
	// not expired, and from TenantID when it carries a tid. Signatures are never checked.
	Strict bool
	// AccessPolicies restrict callers (by oid or appid claim) and their permissions. Empty: everyone may do
	// everything.
	AccessPolicies []AccessPolicy
	// RecoverableDays a soft-deleted secret is kept before it is purged automatically. Default 90.
	RecoverableDays int
	// DeleteLatency and PurgeLatency emulate the asynchronous delete and purge of the real service: for
	// that long after a delete, the deleted secret is invisible and a purge, recover or re-create answers
	// 409 ObjectIsBeingDeleted; for PurgeLatency after a purge, a re-create answers the same. Default 0.
	DeleteLatency, PurgeLatency time.Duration
	// Logger receives one line per request. Nil: discarded.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time

	// The following are used by Start only.

	// Addr to listen on. Default "127.0.0.1:0" (a free port).
	Addr string
	// CA issues the server certificate. Nil: devtls.LoadOrCreate(TLSDir).
	CA *devtls.CA
	// TLSDir holds the development CA when CA is nil. Default: DataDir/../tls, or an in-memory CA
	// (devtls.New) when DataDir is empty too.
	TLSDir string
	// Hosts the server certificate is valid for. Default 127.0.0.1, ::1 and localhost.
	Hosts []string
}

func (o *Options) setDefaults() {
	if o.TenantID == "" {
		o.TenantID = DefaultTenantID
	}
	if o.VaultName == "" {
		o.VaultName = "kvemu"
	}
	if o.RecoverableDays <= 0 {
		o.RecoverableDays = 90
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
}

// Fault is an injected failure: the next Count requests are answered with Status.
type Fault struct {
	// Status of the answer: 429 (Throttled) or 503 (ServiceUnavailable); any other 4xx/5xx is sent with a
	// generic body. Default 429.
	Status int
	// Count of requests to fail. Default 1.
	Count int
	// RetryAfter is sent as Retry-After in whole seconds (rounded up). A value that is not whole seconds is
	// also sent as retry-after-ms, which azcore prefers, so tests need not wait a whole second. 0: no header.
	RetryAfter time.Duration
}

// Stats are counters for tests. They never contain secret material.
type Stats struct {
	Requests     int      `json:"requests"`     // Key Vault requests (not /_emulator/)
	Challenges   int      `json:"challenges"`   // 401 challenges to requests without Authorization
	Unauthorized int      `json:"unauthorized"` // 401 to requests with an unusable token
	Forbidden    int      `json:"forbidden"`    // 403 by access policy
	Faults       int      `json:"faults"`       // requests answered by an injected fault
	Identities   []string `json:"identities"`   // caller identities seen (appid=…;oid=…;iss=…)
	Secrets      int      `json:"secrets"`      // secrets (not deleted)
	Deleted      int      `json:"deleted"`      // soft-deleted secrets
}

// Emulator is the Key Vault secrets emulator as an http.Handler (see Start for a listening server).
type Emulator struct {
	opts Options

	mu         sync.Mutex
	st         *state
	faults     []Fault
	stats      Stats
	identities map[string]bool
}

var _ http.Handler = (*Emulator)(nil)

// New loads the state from opts.DataDir (if any) and returns the emulator.
func New(opts Options) (*Emulator, error) {
	opts.setDefaults()
	st, err := loadState(opts.DataDir)
	if err != nil {
		return nil, err
	}
	return &Emulator{opts: opts, st: st, identities: map[string]bool{}}, nil
}

// InjectFaults queues faults; each request that passes the api-version and token checks consumes one.
func (e *Emulator) InjectFaults(faults ...Fault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, f := range faults {
		if f.Status == 0 {
			f.Status = http.StatusTooManyRequests
		}
		if f.Count <= 0 {
			f.Count = 1
		}
		e.faults = append(e.faults, f)
	}
}

// ClearFaults drops pending faults.
func (e *Emulator) ClearFaults() {
	e.mu.Lock()
	e.faults = nil
	e.mu.Unlock()
}

// Stats returns a snapshot of the counters.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Identities = make([]string, 0, len(e.identities))
	for id := range e.identities {
		s.Identities = append(s.Identities, id)
	}
	slices.Sort(s.Identities)
	s.Secrets, s.Deleted = len(e.st.Secrets), len(e.st.Deleted)
	return s
}

// apiError is a Key Vault error response.
type apiError struct {
	status int
	code   string
	msg    string
	inner  string
}

func (a *apiError) Error() string { return a.code + ": " + a.msg }

func errNotFound(name string) *apiError {
	return &apiError{http.StatusNotFound, "SecretNotFound", fmt.Sprintf("A secret with (name/id) %s was not found in this key vault. "+
		"If you recently deleted this secret you may be able to recover it using the correct recovery command. "+
		"For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182", name), ""}
}

func errDeletedNotFound() *apiError {
	return &apiError{http.StatusNotFound, "SecretNotFound", "Deleted Secret not found", ""}
}

func errBadParameter(msg string) *apiError {
	return &apiError{http.StatusBadRequest, "BadParameter", msg, ""}
}

func errBeingDeleted(msg string) *apiError {
	return &apiError{http.StatusConflict, "Conflict", msg, "ObjectIsBeingDeleted"}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// ServeHTTP implements http.Handler.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	identity := ""
	defer func() {
		// Path only: no query string, no headers, no body.
		e.opts.Logger.Info("kvemu request", "method", r.Method, "path", r.URL.Path, "status", sw.status,
			"identity", identity, "ms", time.Since(start).Milliseconds())
	}()
	h := sw.Header()
	h.Set("x-ms-request-id", newVersion())
	h.Set("x-ms-keyvault-service-version", "kvemu")
	h.Set("x-ms-keyvault-region", "local")
	h.Set("Cache-Control", "no-cache")

	if strings.HasPrefix(r.URL.Path, "/_emulator/") {
		e.admin(sw, r)
		return
	}
	e.mu.Lock()
	e.stats.Requests++
	e.mu.Unlock()

	if r.URL.Query().Get("api-version") == "" {
		writeError(sw, &apiError{http.StatusBadRequest, "BadParameter",
			"The request is missing the required 'api-version' query parameter.", "MissingApiVersionParameter"})
		return
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		e.mu.Lock()
		e.stats.Challenges++
		e.mu.Unlock()
		e.unauthorized(sw, "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	token, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || strings.TrimSpace(token) == "" {
		e.mu.Lock()
		e.stats.Unauthorized++
		e.mu.Unlock()
		e.unauthorized(sw, "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	c, err := checkToken(strings.TrimSpace(token), e.opts.TenantID, e.opts.Strict, e.opts.Now())
	if err != nil {
		e.mu.Lock()
		e.stats.Unauthorized++
		e.mu.Unlock()
		e.unauthorized(sw, err.Error())
		return
	}
	identity = c.identity()

	e.mu.Lock()
	e.identities[identity] = true
	var fault *Fault
	if len(e.faults) > 0 {
		f := e.faults[0]
		fault = &f
		if e.faults[0].Count--; e.faults[0].Count <= 0 {
			e.faults = e.faults[1:]
		}
		e.stats.Faults++
	}
	e.mu.Unlock()
	if fault != nil {
		writeFault(sw, *fault)
		return
	}

	op, perm, aerr := route(r)
	if aerr != nil {
		writeError(sw, aerr)
		return
	}
	if !allowed(e.opts.AccessPolicies, c, perm) {
		e.mu.Lock()
		e.stats.Forbidden++
		e.mu.Unlock()
		writeError(sw, &apiError{http.StatusForbidden, "Forbidden", fmt.Sprintf("The user, group or application '%s' does not have secrets %s "+
			"permission on key vault '%s;location=local'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
			identity, perm, e.opts.VaultName), "ForbiddenByPolicy"})
		return
	}
	var body []byte
	if r.Body != nil {
		body, err = io.ReadAll(http.MaxBytesReader(sw, r.Body, maxRequestBytes))
		if err != nil {
			writeError(sw, errBadParameter("The request body is too large or unreadable."))
			return
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	changed := e.housekeep()
	status, v, aerr := op(e, &call{base: "https://" + r.Host, r: r, body: body})
	if aerr == nil && status != 0 {
		changed = true // every successful write operation returns a status; reads return 0 (200)
	}
	if changed {
		if err := e.st.save(e.opts.DataDir); err != nil {
			e.opts.Logger.Error("kvemu: saving state failed", "err", err)
			writeError(sw, &apiError{http.StatusInternalServerError, "InternalServerError", "kvemu could not save its state.", ""})
			return
		}
	}
	if aerr != nil {
		writeError(sw, aerr)
		return
	}
	if status == 0 {
		status = http.StatusOK
	}
	if status == http.StatusNoContent {
		sw.WriteHeader(status)
		return
	}
	writeJSON(sw, status, v)
}

func (e *Emulator) unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="https://login.microsoftonline.com/%s", resource="%s"`, e.opts.TenantID, Resource))
	writeError(w, &apiError{http.StatusUnauthorized, "Unauthorized", msg, ""})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, a *apiError) {
	body := map[string]any{"code": a.code, "message": a.msg}
	if a.inner != "" {
		body["innererror"] = map[string]string{"code": a.inner}
	}
	writeJSON(w, a.status, map[string]any{"error": body})
}

func writeFault(w http.ResponseWriter, f Fault) {
	if f.RetryAfter > 0 {
		secs := (f.RetryAfter + time.Second - 1) / time.Second
		w.Header().Set("Retry-After", strconv.FormatInt(int64(secs), 10))
		if f.RetryAfter%time.Second != 0 {
			w.Header().Set("retry-after-ms", strconv.FormatInt(f.RetryAfter.Milliseconds(), 10))
		}
	}
	switch f.Status {
	case http.StatusTooManyRequests:
		writeError(w, &apiError{f.Status, "Throttled", "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached", ""})
	case http.StatusServiceUnavailable:
		writeError(w, &apiError{f.Status, "ServiceUnavailable", "The service is temporarily unavailable. Please retry.", ""})
	default:
		writeError(w, &apiError{f.Status, http.StatusText(f.Status), "Injected fault.", ""})
	}
}

// housekeep purges soft-deleted secrets past their scheduled purge date and ends elapsed purges.
func (e *Emulator) housekeep() (changed bool) {
	now := e.opts.Now()
	for k, d := range e.st.Deleted {
		if now.Unix() >= d.ScheduledPurgeDate {
			delete(e.st.Deleted, k)
			changed = true
		}
	}
	for k, until := range e.st.Purging {
		if now.UnixNano() >= until {
			delete(e.st.Purging, k)
			changed = true
		}
	}
	return changed
}

// call is one request being served.
type call struct {
	base string // https://host:port of the vault as the client addressed it
	r    *http.Request
	body []byte
}

// opFunc serves a routed request with e.mu held. A write returns a non-zero status; a read returns 0 (200).
type opFunc func(e *Emulator, c *call) (status int, v any, err *apiError)

// route maps a request to its operation and the permission it needs.
func route(r *http.Request) (opFunc, string, *apiError) {
	p := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	m := r.Method
	bad := func() (opFunc, string, *apiError) {
		return nil, "", &apiError{http.StatusMethodNotAllowed, "MethodNotAllowed", fmt.Sprintf("The requested method %s is not allowed on %s.", m, r.URL.Path), ""}
	}
	checkName := func(n string) *apiError {
		if !nameRE.MatchString(n) {
			return errBadParameter("The request URI contains an invalid name: " + n)
		}
		return nil
	}
	switch {
	case len(p) == 1 && p[0] == "secrets":
		if m != http.MethodGet {
			return bad()
		}
		return opList, PermList, nil
	case len(p) == 1 && p[0] == "deletedsecrets":
		if m != http.MethodGet {
			return bad()
		}
		return opListDeleted, PermList, nil
	case p[0] == "secrets" && (len(p) == 2 || len(p) == 3):
		if p[1] == "restore" || (len(p) == 3 && p[2] == "backup") {
			return nil, "", errBadParameter("Backup and restore are not supported by kvemu.")
		}
		if err := checkName(p[1]); err != nil {
			return nil, "", err
		}
		if len(p) == 3 && p[2] == "versions" {
			if m != http.MethodGet {
				return bad()
			}
			return opListVersions, PermList, nil
		}
		switch m {
		case http.MethodGet:
			return opGet, PermGet, nil
		case http.MethodPut:
			if len(p) == 3 {
				return bad()
			}
			return opSet, PermSet, nil
		case http.MethodPatch:
			return opUpdate, PermSet, nil
		case http.MethodDelete:
			if len(p) == 3 {
				return bad()
			}
			return opDelete, PermDelete, nil
		}
		return bad()
	case p[0] == "deletedsecrets" && (len(p) == 2 || len(p) == 3):
		if err := checkName(p[1]); err != nil {
			return nil, "", err
		}
		if len(p) == 3 {
			if p[2] != "recover" || m != http.MethodPost {
				return bad()
			}
			return opRecover, PermRecover, nil
		}
		switch m {
		case http.MethodGet:
			return opGetDeleted, PermList, nil
		case http.MethodDelete:
			return opPurge, PermPurge, nil
		}
		return bad()
	}
	return nil, "", &apiError{http.StatusNotFound, "NotFound", "The requested resource " + r.URL.Path + " does not exist in kvemu.", ""}
}

func pathParts(c *call) []string { return strings.Split(strings.Trim(c.r.URL.Path, "/"), "/") }

// JSON shapes.

type attrsJSON struct {
	Enabled         bool   `json:"enabled"`
	NotBefore       *int64 `json:"nbf,omitempty"`
	Expires         *int64 `json:"exp,omitempty"`
	Created         int64  `json:"created"`
	Updated         int64  `json:"updated"`
	RecoveryLevel   string `json:"recoveryLevel"`
	RecoverableDays int    `json:"recoverableDays"`
}

type bundleJSON struct {
	Value              *string           `json:"value,omitempty"`
	ID                 string            `json:"id"`
	ContentType        string            `json:"contentType,omitempty"`
	Tags               map[string]string `json:"tags,omitempty"`
	Attributes         attrsJSON         `json:"attributes"`
	RecoveryID         string            `json:"recoveryId,omitempty"`
	DeletedDate        int64             `json:"deletedDate,omitempty"`
	ScheduledPurgeDate int64             `json:"scheduledPurgeDate,omitempty"`
}

type listJSON struct {
	Value    []bundleJSON `json:"value"`
	NextLink *string      `json:"nextLink"`
}

func (e *Emulator) attrs(v *version) attrsJSON {
	return attrsJSON{Enabled: v.Enabled, NotBefore: v.NotBefore, Expires: v.Expires, Created: v.Created, Updated: v.Updated,
		RecoveryLevel: "Recoverable+Purgeable", RecoverableDays: e.opts.RecoverableDays}
}

// bundle is the secret bundle of one version; withVersion false gives the list-item id (no version).
func (e *Emulator) bundle(base string, s *secret, v *version, withValue, withVersion bool) bundleJSON {
	b := bundleJSON{ID: base + "/secrets/" + s.Name, ContentType: v.ContentType, Tags: v.Tags, Attributes: e.attrs(v)}
	if withVersion {
		b.ID += "/" + v.Version
	}
	if withValue {
		val := v.Value
		b.Value = &val
	}
	return b
}

func (e *Emulator) deletedBundle(base string, d *deletedItem, withVersion bool) bundleJSON {
	b := e.bundle(base, d.Secret, d.Secret.latest(), false, withVersion)
	b.RecoveryID = base + "/deletedsecrets/" + d.Secret.Name
	b.DeletedDate, b.ScheduledPurgeDate = d.DeletedDate, d.ScheduledPurgeDate
	return b
}

func newVersion() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type attrsIn struct {
	Enabled   *bool  `json:"enabled"`
	NotBefore *int64 `json:"nbf"`
	Expires   *int64 `json:"exp"`
}

type setIn struct {
	Value       *string            `json:"value"`
	ContentType *string            `json:"contentType"`
	Tags        map[string]*string `json:"tags"`
	Attributes  *attrsIn           `json:"attributes"`
}

func tagsIn(in map[string]*string) (map[string]string, *apiError) {
	if in == nil {
		return nil, nil
	}
	if len(in) > MaxTags {
		return nil, errBadParameter(fmt.Sprintf("A secret can have at most %d tags.", MaxTags))
	}
	out := make(map[string]string, len(in))
	for k, v := range in {
		if k == "" || len(k) > MaxTagNameLen {
			return nil, errBadParameter(fmt.Sprintf("Tag names must be 1 to %d characters long.", MaxTagNameLen))
		}
		s := ""
		if v != nil {
			s = *v
		}
		if len(s) > MaxTagValueLen {
			return nil, errBadParameter(fmt.Sprintf("Tag values must be at most %d characters long.", MaxTagValueLen))
		}
		out[k] = s
	}
	return out, nil
}

// nameBlocked reports a 409 when name cannot be (re)created now.
func (e *Emulator) nameBlocked(key, name string) *apiError {
	now := e.opts.Now()
	if d, ok := e.st.Deleted[key]; ok {
		if now.UnixNano() < d.VisibleAt {
			return errBeingDeleted(fmt.Sprintf("Secret %s is currently being deleted and cannot be re-created; retry later.", name))
		}
		return &apiError{http.StatusConflict, "Conflict", fmt.Sprintf("Secret %s is currently in a deleted but recoverable state, "+
			"and its name cannot be reused; in this state, the secret can only be recovered or purged.", name), "ObjectIsDeletedButRecoverable"}
	}
	if until, ok := e.st.Purging[key]; ok && now.UnixNano() < until {
		return errBeingDeleted(fmt.Sprintf("Secret %s is currently being deleted and cannot be re-created; retry later.", name))
	}
	return nil
}

func opSet(e *Emulator, c *call) (int, any, *apiError) {
	name := pathParts(c)[1]
	key := strings.ToLower(name)
	var in setIn
	if err := json.Unmarshal(c.body, &in); err != nil {
		return 0, nil, errBadParameter("The request body is not valid JSON.")
	}
	if in.Value == nil {
		return 0, nil, errBadParameter("Property 'value' is required.")
	}
	if len(*in.Value) > MaxValueBytes {
		return 0, nil, errBadParameter(fmt.Sprintf("The secret value exceeds the maximum size of %d bytes.", MaxValueBytes))
	}
	if err := e.nameBlocked(key, name); err != nil {
		return 0, nil, err
	}
	tags, aerr := tagsIn(in.Tags)
	if aerr != nil {
		return 0, nil, aerr
	}
	now := e.opts.Now().Unix()
	v := &version{Version: newVersion(), Value: *in.Value, Tags: tags, Enabled: true, Created: now, Updated: now}
	if in.ContentType != nil {
		v.ContentType = *in.ContentType
	}
	if a := in.Attributes; a != nil {
		if a.Enabled != nil {
			v.Enabled = *a.Enabled
		}
		v.NotBefore, v.Expires = a.NotBefore, a.Expires
	}
	s, ok := e.st.Secrets[key]
	if !ok {
		s = &secret{Name: name}
		e.st.Secrets[key] = s
	}
	s.Versions = append(s.Versions, v)
	return http.StatusOK, e.bundle(c.base, s, v, true, true), nil
}

// lookup finds a version: ver "" is the latest.
func (e *Emulator) lookup(name, ver string) (*secret, *version, *apiError) {
	s, ok := e.st.Secrets[strings.ToLower(name)]
	if !ok && ver != "" {
		return nil, nil, errNotFound(name + "/" + ver)
	}
	if !ok {
		return nil, nil, errNotFound(name)
	}
	if ver == "" {
		return s, s.latest(), nil
	}
	v := s.find(ver)
	if v == nil {
		return nil, nil, errNotFound(name + "/" + ver)
	}
	return s, v, nil
}

func opGet(e *Emulator, c *call) (int, any, *apiError) {
	p := pathParts(c)
	ver := ""
	if len(p) == 3 {
		ver = p[2]
	}
	s, v, err := e.lookup(p[1], ver)
	if err != nil {
		return 0, nil, err
	}
	// Only a disabled secret is refused; exp and nbf are informational (see the package documentation).
	if !v.Enabled {
		return 0, nil, &apiError{http.StatusForbidden, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled"}
	}
	return 0, e.bundle(c.base, s, v, true, true), nil
}

func opUpdate(e *Emulator, c *call) (int, any, *apiError) {
	p := pathParts(c)
	ver := ""
	if len(p) == 3 {
		ver = p[2]
	}
	s, v, aerr := e.lookup(p[1], ver)
	if aerr != nil {
		return 0, nil, aerr
	}
	var in struct {
		ContentType *string            `json:"contentType"`
		Tags        map[string]*string `json:"tags"`
		Attributes  *attrsIn           `json:"attributes"`
	}
	if err := json.Unmarshal(c.body, &in); err != nil {
		return 0, nil, errBadParameter("The request body is not valid JSON.")
	}
	if in.Tags != nil {
		tags, aerr := tagsIn(in.Tags)
		if aerr != nil {
			return 0, nil, aerr
		}
		v.Tags = tags
	}
	if in.ContentType != nil {
		v.ContentType = *in.ContentType
	}
	if a := in.Attributes; a != nil {
		if a.Enabled != nil {
			v.Enabled = *a.Enabled
		}
		if a.NotBefore != nil {
			v.NotBefore = a.NotBefore
		}
		if a.Expires != nil {
			v.Expires = a.Expires
		}
	}
	v.Updated = e.opts.Now().Unix()
	return http.StatusOK, e.bundle(c.base, s, v, false, true), nil
}

func opDelete(e *Emulator, c *call) (int, any, *apiError) {
	name := pathParts(c)[1]
	key := strings.ToLower(name)
	s, ok := e.st.Secrets[key]
	if !ok {
		return 0, nil, errNotFound(name)
	}
	now := e.opts.Now()
	d := &deletedItem{Secret: s, DeletedDate: now.Unix(), ScheduledPurgeDate: now.Add(time.Duration(e.opts.RecoverableDays) * 24 * time.Hour).Unix()}
	if e.opts.DeleteLatency > 0 {
		d.VisibleAt = now.Add(e.opts.DeleteLatency).UnixNano()
	}
	delete(e.st.Secrets, key)
	e.st.Deleted[key] = d
	return http.StatusOK, e.deletedBundle(c.base, d, true), nil
}

// deleted finds a soft-deleted secret whose deletion has completed.
func (e *Emulator) deleted(name string) (*deletedItem, *apiError) {
	d, ok := e.st.Deleted[strings.ToLower(name)]
	if !ok {
		return nil, errDeletedNotFound()
	}
	if e.opts.Now().UnixNano() < d.VisibleAt {
		return d, errBeingDeleted("Secret is currently being deleted.")
	}
	return d, nil
}

func opGetDeleted(e *Emulator, c *call) (int, any, *apiError) {
	d, aerr := e.deleted(pathParts(c)[1])
	if aerr != nil {
		if aerr.status == http.StatusConflict {
			return 0, nil, errDeletedNotFound() // not visible yet
		}
		return 0, nil, aerr
	}
	return 0, e.deletedBundle(c.base, d, true), nil
}

func opPurge(e *Emulator, c *call) (int, any, *apiError) {
	name := pathParts(c)[1]
	if _, aerr := e.deleted(name); aerr != nil {
		return 0, nil, aerr
	}
	key := strings.ToLower(name)
	delete(e.st.Deleted, key)
	if e.opts.PurgeLatency > 0 {
		e.st.Purging[key] = e.opts.Now().Add(e.opts.PurgeLatency).UnixNano()
	}
	return http.StatusNoContent, nil, nil
}

func opRecover(e *Emulator, c *call) (int, any, *apiError) {
	name := pathParts(c)[1]
	d, aerr := e.deleted(name)
	if aerr != nil {
		return 0, nil, aerr
	}
	key := strings.ToLower(name)
	delete(e.st.Deleted, key)
	e.st.Secrets[key] = d.Secret
	return http.StatusOK, e.bundle(c.base, d.Secret, d.Secret.latest(), false, true), nil
}

// Paging. The $skiptoken is opaque to clients: base64url of {"NextMarker":"…"}, the marker being the
// lower-cased name after which to continue (secrets, deleted secrets) or the index to continue at
// (versions). nextLink repeats api-version because the SDK sends a next link as it is.

type skipToken struct {
	NextMarker string `json:"NextMarker"`
}

func pageParams(c *call) (max int, marker string, aerr *apiError) {
	q := c.r.URL.Query()
	max = MaxResults
	if s := q.Get("maxresults"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxResults {
			return 0, "", errBadParameter(fmt.Sprintf("Invalid maxresults value %q: it must be between 1 and %d.", s, MaxResults))
		}
		max = n
	}
	if t := q.Get("$skiptoken"); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		var st skipToken
		if err != nil || json.Unmarshal(b, &st) != nil {
			return 0, "", errBadParameter("Invalid $skiptoken.")
		}
		marker = st.NextMarker
	}
	return max, marker, nil
}

func nextLink(c *call, marker string, max int) *string {
	b, _ := json.Marshal(skipToken{NextMarker: marker})
	q := url.Values{}
	q.Set("api-version", c.r.URL.Query().Get("api-version"))
	q.Set("$skiptoken", base64.RawURLEncoding.EncodeToString(b))
	q.Set("maxresults", strconv.Itoa(max))
	s := c.base + c.r.URL.Path + "?" + q.Encode()
	return &s
}

// pageNames pages sorted keys after marker.
func pageNames(keys []string, marker string, max int) (page []string, next string) {
	i := 0
	if marker != "" {
		i, _ = slices.BinarySearch(keys, marker)
		if i < len(keys) && keys[i] == marker {
			i++
		}
	}
	end := min(i+max, len(keys))
	page = keys[i:end]
	if end < len(keys) && len(page) > 0 {
		next = page[len(page)-1]
	}
	return page, next
}

func opList(e *Emulator, c *call) (int, any, *apiError) {
	max, marker, aerr := pageParams(c)
	if aerr != nil {
		return 0, nil, aerr
	}
	page, next := pageNames(sortedKeys(e.st.Secrets), marker, max)
	out := listJSON{Value: []bundleJSON{}}
	for _, k := range page {
		s := e.st.Secrets[k]
		out.Value = append(out.Value, e.bundle(c.base, s, s.latest(), false, false))
	}
	if next != "" {
		out.NextLink = nextLink(c, next, max)
	}
	return 0, out, nil
}

func opListDeleted(e *Emulator, c *call) (int, any, *apiError) {
	max, marker, aerr := pageParams(c)
	if aerr != nil {
		return 0, nil, aerr
	}
	now := e.opts.Now().UnixNano()
	var keys []string
	for _, k := range sortedKeys(e.st.Deleted) {
		if now >= e.st.Deleted[k].VisibleAt {
			keys = append(keys, k)
		}
	}
	page, next := pageNames(keys, marker, max)
	out := listJSON{Value: []bundleJSON{}}
	for _, k := range page {
		out.Value = append(out.Value, e.deletedBundle(c.base, e.st.Deleted[k], false))
	}
	if next != "" {
		out.NextLink = nextLink(c, next, max)
	}
	return 0, out, nil
}

func opListVersions(e *Emulator, c *call) (int, any, *apiError) {
	name := pathParts(c)[1]
	max, marker, aerr := pageParams(c)
	if aerr != nil {
		return 0, nil, aerr
	}
	s, ok := e.st.Secrets[strings.ToLower(name)]
	if !ok {
		return 0, nil, errNotFound(name)
	}
	start := 0
	if marker != "" {
		n, err := strconv.Atoi(marker)
		if err != nil || n < 0 {
			return 0, nil, errBadParameter("Invalid $skiptoken.")
		}
		start = min(n, len(s.Versions))
	}
	end := min(start+max, len(s.Versions))
	out := listJSON{Value: []bundleJSON{}}
	for _, v := range s.Versions[start:end] {
		out.Value = append(out.Value, e.bundle(c.base, s, v, false, true))
	}
	if end < len(s.Versions) {
		out.NextLink = nextLink(c, strconv.Itoa(end), max)
	}
	return 0, out, nil
}

// admin serves /_emulator/. Nothing here returns secret material.
func (e *Emulator) admin(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/_emulator/health" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	case r.URL.Path == "/_emulator/stats" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, e.Stats())
	case r.URL.Path == "/_emulator/faults" && r.Method == http.MethodPost:
		var in struct {
			Status       int   `json:"status"`
			Count        int   `json:"count"`
			RetryAfterMS int64 `json:"retryAfterMs"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&in); err != nil {
			writeError(w, errBadParameter("Body must be {\"status\":429,\"count\":1,\"retryAfterMs\":1000}."))
			return
		}
		if in.Status != 0 && (in.Status < 400 || in.Status > 599) {
			writeError(w, errBadParameter("status must be a 4xx or 5xx code."))
			return
		}
		e.InjectFaults(Fault{Status: in.Status, Count: in.Count, RetryAfter: time.Duration(in.RetryAfterMS) * time.Millisecond})
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/_emulator/faults" && r.Method == http.MethodDelete:
		e.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	default:
		writeError(w, &apiError{http.StatusNotFound, "NotFound", "Unknown emulator endpoint " + r.URL.Path + ".", ""})
	}
}

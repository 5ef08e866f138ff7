package spoemu

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
)

// Emulator is the SharePoint Online side of the Migration API. Create it with New (then serve Handler
// yourself) or Start (which listens and serves HTTPS); Close it when done.
type Emulator struct {
	opts Options
	log  *slog.Logger
	acct storageAccount

	blobCred  *azblob.SharedKeyCredential
	queueCred *azqueue.SharedKeyCredential
	blob      *azblob.Client         // shared key: SharePoint's own access to its account
	queue     *azqueue.ServiceClient // shared key
	dbID      string
	farmID    string
	serverID  string

	mu         sync.Mutex
	sites      map[string]*site
	containers map[string]*provisioned // container name → provisioning record
	jobs       map[string]*job         // job id (lower case) → job
	allowed    map[string]bool         // Options.Sites, normalised; nil: every site

	sem    chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	srv     *http.Server
	ln      net.Listener
	baseURL string
	closed  sync.Once
}

// site is one site collection the emulator has seen.
type site struct {
	path      string // "" (root), "/sites/x", "/teams/y", as first seen
	key       string // lower-case path
	webID     string
	siteID    string
	queueName string

	faults Faults // guarded by Emulator.mu
}

// dataName is the site's folder under DataDir.
func (s *site) dataName() string {
	if s.key == "" {
		return "_root"
	}
	return strings.TrimPrefix(s.key, "/")
}

// New checks opts and connects to the storage account. It does not listen: serve Handler, or use Start.
func New(opts Options) (*Emulator, error) {
	opts.setDefaults()
	acct, err := parseConnectionString(opts.StorageConnectionString)
	if err != nil {
		return nil, err
	}
	e := &Emulator{
		opts: opts, log: opts.Logger.With("component", "spoemu"), acct: acct,
		sites: map[string]*site{}, containers: map[string]*provisioned{}, jobs: map[string]*job{},
		sem: make(chan struct{}, opts.MaxJobs),
	}
	e.dbID = nameUUID(opts.TenantID, "db")
	e.farmID = nameUUID(opts.TenantID, "farm")
	e.serverID = nameUUID(opts.TenantID, "server")
	if e.blobCred, err = azblob.NewSharedKeyCredential(acct.name, acct.key); err != nil {
		return nil, fmt.Errorf("spoemu: storage key: %w", err)
	}
	if e.queueCred, err = azqueue.NewSharedKeyCredential(acct.name, acct.key); err != nil {
		return nil, fmt.Errorf("spoemu: storage key: %w", err)
	}
	copts := azcore.ClientOptions{Transport: opts.StorageClient}
	if e.blob, err = azblob.NewClientWithSharedKeyCredential(acct.blobURL.String()+"/", e.blobCred,
		&azblob.ClientOptions{ClientOptions: copts}); err != nil {
		return nil, fmt.Errorf("spoemu: blob client: %w", err)
	}
	if e.queue, err = azqueue.NewServiceClientWithSharedKeyCredential(acct.queueURL.String()+"/", e.queueCred,
		&azqueue.ClientOptions{ClientOptions: copts}); err != nil {
		return nil, fmt.Errorf("spoemu: queue client: %w", err)
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	for _, p := range opts.Sites {
		key, ok := normalizeSitePath(p)
		if !ok {
			return nil, fmt.Errorf("spoemu: site %q is not /sites/<name>, /teams/<name> or /", p)
		}
		if e.allowed == nil {
			e.allowed = map[string]bool{}
		}
		e.allowed[key] = true
	}
	return e, nil
}

// Start creates an Emulator (New) and serves it over HTTPS on opts.Addr until Close.
func Start(ctx context.Context, opts Options) (*Emulator, error) {
	e, err := New(opts)
	if err != nil {
		return nil, err
	}
	tlsCfg := e.opts.TLSConfig
	if tlsCfg == nil {
		if e.opts.CA == nil {
			e.cancel()
			return nil, errors.New("spoemu: Start needs Options.CA or Options.TLSConfig (the service is HTTPS only)")
		}
		if tlsCfg, err = e.opts.CA.ServerTLS(); err != nil {
			e.cancel()
			return nil, fmt.Errorf("spoemu: server certificate: %w", err)
		}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", e.opts.Addr)
	if err != nil {
		e.cancel()
		return nil, fmt.Errorf("spoemu: listen: %w", err)
	}
	e.ln = tls.NewListener(ln, tlsCfg)
	e.baseURL = "https://" + ln.Addr().String()
	e.srv = &http.Server{Handler: e.Handler(), ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(e.log.Handler(), slog.LevelDebug)}
	go func() {
		if err := e.srv.Serve(e.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("serve", "err", err)
		}
	}()
	e.log.Info("listening", "url", e.baseURL, "blob", e.acct.blobURL.String())
	return e, nil
}

// URL is the base URL Start serves, e.g. https://127.0.0.1:40123 ("" after New).
func (e *Emulator) URL() string { return e.baseURL }

// SiteURL is the absolute URL of a site collection, e.g. SiteURL("x") = https://127.0.0.1:40123/sites/x;
// name may also be a path ("/teams/y", "/").
func (e *Emulator) SiteURL(name string) string {
	key, _ := normalizeSitePath(name)
	return e.baseURL + key
}

// WebID is the stable id of the root web of a site ("x", "/sites/x", "/" …), the gWebId its jobs need.
func (e *Emulator) WebID(name string) string {
	key, _ := normalizeSitePath(name)
	return e.siteFor(key).webID
}

// HTTPClient is a client that trusts the emulator's certificate (Options.CA), or http.DefaultClient.
func (e *Emulator) HTTPClient() *http.Client {
	if e.opts.CA != nil {
		return e.opts.CA.HTTPClient()
	}
	return http.DefaultClient
}

// Close stops serving, cancels the jobs in progress (they end without further events) and waits for
// them.
func (e *Emulator) Close() error {
	var err error
	e.closed.Do(func() {
		if e.srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = e.srv.Shutdown(ctx)
			cancel()
		}
		e.cancel()
		e.wg.Wait()
	})
	return err
}

// SetFaults replaces the faults of a site (name as for SiteURL).
func (e *Emulator) SetFaults(name string, f Faults) {
	key, _ := normalizeSitePath(name)
	s := e.siteFor(key)
	e.mu.Lock()
	s.faults = cloneFaults(f)
	e.mu.Unlock()
}

// Faults returns the faults left for a site.
func (e *Emulator) Faults(name string) Faults {
	key, _ := normalizeSitePath(name)
	s := e.siteFor(key)
	e.mu.Lock()
	defer e.mu.Unlock()
	return cloneFaults(s.faults)
}

func cloneFaults(f Faults) Faults {
	c := Faults{SlowItem: f.SlowItem}
	if f.Throttle != nil {
		t := *f.Throttle
		t.Methods = append([]string(nil), f.Throttle.Methods...)
		c.Throttle = &t
	}
	if f.Postpone != nil {
		p := *f.Postpone
		c.Postpone = &p
	}
	if f.Fatal != nil {
		x := *f.Fatal
		c.Fatal = &x
	}
	if f.ItemError != nil {
		x := *f.ItemError
		c.ItemError = &x
	}
	return c
}

// normalizeSitePath turns "x", "sites/x", "/sites/x/", "/teams/y", "/" or "" into the lower-case
// server-relative path of the site collection ("" for the root).
func normalizeSitePath(p string) (string, bool) {
	p = strings.Trim(strings.TrimSpace(p), "/")
	if p == "" {
		return "", true
	}
	parts := strings.Split(p, "/")
	switch {
	case len(parts) == 1:
		parts = []string{"sites", parts[0]}
	case len(parts) != 2:
		return "", false
	}
	mp := strings.ToLower(parts[0])
	if (mp != "sites" && mp != "teams") || !validSiteName(parts[1]) {
		return "", false
	}
	return "/" + mp + "/" + strings.ToLower(parts[1]), true
}

func validSiteName(n string) bool {
	if n == "" || n == "." || n == ".." || len(n) > 128 {
		return false
	}
	for _, c := range n {
		if c < 0x20 || strings.ContainsRune(`\/:*?"<>|#%`, c) {
			return false
		}
	}
	return true
}

// siteFor returns the site of a normalised path, creating its record on first use.
func (e *Emulator) siteFor(key string) *site {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s, ok := e.sites[key]; ok {
		return s
	}
	h := sha1.Sum([]byte(e.opts.TenantID + "|queue|" + key))
	s := &site{
		path: key, key: key,
		webID:     nameUUID(e.opts.TenantID, "web|"+key),
		siteID:    nameUUID(e.opts.TenantID, "site|"+key),
		queueName: "spomigration-" + hex.EncodeToString(h[:12]),
		faults:    cloneFaults(e.opts.Faults),
	}
	e.sites[key] = s
	return s
}

// knownSite reports whether a site exists (Options.Sites, when set, is an allow-list).
func (e *Emulator) knownSite(key string) bool {
	return e.allowed == nil || e.allowed[key]
}

// nameUUID is a version 5 (SHA-1, name-based) UUID of name in the namespace of the tenant, so that
// ids are stable across runs.
func nameUUID(namespace, name string) string {
	h := sha1.Sum([]byte(namespace + "|" + name))
	b := h[:16]
	b[6] = b[6]&0x0f | 0x50
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b)
}

// newUUID is a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b[:])
}

func formatUUID(b []byte) string {
	x := hex.EncodeToString(b)
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// parseGUID accepts a GUID with or without braces, in any case, and returns its lower-case canonical
// form.
func parseGUID(s string) (string, bool) {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	if len(s) == 32 {
		if _, err := hex.DecodeString(s); err != nil {
			return "", false
		}
		s = s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32]
	}
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return "", false
	}
	if _, err := hex.DecodeString(strings.ReplaceAll(s, "-", "")); err != nil {
		return "", false
	}
	return strings.ToLower(s), true
}

// Handler is the HTTP handler of the emulator: /_api of every site, and the /_emulator admin API.
func (e *Emulator) Handler() http.Handler {
	return http.HandlerFunc(e.serveHTTP)
}

func (e *Emulator) serveHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := newUUID()
	h := w.Header()
	h.Set("SPRequestGuid", reqID)
	h.Set("request-id", reqID)
	h.Set("X-SharePointHealthScore", "0")
	h.Set("MicrosoftSharePointTeamServices", "16.0.0.25806")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-MS-InvokeApp", "1; RequireReadOnly")
	start := time.Now()
	defer func() {
		e.log.Debug("request", "method", r.Method, "path", r.URL.Path, "duration", time.Since(start))
	}()
	f := flavourOf(r)

	if strings.HasPrefix(r.URL.Path, "/_emulator/") || r.URL.Path == "/_emulator" {
		e.serveAdmin(w, r)
		return
	}
	sitePath, rest, ok := splitAPIPath(r.URL.Path)
	if !ok {
		writeError(w, f, &spError{http.StatusNotFound, codeFileNotFound, "File Not Found."})
		return
	}
	if !e.authorize(w, r, f) {
		return
	}
	key, ok := normalizeSitePath(sitePath)
	if !ok || (sitePath != "" && !strings.Contains(strings.Trim(sitePath, "/"), "/")) || !e.knownSite(key) {
		writeError(w, f, &spError{http.StatusNotFound, codeFileNotFound, "File Not Found."})
		return
	}
	s := e.siteFor(key)
	if e.throttled(w, f, s, rest) {
		return
	}
	e.dispatch(w, r, f, s, rest)
}

// splitAPIPath splits /sites/x/_api/site/Foo into ("/sites/x", "site/Foo").
func splitAPIPath(p string) (sitePath, rest string, ok bool) {
	lp := strings.ToLower(p)
	i := strings.Index(lp+"/", "/_api/")
	if i < 0 {
		return "", "", false
	}
	rest = strings.Trim(p[min(i+len("/_api/"), len(p)):], "/")
	return p[:i], rest, true
}

// authorize checks the bearer token; it writes SharePoint's 401 and returns false when it is missing
// or unusable.
func (e *Emulator) authorize(w http.ResponseWriter, r *http.Request, f flavour) bool {
	auth := r.Header.Get("Authorization")
	scheme, token, _ := strings.Cut(strings.TrimSpace(auth), " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		e.challenge(w, f, "")
		return false
	}
	if reason := e.checkJWT(token, r.Host); reason != "" {
		e.challenge(w, f, reason)
		return false
	}
	return true
}

// challenge writes SharePoint's 401: the WWW-Authenticate Bearer challenge that names the tenant and
// the SharePoint principal, and an access-denied error body.
func (e *Emulator) challenge(w http.ResponseWriter, f flavour, reason string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(
		`Bearer realm="%s",client_id="%s",trusted_issuers="00000001-0000-0000-c000-000000000000@*,D3776938-3DBA-481F-A652-4BEDFCAB7CD8@*,https://sts.windows.net/*/,https://login.microsoftonline.com/*/v2.0,00000003-0000-0ff1-ce00-000000000000@90140122-8516-11e1-8eff-49304924019b",authorization_uri="https://login.windows.net/common/oauth2/authorize"`,
		e.opts.TenantID, sharePointPrincipalID))
	if reason != "" {
		w.Header().Set("x-ms-diagnostics", fmt.Sprintf(`3000003;reason="%s";category="invalid_client"`, reason))
	}
	writeError(w, f, &spError{http.StatusUnauthorized, codeUnauthorized, msgAccessDenied})
}

// checkJWT returns why a JWT bearer token is refused ("" when it is accepted or is not a JWT).
func (e *Emulator) checkJWT(token, host string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return ""
	}
	var claims struct {
		Aud any             `json:"aud"`
		Exp json.RawMessage `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return ""
	}
	if exp, err := strconv.ParseFloat(strings.Trim(string(claims.Exp), `"`), 64); err == nil && exp > 0 {
		if time.Unix(int64(exp), 0).Add(5 * time.Minute).Before(time.Now()) {
			return "The token is expired."
		}
	}
	if !e.opts.CheckAudience {
		return ""
	}
	var auds []string
	switch a := claims.Aud.(type) {
	case string:
		auds = []string{a}
	case []any:
		for _, x := range a {
			if s, ok := x.(string); ok {
				auds = append(auds, s)
			}
		}
	}
	for _, a := range auds {
		if e.audienceOK(a, host) {
			return ""
		}
	}
	return fmt.Sprintf("Invalid audience Uri '%s'.", strings.Join(auds, ","))
}

func (e *Emulator) audienceOK(aud, host string) bool {
	for _, x := range e.opts.Audiences {
		if strings.EqualFold(strings.TrimRight(x, "/"), strings.TrimRight(aud, "/")) {
			return true
		}
	}
	hostname := strings.ToLower(host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		hostname = strings.ToLower(h)
	}
	a := strings.ToLower(strings.TrimRight(aud, "/"))
	if rest, ok := strings.CutPrefix(a, sharePointPrincipalID+"/"); ok { // <principal>/<host>@<tenant>
		rest, _, _ = strings.Cut(rest, "@")
		if h, _, err := net.SplitHostPort(rest); err == nil {
			rest = h
		}
		return rest == hostname
	}
	if rest, ok := strings.CutPrefix(a, "https://"); ok {
		rest, _, _ = strings.Cut(rest, "/")
		if h, _, err := net.SplitHostPort(rest); err == nil {
			rest = h
		}
		return rest == hostname
	}
	return false
}

// throttled consumes a throttling fault of the site, if one applies to this call, and writes the
// 429/503 answer.
func (e *Emulator) throttled(w http.ResponseWriter, f flavour, s *site, rest string) bool {
	e.mu.Lock()
	t := s.faults.Throttle
	if t == nil || t.Count <= 0 {
		e.mu.Unlock()
		return false
	}
	if len(t.Methods) > 0 {
		name := strings.ToLower(functionName(rest))
		match := false
		for _, m := range t.Methods {
			if strings.ToLower(m) == name {
				match = true
			}
		}
		if !match {
			e.mu.Unlock()
			return false
		}
	}
	t.Count--
	tt := *t
	e.mu.Unlock()
	status := tt.Status
	if status != http.StatusServiceUnavailable {
		status = http.StatusTooManyRequests
	}
	ra := tt.RetryAfter
	if ra <= 0 {
		ra = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(ra))
	if tt.RateLimitReset > 0 {
		w.Header().Set("RateLimit-Limit", "1200")
		w.Header().Set("RateLimit-Remaining", "0")
		w.Header().Set("RateLimit-Reset", strconv.Itoa(tt.RateLimitReset))
	}
	if status == http.StatusServiceUnavailable {
		writeError(w, f, &spError{status, codeServerTooBusy, "The server is busy now. Try again later."})
	} else {
		writeError(w, f, &spError{status, codeThrottled,
			"The request has been throttled. Retry after the number of seconds in the Retry-After header."})
	}
	return true
}

// functionName is the last path segment of an _api path without its arguments: "site/Foo(x=1)" → "Foo",
// "web" → "web".
func functionName(rest string) string {
	if i := strings.IndexByte(rest, '('); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		rest = rest[i+1:]
	}
	return rest
}

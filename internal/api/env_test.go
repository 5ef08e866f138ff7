package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/gorilla/mux"

	"github.com/spomig/spomig/internal/api"
	"github.com/spomig/spomig/internal/dev/azurite"
	"github.com/spomig/spomig/internal/dev/devtls"
	"github.com/spomig/spomig/internal/dev/kvemu"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/provision"
	"github.com/spomig/spomig/internal/spo"
	"github.com/spomig/spomig/internal/storageconn"
	"github.com/spomig/spomig/internal/vault"
)

// The test world: the app's storage is the package's shared Azurite (plain http, like
// UseDevelopmentStorage=true); SharePoint is the SPO emulator over HTTPS with its own HTTPS Azurite as
// "SharePoint's storage account"; Key Vault is the Key Vault emulator (one per test, in-process, so that
// injected faults stay within the test). Every SharePoint answer is recorded to learn the keys and SAS the
// emulator issued; every response body and every log line of the suite is kept, and TestMain checks at
// the end that none of them holds one of those secrets.

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	code := azurite.RunMain(m)
	if code == 0 {
		if leaks := suite.leaks(); len(leaks) > 0 {
			fmt.Fprintf(os.Stderr, "SECRET LEAK across the suite (%d):\n  %s\n", len(leaks), strings.Join(leaks, "\n  "))
			code = 1
		} else {
			fmt.Fprintf(os.Stderr, "secret scan: %s\n", suite.summary())
		}
	}
	if w := theWorld.w; w != nil {
		w.close()
	}
	return code
}

// ---- secrets and captures -------------------------------------------------------------------------

// capture keeps what the suite saw: the secrets SharePoint issued, the upload SAS we minted, every
// response body and every log line.
type capture struct {
	mu         sync.Mutex
	issued     map[string]string // secret text form → what it is
	uploadSigs map[string]string
	bodies     []capturedBody
	logs       bytes.Buffer
	lines      int
}

type capturedBody struct {
	what        string
	body        []byte
	uploadAllow bool // the 201 of POST /api/migrations: may carry the upload URL
}

var suite = &capture{issued: map[string]string{}, uploadSigs: map[string]string{}}

// forms returns the text forms a byte secret may take.
func forms(b []byte) []string {
	return []string{string(b), base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
		hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b))}
}

// sigForms returns the forms of a SAS signature as it appears in a URL query (percent-encoded).
func sigForms(raw string) []string {
	out := []string{raw}
	if dec, err := url.QueryUnescape(raw); err == nil {
		out = append(out, dec, url.QueryEscape(dec), strings.ReplaceAll(url.QueryEscape(dec), "%2F", "/"))
		if b, err := base64.StdEncoding.DecodeString(dec); err == nil {
			out = append(out, forms(b)...)
		}
	}
	return out
}

var (
	sigParamRE = regexp.MustCompile(`(?i)[?&]sig=([^&"'\s\\]+)`)
	keyRE      = regexp.MustCompile(`"EncryptionKey"\s*:\s*"([^"]+)"`)
)

// learnSPO records the key and SAS signatures of a SharePoint answer.
func (c *capture) learnSPO(body []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range keyRE.FindAllSubmatch(body, -1) {
		k, err := base64.StdEncoding.DecodeString(string(m[1]))
		if err != nil || len(k) != 32 {
			continue
		}
		for _, f := range forms(k) {
			c.issued[f] = "AES key issued by SharePoint"
		}
	}
	for _, m := range sigParamRE.FindAllSubmatch(bytes.ReplaceAll(body, []byte(`\u0026`), []byte("&")), -1) {
		for _, f := range sigForms(string(m[1])) {
			if len(f) >= 16 {
				c.issued[f] = "SAS signature issued by SharePoint"
			}
		}
	}
}

// learnUpload records the signature of a staging upload URL we minted.
func (c *capture) learnUpload(u string) {
	pu, err := url.Parse(u)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range sigForms(url.QueryEscape(pu.Query().Get("sig"))) {
		if len(f) >= 16 {
			c.uploadSigs[f] = "staging upload SAS signature"
		}
	}
}

func (c *capture) addBody(what string, body []byte, uploadAllow bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bodies = append(c.bodies, capturedBody{what: what, body: append([]byte(nil), body...), uploadAllow: uploadAllow})
}

// Write receives log lines (JSON, one per line).
func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines += bytes.Count(p, []byte("\n"))
	return c.logs.Write(p)
}

// leaks lists every secret form found where it must not be.
func (c *capture) leaks() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	logs := c.logs.Bytes()
	for f, what := range c.issued {
		if bytes.Contains(logs, []byte(f)) {
			out = append(out, fmt.Sprintf("%s in the logs", what))
		}
		for _, b := range c.bodies {
			if bytes.Contains(b.body, []byte(f)) {
				out = append(out, fmt.Sprintf("%s in the response to %s", what, b.what))
			}
		}
	}
	for f, what := range c.uploadSigs {
		if bytes.Contains(logs, []byte(f)) {
			out = append(out, fmt.Sprintf("%s in the logs", what))
		}
		for _, b := range c.bodies {
			if !b.uploadAllow && bytes.Contains(b.body, []byte(f)) {
				out = append(out, fmt.Sprintf("%s in the response to %s", what, b.what))
			}
		}
	}
	sort.Strings(out)
	return out
}

func (c *capture) summary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("%d SharePoint secret forms and %d upload signature forms looked for in %d response bodies and %d log lines: none leaked",
		len(c.issued), len(c.uploadSigs), len(c.bodies), c.lines)
}

// counts returns how many secrets have been learnt (for tests that must have seen some).
func (c *capture) counts() (issued, uploads int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.issued), len(c.uploadSigs)
}

// lineBuffer keeps one test's log lines and forwards them to the suite capture.
type lineBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.buf.Write(p)
	b.mu.Unlock()
	return suite.Write(p)
}

// records decodes the JSON log lines with the given message.
func (b *lineBuffer) records(msg string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(b.buf.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func (b *lineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// suiteLogger logs straight to the suite capture (emulators, shared parts).
var suiteLogger = newLogger(suite)

// spoRecorder is the SharePoint client's transport: it learns the secrets of every answer.
type spoRecorder struct {
	next  http.RoundTripper
	mu    sync.Mutex
	calls map[string]int // SharePoint function → calls
}

func (r *spoRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if rerr != nil {
		return nil, rerr
	}
	suite.learnSPO(body)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	fn := req.URL.Path
	if i := strings.Index(fn, "/_api/"); i >= 0 {
		fn = fn[i+len("/_api/"):]
	}
	if i := strings.IndexAny(fn, "("); i >= 0 {
		fn = fn[:i]
	}
	r.mu.Lock()
	r.calls[strings.TrimPrefix(fn, "site/")]++
	r.mu.Unlock()
	return resp, nil
}

func (r *spoRecorder) count(fn string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[fn]
}

// ---- the shared world -----------------------------------------------------------------------------

type world struct {
	ca           *devtls.CA
	spoStorage   *azurite.Server
	spo          *spoemu.Emulator
	storageHosts []string
}

var theWorld struct {
	once sync.Once
	w    *world
	err  error
}

func getWorld(t *testing.T) *world {
	t.Helper()
	theWorld.once.Do(func() { theWorld.w, theWorld.err = startWorld() })
	if theWorld.err != nil {
		t.Fatalf("test world: %v", theWorld.err)
	}
	return theWorld.w
}

func startWorld() (*world, error) {
	ca, err := devtls.New()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "api-test-tls-")
	if err != nil {
		return nil, err
	}
	cert, key, err := ca.WriteServerCert(dir)
	if err != nil {
		return nil, err
	}
	st, err := azurite.Start(context.Background(), azurite.Options{CertFile: cert, KeyFile: key})
	if err != nil {
		return nil, fmt.Errorf("SharePoint's Azurite: %w", err)
	}
	e, err := spoemu.Start(context.Background(), spoemu.Options{
		CA: ca, StorageConnectionString: st.ConnectionString(), Logger: suiteLogger,
		QueueDelay: time.Hour, // jobs stay Queued: cancel tests need them there
	})
	if err != nil {
		st.Stop()
		return nil, fmt.Errorf("SPO emulator: %w", err)
	}
	return &world{ca: ca, spoStorage: st, spo: e, storageHosts: []string{
		fmt.Sprintf("127.0.0.1:%d", st.BlobPort), fmt.Sprintf("127.0.0.1:%d", st.QueuePort)}}, nil
}

func (w *world) close() {
	w.spo.Close()
	w.spoStorage.Stop()
}

// ---- one app per test -----------------------------------------------------------------------------

type app struct {
	t        *testing.T
	w        *world
	kv       *kvemu.Server
	store    *jobs.Store
	prov     *provision.Service
	spo      *spo.Client
	spoRec   *spoRecorder
	custody  *vault.Custody
	blob     *azblob.Client
	staging  string
	reports  string
	site     string // emulator site name
	siteURL  string
	handler  http.Handler
	srv      *httptest.Server
	logs     *lineBuffer
	now      func() time.Time
	client   *http.Client
	conform  *conformance
	callback string // allowed callback host
}

type appOptions struct {
	spoRetryBudget time.Duration
	uploadTTL      time.Duration
	maxBody        int64
}

func newApp(t *testing.T, mutate ...func(*appOptions)) *app {
	t.Helper()
	o := appOptions{spoRetryBudget: -1, uploadTTL: time.Hour}
	for _, m := range mutate {
		m(&o)
	}
	w := getWorld(t)
	a := &app{t: t, w: w, logs: &lineBuffer{}, now: time.Now, callback: "hooks.example.com"}
	log := newLogger(a.logs)

	// App storage: the shared Azurite.
	az := azurite.Shared(t)
	conn, err := storageconn.ParseConnectionString(az.ConnectionString())
	if err != nil {
		t.Fatal(err)
	}
	conn.Name = "AzureWebJobsStorage"
	a.blob, err = conn.BlobClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	a.staging, a.reports = azurite.UniqueName("staging"), azurite.UniqueName("reports")
	ctx := context.Background()
	for _, c := range []string{a.staging, a.reports} {
		if _, err := a.blob.CreateContainer(ctx, c, nil); err != nil {
			t.Fatal(err)
		}
	}
	tables, err := aztables.NewServiceClientFromConnectionString(az.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.store, err = jobs.New(tables, jobs.Options{
		Table:  "jobs" + strings.ReplaceAll(azurite.UniqueName("t"), "-", ""),
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.store.EnsureTable(ctx); err != nil {
		t.Fatal(err)
	}

	// Key Vault: an emulator of the test's own.
	a.kv, err = kvemu.Start(kvemu.Options{CA: w.ca, Logger: suiteLogger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.kv.Close() })
	a.custody, err = vault.New(vault.Options{
		VaultURL: a.kv.URL(), Credential: &kvemu.Credential{}, DisableChallengeResourceVerification: true,
		ClientOptions: azcore.ClientOptions{Transport: a.kv.HTTPClient()},
		Retry:         policy.RetryOptions{MaxRetries: 1, RetryDelay: time.Millisecond, MaxRetryDelay: 100 * time.Millisecond},
		Logger:        log,
	})
	if err != nil {
		t.Fatal(err)
	}

	// SharePoint: the shared emulator, a site of the test's own.
	a.site = azurite.UniqueName("site")
	a.siteURL = w.spo.SiteURL(a.site)
	su, _ := url.Parse(a.siteURL)
	base := w.ca.HTTPClient()
	a.spoRec = &spoRecorder{next: base.Transport, calls: map[string]int{}}
	a.spo, err = spo.New(spo.Options{
		Credential: &kvemu.Credential{}, TenantHost: su.Host, AllowedStorageHosts: w.storageHosts,
		HTTPClient:  &http.Client{Transport: a.spoRec, Timeout: 30 * time.Second},
		RetryBudget: o.spoRetryBudget, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}

	a.prov, err = provision.New(provision.Options{
		Jobs: a.store, SPO: a.spo, Vault: a.custody,
		Policy:           provision.Policy{AllowedSiteHosts: []string{su.Host}, CallbackAllowedHosts: []string{a.callback}},
		Storage:          conn,
		StagingContainer: a.staging,
		UploadURLTTL:     o.uploadTTL,
		Logger:           log,
	})
	if err != nil {
		t.Fatal(err)
	}
	a.handler = api.New(api.Options{
		Jobs: a.store, Provisioner: a.prov, SPO: a.spo,
		Reports:          api.NewBlobReports(a.blob.ServiceClient().NewContainerClient(a.reports)),
		ReportsContainer: a.reports,
		MaxBodyBytes:     o.maxBody,
		Version:          "test",
		Logger:           log,
	})
	a.srv = httptest.NewServer(a.handler)
	t.Cleanup(a.srv.Close)
	a.conform = newConformance(t)
	a.client = &http.Client{Transport: &bodyRecorder{next: http.DefaultTransport}, Timeout: 60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return a
}

// bodyRecorder keeps every response body of the API for the secret scan.
type bodyRecorder struct{ next http.RoundTripper }

func (r *bodyRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if rerr != nil {
		return nil, rerr
	}
	uploadAllow := req.Method == http.MethodPost && req.URL.Path == "/api/migrations" && resp.StatusCode == http.StatusCreated
	suite.addBody(req.Method+" "+req.URL.Path+fmt.Sprintf(" (%d)", resp.StatusCode), body, uploadAllow)
	// Headers are part of the response too.
	var hdr bytes.Buffer
	_ = resp.Header.Write(&hdr)
	suite.addBody(req.Method+" "+req.URL.Path+" headers", hdr.Bytes(), false)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// response is an API answer.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r *response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

func (r *response) job(t *testing.T) api.Job {
	t.Helper()
	var j api.Job
	r.json(t, &j)
	return j
}

func (r *response) problem(t *testing.T) api.Problem {
	t.Helper()
	var p api.Problem
	r.json(t, &p)
	return p
}

// do sends a request to the API (target relative to the server, or absolute) and checks the answer
// against the OpenAPI document.
func (a *app) do(method, target string, body io.Reader, header map[string]string) *response {
	a.t.Helper()
	if !strings.HasPrefix(target, "http") {
		target = a.srv.URL + target
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		a.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	r := &response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	a.conform.check(a.t, a.handler, req, r)
	return r
}

func (a *app) postJSON(body string) *response {
	a.t.Helper()
	return a.do(http.MethodPost, "/api/migrations", strings.NewReader(body), map[string]string{"Content-Type": "application/json"})
}

// create makes a job through the API and returns the 201 body.
func (a *app) create(label string) api.Job {
	a.t.Helper()
	r := a.postJSON(fmt.Sprintf(`{"siteUrl": %q, "label": %q}`, a.siteURL, label))
	if r.Status != http.StatusCreated {
		a.t.Fatalf("POST /api/migrations: %d %s", r.Status, r.Body)
	}
	j := r.job(a.t)
	if j.Upload == nil {
		a.t.Fatalf("201 without upload: %s", r.Body)
	}
	suite.learnUpload(j.Upload.URL)
	return j
}

// drive moves the record through the store, as the intake, submitter and monitor would.
func (a *app) drive(id string, mutate func(j *jobs.Job) error) *jobs.Job {
	a.t.Helper()
	j, err := a.store.Update(context.Background(), id, mutate)
	if err != nil {
		a.t.Fatalf("drive %s: %v", id, err)
	}
	return j
}

func (a *app) transition(id string, states ...jobs.State) {
	a.t.Helper()
	for _, st := range states {
		a.drive(id, func(j *jobs.Job) error { return j.Transition(st, time.Time{}, "test") })
	}
}

// ---- conformance with the OpenAPI document --------------------------------------------------------

// conformance validates each JSON answer against the response schema the OpenAPI document declares for
// its operation and status, with additionalProperties false on every object, so that the document and
// the answers cannot drift apart.
type conformance struct {
	doc   map[string]any
	mu    sync.Mutex
	cache map[string]*compiledSchema
}

func newConformance(t *testing.T) *conformance {
	t.Helper()
	raw, err := json.Marshal(api.OpenAPIDocument("example.com", "https", "test"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	closeObjects(doc["definitions"])
	return &conformance{doc: doc, cache: map[string]*compiledSchema{}}
}

// closeObjects sets additionalProperties false on every schema with properties.
func closeObjects(v any) {
	switch x := v.(type) {
	case map[string]any:
		if _, ok := x["properties"]; ok {
			if _, set := x["additionalProperties"]; !set {
				x["additionalProperties"] = false
			}
		}
		for _, c := range x {
			closeObjects(c)
		}
	case []any:
		for _, c := range x {
			closeObjects(c)
		}
	}
}

func (c *conformance) check(t *testing.T, h http.Handler, req *http.Request, r *response) {
	t.Helper()
	ct := r.Header.Get("Content-Type")
	if !strings.Contains(ct, "json") {
		return
	}
	var m mux.RouteMatch
	probe := req.Clone(context.Background())
	pathKey, method := "", strings.ToLower(req.Method)
	if api.Router(h).Match(probe, &m) && m.Route != nil {
		tpl, _ := m.Route.GetPathTemplate()
		pathKey = strings.TrimPrefix(tpl, "/api")
	}
	var schema any
	if pathKey != "" {
		op, _ := c.doc["paths"].(map[string]any)[pathKey].(map[string]any)[method].(map[string]any)
		if op == nil {
			t.Errorf("%s %s: operation missing from the OpenAPI document", req.Method, pathKey)
			return
		}
		resp, _ := op["responses"].(map[string]any)[fmt.Sprint(r.Status)].(map[string]any)
		if resp == nil {
			t.Errorf("%s %s answered %d, which the OpenAPI document does not declare", req.Method, pathKey, r.Status)
			return
		}
		schema = resp["schema"]
	} else {
		schema = map[string]any{"$ref": "#/definitions/Problem"} // no route: 404 or 405 problem
	}
	if strings.HasPrefix(ct, "application/problem+json") {
		if ref, _ := schema.(map[string]any)["$ref"].(string); ref != "#/definitions/Problem" {
			t.Errorf("%s %s: problem answer %d where the document declares %v", req.Method, pathKey, r.Status, schema)
		}
	}
	key := fmt.Sprint(schema)
	c.mu.Lock()
	cs := c.cache[key]
	if cs == nil {
		var err error
		cs, err = compileSchema(c.doc["definitions"], schema)
		if err != nil {
			c.mu.Unlock()
			t.Fatalf("compile response schema: %v", err)
		}
		c.cache[key] = cs
	}
	c.mu.Unlock()
	if err := cs.validate(r.Body); err != nil {
		t.Errorf("%s %s answer %d does not match the OpenAPI document: %v\n%s", req.Method, req.URL.Path, r.Status, err, r.Body)
	}
}

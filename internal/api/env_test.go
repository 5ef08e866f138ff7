package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/gorilla/mux"

	"github.com/spomig/spomig/internal/api"
	"github.com/spomig/spomig/internal/dev/kvemu"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/dev/testenv"
	"github.com/spomig/spomig/internal/dev/testenv/capture"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/provision"
	"github.com/spomig/spomig/internal/spo"
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
	code := testenv.RunMain(m)
	if code == 0 {
		if leaks := suite.leaks(); len(leaks) > 0 {
			fmt.Fprintf(os.Stderr, "SECRET LEAK across the suite (%d):\n  %s\n", len(leaks), strings.Join(leaks, "\n  "))
			code = 1
		} else {
			fmt.Fprintf(os.Stderr, "secret scan: %s\n", suite.summary())
		}
	}
	return code
}

// ---- secrets and captures -------------------------------------------------------------------------

// suiteCapture keeps what the suite saw: the secrets SharePoint issued, the upload SAS we minted, every
// response body and every log line.
type suiteCapture struct {
	issued  capture.Secrets
	uploads capture.Secrets
	logs    capture.Buffer
	mu      sync.Mutex
	bodies  []capturedBody
}

type capturedBody struct {
	what        string
	body        []byte
	uploadAllow bool // the 201 of POST /api/migrations: may carry the upload URL
}

var suite = &suiteCapture{}

// learnUpload records the signature of a staging upload URL we minted.
func (c *suiteCapture) learnUpload(u string) { c.uploads.LearnURL("staging upload SAS signature", u) }

func (c *suiteCapture) addBody(what string, body []byte, uploadAllow bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bodies = append(c.bodies, capturedBody{what: what, body: append([]byte(nil), body...), uploadAllow: uploadAllow})
}

// leaks lists every secret form found where it must not be.
func (c *suiteCapture) leaks() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	logs := c.logs.Bytes()
	for _, s := range []*capture.Secrets{&c.issued, &c.uploads} {
		for _, what := range s.Find(logs) {
			out = append(out, fmt.Sprintf("%s in the logs", what))
		}
		for _, b := range c.bodies {
			if s == &c.uploads && b.uploadAllow {
				continue
			}
			for _, what := range s.Find(b.body) {
				out = append(out, fmt.Sprintf("%s in the response to %s", what, b.what))
			}
		}
	}
	sort.Strings(out)
	return out
}

func (c *suiteCapture) summary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("%d SharePoint secret forms and %d upload signature forms looked for in %d response bodies and %d log lines: none leaked",
		c.issued.Len(), c.uploads.Len(), len(c.bodies), c.logs.Lines())
}

// counts returns how many secrets have been learnt (for tests that must have seen some).
func (c *suiteCapture) counts() (issued, uploads int) { return c.issued.Len(), c.uploads.Len() }

// newLineBuffer keeps one test's log lines and forwards them to the suite capture.
func newLineBuffer() *capture.Buffer { return &capture.Buffer{Tee: &suite.logs} }

// suiteLogger logs straight to the suite capture (emulators, shared parts).
var suiteLogger = suite.logs.Logger()

// ---- one app per test -----------------------------------------------------------------------------

type app struct {
	t        *testing.T
	w        *testenv.SharePoint
	kv       *kvemu.Server
	store    *jobs.Store
	prov     *provision.Service
	spo      *spo.Client
	spoRec   *testenv.SPORecorder
	custody  *vault.Custody
	blob     *azblob.Client
	staging  string
	reports  string
	site     string // emulator site name
	siteURL  string
	handler  http.Handler
	srv      *httptest.Server
	logs     *capture.Buffer
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
	// SharePoint: the package's emulator (jobs stay Queued: cancel tests need them there), a site of the
	// test's own; Key Vault: an emulator of the test's own.
	w := testenv.SharedSharePoint(t, spoemu.Options{Logger: suiteLogger, QueueDelay: time.Hour})
	a := &app{t: t, w: w, logs: newLineBuffer(), now: time.Now, callback: "hooks.example.com"}
	env := testenv.NewApp(t, testenv.AppOptions{SharePoint: w, Logs: a.logs, KV: kvemu.Options{Logger: suiteLogger},
		VaultRetry: testenv.FastRetry, Secrets: &suite.issued, SPOTimeout: 30 * time.Second, SPORetryBudget: o.spoRetryBudget,
		CallbackHosts: []string{a.callback}})
	a.kv, a.store, a.spo, a.spoRec, a.custody = env.KV, env.Store, env.SPO, env.Recorder, env.Custody
	a.blob, a.staging, a.reports = env.Storage.Blob, env.Staging, env.Storage.Container(t, "reports")
	a.site, a.siteURL = env.Site, env.SiteURL
	a.prov = env.Provisioner(t, func(po *provision.Options) { po.UploadURLTTL = o.uploadTTL })
	a.handler = api.New(api.Options{
		Jobs: a.store, Provisioner: a.prov, SPO: a.spo,
		Reports:          api.NewBlobReports(a.blob.ServiceClient().NewContainerClient(a.reports)),
		ReportsContainer: a.reports,
		MaxBodyBytes:     o.maxBody,
		Version:          "test",
		Logger:           env.Log,
	})
	a.srv = httptest.NewServer(a.handler)
	t.Cleanup(a.srv.Close)
	a.conform = newConformance(t)
	a.client = &http.Client{Transport: &capture.Transport{Next: http.DefaultTransport, Seen: keepBody}, Timeout: 60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return a
}

// keepBody keeps every response body of the API (and its headers) for the secret scan.
func keepBody(req *http.Request, resp *http.Response, body []byte) {
	uploadAllow := req.Method == http.MethodPost && req.URL.Path == "/api/migrations" && resp.StatusCode == http.StatusCreated
	suite.addBody(req.Method+" "+req.URL.Path+fmt.Sprintf(" (%d)", resp.StatusCode), body, uploadAllow)
	// Headers are part of the response too.
	var hdr bytes.Buffer
	_ = resp.Header.Write(&hdr)
	suite.addBody(req.Method+" "+req.URL.Path+" headers", hdr.Bytes(), false)
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

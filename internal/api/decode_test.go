package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"

	"github.com/spomig/spomig/internal/api"
	"github.com/spomig/spomig/internal/dev/testenv/capture"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/provision"
	"github.com/spomig/spomig/internal/spo"
)

func TestDecodeCreateRequest(t *testing.T) {
	ok := []struct {
		body string
		want api.CreateRequest
	}{
		{`{"siteUrl":"https://c.sharepoint.com/sites/a"}`, api.CreateRequest{SiteURL: "https://c.sharepoint.com/sites/a"}},
		{` {"siteUrl":"s","webId":"w","label":"l","callbackUrl":"c"} ` + "\n", api.CreateRequest{SiteURL: "s", WebID: "w", Label: "l", CallbackURL: "c"}},
		{`{"siteUrl":"s","webId":null,"label":""}`, api.CreateRequest{SiteURL: "s"}},
		{`{"label":"caf\u00e9 \"x\"","siteUrl":"s"}`, api.CreateRequest{SiteURL: "s", Label: `café "x"`}},
	}
	for _, c := range ok {
		got, err := api.DecodeCreateRequest(strings.NewReader(c.body))
		if err != nil || got != c.want {
			t.Errorf("%s: %+v, %v; want %+v", c.body, got, err, c.want)
		}
	}
	bad := []struct{ body, title string }{
		{``, "Malformed JSON"},
		{`   `, "Malformed JSON"},
		{`null`, "Malformed JSON"},
		{`"x"`, "Malformed JSON"},
		{`[]`, "Malformed JSON"},
		{`{`, "Malformed JSON"},
		{`{"siteUrl":"s",}`, "Malformed JSON"},
		{`{"siteUrl":"s"}x`, "Malformed JSON"},
		{`{"siteUrl":"s"}{"siteUrl":"s"}`, "Malformed JSON"},
		{"{\"siteUrl\":\"\xff\"}", "Malformed JSON"},
		{`{"SiteUrl":"s"}`, "Unknown field"},
		{`{"siteUrl":"s","extra":1}`, "Unknown field"},
		{`{"siteUrl":"s","siteUrl":"t"}`, "Repeated field"},
		{`{"siteUrl":["s"]}`, "Invalid field type"},
		{`{"siteUrl":{"a":1}}`, "Invalid field type"},
		{`{"siteUrl":true}`, "Invalid field type"},
		{`{}`, "Missing field"},
		{`{"siteUrl":null}`, "Missing field"},
	}
	for _, c := range bad {
		_, err := api.DecodeCreateRequest(strings.NewReader(c.body))
		var re *api.RequestError
		if !errors.As(err, &re) || re.Title != c.title {
			t.Errorf("%q: %v, want %s", c.body, err, c.title)
		}
	}
	// A read error is returned as it is, for the caller to classify.
	_, err := api.DecodeCreateRequest(iotest.ErrReader(io.ErrClosedPipe))
	if !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("read error: %v", err)
	}
	// A reader that returns one byte at a time decodes the same.
	got, err := api.DecodeCreateRequest(iotest.OneByteReader(strings.NewReader(`{"siteUrl":"s","label":"l"}`)))
	if err != nil || got.Label != "l" {
		t.Errorf("one byte reader: %+v %v", got, err)
	}
}

// FuzzCreateRequest feeds arbitrary bodies to the POST body decoder and then to the request policy. The
// decoder must never panic; what it accepts re-encodes to a body it decodes identically; its errors are
// *RequestError with bounded, valid UTF-8 text; the policy either refuses with a *FieldError or returns
// values the job record accepts.
func FuzzCreateRequest(f *testing.F) {
	for _, s := range []string{
		`{"siteUrl":"https://contoso.sharepoint.com/sites/hr"}`,
		`{"siteUrl":"https://contoso.sharepoint.com/sites/hr","webId":"8f1c2b4e-52e3-4c52-9a5e-2f8c0f3f1a77","label":"HR","callbackUrl":"https://hooks.example.com/x"}`,
		`{"siteUrl":"https://contoso.sharepoint.com:443/sites/hr/","webId":null}`,
		`{"siteUrl":"https://evil.example.com/sites/x"}`,
		`{"siteUrl":"https://contoso.sharepoint.com/sites/hr?x=1#y"}`,
		`{"siteUrl":"https://user@contoso.sharepoint.com/sites/hr/_api/web"}`,
		`{"siteUrl":"https://contoso.sharepoint.com/sites/hr","callbackUrl":"https://hooks.example.com/x?sig=abc"}`,
		`{"siteUrl":1}`, `{"siteUrl":"a","siteUrl":"b"}`, `{"x":{}}`, `[{"siteUrl":"s"}]`, `{"siteUrl":"s"} `, "\ufeff{}", `{"label":"\u0000"}`,
	} {
		f.Add([]byte(s))
	}
	policy := provision.Policy{AllowedSiteHosts: []string{"contoso.sharepoint.com"}, CallbackAllowedHosts: []string{"hooks.example.com"}}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := api.DecodeCreateRequest(bytes.NewReader(body))
		if err != nil {
			var re *api.RequestError
			if !errors.As(err, &re) {
				t.Fatalf("error %T %v is not a *RequestError", err, err)
			}
			if msg := re.Error(); len(msg) > 1024 || !utf8.ValidString(msg) {
				t.Fatalf("error text unbounded or not UTF-8: %q", msg)
			}
			return
		}
		if req.SiteURL == "" {
			t.Fatal("accepted a request without siteUrl")
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		back, err := api.DecodeCreateRequest(bytes.NewReader(again))
		if err != nil || back != req {
			t.Fatalf("round trip: %+v %v, want %+v", back, err, req)
		}
		norm, err := policy.Validate(provision.Request{SiteURL: req.SiteURL, WebID: req.WebID, Label: req.Label, CallbackURL: req.CallbackURL})
		if err != nil {
			var fe *provision.FieldError
			if !errors.As(err, &fe) || !utf8.ValidString(fe.Error()) {
				t.Fatalf("policy error %T %v", err, err)
			}
			return
		}
		if !strings.HasPrefix(norm.SiteURL, "https://contoso.sharepoint.com") || strings.ContainsAny(norm.SiteURL, "?#@") ||
			len(norm.Label) > provision.MaxLabelBytes || (norm.WebID != "" && !provision.IsGUID(norm.WebID)) ||
			(norm.CallbackURL != "" && !strings.HasPrefix(norm.CallbackURL, "https://hooks.example.com")) { // signed URLs pass: Create divides them
			t.Fatalf("policy accepted %+v", norm)
		}
		if _, err := policy.Validate(norm); err != nil {
			t.Fatalf("normalized request refused: %v", err)
		}
	})
}

// ---- fakes, for the shapes the real parts cannot produce ------------------------------------------

type fakeJobs struct{ job *jobs.Job }

func (f *fakeJobs) Get(context.Context, string) (*jobs.Job, error) {
	if f.job == nil {
		return nil, jobs.ErrNotFound
	}
	return f.job.Clone(), nil
}
func (f *fakeJobs) Update(context.Context, string, func(*jobs.Job) error) (*jobs.Job, error) {
	return nil, jobs.ErrConflict
}
func (f *fakeJobs) List(context.Context, jobs.ListOptions) ([]jobs.Job, string, error) {
	return nil, "", nil
}

type fakeProvisioner struct{ err error }

func (f *fakeProvisioner) Create(context.Context, provision.Request) (*jobs.Job, error) {
	return nil, f.err
}
func (f *fakeProvisioner) UploadURL(context.Context, string) (string, time.Time, error) {
	return "", time.Time{}, f.err
}

type fakeSPO struct{}

func (fakeSPO) GetMigrationJobStatus(context.Context, string, string) (spo.JobState, error) {
	return spo.JobStateNone, nil
}
func (fakeSPO) DeleteMigrationJob(context.Context, string, string) (bool, error) { return false, nil }

type fakeReports struct{}

func (fakeReports) List(context.Context, string) ([]api.ReportFile, error) { return nil, nil }
func (fakeReports) Open(context.Context, string) (io.ReadCloser, int64, error) {
	return nil, 0, api.ErrReportNotFound
}

func serveOnce(h http.Handler, method, target, body string, hdr map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestErrorsAreRedactedAndSafe: an upstream error whose text carries a SAS reaches neither the answer nor,
// unredacted, the audit line; an unexpected error is a 500 with a generic detail.
func TestErrorsAreRedactedAndSafe(t *testing.T) {
	logs := newLineBuffer()
	secretURL := "https://acct.blob.core.windows.net/c?sv=2024&sig=TOPSECRETSIGNATURE%2Bxyz%3D"
	h := api.New(api.Options{
		Jobs: &fakeJobs{}, Provisioner: &fakeProvisioner{err: errors.New("boom at " + secretURL)}, SPO: fakeSPO{}, Reports: fakeReports{},
		Logger: capture.JSONLogger(logs),
	})
	rec := serveOnce(h, "POST", "/api/migrations", `{"siteUrl":"https://c.sharepoint.com/sites/a"}`, map[string]string{"Content-Type": "application/json"})
	if rec.Code != 500 || strings.Contains(rec.Body.String(), "TOPSECRET") || !strings.Contains(rec.Body.String(), "internal") {
		t.Errorf("answer %d %s", rec.Code, rec.Body)
	}
	if strings.Contains(logs.String(), "TOPSECRET") || !strings.Contains(logs.String(), "sig=REDACTED") {
		t.Errorf("audit line not redacted: %s", logs)
	}

	// A job busy with concurrent updates: 503 with Retry-After.
	h = api.New(api.Options{Jobs: &fakeJobs{job: &jobs.Job{ID: "j1", State: jobs.StateAwaitingPackage}}, Provisioner: &fakeProvisioner{}, SPO: fakeSPO{}, Reports: fakeReports{}, Logger: capture.JSONLogger(logs)})
	rec = serveOnce(h, "DELETE", "/api/migrations/j1", "", nil)
	if rec.Code != 503 || rec.Header().Get("Retry-After") == "" {
		t.Errorf("busy: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}

	// A body of unknown length over the limit (chunked): 413.
	req := httptest.NewRequest("POST", "/api/migrations", io.MultiReader(strings.NewReader(`{"siteUrl":"`), strings.NewReader(strings.Repeat("a", 70<<10))))
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/json")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 413 {
		t.Errorf("chunked body over the limit: %d %s", rec.Code, rec.Body)
	}

	// Missing dependencies: 503 problem, never a crash.
	h = api.New(api.Options{Logger: capture.JSONLogger(logs)})
	rec = serveOnce(h, "GET", "/api/migrations", "", nil)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "missing") || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Errorf("unconfigured: %d %s", rec.Code, rec.Body)
	}
}

// TestAbsoluteURLs: links and Location are absolute, from Options.BaseURL or the forwarding headers.
func TestAbsoluteURLs(t *testing.T) {
	j := &jobs.Job{ID: "j1", SiteURL: "https://c.sharepoint.com/sites/a", State: jobs.StateRunning}
	cases := []struct {
		base string
		hdr  map[string]string
		want string
	}{
		{"", nil, "http://example.com/api/migrations/j1"},
		{"", map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.net"}, "https://app.example.net/api/migrations/j1"},
		{"", map[string]string{"X-ARR-SSL": "1", "DISGUISED-HOST": "app.azurewebsites.net"}, "https://app.azurewebsites.net/api/migrations/j1"},
		{"", map[string]string{"X-AppService-Proto": "https", "X-Forwarded-Host": "bad host/x"}, "https://example.com/api/migrations/j1"},
		{"https://spomig.contoso.com/", map[string]string{"X-Forwarded-Host": "ignored.example"}, "https://spomig.contoso.com/api/migrations/j1"},
	}
	for _, c := range cases {
		h := api.New(api.Options{Jobs: &fakeJobs{job: j}, Provisioner: &fakeProvisioner{}, SPO: fakeSPO{}, Reports: fakeReports{},
			BaseURL: c.base, Logger: capture.JSONLogger(io.Discard)})
		rec := serveOnce(h, "GET", "/api/migrations/j1/result", "", c.hdr)
		if rec.Code != 202 || rec.Header().Get("Location") != c.want+"/result" {
			t.Errorf("%v %v: %d Location %q, want %q", c.base, c.hdr, rec.Code, rec.Header().Get("Location"), c.want+"/result")
		}
		var v api.Job
		_ = json.Unmarshal(rec.Body.Bytes(), &v)
		if v.Links.Self != c.want {
			t.Errorf("self %q, want %q", v.Links.Self, c.want)
		}
	}
}

package functions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// recorder is a Services whose domain services record what the adapters decoded. The adapters are the
// unit under test here; the domain services have their own tests against Azurite and the emulators.
type recorder struct {
	mu       sync.Mutex
	calls    []string
	err      error // returned by every domain call
	panicMsg string
	apiErr   error
	api      http.Handler
}

func (r *recorder) add(s string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
	if r.panicMsg != "" {
		panic(r.panicMsg)
	}
	return r.err
}

func (r *recorder) API(context.Context) (http.Handler, error) {
	if r.apiErr != nil {
		return nil, r.apiErr
	}
	return r.api, nil
}
func (r *recorder) Intake(context.Context) (Intake, error)       { return r, nil }
func (r *recorder) Submitter(context.Context) (Submitter, error) { return r, nil }
func (r *recorder) Monitor(context.Context) (Monitor, error)     { return r, nil }

func (r *recorder) ProcessBlob(ctx context.Context, container, name, etag string) error {
	slog.InfoContext(ctx, "intake saw blob", "name", name)
	return r.add("blob " + container + "|" + name + "|" + etag)
}
func (r *recorder) Submit(_ context.Context, text string, dequeue int64) error {
	return r.add("submit " + text + "|" + itoa(dequeue))
}
func (r *recorder) Run(_ context.Context, pastDue bool) error {
	if pastDue {
		return r.add("monitor pastdue")
	}
	return r.add("monitor ontime")
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func newTestServer(t *testing.T, rec *recorder) *httptest.Server {
	t.Helper()
	log := slog.New(NewLogHandler(slog.NewTextHandler(io.Discard, nil)))
	slog.SetDefault(log)
	srv := httptest.NewServer(NewRouter(Options{Services: rec, Logger: log, Version: "test"}))
	t.Cleanup(srv.Close)
	return srv
}

// post sends body the way the host does: chunked (no Content-Length), JSON content type, invocation headers.
func post(t *testing.T, url string, body []byte) (*http.Response, InvokeResponse, []byte) {
	t.Helper()
	pr, pw := io.Pipe()
	go func() { pw.Write(body); pw.Close() }()
	req, _ := http.NewRequest(http.MethodPost, url, pr)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("X-Azure-Functions-InvocationId", "4d5e6f70-0000-4000-8000-000000000001")
	req.Header.Set("X-Azure-Functions-HostVersion", "4.1040.300.25317")
	req.Header.Set("User-Agent", "Azure-Functions-Host/4.1040.300.25317")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var env InvokeResponse
	_ = json.Unmarshal(raw, &env)
	return resp, env, raw
}

// outBindings reads the output binding names of a function's function.json.
func outBindings(t *testing.T, function string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", function, "function.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fj struct {
		Bindings []struct{ Name, Direction, Type string }
	}
	if err := json.Unmarshal(b, &fj); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, bd := range fj.Bindings {
		if bd.Direction == "out" {
			out[bd.Name] = true
		}
	}
	return out
}

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTriggersDecodeHostPayloads(t *testing.T) {
	tests := []struct {
		desc, function, fixture, want string
	}{
		{"blob, dataType binary, path-style Azurite Uri", EncryptBlobTrigger, "blob_binary.json",
			`blob migration-staging|0f6c1f55-2d7e-4c1e-9b7e-0a3a2b1c4d5e.zip|0x8DD1234567890AB`},
		{"blob, ETag serialized as an object (as the .NET struct may be)", EncryptBlobTrigger, "blob_etag_object.json",
			`blob migration-staging|report.zip|`},
		{"queue, double-encoded text and DequeueCount as a string", SubmitQueueTrigger, "queue.json",
			`submit {"jobId":"0f6c1f55-2d7e-4c1e-9b7e-0a3a2b1c4d5e"}|2`},
		{"timer with status, past due", MonitorTimer, "timer.json", "monitor pastdue"},
		{"timer without status (useMonitor off / first run)", MonitorTimer, "timer_nostatus.json", "monitor ontime"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			rec := &recorder{}
			srv := newTestServer(t, rec)
			resp, env, raw := post(t, srv.URL+"/"+tc.function, fixture(t, tc.fixture))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, body %s", resp.StatusCode, raw)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("Content-Type %q, the host needs application/json", ct)
			}
			if len(rec.calls) != 1 || rec.calls[0] != tc.want {
				t.Fatalf("domain saw %q, want %q", rec.calls, tc.want)
			}
			allowed := outBindings(t, tc.function)
			for k := range env.Outputs {
				if !allowed[k] {
					t.Errorf("Outputs key %q is not an output binding of %s/function.json", k, tc.function)
				}
			}
			if env.Logs == nil || env.Outputs == nil {
				t.Fatalf("envelope must carry Outputs and Logs: %s", raw)
			}
		})
	}
}

func TestInvocationLogsReachResponseLogs(t *testing.T) {
	rec := &recorder{}
	srv := newTestServer(t, rec)
	_, env, raw := post(t, srv.URL+"/"+EncryptBlobTrigger, fixture(t, "blob_binary.json"))
	if !strings.Contains(strings.Join(env.Logs, "\n"), "intake saw blob") {
		t.Fatalf("a domain log line did not reach the response Logs: %s", raw)
	}
}

func TestBadPayloadsGetClearNon2xx(t *testing.T) {
	tests := []struct {
		desc, function, body, wantMsg string
		wantStatus                    int
	}{
		{"not JSON", SubmitQueueTrigger, "hello", "not a JSON object", 400},
		{"empty", SubmitQueueTrigger, "", "empty body", 400},
		{"array", MonitorTimer, `[1,2]`, "not a JSON object", 400},
		{"broken JSON", MonitorTimer, `{"Data":`, "bad invocation payload", 400},
		{"no Data", SubmitQueueTrigger, `{"Metadata":{}}`, "no Data member", 400},
		{"missing binding", SubmitQueueTrigger, `{"Data":{"other":"\"x\""},"Metadata":{}}`, `no binding "message"`, 400},
		{"DequeueCount not a number", SubmitQueueTrigger, `{"Data":{"message":"\"x\""},"Metadata":{"DequeueCount":"two"}}`, "DequeueCount", 400},
		{"timer not an object", MonitorTimer, `{"Data":{"timer":42},"Metadata":{}}`, "not a TimerInfo object", 400},
		{"blob without name or Uri", EncryptBlobTrigger, `{"Data":{"package":""},"Metadata":{}}`, "names the blob", 400},
		{"unknown function", "NoSuchFunction", `{"Data":{}}`, "no function", 404},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			rec := &recorder{}
			srv := newTestServer(t, rec)
			resp, env, raw := post(t, srv.URL+"/"+tc.function, []byte(tc.body))
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, raw)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("Content-Type %q", ct)
			}
			if !strings.Contains(strings.Join(env.Logs, " "), tc.wantMsg) {
				t.Fatalf("Logs %q do not say %q", env.Logs, tc.wantMsg)
			}
			if len(rec.calls) != 0 {
				t.Fatalf("domain was called with a bad payload: %q", rec.calls)
			}
		})
	}
}

func TestDomainFailureAndPanicAreFailedInvocations(t *testing.T) {
	rec := &recorder{err: errors.New("storage unavailable")}
	srv := newTestServer(t, rec)
	resp, env, _ := post(t, srv.URL+"/"+SubmitQueueTrigger, fixture(t, "queue.json"))
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("domain error: status %d, want 500 so that the host retries", resp.StatusCode)
	}
	if !strings.Contains(strings.Join(env.Logs, " "), "storage unavailable") {
		t.Fatalf("Logs %q do not carry the error", env.Logs)
	}

	rec = &recorder{panicMsg: "boom"}
	srv = newTestServer(t, rec)
	resp, _, raw := post(t, srv.URL+"/"+MonitorTimer, fixture(t, "timer.json"))
	if resp.StatusCode != http.StatusInternalServerError || !bytes.Contains(raw, []byte("panic recovered")) {
		t.Fatalf("panic: status %d body %s", resp.StatusCode, raw)
	}
	// The server survived the panic.
	resp, _, _ = post(t, srv.URL+"/"+MonitorTimer, fixture(t, "timer.json"))
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("second call after panic: %d", resp.StatusCode)
	}
}

func TestForwardedAndEnvelopeHTTP(t *testing.T) {
	var seen []string
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen = append(seen, r.Method+" "+r.URL.RequestURI()+" "+string(b))
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Location", "/api/migrations/1")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"id":"1"}`)
	})
	rec := &recorder{api: api}
	srv := newTestServer(t, rec)

	// Forwarded: the original request, answered untouched.
	resp, err := http.Post(srv.URL+"/api/migrations?x=1", "application/json", strings.NewReader(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || resp.Header.Get("Location") != "/api/migrations/1" || string(body) != `{"id":"1"}` {
		t.Fatalf("forwarded answer changed: %d %v %s", resp.StatusCode, resp.Header, body)
	}

	// Envelope: Data.req rebuilt into a request, the answer in Outputs.res.
	resp2, env, raw := post(t, srv.URL+"/"+ProvisionHTTP, fixture(t, "http_envelope.json"))
	if resp2.StatusCode != 200 {
		t.Fatalf("envelope status %d: %s", resp2.StatusCode, raw)
	}
	res, ok := env.Outputs[ProvisionHTTPResponseBinding].(map[string]any)
	if !ok || res["statusCode"].(float64) != 201 || res["body"] != `{"id":"1"}` {
		t.Fatalf("Outputs.res = %v", env.Outputs)
	}
	for k := range env.Outputs {
		if !outBindings(t, ProvisionHTTP)[k] {
			t.Fatalf("Outputs key %q is not a binding", k)
		}
	}
	want := []string{`POST /api/migrations?x=1 {"a":1}`, `POST /api/migrations?state=Running {"siteUrl":"https://contoso.sharepoint.com/sites/hr"}`}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Fatalf("API saw\n%s\nwant\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}

	// API that cannot be built: 503 problem+json with Retry-After, not a crash.
	rec2 := &recorder{apiErr: errors.New("SPOMIG_KEYVAULT_URL is missing")}
	srv2 := newTestServer(t, rec2)
	resp3, err := http.Get(srv2.URL + "/api/migrations")
	if err != nil {
		t.Fatal(err)
	}
	b3, _ := io.ReadAll(resp3.Body)
	resp3.Body.Close()
	if resp3.StatusCode != 503 || resp3.Header.Get("Content-Type") != "application/problem+json" || !bytes.Contains(b3, []byte("SPOMIG_KEYVAULT_URL")) {
		t.Fatalf("API build failure: %d %s %s", resp3.StatusCode, resp3.Header.Get("Content-Type"), b3)
	}
}

func TestReadinessAnswersAtOnce(t *testing.T) {
	srv := newTestServer(t, &recorder{})
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET / = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

func TestDecodeString(t *testing.T) {
	tests := []struct{ in, want string }{
		{`"\"hello\""`, "hello"},
		{`"hello"`, "hello"},
		{`"4"`, "4"},
		{`4`, "4"},
		{`true`, "true"},
		{`"\"\""`, ""},
		{`"\"with \\\"quotes\\\"\""`, `with "quotes"`},
		{`"\"not closed"`, `"not closed`},
		{`"\"a\" and \"b\""`, `"a" and "b"`},
	}
	for _, tc := range tests {
		got, err := DecodeString(json.RawMessage(tc.in))
		if err != nil || got != tc.want {
			t.Errorf("DecodeString(%s) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{`{}`, `[]`, `null`, ``} {
		if _, err := DecodeString(json.RawMessage(bad)); err == nil {
			t.Errorf("DecodeString(%s) accepted", bad)
		}
	}
}

func FuzzDecodeInvokeRequest(f *testing.F) {
	for _, n := range []string{"blob_binary.json", "queue.json", "timer.json", "http_envelope.json"} {
		b, _ := os.ReadFile(filepath.Join("testdata", n))
		f.Add(b)
	}
	f.Add([]byte(`{"Data":{"message":1},"Metadata":{"DequeueCount":{}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeInvokeRequest(body)
		if err != nil {
			if !errors.Is(err, ErrBadPayload) {
				t.Fatalf("error not ErrBadPayload: %v", err)
			}
			return
		}
		// Every decoder must answer without panicking.
		_, _ = DecodeQueueTrigger(req, SubmitQueueBinding, false)
		_, _ = DecodeQueueTrigger(req, SubmitQueueBinding, true)
		_, _ = DecodeBlobTrigger(req)
		_, _ = DecodeTimerTrigger(req, MonitorTimerBinding)
		_ = req.Sys()
		_ = req.RetryContext()
	})
}

func TestReadEnvelopeSkipsTheBlobPayloadOnly(t *testing.T) {
	in := fixture(t, "blob_binary.json")
	got, err := readEnvelope(bytes.NewReader(in), map[string]bool{EncryptBlobBinding: true}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var a, b map[string]any
	if err := json.Unmarshal(in, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got, &b); err != nil {
		t.Fatalf("result is not JSON: %v\n%s", err, got)
	}
	a["Data"].(map[string]any)[EncryptBlobBinding] = ""
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Fatalf("envelope changed beyond the skipped payload:\n%s\n%s", ja, jb)
	}
}

// A 64 MiB base64 blob payload passes through the handler without being held: the kept part stays tiny
// and the heap does not grow with the payload.
func TestLargeBlobPayloadIsNotBuffered(t *testing.T) {
	rec := &recorder{}
	srv := newTestServer(t, rec)
	const payload = 64 << 20
	pr, pw := io.Pipe()
	go func() {
		io.WriteString(pw, `{"Data":{"package":"`)
		chunk := bytes.Repeat([]byte("QUJD"), 16<<10)
		for n := 0; n < payload; n += len(chunk) {
			pw.Write(chunk)
		}
		io.WriteString(pw, `"},"Metadata":{"name":"\"big.zip\"","Uri":"\"http://127.0.0.1:10000/devstoreaccount1/migration-staging/big.zip\"","Properties":{"ETag":"\"0x1\"","ContentLength":1}}}`)
		pw.Close()
	}()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/"+EncryptBlobTrigger, pr)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	runtime.ReadMemStats(&after)
	if resp.StatusCode != 200 || len(rec.calls) != 1 || !strings.Contains(rec.calls[0], "big.zip") {
		t.Fatalf("status %d calls %q", resp.StatusCode, rec.calls)
	}
	grew := int64(after.TotalAlloc) - int64(before.TotalAlloc)
	t.Logf("allocated %d KiB while passing a %d MiB payload", grew>>10, payload>>20)
	if grew > payload/4 {
		t.Fatalf("allocated %d bytes for a %d-byte payload: the payload is being buffered", grew, payload)
	}
}

func FuzzReadEnvelope(f *testing.F) {
	for _, n := range []string{"blob_binary.json", "queue.json", "timer.json", "http_envelope.json"} {
		b, _ := os.ReadFile(filepath.Join("testdata", n))
		f.Add(b)
	}
	f.Add([]byte(`{"Data":{"package":"a\"b\\\\"},"Metadata":{}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := readEnvelope(bytes.NewReader(body), map[string]bool{"package": true}, 1<<20)
		if err != nil {
			return
		}
		var v map[string]any
		if json.Unmarshal(body, &v) != nil {
			return
		}
		// Valid JSON in, valid JSON out, equal but for Data.package.
		var w map[string]any
		if err := json.Unmarshal(got, &w); err != nil {
			t.Fatalf("valid input became invalid: %v\nin  %q\nout %q", err, body, got)
		}
		if d, ok := v["Data"].(map[string]any); ok {
			if _, isStr := d["package"].(string); isStr {
				d["package"] = ""
			}
		}
		a, _ := json.Marshal(v)
		b, _ := json.Marshal(w)
		if !bytes.Equal(a, b) {
			t.Fatalf("changed beyond Data.package:\nin  %s\nout %s", a, b)
		}
	})
}

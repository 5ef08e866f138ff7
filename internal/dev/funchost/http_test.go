package funchost

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spomig/spomig/internal/dev/azurite"
)

const (
	fwdFnJSON = `{"bindings":[
  {"type":"httpTrigger","direction":"in","name":"req","authLevel":"anonymous","methods":["get","post","put"],"route":"echo/{*rest}"},
  {"type":"http","direction":"out","name":"res"}]}`
	keyFnJSON = `{"bindings":[
  {"type":"httpTrigger","direction":"in","name":"req","authLevel":"function","route":"secure/{id:int}"},
  {"type":"http","direction":"out","name":"$return"}]}`
	adminFnJSON = `{"bindings":[
  {"type":"httpTrigger","direction":"in","name":"req","authLevel":"admin","route":"adm"},
  {"type":"http","direction":"out","name":"res"}]}`
	envFnJSON = `{"bindings":[
  {"type":"httpTrigger","direction":"in","name":"req","authLevel":"function","methods":["post"],"route":"orders/{id}"},
  {"type":"http","direction":"out","name":"res"},
  {"type":"queue","direction":"out","name":"msg","queueName":"%TESTAPP_MSGQ%"}]}`
	envNoResFnJSON = `{"bindings":[
  {"type":"httpTrigger","direction":"in","name":"req","authLevel":"anonymous","route":"nores"},
  {"type":"http","direction":"out","name":"res"},
  {"type":"queue","direction":"out","name":"msg","queueName":"%TESTAPP_MSGQ%"}]}`
	disabledFnJSON = `{"bindings":[
  {"type":"httpTrigger","direction":"in","name":"req","authLevel":"anonymous","route":"off"},
  {"type":"http","direction":"out","name":"res"}]}`
)

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := noRedirect.Do(req)
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp, b
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	must(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

func TestHTTPTrigger(t *testing.T) {
	t.Parallel()
	msgq := azurite.UniqueName("msgq")
	app := newTestApp(t, true, map[string]string{
		"FwdFn": fwdFnJSON, "KeyFn": keyFnJSON, "AdminFn": adminFnJSON, "EnvFn": envFnJSON,
		"EnvNoResFn": envNoResFnJSON, "DisabledFn": disabledFnJSON,
	}, map[string]string{
		"TESTAPP_MSGQ":                     msgq,
		"AzureWebJobs.DisabledFn.Disabled": "true",
		"TESTHANDLER_REPLY_EnvFn":          `{"Outputs":{"res":{"statusCode":"201","body":{"ok":true,"n":[1]},"headers":{"X-Test":"yes","X-Num":5}},"msg":"hello"},"Logs":["env ok"]}`,
	})
	app.vars["version"] = DefaultHostVersion
	h := app.start(Options{Settings: map[string]string{"FUNCHOST_FUNCTION_KEY": "fixed-function-key"}})
	base := h.URL() + "/api"
	app.vars["host"] = strings.TrimPrefix(h.URL(), "http://")

	t.Run("handler process environment", func(t *testing.T) {
		starts := app.records("")
		if len(starts) == 0 || starts[0].Kind != "start" {
			t.Fatalf("no start record: %+v", starts)
		}
		env := starts[0].Env
		if env["FUNCTIONS_CUSTOMHANDLER_PORT"] == "" || env["FUNCTIONS_CUSTOMHANDLER_PORT"] != env["FUNCTIONS_HTTPWORKER_PORT"] ||
			!guidRE.MatchString(env["FUNCTIONS_CUSTOMHANDLER_WORKER_ID"]) || env["FUNCTIONS_APP_ROOT_PATH"] != app.dir ||
			env["TESTAPP_MSGQ"] != msgq || env["FUNCTIONS_WORKER_RUNTIME"] != "custom" {
			t.Errorf("handler environment = %v", env)
		}
	})

	t.Run("keys file", func(t *testing.T) {
		path, created := h.KeysFile()
		if path != filepath.Join(app.dir, ".funchost", "keys.json") || !created {
			t.Errorf("keys file %s created=%v", path, created)
		}
		b, err := os.ReadFile(path)
		must(t, err)
		var kf keysFile
		must(t, json.Unmarshal(b, &kf))
		if kf.MasterKey != h.MasterKey() || kf.HostKeys["default"] == "" || kf.HostKeys["default"] == "fixed-function-key" {
			t.Errorf("keys file %s: %+v", b, kf)
		}
		if h.FunctionKey() != "fixed-function-key" {
			t.Errorf("FUNCHOST_FUNCTION_KEY did not override the function key")
		}
		if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
			t.Errorf("keys file mode %v", st.Mode().Perm())
		}
	})

	t.Run("forwarded GET", func(t *testing.T) {
		resp, body := get(t, base+"/echo/a/b%20c?y=two&x=1", map[string]string{
			"X-Custom": "v1", "User-Agent": "test-client/1.0", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Handler") != "testhandler" {
			t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
		}
		recs := app.records("/api/echo/a/b%20c")
		if len(recs) != 1 {
			t.Fatalf("%d records", len(recs))
		}
		if recs[0].Host != app.vars["host"] {
			t.Errorf("Host seen by the handler = %q, want the original %q", recs[0].Host, app.vars["host"])
		}
		app.matchFixture("http_forward_get.json", requestView(t, recs[0]))
		var echoed handlerRecord
		must(t, json.Unmarshal(body, &echoed))
		if echoed.Path != "/api/echo/a/b%20c" {
			t.Errorf("response body not passed through: %s", body)
		}
	})

	t.Run("forwarded body only with Content-Length", func(t *testing.T) {
		payload := make([]byte, 256)
		for i := range payload {
			payload[i] = byte(i)
		}
		req, _ := http.NewRequest(http.MethodPost, base+"/echo/bin", bytes.NewReader(payload))
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Content-Encoding", "identity")
		resp, _ := do(t, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		recs := app.records("/api/echo/bin")
		r := recs[0]
		if r.BodyB64 != base64.StdEncoding.EncodeToString(payload) || r.ContentLength != 256 ||
			r.Headers["Content-Type"][0] != "application/octet-stream" || r.Headers["Content-Encoding"] != nil {
			t.Errorf("forwarded body: length %d content-type %v content-encoding %v body ok %v", r.ContentLength,
				r.Headers["Content-Type"], r.Headers["Content-Encoding"], r.BodyB64 == base64.StdEncoding.EncodeToString(payload))
		}

		req, _ = http.NewRequest(http.MethodPut, base+"/echo/chunked", io.MultiReader(strings.NewReader("chunked body")))
		req.ContentLength = -1
		req.Header.Set("Content-Type", "text/plain")
		resp, _ = do(t, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		r = app.records("/api/echo/chunked")[0]
		if r.Body != "" || r.ContentLength != 0 || r.Headers["Content-Type"] != nil {
			t.Errorf("a chunked request must arrive without body and Content-Type: %+v", r)
		}
	})

	t.Run("forwarded query is rebuilt like the host", func(t *testing.T) {
		get(t, base+"/echo/q?a=1&A=2&s=hello+world&e=%C3%A9&code=k", nil)
		r := app.records("/api/echo/q")[0]
		if want := "a=1%2C2&s=hello%20world&e=%C3%A9&code=k"; r.RawQuery != want {
			t.Errorf("query = %q, want %q", r.RawQuery, want)
		}
	})

	t.Run("answers untouched", func(t *testing.T) {
		resp, body := get(t, base+"/echo/teapot", map[string]string{"X-Test-Status": "418"})
		if resp.StatusCode != 418 || !strings.Contains(string(body), "/api/echo/teapot") {
			t.Errorf("418: %d %s", resp.StatusCode, body)
		}
		resp, _ = get(t, base+"/echo/moved", map[string]string{"X-Test-Status": "302", "X-Test-Location": "/api/echo/elsewhere"})
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/api/echo/elsewhere" {
			t.Errorf("302: %d %v", resp.StatusCode, resp.Header)
		}
		if n := len(app.records("/api/echo/elsewhere")); n != 0 {
			t.Errorf("the host followed the redirect")
		}
	})

	t.Run("routing", func(t *testing.T) {
		for _, tc := range []struct {
			method, path string
			status       int
		}{
			{"GET", "/api/nothing", 404},
			{"GET", "/other/echo/x", 404},
			{"DELETE", "/api/echo/x", 405},
			{"GET", "/api/off", 404},
			{"GET", "/api/secure/abc?code=fixed-function-key", 404},
			{"GET", "/API/Echo/case", 200},
		} {
			req, _ := http.NewRequest(tc.method, h.URL()+tc.path, nil)
			if resp, _ := do(t, req); resp.StatusCode != tc.status {
				t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
			}
		}
	})

	t.Run("keys", func(t *testing.T) {
		for _, tc := range []struct {
			path   string
			hdr    map[string]string
			status int
		}{
			{"/secure/7", nil, 401},
			{"/secure/7?code=wrong", nil, 401},
			{"/secure/7", map[string]string{"x-functions-key": "wrong"}, 401},
			{"/adm?code=fixed-function-key", nil, 401},
			{"/adm", nil, 401},
		} {
			if resp, _ := get(t, base+tc.path, tc.hdr); resp.StatusCode != tc.status {
				t.Errorf("%s %v: %d, want %d", tc.path, tc.hdr, resp.StatusCode, tc.status)
			}
		}
		if n := len(app.records("/api/secure/7")) + len(app.records("/api/adm")); n != 0 {
			t.Fatalf("%d unauthorized requests reached the handler", n)
		}
		for _, tc := range []struct {
			path string
			hdr  map[string]string
		}{
			{"/secure/7?code=fixed-function-key", nil},
			{"/secure/7", map[string]string{"x-functions-key": h.MasterKey()}},
			{"/adm", map[string]string{"x-functions-key": h.MasterKey()}},
		} {
			if resp, _ := get(t, base+tc.path, tc.hdr); resp.StatusCode != 200 {
				t.Errorf("%s %v: %d, want 200", tc.path, tc.hdr, resp.StatusCode)
			}
		}
	})

	t.Run("envelope path", func(t *testing.T) {
		app.vars["key"] = "fixed-function-key"
		req, _ := http.NewRequest(http.MethodPost, base+"/orders/42?x=1&x=2&code=fixed-function-key", strings.NewReader(`{"sku":"A-1","qty":2,"l":[]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Add("X-Custom", "a")
		req.Header.Add("X-Custom", "b")
		resp, body := do(t, req)
		recs := app.records("/EnvFn")
		if len(recs) != 1 {
			t.Fatalf("%d requests to /EnvFn", len(recs))
		}
		app.matchFixture("http_envelope_request.json", requestView(t, recs[0]))
		if resp.StatusCode != 201 || string(body) != "{\n  \"ok\": true,\n  \"n\": [\n    1\n  ]\n}" ||
			resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || resp.Header.Get("X-Test") != "yes" || resp.Header.Get("X-Num") != "5" {
			t.Errorf("response %d %v %q", resp.StatusCode, resp.Header, body)
		}
		waitFor(t, 5*time.Second, "the queue output", func() bool {
			m := peekTexts(t, msgq)
			return len(m) == 1 && unb64(t, m[0]) == "hello"
		})

		resp, body = do(t, mustRequest(t, http.MethodGet, base+"/nores"))
		if resp.StatusCode != 200 || string(body) != "{}" {
			t.Errorf("no res output: %d %q", resp.StatusCode, body)
		}
		resp, _ = do(t, mustRequest(t, http.MethodGet, base+"/nores?cmd=fail"))
		if resp.StatusCode != 500 {
			t.Errorf("failing handler: %d, want 500", resp.StatusCode)
		}
		resp, _ = do(t, mustRequest(t, http.MethodGet, base+"/nores?cmd=badjson"))
		if resp.StatusCode != 500 {
			t.Errorf("non-JSON handler answer: %d, want 500", resp.StatusCode)
		}
	})

	t.Run("handler restarted after it exits", func(t *testing.T) {
		pid := h.HandlerPID()
		resp, _ := get(t, base+"/echo/die", map[string]string{"X-Test-Exit": "1"})
		if resp.StatusCode != http.StatusInternalServerError {
			t.Errorf("request that killed the handler: %d, want 500", resp.StatusCode)
		}
		waitFor(t, 15*time.Second, "a new handler process", func() bool {
			starts := 0
			for _, r := range app.records("") {
				if r.Kind == "start" && r.PID != pid {
					starts++
				}
			}
			return starts == 1 && h.HandlerPID() != pid && h.HandlerPID() != 0
		})
		resp, _ = get(t, base+"/echo/alive", nil)
		if resp.StatusCode != 200 {
			t.Errorf("after restart: %d", resp.StatusCode)
		}
		logs := app.logs.String()
		if !strings.Contains(logs, "exited: exit status 3") || !strings.Contains(logs, "Restarting the custom handler process") {
			t.Errorf("restart not logged")
		}
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("old handler %d still alive", pid)
		}
	})
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	must(t, err)
	return req
}

func TestHandlerStartTimeout(t *testing.T) {
	t.Parallel()
	app := newTestApp(t, false, map[string]string{"FwdFn": fwdFnJSON}, map[string]string{"TESTHANDLER_NOLISTEN": "1"})
	h, err := New(Options{AppDir: app.dir, HTTPAddr: "127.0.0.1:0", StartTimeout: time.Second,
		Logger: newDiscardLogger()})
	must(t, err)
	err = h.Start(t.Context())
	if err == nil {
		_ = h.Stop()
		t.Fatal("Start succeeded with a handler that never listens")
	}
	if !strings.Contains(err.Error(), "did not answer GET") || !strings.Contains(err.Error(), "FUNCTIONS_CUSTOMHANDLER_PORT") {
		t.Errorf("error = %v", err)
	}
	for _, r := range app.records("") {
		if r.Kind == "start" && syscall.Kill(r.PID, 0) == nil {
			t.Errorf("handler %d left running", r.PID)
		}
	}
}

func TestRouteTemplates(t *testing.T) {
	for _, tc := range []struct {
		tmpl, path string
		ok         bool
		vals       map[string]string
	}{
		{"orders/{id}", "orders/42", true, map[string]string{"id": "42"}},
		{"orders/{id}", "ORDERS/42/", true, map[string]string{"id": "42"}},
		{"orders/{id}", "orders", false, nil},
		{"orders/{id}", "orders/1/2", false, nil},
		{"orders/{id:int}", "orders/x", false, nil},
		{"orders/{id:int:min(10)}", "orders/5", false, nil},
		{"orders/{id:int:min(10)}", "orders/15", true, map[string]string{"id": "15"}},
		{"orders/{id:guid}", "orders/0f4b8f0e-6a53-4a86-8c5e-5f1f3c1a2b3c", true, map[string]string{"id": "0f4b8f0e-6a53-4a86-8c5e-5f1f3c1a2b3c"}},
		{"orders/{id:regex(^[a-z]+$)}", "orders/abc", true, map[string]string{"id": "abc"}},
		{"orders/{id:regex(^[a-z]+$)}", "orders/ab1", false, nil},
		{"orders/{id?}", "orders", true, map[string]string{}},
		{"orders/{id=7}", "orders", true, map[string]string{"id": "7"}},
		{"files/{*rest}", "files/a/b%20c", true, map[string]string{"rest": "a/b c"}},
		{"files/{*rest}", "files", true, map[string]string{}},
		{"files/{name}.{ext}", "files/a.b.c", true, map[string]string{"name": "a.b", "ext": "c"}},
		{"hello", "Hello", true, map[string]string{}},
	} {
		rt, err := parseRouteTemplate(tc.tmpl)
		must(t, err)
		vals, ok := rt.match(tc.path)
		if ok != tc.ok || (ok && !mapsEqual(vals, tc.vals)) {
			t.Errorf("%s on %q: %v %v, want %v %v", tc.tmpl, tc.path, vals, ok, tc.vals, tc.ok)
		}
	}
	for _, bad := range []string{"a/{", "a/{*x}/b", "a/{x?}/b", "a/{}", "a//b", "a/{x}{", "a/{1x}"} {
		if _, err := parseRouteTemplate(bad); err == nil {
			t.Errorf("parseRouteTemplate(%q) accepted", bad)
		}
	}
	lit, _ := parseRouteTemplate("items/special")
	par, _ := parseRouteTemplate("items/{id}")
	all, _ := parseRouteTemplate("items/{*rest}")
	if !lessPrecedence(lit.precedence(), par.precedence()) || !lessPrecedence(par.precedence(), all.precedence()) {
		t.Error("route precedence: literal < parameter < catch-all")
	}
}

func TestForwardedQuery(t *testing.T) {
	for raw, want := range map[string]string{
		"":                      "",
		"a=1":                   "?a=1",
		"a=1&a=2":               "?a=1%2C2",
		"a=1&A=2&b":             "?a=1%2C2&b=",
		"q=hello+world&x=%2F~_": "?q=hello%20world&x=%2F~_",
		"k=%E2%82%AC":           "?k=%E2%82%AC",
	} {
		if got := forwardedQuery(raw); got != want {
			t.Errorf("forwardedQuery(%q) = %q, want %q", raw, got, want)
		}
	}
}

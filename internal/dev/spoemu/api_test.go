package spoemu

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestODataFlavours(t *testing.T) {
	f := newFixture(t, nil)
	webID := f.e.WebID(f.site)
	cases := []struct {
		name, method, path, accept string
		body                       any
		check                      func(t *testing.T, m map[string]any)
	}{
		{"web nometadata", "GET", "/_api/web?$select=Id", acceptNoMeta, nil, func(t *testing.T, m map[string]any) {
			if m["Id"] != webID || len(m) != 1 {
				t.Fatalf("%v", m)
			}
		}},
		{"web minimal", "GET", "/_api/web", acceptMinimal, nil, func(t *testing.T, m map[string]any) {
			if m["Id"] != webID || !strings.HasSuffix(m["@odata.context"].(string), "/_api/$metadata#SP.Web") {
				t.Fatalf("%v", m)
			}
		}},
		{"web plain json is minimal", "GET", "/_api/web", "application/json", nil, func(t *testing.T, m map[string]any) {
			if _, ok := m["@odata.context"]; !ok || m["Id"] != webID {
				t.Fatalf("%v", m)
			}
		}},
		{"web verbose", "GET", "/_api/web", acceptVerbose, nil, func(t *testing.T, m map[string]any) {
			d := m["d"].(map[string]any)
			md := d["__metadata"].(map[string]any)
			if d["Id"] != webID || md["type"] != "SP.Web" {
				t.Fatalf("%v", m)
			}
		}},
		{"status minimal", "POST", "/_api/site/GetMigrationJobStatus", acceptMinimal, map[string]string{"id": newUUID()}, func(t *testing.T, m map[string]any) {
			if m["value"] != 0.0 || !strings.HasSuffix(m["@odata.context"].(string), "#Edm.Int32") {
				t.Fatalf("%v", m)
			}
		}},
		{"status nometadata", "POST", "/_api/site/GetMigrationJobStatus", acceptNoMeta, map[string]string{"id": newUUID()}, func(t *testing.T, m map[string]any) {
			if m["value"] != 0.0 || len(m) != 1 {
				t.Fatalf("%v", m)
			}
		}},
		{"provision verbose", "POST", "/_api/site/ProvisionMigrationContainers", acceptVerbose, nil, func(t *testing.T, m map[string]any) {
			p := m["d"].(map[string]any)["ProvisionMigrationContainers"].(map[string]any)
			if p["__metadata"].(map[string]any)["type"] != "SP.ProvisionedMigrationContainersInfo" || p["EncryptionKey"] == "" || p["DataContainerUri"] == "" {
				t.Fatalf("%v", m)
			}
		}},
		{"provision minimal", "POST", "/_api/site/ProvisionMigrationContainers", acceptMinimal, nil, func(t *testing.T, m map[string]any) {
			if m["MetadataContainerUri"] == nil || !strings.HasSuffix(m["@odata.context"].(string), "#SP.ProvisionedMigrationContainersInfo") {
				t.Fatalf("%v", m)
			}
		}},
		{"queue verbose", "POST", "/_api/site/ProvisionMigrationQueue", acceptVerbose, nil, func(t *testing.T, m map[string]any) {
			p := m["d"].(map[string]any)["ProvisionMigrationQueue"].(map[string]any)
			if !strings.Contains(p["JobQueueUri"].(string), "sp=rap") {
				t.Fatalf("%v", m)
			}
		}},
		{"delete verbose", "POST", "/_api/site/DeleteMigrationJob", acceptVerbose, map[string]string{"id": newUUID()}, func(t *testing.T, m map[string]any) {
			if m["d"].(map[string]any)["DeleteMigrationJob"] != false {
				t.Fatalf("%v", m)
			}
		}},
		{"migration status verbose", "POST", "/_api/site/GetMigrationStatus", acceptVerbose, nil, func(t *testing.T, m map[string]any) {
			r := m["d"].(map[string]any)["GetMigrationStatus"].(map[string]any)
			if _, ok := r["results"].([]any); !ok {
				t.Fatalf("%v", m)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, h, b := f.do(tc.method, tc.path, tc.accept, tc.body)
			if status != 200 {
				t.Fatalf("%d %s", status, b)
			}
			if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json;odata=") {
				t.Fatalf("Content-Type %q", ct)
			}
			if h.Get("SPRequestGuid") == "" {
				t.Fatal("no SPRequestGuid")
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			tc.check(t, m)
		})
	}
	// Error shapes: verbose "error", light "odata.error".
	for accept, key := range map[string]string{acceptVerbose: `{"error":`, acceptNoMeta: `{"odata.error":`, acceptMinimal: `{"odata.error":`} {
		status, _, b := f.do(http.MethodPost, "/_api/site/NoSuchMethod", accept, nil)
		if status != 404 || !strings.HasPrefix(string(b), key) {
			t.Fatalf("%s: %d %s", accept, status, b)
		}
	}
	// Actions refuse GET.
	if status, _, b := f.do(http.MethodGet, "/_api/site/ProvisionMigrationContainers", acceptNoMeta, nil); status != 400 {
		t.Fatalf("GET action: %d %s", status, b)
	}
	// Verbose request bodies with __metadata in options.
	c := f.provision()
	body := f.createBody(c, "", c.EncryptionKey)
	body["options"] = map[string]any{"__metadata": map[string]string{"type": "SP.EncryptionOption"}, "AES256CBCKey": c.EncryptionKey}
	status, _, b := f.do(http.MethodPost, "/_api/site/CreateMigrationJobEncrypted", acceptVerbose, body)
	var v struct {
		D struct{ CreateMigrationJobEncrypted string } `json:"d"`
	}
	if err := json.Unmarshal(b, &v); status != 200 || err != nil {
		t.Fatalf("verbose create: %d %s", status, b)
	}
	if _, ok := parseGUID(v.D.CreateMigrationJobEncrypted); !ok {
		t.Fatalf("verbose create: %s", b)
	}
	f.wait(v.D.CreateMigrationJobEncrypted) // an empty package: it fails, but it ran
}

// plainRequest sends a request with a plain http.Client (no SDK), as a client would.
func plainRequest(t *testing.T, f *fixture, method, path string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, f.url+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := f.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func jwt(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT","x5t":"x"}`)) + "." + enc.EncodeToString(b) + "." + enc.EncodeToString([]byte("sig"))
}

func TestAuthentication(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.CheckAudience = true; o.Audiences = []string{"https://contoso.sharepoint.com"} })
	cases := []struct {
		name   string
		auth   string
		status int
	}{
		{"no header", "", 401},
		{"basic", "Basic dXNlcjpwYXNz", 401},
		{"empty bearer", "Bearer ", 401},
		{"opaque token", "Bearer opaque-token", 200},
		{"JWT for this host", "Bearer " + jwt(map[string]any{"aud": "https://127.0.0.1", "exp": time.Now().Add(time.Hour).Unix()}), 200},
		{"JWT principal/host@tenant", "Bearer " + jwt(map[string]any{"aud": sharePointPrincipalID + "/127.0.0.1@" + DefaultTenantID}), 200},
		{"JWT for an allowed audience", "Bearer " + jwt(map[string]any{"aud": []string{"https://contoso.sharepoint.com/"}}), 200},
		{"JWT for another host", "Bearer " + jwt(map[string]any{"aud": "https://fabrikam.sharepoint.com"}), 401},
		{"expired JWT", "Bearer " + jwt(map[string]any{"aud": "https://127.0.0.1", "exp": time.Now().Add(-time.Hour).Unix()}), 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{"Accept": acceptVerbose}
			if tc.auth != "" {
				hdr["Authorization"] = tc.auth
			}
			resp, b := plainRequest(t, f, http.MethodGet, "/_api/web", hdr)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if tc.status != 401 {
				return
			}
			ch := resp.Header.Get("WWW-Authenticate")
			for _, want := range []string{`Bearer realm="` + DefaultTenantID + `"`, `client_id="00000003-0000-0ff1-ce00-000000000000"`,
				`trusted_issuers="`, `authorization_uri="https://login.windows.net/common/oauth2/authorize"`} {
				if !strings.Contains(ch, want) {
					t.Fatalf("WWW-Authenticate %q lacks %s", ch, want)
				}
			}
			if code, _ := spErrorOf(t, b); code != codeUnauthorized {
				t.Fatalf("error code %q", code)
			}
		})
	}
}

func TestThrottlingFaults(t *testing.T) {
	f := newFixture(t, nil)
	f.e.SetFaults(f.site, Faults{Throttle: &Throttle{Count: 2, RetryAfter: 7}})
	auth := map[string]string{"Authorization": "Bearer x", "Accept": acceptNoMeta}
	for i := range 2 {
		resp, b := plainRequest(t, f, http.MethodGet, "/_api/web", auth)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "7" {
			t.Fatalf("call %d: %d Retry-After %q %s", i, resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
		if code, _ := spErrorOf(t, b); code == "" {
			t.Fatal("no error code")
		}
	}
	if resp, b := plainRequest(t, f, http.MethodGet, "/_api/web", auth); resp.StatusCode != 200 {
		t.Fatalf("after the fault: %d %s", resp.StatusCode, b)
	}
	// Through the admin endpoint: 503 on one method only, with RateLimit headers.
	body := `{"throttle":{"count":1,"status":503,"retryAfter":2,"rateLimitReset":9,"methods":["GetMigrationJobStatus"]}}`
	name := strings.TrimPrefix(f.site, "/sites/")
	resp, err := f.http.Post(f.e.URL()+"/_emulator/sites/"+name+"/faults", "application/json", strings.NewReader(body))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("admin faults: %v %v", err, resp)
	}
	resp.Body.Close()
	if resp, b := plainRequest(t, f, http.MethodGet, "/_api/web", auth); resp.StatusCode != 200 {
		t.Fatalf("other method throttled: %d %s", resp.StatusCode, b)
	}
	status, h, b := f.do(http.MethodPost, "/_api/site/GetMigrationJobStatus", acceptVerbose, map[string]string{"id": newUUID()})
	if status != 503 || h.Get("Retry-After") != "2" || h.Get("RateLimit-Reset") != "9" || !strings.HasPrefix(string(b), `{"error":`) {
		t.Fatalf("503: %d %v %s", status, h, b)
	}
	if status, _, b := f.do(http.MethodPost, "/_api/site/GetMigrationJobStatus", acceptVerbose, map[string]string{"id": newUUID()}); status != 200 {
		t.Fatalf("after 503: %d %s", status, b)
	}
	// GET shows what is left; DELETE clears.
	resp, err = f.http.Get(f.e.URL() + "/_emulator/sites/" + name + "/faults")
	if err != nil {
		t.Fatal(err)
	}
	var left Faults
	_ = json.NewDecoder(resp.Body).Decode(&left)
	resp.Body.Close()
	if left.Throttle == nil || left.Throttle.Count != 0 {
		t.Fatalf("faults left %+v", left)
	}
	bad, _ := f.http.Post(f.e.URL()+"/_emulator/sites/"+name+"/faults", "application/json", strings.NewReader(`{"nope":1}`))
	if bad.StatusCode != 400 {
		t.Fatalf("unknown fault field: %d", bad.StatusCode)
	}
	bad.Body.Close()
}

func TestSitesAllowList(t *testing.T) {
	f := newFixture(t, nil)
	g := newFixture(t, func(o *Options) { o.Sites = []string{f.site, "/"} })
	g.site, g.url = f.site, g.e.SiteURL(f.site)
	if status, _, b := g.do(http.MethodGet, "/_api/web", acceptNoMeta, nil); status != 200 {
		t.Fatalf("allowed site: %d %s", status, b)
	}
	g.url = g.e.SiteURL("/sites/other")
	status, _, b := g.do(http.MethodGet, "/_api/web", acceptVerbose, nil)
	if code, msg := spErrorOf(t, b); status != 404 || code != codeFileNotFound || msg != "File Not Found." {
		t.Fatalf("unknown site: %d %s", status, b)
	}
	g.url = g.e.URL()
	var web struct{ Id, ServerRelativeUrl string }
	g.ok(http.MethodGet, "/_api/web", nil, &web)
	if web.ServerRelativeUrl != "/" || web.Id != g.e.WebID("/") {
		t.Fatalf("root web %+v", web)
	}
	// Web ids are stable per tenant and site.
	if f.e.WebID(f.site) != g.e.WebID(f.site) || f.e.WebID(f.site) == f.e.WebID("/sites/other") {
		t.Fatal("web ids are not stable per site")
	}
}

func TestHealthAndJobsAdmin(t *testing.T) {
	f := newFixture(t, nil)
	resp, err := f.http.Get(f.e.URL() + "/_emulator/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health %v %v", err, resp)
	}
	resp.Body.Close()
	resp, err = f.http.Get(f.e.URL() + "/_emulator/jobs/" + newUUID())
	if err != nil || resp.StatusCode != 404 {
		t.Fatalf("unknown job %v %v", err, resp)
	}
	resp.Body.Close()
}

func TestParsers(t *testing.T) {
	t.Run("path arguments", func(t *testing.T) {
		cases := map[string]map[string]string{
			"jobId=guid'a-b',nextToken='0'":    {"jobid": "a-b", "nexttoken": "0"},
			"jobId='a',nextToken=12":           {"jobid": "a", "nexttoken": "12"},
			"'a','b'":                          {"jobid": "a", "nexttoken": "b"},
			"jobId='it''s,x',nextToken=''":     {"jobid": "it's,x", "nexttoken": ""},
			" jobId = GUID'A' , nextToken = 3": {"jobid": "A", "nexttoken": "3"},
		}
		for in, want := range cases {
			c := &call{fn: &function{name: "GetMigrationJobProgress", params: []string{"jobId", "nextToken"}},
				r: &http.Request{URL: &url.URL{}}, args: map[string]json.RawMessage{}}
			if err := c.parsePathArgs(in); err != nil {
				t.Fatalf("%q: %v", in, err)
			}
			for k, v := range want {
				var got string
				_ = json.Unmarshal(c.args[k], &got)
				if got != v {
					t.Errorf("%q: %s = %q, want %q", in, k, got, v)
				}
			}
		}
		if _, ok := splitArgs("a='x"); ok {
			t.Error("unterminated literal accepted")
		}
	})
	t.Run("storage refs", func(t *testing.T) {
		ours, _ := url.Parse("https://127.0.0.1:10000/devstoreaccount1")
		r, err := parseStorageRef("https://127.0.0.1:10000/devstoreaccount1/0-1-20240101-abc?sp=rw&se=2099-01-01T00:00:00Z&sig=x", ours)
		if err != nil || !r.ours || r.name != "0-1-20240101-abc" || !r.sas.has('w') {
			t.Fatalf("%+v %v", r, err)
		}
		r, err = parseStorageRef("https://acct.blob.core.windows.net:443/c-1?sp=rl&st=2024-01-01T00%3A00%3A00Z&se=2099-01-01&sig=x", ours)
		if err != nil || r.ours || r.base.Host != "acct.blob.core.windows.net" || r.name != "c-1" {
			t.Fatalf("%+v %v", r, err)
		}
		for _, bad := range []string{"", "c-1", "ftp://x/c-1?sig=1&se=2099-01-01", "https://x/c-1", "https://x/c-1?sig=1", "https://x/C_1?sig=1&se=2099-01-01", "https://x/?sig=1&se=2099-01-01"} {
			if _, err := parseStorageRef(bad, ours); err == nil {
				t.Errorf("%q accepted", bad)
			}
		}
	})
	t.Run("connection strings", func(t *testing.T) {
		a, err := parseConnectionString("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net")
		if err != nil || a.blobURL.String() != "https://acct.blob.core.windows.net" || a.queueURL.String() != "https://acct.queue.core.windows.net" {
			t.Fatalf("%+v %v", a, err)
		}
		if _, err := parseConnectionString("UseDevelopmentStorage=true"); err == nil {
			t.Fatal("UseDevelopmentStorage accepted")
		}
	})
	t.Run("GUIDs", func(t *testing.T) {
		for in, want := range map[string]string{
			"{6F9619FF-8B86-D011-B42D-00C04FC964FF}": "6f9619ff-8b86-d011-b42d-00c04fc964ff",
			"6f9619ff8b86d011b42d00c04fc964ff":       "6f9619ff-8b86-d011-b42d-00c04fc964ff",
		} {
			if got, ok := parseGUID(in); !ok || got != want {
				t.Errorf("%q → %q %v", in, got, ok)
			}
		}
		if _, ok := parseGUID("6f9619ff-8b86-d011-b42d-00c04fc964fg"); ok {
			t.Error("bad GUID accepted")
		}
	})
}

func FuzzPathArgs(f *testing.F) {
	for _, s := range []string{"jobId=guid'a',nextToken='0'", "'a','b'", "a=@x", "x='''", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := &call{fn: &function{name: "F", params: []string{"a", "b"}}, r: &http.Request{URL: &url.URL{RawQuery: "@x='1'"}},
			args: map[string]json.RawMessage{}}
		_ = c.parsePathArgs(s)
		for _, v := range c.args {
			if !json.Valid(v) {
				t.Fatalf("invalid JSON argument %q", v)
			}
		}
	})
}

func FuzzStorageRef(f *testing.F) {
	f.Add("https://127.0.0.1:10000/devstoreaccount1/c-1?sp=rw&se=2099-01-01T00:00:00Z&sig=x")
	f.Add("https://a.blob.core.windows.net:443/c?sv=1&st=2024-01-01&se=2024-01-02&sig=%2B")
	ours, _ := url.Parse("https://127.0.0.1:10000/devstoreaccount1")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseStorageRef(s, ours)
		if err == nil && (r.name == "" || r.base == nil || strings.Contains(r.redacted(), "sig=")) {
			t.Fatalf("accepted %q as %+v", s, r)
		}
	})
}

func FuzzCheckXML(f *testing.F) {
	f.Add(`<UserGroupMap xmlns="urn:deployment-usergroupmap-schema"><Users><User Id="1" SystemId="x"/></Users></UserGroupMap>`)
	f.Add(`<a><b></a>`)
	f.Fuzz(func(t *testing.T, s string) {
		_ = checkXML(bytes.NewReader([]byte(s)), "UserGroupMap", func([]string, map[string]string) error { return nil })
	})
}

func FuzzDuration(f *testing.F) {
	f.Add(`"250ms"`)
	f.Add(`1500`)
	f.Fuzz(func(t *testing.T, s string) {
		var d Duration
		_ = d.UnmarshalJSON([]byte(s))
	})
}

func FuzzConnectionString(f *testing.F) {
	f.Add("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=a2V5;BlobEndpoint=https://127.0.0.1:1/a;QueueEndpoint=https://127.0.0.1:2/a;")
	f.Add("AccountName=a;AccountKey=b;EndpointSuffix=core.windows.net")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseConnectionString(s)
		if err == nil && (a.blobURL == nil || a.queueURL == nil || a.name == "" || a.key == "") {
			t.Fatalf("accepted %q as %+v", s, a)
		}
	})
}

func FuzzCheckJWT(f *testing.F) {
	f.Add(jwt(map[string]any{"aud": "https://127.0.0.1", "exp": 1}), "127.0.0.1:443")
	f.Add("a.b.c", "h")
	f.Add("opaque", "h")
	e := &Emulator{opts: Options{CheckAudience: true, Audiences: []string{"https://contoso.sharepoint.com"}}}
	f.Fuzz(func(t *testing.T, token, host string) {
		_ = e.checkJWT(token, host)
	})
}

func TestFaultsJSON(t *testing.T) {
	f := newFixture(t, nil)
	name := strings.TrimPrefix(f.site, "/sites/")
	body := `{"postpone":{"count":2,"delay":"5ms","reason":"JobInQueue:DBMaint","jobs":1},"slowItem":3,"fatal":{"count":1,"errorCode":"-1","message":"m"}}`
	resp, err := f.http.Post(f.e.URL()+"/_emulator/sites/"+name+"/faults", "application/json", strings.NewReader(body))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", err, resp)
	}
	resp.Body.Close()
	got := f.e.Faults(f.site)
	if got.Postpone == nil || time.Duration(got.Postpone.Delay) != 5*time.Millisecond || got.Postpone.Jobs != 1 ||
		time.Duration(got.SlowItem) != 3*time.Millisecond || got.Fatal == nil || got.Fatal.Message != "m" {
		t.Fatalf("faults %+v", got)
	}
	b, _ := json.Marshal(got)
	if !strings.Contains(string(b), `"slowItem":"3ms"`) {
		t.Fatalf("faults JSON %s", b)
	}
}

func TestStartTestHelper(t *testing.T) {
	e := StartTest(t, Options{})
	req, _ := http.NewRequest(http.MethodPost, e.SiteURL("helper")+"/_api/site/ProvisionMigrationContainers", nil)
	req.Header.Set("Authorization", "Bearer x")
	req.Header.Set("Accept", acceptNoMeta)
	resp, err := e.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c containers
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || resp.StatusCode != 200 || !strings.Contains(c.DataContainerUri, "spr=https") {
		t.Fatalf("%d %+v %v", resp.StatusCode, c, err)
	}
}

package spo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestCalls drives every method against a fake SharePoint, checking the request and decoding the answer
// in each OData flavour.
func TestCalls(t *testing.T) {
	containers := Containers{DataContainerURI: testData, MetadataContainerURI: testMeta, EncryptionKey: testKey}
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	containerProps := `"DataContainerUri":` + q(testData) + `,"MetadataContainerUri":` + q(testMeta) + `,"EncryptionKey":` + q(testKeyB64)
	events := []string{
		`{"Event":"JobQueued","JobId":"` + testJobID + `","Time":"05/20/2025 09:18:48.132","TotalRetryCount":"0"}`,
		`{"Event":"JobEnd","JobId":"` + testJobID + `","TotalErrors":"0","ObjectsStatsByType":"{\"SPFile\":{\"Count\":1}}"}`,
	}
	logsArray := "[" + q(events[0]) + "," + q(events[1]) + "]"
	wantProgress := Progress{Events: []json.RawMessage{json.RawMessage(events[0]), json.RawMessage(events[1])}, NextToken: "1764"}
	createReq := CreateJobRequest{WebID: testWebID, DataContainerURI: testData, MetadataContainerURI: testMeta, QueueURI: testQueue, Key: testKey}
	createBody := `{"gWebId":"` + testWebID + `","azureContainerSourceUri":` + q(testData) + `,"azureContainerManifestUri":` + q(testMeta) +
		`,"azureQueueReportUri":` + q(testQueue) + `,"options":{"AES256CBCKey":"` + testKeyB64 + `"}}`
	createNoQueue := createReq
	createNoQueue.QueueURI = ""
	createNoQueueBody := `{"gWebId":"` + testWebID + `","azureContainerSourceUri":` + q(testData) + `,"azureContainerManifestUri":` + q(testMeta) +
		`,"options":{"AES256CBCKey":"` + testKeyB64 + `"}}`
	idBody := `{"id":"` + testJobID + `"}`

	type call func(ctx context.Context, c *Client, site string) (any, error)
	tests := []struct {
		desc    string
		call    call
		verb    string
		uri     string // below the site
		body    string // "" for none
		answers map[string]string
		want    any
	}{
		{
			desc: "ProvisionMigrationContainers",
			call: func(ctx context.Context, c *Client, site string) (any, error) {
				return c.ProvisionMigrationContainers(ctx, site)
			},
			verb: "POST", uri: "/_api/site/ProvisionMigrationContainers", body: `{}`,
			answers: map[string]string{
				"nometadata":      `{` + containerProps + `}`,
				"minimalmetadata": `{"@odata.context":"https://x/_api/$metadata#SP.ProvisionedMigrationContainersInfo",` + containerProps + `}`,
				"odata.metadata":  `{"odata.metadata":"https://x/_api/$metadata#SP.ProvisionedMigrationContainersInfo",` + containerProps + `}`,
				"verbose":         `{"d":{"ProvisionMigrationContainers":{"__metadata":{"type":"SP.ProvisionedMigrationContainersInfo"},` + containerProps + `}}}`,
				"verbose props":   `{"d":{"__metadata":{"type":"SP.ProvisionedMigrationContainersInfo"},` + containerProps + `}}`,
				"csom binary": `{"DataContainerUri":` + q(testData) + `,"MetadataContainerUri":` + q(testMeta) +
					`,"EncryptionKey":"\/Base64Binary(` + testKeyB64 + `)\/"}`,
			},
			want: containers,
		},
		{
			desc: "ProvisionMigrationQueue",
			call: func(ctx context.Context, c *Client, site string) (any, error) {
				return c.ProvisionMigrationQueue(ctx, site)
			},
			verb: "POST", uri: "/_api/site/ProvisionMigrationQueue", body: `{}`,
			answers: map[string]string{
				"nometadata":      `{"JobQueueUri":` + q(testQueue) + `}`,
				"minimalmetadata": `{"@odata.context":"https://x/_api/$metadata#SP.ProvisionedMigrationQueueInfo","JobQueueUri":` + q(testQueue) + `}`,
				"verbose":         `{"d":{"ProvisionMigrationQueue":{"__metadata":{"type":"SP.ProvisionedMigrationQueueInfo"},"JobQueueUri":` + q(testQueue) + `}}}`,
			},
			want: Queue{JobQueueURI: testQueue},
		},
		{
			desc: "CreateMigrationJobEncrypted",
			call: func(ctx context.Context, c *Client, site string) (any, error) {
				return c.CreateMigrationJobEncrypted(ctx, site, createReq)
			},
			verb: "POST", uri: "/_api/site/CreateMigrationJobEncrypted", body: createBody,
			answers: map[string]string{
				"nometadata":      `{"value":"` + testJobID + `"}`,
				"minimalmetadata": `{"@odata.context":"https://x/_api/$metadata#Edm.Guid","value":"` + testJobID + `"}`,
				"verbose":         `{"d":{"CreateMigrationJobEncrypted":"` + testJobID + `"}}`,
				"csom guid":       `{"value":"\/Guid(` + testJobID + `)\/"}`,
				"braced upper":    `{"value":"{` + strings.ToUpper(testJobID) + `}"}`,
			},
			want: testJobID,
		},
		{
			desc: "CreateMigrationJobEncrypted without queue",
			call: func(ctx context.Context, c *Client, site string) (any, error) {
				return c.CreateMigrationJobEncrypted(ctx, site, createNoQueue)
			},
			verb: "POST", uri: "/_api/site/CreateMigrationJobEncrypted", body: createNoQueueBody,
			answers: map[string]string{"nometadata": `{"value":"` + testJobID + `"}`},
			want:    testJobID,
		},
		{
			desc: "GetMigrationJobStatus",
			call: func(ctx context.Context, c *Client, site string) (any, error) {
				return c.GetMigrationJobStatus(ctx, site, testJobID)
			},
			verb: "POST", uri: "/_api/site/GetMigrationJobStatus", body: idBody,
			answers: map[string]string{
				"nometadata":      `{"value":2}`,
				"minimalmetadata": `{"@odata.context":"https://x/_api/$metadata#Edm.Int32","value":2}`,
				"verbose":         `{"d":{"GetMigrationJobStatus":2}}`,
				"verbose string":  `{"d":{"GetMigrationJobStatus":"2"}}`,
				"enum name":       `{"value":"Queued"}`,
			},
			want: JobStateQueued,
		},
		{
			desc: "GetMigrationJobProgress",
			call: func(ctx context.Context, c *Client, site string) (any, error) {
				return c.GetMigrationJobProgress(ctx, site, strings.ToUpper(testJobID), "")
			},
			verb: "GET", uri: "/_api/site/GetMigrationJobProgress(jobId='" + testJobID + "',nextToken=0)",
			answers: map[string]string{
				"nometadata":      `{"Logs":` + logsArray + `,"NextToken":"1764"}`,
				"minimalmetadata": `{"@odata.context":"https://x/_api/$metadata#SP.MigrationJobProgress","Logs@odata.type":"#Collection(String)","Logs":` + logsArray + `,"NextToken":"1764"}`,
				"verbose": `{"d":{"GetMigrationJobProgress":{"Logs":{"__metadata":{"type":"Collection(Edm.String)"},"results":` + logsArray +
					`},"NextToken":"1764","__metadata":{"type":"SP.MigrationJobProgress"}}}}`,
				"numeric token": `{"Logs":` + logsArray + `,"NextToken":1764}`,
			},
			want: wantProgress,
		},
		{
			desc: "DeleteMigrationJob",
			call: func(ctx context.Context, c *Client, site string) (any, error) {
				return c.DeleteMigrationJob(ctx, site, testJobID)
			},
			verb: "POST", uri: "/_api/site/DeleteMigrationJob", body: idBody,
			answers: map[string]string{
				"nometadata":      `{"value":true}`,
				"minimalmetadata": `{"@odata.context":"https://x/_api/$metadata#Edm.Boolean","value":true}`,
				"verbose":         `{"d":{"DeleteMigrationJob":true}}`,
			},
			want: true,
		},
		{
			desc: "WebID",
			call: func(ctx context.Context, c *Client, site string) (any, error) { return c.WebID(ctx, site) },
			verb: "GET", uri: "/_api/web?$select=Id",
			answers: map[string]string{
				"nometadata":      `{"Id":"` + testWebID + `"}`,
				"minimalmetadata": `{"@odata.context":"https://x/_api/$metadata#SP.ApiData.Webs/@Element&$select=Id","@odata.type":"#SP.Web","Id":"` + testWebID + `"}`,
				"verbose":         `{"d":{"__metadata":{"id":"https://x/_api/Web","type":"SP.Web"},"Id":"` + testWebID + `"}}`,
			},
			want: testWebID,
		},
	}
	for _, tt := range tests {
		for flavour, answer := range tt.answers {
			t.Run(tt.desc+"/"+flavour, func(t *testing.T) {
				f := newFakeSPO(t, ok(answer))
				c, sl, cred := newTestClient(t, f)
				got, err := tt.call(t.Context(), c, f.site())
				if err != nil {
					t.Fatalf("call: %v", err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("got %#v, want %#v", got, tt.want)
				}
				reqs := f.requests()
				if len(reqs) != 1 {
					t.Fatalf("server saw %d requests, want 1", len(reqs))
				}
				r := reqs[0]
				if r.Method != tt.verb {
					t.Errorf("method = %s, want %s", r.Method, tt.verb)
				}
				if want := "/sites/x" + tt.uri; r.URI != want {
					t.Errorf("URI = %s, want %s", r.URI, want)
				}
				wantHeaders := map[string]string{
					"User-Agent":    "NONISV|Contoso|spomig/1.2.3",
					"Authorization": "Bearer " + testToken,
					"Accept":        "application/json;odata=nometadata",
				}
				if tt.body != "" {
					wantHeaders["Content-Type"] = "application/json;odata=nometadata"
				}
				for k, v := range wantHeaders {
					if got := r.Header.Get(k); got != v {
						t.Errorf("%s = %q, want %q", k, got, v)
					}
				}
				if tt.body == "" {
					if len(r.Body) != 0 {
						t.Errorf("body = %q, want none", r.Body)
					}
				} else {
					jsonEqual(t, r.Body, tt.body)
				}
				if len(sl.recorded()) != 0 {
					t.Errorf("waits = %v, want none", sl.recorded())
				}
				if want := [][]string{{"https://" + f.host() + "/.default"}}; !reflect.DeepEqual(cred.scopes, want) {
					t.Errorf("scopes = %v, want %v", cred.scopes, want)
				}
			})
		}
	}
}

func TestProgressTokens(t *testing.T) {
	tests := []struct {
		token, want string
	}{
		{"", "nextToken=0"},
		{"0", "nextToken=0"},
		{"1764", "nextToken=1764"},
		{"abc", "nextToken='abc'"},
		{"a'b c/é", "nextToken='a''b%20c%2F%C3%A9'"},
	}
	for _, tt := range tests {
		t.Run(tt.token, func(t *testing.T) {
			f := newFakeSPO(t, ok(`{"Logs":[],"NextToken":"`+tt.token+`"}`))
			c, _, _ := newTestClient(t, f)
			p, err := c.GetMigrationJobProgress(t.Context(), f.site(), testJobID, tt.token)
			if err != nil {
				t.Fatal(err)
			}
			if p.NextToken != tt.token || len(p.Events) != 0 {
				t.Errorf("progress = %+v", p)
			}
			want := "/sites/x/_api/site/GetMigrationJobProgress(jobId='" + testJobID + "'," + tt.want + ")"
			if got := f.requests()[0].URI; got != want {
				t.Errorf("URI = %s, want %s", got, want)
			}
		})
	}
}

// TestSitePathEscaping checks that a site path with escapes survives into the request.
func TestSitePathEscaping(t *testing.T) {
	f := newFakeSPO(t, ok(`{"value":0}`))
	c, _, _ := newTestClient(t, f)
	state, err := c.GetMigrationJobStatus(t.Context(), f.srv.URL+"/sites/my%20site/", testJobID)
	if err != nil {
		t.Fatal(err)
	}
	if state != JobStateNone {
		t.Errorf("state = %v", state)
	}
	if got, want := f.requests()[0].URI, "/sites/my%20site/_api/site/GetMigrationJobStatus"; got != want {
		t.Errorf("URI = %s, want %s", got, want)
	}
}

// TestAnswerRefusals checks answers SharePoint might send that we refuse to hand on.
func TestAnswerRefusals(t *testing.T) {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	evil := "https://evil.example.com/c?sv=1&sig=" + testSig
	shortKey := "AAECAwQFBgcICQoLDA0ODw=="
	tests := []struct {
		desc   string
		answer string
		call   func(ctx context.Context, c *Client, site string) error
		want   error
	}{
		{"data container on a foreign host", `{"DataContainerUri":` + q(evil) + `,"MetadataContainerUri":` + q(testMeta) + `,"EncryptionKey":"` + testKeyB64 + `"}`,
			provision, ErrStorageHostNotAllowed},
		{"metadata container over http", `{"DataContainerUri":` + q(testData) + `,"MetadataContainerUri":` + q(strings.Replace(testMeta, "https", "http", 1)) + `,"EncryptionKey":"` + testKeyB64 + `"}`,
			provision, ErrStorageHostNotAllowed},
		{"same container twice", `{"DataContainerUri":` + q(testData) + `,"MetadataContainerUri":` + q(testData) + `,"EncryptionKey":"` + testKeyB64 + `"}`,
			provision, ErrSameContainer},
		{"16-byte key", `{"DataContainerUri":` + q(testData) + `,"MetadataContainerUri":` + q(testMeta) + `,"EncryptionKey":"` + shortKey + `"}`,
			provision, ErrBadKey},
		{"key not base64", `{"DataContainerUri":` + q(testData) + `,"MetadataContainerUri":` + q(testMeta) + `,"EncryptionKey":"!!` + testKeyB64 + `"}`,
			provision, ErrBadKey},
		{"no key", `{"DataContainerUri":` + q(testData) + `,"MetadataContainerUri":` + q(testMeta) + `}`, provision, ErrBadKey},
		{"no data container", `{"MetadataContainerUri":` + q(testMeta) + `,"EncryptionKey":"` + testKeyB64 + `"}`, provision, ErrBadAnswer},
		{"provision answer not JSON", `<html>oops</html>`, provision, ErrBadAnswer},
		{"provision answer an array", `[1,2]`, provision, ErrBadAnswer},
		{"queue on a blob host", `{"JobQueueUri":` + q(testData) + `}`,
			func(ctx context.Context, c *Client, site string) error {
				_, err := c.ProvisionMigrationQueue(ctx, site)
				return err
			},
			ErrStorageHostNotAllowed},
		{"job id null", `{"value":null}`, create, ErrJobNotCreated},
		{"verbose job id null", `{"d":{"CreateMigrationJobEncrypted":null}}`, create, ErrJobNotCreated},
		{"job id empty GUID", `{"value":"00000000-0000-0000-0000-000000000000"}`, create, ErrJobNotCreated},
		{"job id not a GUID", `{"value":"nope"}`, create, ErrBadAnswer},
		{"status not a number", `{"value":"later"}`,
			func(ctx context.Context, c *Client, site string) error {
				_, err := c.GetMigrationJobStatus(ctx, site, testJobID)
				return err
			}, ErrBadAnswer},
		{"progress without NextToken", `{"Logs":[]}`,
			func(ctx context.Context, c *Client, site string) error {
				_, err := c.GetMigrationJobProgress(ctx, site, testJobID, "")
				return err
			}, ErrBadAnswer},
		{"web id not a GUID", `{"Id":"root"}`,
			func(ctx context.Context, c *Client, site string) error { _, err := c.WebID(ctx, site); return err },
			ErrBadAnswer},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			f := newFakeSPO(t, ok(tt.answer))
			c, _, _ := newTestClient(t, f)
			err := tt.call(t.Context(), c, f.site())
			wantIs(t, err, tt.want)
			if n := len(f.requests()); n != 1 {
				t.Errorf("server saw %d requests, want 1", n)
			}
			for _, secret := range []string{testSig, testKeyB64, shortKey, testToken} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q holds a secret", err)
				}
			}
		})
	}
}

func provision(ctx context.Context, c *Client, site string) error {
	_, err := c.ProvisionMigrationContainers(ctx, site)
	return err
}

func create(ctx context.Context, c *Client, site string) error {
	_, err := c.CreateMigrationJobEncrypted(ctx, site, CreateJobRequest{
		WebID: testWebID, DataContainerURI: testData, MetadataContainerURI: testMeta, Key: testKey,
	})
	return err
}

// TestRefusedBeforeSending checks that every refusal happens before a request is sent.
func TestRefusedBeforeSending(t *testing.T) {
	f := newFakeSPO(t, ok(`{}`))
	host := f.host()
	good := CreateJobRequest{WebID: testWebID, DataContainerURI: testData, MetadataContainerURI: testMeta, QueueURI: testQueue, Key: testKey}
	with := func(mod func(*CreateJobRequest)) CreateJobRequest { r := good; mod(&r); return r }
	createWith := func(r CreateJobRequest) func(context.Context, *Client, string) error {
		return func(ctx context.Context, c *Client, site string) error {
			_, err := c.CreateMigrationJobEncrypted(ctx, site, r)
			return err
		}
	}
	status := func(id string) func(context.Context, *Client, string) error {
		return func(ctx context.Context, c *Client, site string) error {
			_, err := c.GetMigrationJobStatus(ctx, site, id)
			return err
		}
	}
	tests := []struct {
		desc   string
		site   string
		call   func(ctx context.Context, c *Client, site string) error
		want   error
		secret string // must not appear in the error
	}{
		{"host not allowed", "https://evil.example.com/sites/x", provision, ErrSiteNotAllowed, ""},
		{"host suffix trick", "https://" + host + ".evil.example.com/sites/x", provision, ErrSiteNotAllowed, ""},
		{"http site", "http://" + host + "/sites/x", provision, ErrSiteNotHTTPS, ""},
		{"no scheme", "//" + host + "/sites/x", provision, ErrSiteNotHTTPS, ""},
		{"host:port without scheme", host + "/sites/x", provision, ErrSiteNotAllowed, ""},
		{"user info", "https://admin:hunter2@" + host + "/sites/x", provision, ErrSiteNotAllowed, "hunter2"},
		{"query", "https://" + host + "/sites/x?sig=" + testSig, provision, ErrSiteNotAllowed, testSig},
		{"fragment", "https://" + host + "/sites/x#frag", provision, ErrSiteNotAllowed, ""},
		{"api path", "https://" + host + "/sites/x/_api/web", provision, ErrSiteNotAllowed, ""},
		{"dot dot", "https://" + host + "/sites/x/../y", provision, ErrSiteNotAllowed, ""},
		{"unparsable", "https://" + host + "/sites/%zz", provision, ErrSiteNotAllowed, ""},
		{"job id not a GUID", f.site(), status("42"), ErrBadID, ""},
		{"job id with a quote", f.site(), func(ctx context.Context, c *Client, site string) error {
			_, err := c.GetMigrationJobProgress(ctx, site, "x',nextToken=0)", "")
			return err
		}, ErrBadID, ""},
		{"delete with bad id", f.site(), func(ctx context.Context, c *Client, site string) error {
			_, err := c.DeleteMigrationJob(ctx, site, "")
			return err
		}, ErrBadID, ""},
		{"web id not a GUID", f.site(), createWith(with(func(r *CreateJobRequest) { r.WebID = "root" })), ErrBadID, ""},
		{"data container on a foreign host", f.site(), createWith(with(func(r *CreateJobRequest) {
			r.DataContainerURI = "https://evil.example.com/c?sig=" + testSig
		})), ErrStorageHostNotAllowed, testSig},
		{"data container over http", f.site(), createWith(with(func(r *CreateJobRequest) {
			r.DataContainerURI = strings.Replace(testData, "https:", "http:", 1)
		})), ErrStorageHostNotAllowed, testSig},
		{"metadata container on a queue host", f.site(), createWith(with(func(r *CreateJobRequest) { r.MetadataContainerURI = testQueue })),
			ErrStorageHostNotAllowed, testSig},
		{"queue on a blob host", f.site(), createWith(with(func(r *CreateJobRequest) { r.QueueURI = testData })), ErrStorageHostNotAllowed, testSig},
		{"same container", f.site(), createWith(with(func(r *CreateJobRequest) {
			r.MetadataContainerURI = strings.Replace(testData, ".net/", ".net:443/", 1)
		})), ErrSameContainer, testSig},
		{"16-byte key", f.site(), createWith(with(func(r *CreateJobRequest) { r.Key = testKey[:16] })), ErrBadKey, ""},
		{"no key", f.site(), createWith(with(func(r *CreateJobRequest) { r.Key = nil })), ErrBadKey, ""},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			c, _, cred := newTestClient(t, f)
			err := tt.call(t.Context(), c, tt.site)
			wantIs(t, err, tt.want)
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("error %q holds a secret", err)
			}
			if strings.Contains(err.Error(), testKeyB64) {
				t.Errorf("error %q holds the key", err)
			}
			if n := len(f.requests()); n != 0 {
				t.Errorf("server saw %d requests, want 0", n)
			}
			if n := cred.calls.Load(); n != 0 {
				t.Errorf("credential asked %d times, want 0", n)
			}
		})
	}
}

// TestNoRedirects checks that a redirect is reported, not followed (the body may hold the key).
func TestNoRedirects(t *testing.T) {
	target := newFakeSPO(t, ok(`{"value":"`+testJobID+`"}`))
	f := newFakeSPO(t, reply{status: http.StatusTemporaryRedirect, header: map[string]string{"Location": target.site() + "/_api/site/CreateMigrationJobEncrypted"}})
	c, _, _ := newTestClient(t, f)
	err := create(t.Context(), c, f.site())
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("err = %v, want *Error 307", err)
	}
	if n := len(target.requests()); n != 0 {
		t.Errorf("redirect target saw %d requests", n)
	}
}

func TestJobStateString(t *testing.T) {
	for s, want := range map[JobState]string{JobStateNone: "None", JobStateQueued: "Queued", JobStateProcessing: "Processing", 3: "JobState(3)"} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(s), got, want)
		}
	}
}

// TestSecretTypesRedact checks the String/GoString/LogValue of the types that hold secrets.
func TestSecretTypesRedact(t *testing.T) {
	values := []any{
		Containers{DataContainerURI: testData, MetadataContainerURI: testMeta, EncryptionKey: testKey},
		Queue{JobQueueURI: testQueue},
		CreateJobRequest{WebID: testWebID, DataContainerURI: testData, MetadataContainerURI: testMeta, QueueURI: testQueue, Key: testKey},
	}
	for _, v := range values {
		var buf bytes.Buffer
		for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
			fmt.Fprintf(&buf, format+"\n", v)
		}
		slog.New(slog.NewTextHandler(&buf, nil)).Info("value", "v", v)
		out := buf.String()
		if strings.Contains(out, testSig) || strings.Contains(out, testKeyB64) || strings.Contains(out, string(testKey)) {
			t.Errorf("%T leaks: %s", v, out)
		}
		if !strings.Contains(out, "sig=REDACTED") {
			t.Errorf("%T: no redacted URI in %s", v, out)
		}
	}
}

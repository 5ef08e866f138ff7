package spo

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestThrottling(t *testing.T) {
	now := time.Date(2025, 5, 20, 9, 0, 0, 0, time.UTC)
	throttle := func(status int, h map[string]string) reply { return reply{status: status, header: h} }
	ra := func(v string) map[string]string { return map[string]string{"Retry-After": v} }
	okStatus := ok(`{"value":4}`)
	tests := []struct {
		desc      string
		replies   []reply
		mod       func(*Options)
		waits     []time.Duration
		requests  int
		throttled time.Duration // RetryAfter of the expected *ThrottledError; 0: success expected
		status    int           // StatusCode of an expected *Error
		noRetry   bool          // the call's context is made by WithoutThrottleRetry
	}{
		{desc: "429 Retry-After 7", replies: []reply{throttle(429, ra("7")), okStatus}, waits: []time.Duration{7 * time.Second}, requests: 2},
		{desc: "503 Retry-After 3", replies: []reply{throttle(503, ra("3")), okStatus}, waits: []time.Duration{3 * time.Second}, requests: 2},
		{desc: "RateLimit-Reset larger", replies: []reply{throttle(429, map[string]string{"Retry-After": "5", "RateLimit-Reset": "12", "RateLimit-Limit": "100", "RateLimit-Remaining": "0"}), okStatus},
			waits: []time.Duration{12 * time.Second}, requests: 2},
		{desc: "Retry-After larger", replies: []reply{throttle(429, map[string]string{"Retry-After": "9", "RateLimit-Reset": "2"}), okStatus},
			waits: []time.Duration{9 * time.Second}, requests: 2},
		{desc: "503 without Retry-After", replies: []reply{throttle(503, nil), okStatus}, waits: []time.Duration{DefaultRetryAfter}, requests: 2},
		{desc: "Retry-After date", replies: []reply{throttle(429, ra(now.Add(20*time.Second).Format(http.TimeFormat))), okStatus},
			waits: []time.Duration{20 * time.Second}, requests: 2},
		{desc: "same wait each time, no back-off", replies: []reply{throttle(429, ra("4")), throttle(429, ra("4")), throttle(503, ra("4")), okStatus},
			waits: []time.Duration{4 * time.Second, 4 * time.Second, 4 * time.Second}, requests: 4},
		{desc: "500 not retried", replies: []reply{{status: 500, header: ra("1"), body: `{"error":{"code":"-1, X","message":{"value":"boom"}}}`}, okStatus},
			requests: 1, status: 500},
		{desc: "502 not retried", replies: []reply{{status: 502}, okStatus}, requests: 1, status: 502},
		{desc: "budget exhausted", replies: []reply{throttle(429, ra("7"))}, mod: func(o *Options) { o.RetryBudget = 10 * time.Second },
			waits: []time.Duration{7 * time.Second}, requests: 2, throttled: 7 * time.Second},
		{desc: "first wait beyond budget", replies: []reply{throttle(503, ra("300")), okStatus},
			requests: 1, throttled: 300 * time.Second},
		{desc: "budget exactly used", replies: []reply{throttle(429, ra("5")), throttle(429, ra("5")), okStatus}, mod: func(o *Options) { o.RetryBudget = 10 * time.Second },
			waits: []time.Duration{5 * time.Second, 5 * time.Second}, requests: 3},
		{desc: "retries exhausted", replies: []reply{throttle(429, ra("1"))}, mod: func(o *Options) { o.MaxRetries = 2 },
			waits: []time.Duration{time.Second, time.Second}, requests: 3, throttled: time.Second},
		{desc: "retries disabled", replies: []reply{throttle(429, ra("1")), okStatus}, mod: func(o *Options) { o.MaxRetries = -1 },
			requests: 1, throttled: time.Second},
		{desc: "waiting disabled", replies: []reply{throttle(429, ra("1")), okStatus}, mod: func(o *Options) { o.RetryBudget = -1 },
			requests: 1, throttled: time.Second},
		// WithoutThrottleRetry: one attempt, the wait the loop would have slept returned, no sleep.
		{desc: "without throttle retry: 429 Retry-After 7", replies: []reply{throttle(429, ra("7")), okStatus}, noRetry: true,
			requests: 1, throttled: 7 * time.Second},
		{desc: "without throttle retry: 503 without Retry-After", replies: []reply{throttle(503, nil), okStatus}, noRetry: true,
			requests: 1, throttled: DefaultRetryAfter},
		{desc: "without throttle retry: RateLimit-Reset larger", replies: []reply{throttle(429, map[string]string{"Retry-After": "5", "RateLimit-Reset": "12"}), okStatus},
			noRetry: true, requests: 1, throttled: 12 * time.Second},
		{desc: "without throttle retry: Retry-After date", replies: []reply{throttle(429, ra(now.Add(20*time.Second).Format(http.TimeFormat))), okStatus},
			noRetry: true, requests: 1, throttled: 20 * time.Second},
		{desc: "without throttle retry: beyond the budget", replies: []reply{throttle(503, ra("300")), okStatus}, noRetry: true,
			requests: 1, throttled: 300 * time.Second},
		{desc: "without throttle retry: success", replies: []reply{okStatus}, noRetry: true, requests: 1},
		{desc: "without throttle retry: 500", replies: []reply{{status: 500, body: `{"error":{"code":"-1, X","message":{"value":"boom"}}}`}}, noRetry: true,
			requests: 1, status: 500},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			f := newFakeSPO(t, tt.replies...)
			c, sl, _ := newTestClient(t, f, func(o *Options) {
				o.Now = func() time.Time { return now }
				if tt.mod != nil {
					tt.mod(o)
				}
			})
			ctx := t.Context()
			if tt.noRetry {
				ctx = WithoutThrottleRetry(ctx)
			}
			state, err := c.GetMigrationJobStatus(ctx, f.site(), testJobID)
			switch {
			case tt.throttled != 0:
				var te *ThrottledError
				if !errors.As(err, &te) || !IsThrottled(err) {
					t.Fatalf("err = %v, want *ThrottledError", err)
				}
				if te.RetryAfter != tt.throttled || te.Method != "GetMigrationJobStatus" {
					t.Errorf("throttled = %+v, want RetryAfter %s", te, tt.throttled)
				}
			case tt.status != 0:
				var e *Error
				if !errors.As(err, &e) || e.StatusCode != tt.status {
					t.Fatalf("err = %v, want *Error %d", err, tt.status)
				}
			default:
				if err != nil || state != JobStateProcessing {
					t.Fatalf("state, err = %v, %v", state, err)
				}
			}
			if got := sl.recorded(); !reflect.DeepEqual(got, tt.waits) && (len(got) != 0 || len(tt.waits) != 0) {
				t.Errorf("waits = %v, want %v", got, tt.waits)
			}
			reqs := f.requests()
			if len(reqs) != tt.requests {
				t.Fatalf("server saw %d requests, want %d", len(reqs), tt.requests)
			}
			for i, r := range reqs {
				if string(r.Body) != `{"id":"`+testJobID+`"}` {
					t.Errorf("request %d body = %q: not re-sent", i, r.Body)
				}
			}
		})
	}
}

// TestThrottlingResendsCreateBody checks the key-bearing body is re-sent whole on retry.
func TestThrottlingResendsCreateBody(t *testing.T) {
	f := newFakeSPO(t, reply{status: 429, header: map[string]string{"Retry-After": "2"}}, ok(`{"value":"`+testJobID+`"}`))
	c, sl, _ := newTestClient(t, f)
	if err := create(t.Context(), c, f.site()); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	if len(reqs) != 2 || !bytes.Equal(reqs[0].Body, reqs[1].Body) || len(reqs[1].Body) == 0 {
		t.Fatalf("requests = %d, bodies differ or empty", len(reqs))
	}
	if got := sl.recorded(); !reflect.DeepEqual(got, []time.Duration{2 * time.Second}) {
		t.Errorf("waits = %v", got)
	}
}

// WithoutThrottleRetry applies to CreateMigrationJobEncrypted too, and only to the calls of its context.
func TestWithoutThrottleRetryCreate(t *testing.T) {
	f := newFakeSPO(t, reply{status: 429, header: map[string]string{"Retry-After": "7"}}, ok(`{"value":"`+testJobID+`"}`))
	c, sl, _ := newTestClient(t, f)
	err := create(WithoutThrottleRetry(t.Context()), c, f.site())
	var te *ThrottledError
	if !errors.As(err, &te) || te.RetryAfter != 7*time.Second || te.StatusCode != 429 || te.Method != "CreateMigrationJobEncrypted" {
		t.Fatalf("err = %v, want *ThrottledError{429, 7s}", err)
	}
	if n := len(f.requests()); n != 1 {
		t.Fatalf("server saw %d requests, want 1", n)
	}
	if w := sl.recorded(); len(w) != 0 {
		t.Fatalf("waited %v", w)
	}
	// The next call, with an ordinary context, gets the job.
	if err := create(t.Context(), c, f.site()); err != nil {
		t.Fatal(err)
	}
	if n := len(f.requests()); n != 2 {
		t.Fatalf("server saw %d requests, want 2", n)
	}
}

func TestThrottlingContext(t *testing.T) {
	t.Run("cancelled during wait", func(t *testing.T) {
		f := newFakeSPO(t, reply{status: 429, header: map[string]string{"Retry-After": "7"}}, ok(`{"value":2}`))
		ctx, cancel := context.WithCancel(t.Context())
		c, sl, _ := newTestClient(t, f)
		sl.hook = func(ctx context.Context) error {
			cancel()
			<-ctx.Done()
			return ctx.Err()
		}
		_, err := c.GetMigrationJobStatus(ctx, f.site(), testJobID)
		if !errors.Is(err, context.Canceled) || IsThrottled(err) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if n := len(f.requests()); n != 1 {
			t.Errorf("server saw %d requests, want 1", n)
		}
	})
	t.Run("real sleep cancelled", func(t *testing.T) {
		f := newFakeSPO(t, reply{status: 503, header: map[string]string{"Retry-After": "3600"}}, ok(`{"value":2}`))
		ctx, cancel := context.WithCancel(t.Context())
		c, _, _ := newTestClient(t, f, func(o *Options) { o.Sleep = nil; o.RetryBudget = 2 * time.Hour })
		go func() {
			for len(f.requests()) == 0 {
				time.Sleep(time.Millisecond)
			}
			cancel()
		}()
		_, err := c.GetMigrationJobStatus(ctx, f.site(), testJobID)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
	t.Run("deadline shorter than the wait", func(t *testing.T) {
		f := newFakeSPO(t, reply{status: 429, header: map[string]string{"Retry-After": "7"}}, ok(`{"value":2}`))
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		c, sl, _ := newTestClient(t, f)
		f.replies[0].header["Retry-After"] = "120"
		_, err := c.GetMigrationJobStatus(ctx, f.site(), testJobID)
		var te *ThrottledError
		if !errors.As(err, &te) || te.RetryAfter != 120*time.Second {
			t.Fatalf("err = %v, want *ThrottledError after 120s", err)
		}
		if len(sl.recorded()) != 0 {
			t.Errorf("waited %v", sl.recorded())
		}
	})
}

func TestClassify(t *testing.T) {
	now := time.Date(2025, 5, 20, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		status int
		header map[string]string
		wait   time.Duration
		retry  bool
	}{
		{200, nil, 0, false},
		{500, map[string]string{"Retry-After": "1"}, 0, false},
		{504, map[string]string{"Retry-After": "1"}, 0, false},
		{401, nil, 0, false},
		{429, map[string]string{"Retry-After": "7"}, 7 * time.Second, true},
		{429, map[string]string{"Retry-After": " 7 "}, 7 * time.Second, true},
		{429, map[string]string{"Retry-After": "0"}, 0, true},
		{429, nil, DefaultRetryAfter, true},
		{503, map[string]string{"Retry-After": "soon"}, DefaultRetryAfter, true},
		{503, map[string]string{"Retry-After": "-3"}, DefaultRetryAfter, true},
		{503, map[string]string{"Retry-After": "+3"}, DefaultRetryAfter, true},
		{503, map[string]string{"Retry-After": "1.5"}, DefaultRetryAfter, true},
		{503, map[string]string{"Retry-After": "99999999999999999999999"}, maxRetryAfter, true},
		{503, map[string]string{"Retry-After": "86401"}, maxRetryAfter, true},
		{503, map[string]string{"RateLimit-Reset": "11"}, 11 * time.Second, true},
		{503, map[string]string{"Retry-After": "3", "RateLimit-Reset": "11"}, 11 * time.Second, true},
		{503, map[string]string{"Retry-After": "30", "RateLimit-Reset": "11"}, 30 * time.Second, true},
		{503, map[string]string{"Retry-After": "3", "RateLimit-Reset": "x"}, 3 * time.Second, true},
		{429, map[string]string{"Retry-After": now.Add(-time.Hour).Format(http.TimeFormat)}, 0, true},
		{429, map[string]string{"Retry-After": now.Add(90 * time.Second).Format(http.TimeFormat)}, 90 * time.Second, true},
	}
	for _, tt := range tests {
		h := http.Header{}
		for k, v := range tt.header {
			h.Set(k, v)
		}
		wait, retry := classify(tt.status, h, now)
		if wait != tt.wait || retry != tt.retry {
			t.Errorf("classify(%d, %v) = %s, %v; want %s, %v", tt.status, tt.header, wait, retry, tt.wait, tt.retry)
		}
	}
}

func TestTokenCache(t *testing.T) {
	f := newFakeSPO(t, ok(`{"value":2}`))
	now := time.Date(2025, 5, 20, 9, 0, 0, 0, time.UTC)
	c, _, cred := newTestClient(t, f, func(o *Options) { o.Now = func() time.Time { return now } })
	cred.expires = now.Add(time.Hour)
	status := func() error {
		_, err := c.GetMigrationJobStatus(t.Context(), f.site(), testJobID)
		return err
	}
	for range 3 {
		if err := status(); err != nil {
			t.Fatal(err)
		}
	}
	if n := cred.calls.Load(); n != 1 {
		t.Errorf("GetToken called %d times, want 1 (cached)", n)
	}
	now = now.Add(56 * time.Minute) // within the refresh skew
	if err := status(); err != nil {
		t.Fatal(err)
	}
	if n := cred.calls.Load(); n != 2 {
		t.Errorf("GetToken called %d times, want 2 (refreshed)", n)
	}
	if got, want := cred.scopes[0], []string{"https://" + f.host() + "/.default"}; !reflect.DeepEqual(got, want) {
		t.Errorf("scopes = %v, want %v", got, want)
	}

	t.Run("401 drops the token", func(t *testing.T) {
		f := newFakeSPO(t, reply{status: 401, body: `{"error_description":"Invalid issuer or signature."}`}, ok(`{"value":2}`))
		c, _, cred := newTestClient(t, f)
		_, err := c.GetMigrationJobStatus(t.Context(), f.site(), testJobID)
		var e *Error
		if !errors.As(err, &e) || e.StatusCode != 401 || e.Message != "Invalid issuer or signature." {
			t.Fatalf("err = %v", err)
		}
		if _, err := c.GetMigrationJobStatus(t.Context(), f.site(), testJobID); err != nil {
			t.Fatal(err)
		}
		if n := cred.calls.Load(); n != 2 {
			t.Errorf("GetToken called %d times, want 2", n)
		}
		if n := len(f.requests()); n != 2 {
			t.Errorf("server saw %d requests, want 2 (401 not retried)", n)
		}
	})
	t.Run("credential failure", func(t *testing.T) {
		f := newFakeSPO(t, ok(`{"value":2}`))
		c, _, cred := newTestClient(t, f)
		cred.err = errors.New("no certificate")
		_, err := c.GetMigrationJobStatus(t.Context(), f.site(), testJobID)
		if err == nil || !strings.Contains(err.Error(), "no certificate") {
			t.Fatalf("err = %v", err)
		}
		if n := len(f.requests()); n != 0 {
			t.Errorf("server saw %d requests, want 0", n)
		}
	})
}

func TestNew(t *testing.T) {
	cred := &staticCredential{token: testToken}
	tests := []struct {
		desc string
		opts Options
		ok   bool
	}{
		{"minimal", Options{Credential: cred, TenantHost: "contoso.sharepoint.com"}, true},
		{"dev host", Options{Credential: cred, TenantHost: "127.0.0.1:8443", AllowedStorageHosts: []string{"127.0.0.1:10000"}}, true},
		{"no credential", Options{TenantHost: "contoso.sharepoint.com"}, false},
		{"no tenant", Options{Credential: cred}, false},
		{"tenant with scheme", Options{Credential: cred, TenantHost: "https://contoso.sharepoint.com"}, false},
		{"tenant with path", Options{Credential: cred, TenantHost: "contoso.sharepoint.com/sites/x"}, false},
		{"bad allowed site host", Options{Credential: cred, TenantHost: "contoso.sharepoint.com", AllowedSiteHosts: []string{"a b"}}, false},
		{"bad storage host", Options{Credential: cred, TenantHost: "contoso.sharepoint.com", AllowedStorageHosts: []string{"http://x"}}, false},
		{"pipe in organisation", Options{Credential: cred, TenantHost: "contoso.sharepoint.com", Organisation: "a|b"}, false},
		{"newline in version", Options{Credential: cred, TenantHost: "contoso.sharepoint.com", Version: "1\n2"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := New(tt.opts)
			if (err == nil) != tt.ok {
				t.Errorf("New err = %v, want ok %v", err, tt.ok)
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		o := Options{TenantHost: "Contoso.SharePoint.com:443"}
		o.setDefaults()
		if o.Organisation != "spomig" || o.Version != "dev" || o.RetryBudget != 2*time.Minute || o.MaxRetries != 10 ||
			o.HTTPClient == nil || o.Logger == nil || o.Sleep == nil || o.Now == nil ||
			!reflect.DeepEqual(o.AllowedSiteHosts, []string{"Contoso.SharePoint.com:443"}) {
			t.Errorf("defaults = %+v", o)
		}
		c, err := New(Options{Credential: cred, TenantHost: "Contoso.SharePoint.com:443"})
		if err != nil {
			t.Fatal(err)
		}
		if c.userAgent != "NONISV|spomig|spomig/dev" || !c.siteHosts["contoso.sharepoint.com"] {
			t.Errorf("client = %+v", c)
		}
	})
}

// TestLogsHoldNoSecrets runs a whole flow, with throttling and an error, and searches the debug log and
// the errors for the key, the token and SAS signatures.
func TestLogsHoldNoSecrets(t *testing.T) {
	q := func(s string) string { return strings.ReplaceAll(s, `"`, `\"`) }
	f := newFakeSPO(t)
	f.replies = nil
	var buf bytes.Buffer
	c, _, _ := newTestClient(t, f, func(o *Options) {
		o.Logger = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ctx := t.Context()
	var errs []error
	script := func(replies ...reply) { f.mu.Lock(); f.reqs = nil; f.replies = replies; f.mu.Unlock() }

	script(reply{status: 429, header: map[string]string{"Retry-After": "1"}},
		ok(`{"DataContainerUri":"`+q(testData)+`","MetadataContainerUri":"`+q(testMeta)+`","EncryptionKey":"`+testKeyB64+`"}`))
	cont, err := c.ProvisionMigrationContainers(ctx, f.site())
	if err != nil {
		t.Fatal(err)
	}
	script(ok(`{"JobQueueUri":"` + q(testQueue) + `"}`))
	queue, err := c.ProvisionMigrationQueue(ctx, f.site())
	if err != nil {
		t.Fatal(err)
	}
	script(reply{status: 503}, ok(`{"value":"`+testJobID+`"}`))
	if _, err := c.CreateMigrationJobEncrypted(ctx, f.site(), CreateJobRequest{WebID: testWebID, DataContainerURI: cont.DataContainerURI,
		MetadataContainerURI: cont.MetadataContainerURI, QueueURI: queue.JobQueueURI, Key: cont.EncryptionKey}); err != nil {
		t.Fatal(err)
	}
	script(reply{status: 400, body: `{"error":{"code":"-1, X","message":{"value":"cannot connect the Queue ` + testQueue + `"}}}`})
	_, err = c.GetMigrationJobProgress(ctx, f.site(), testJobID, "")
	errs = append(errs, err)
	script(reply{status: 400, body: `{"error":{"code":"-1, X","message":{"value":"bad key ` + testKeyB64 + ` for ` + testQueue + `"}}}`})
	_, err = c.CreateMigrationJobEncrypted(ctx, f.site(), CreateJobRequest{WebID: testWebID, DataContainerURI: testData,
		MetadataContainerURI: testMeta, QueueURI: testQueue, Key: testKey})
	errs = append(errs, err)
	script(ok(`{"DataContainerUri":"https://evil.example.com/c?sig=` + testSig + `","MetadataContainerUri":"` + q(testMeta) + `","EncryptionKey":"` + testKeyB64 + `"}`))
	_, err = c.ProvisionMigrationContainers(ctx, f.site())
	errs = append(errs, err)
	script(ok(`{"DataContainerUri":"` + q(testData) + `","MetadataContainerUri":"` + q(testMeta) + `","EncryptionKey":"` + testKeyB64[:20] + `"}`))
	_, err = c.ProvisionMigrationContainers(ctx, f.site())
	errs = append(errs, err)
	script(reply{status: 429, header: map[string]string{"Retry-After": "600"}})
	_, err = c.ProvisionMigrationQueue(ctx, f.site())
	errs = append(errs, err)
	_, err = c.CreateMigrationJobEncrypted(ctx, f.site(), CreateJobRequest{WebID: testWebID, DataContainerURI: testData,
		MetadataContainerURI: "http://evil/c?sig=" + testSig, Key: testKey})
	errs = append(errs, err)

	logs := buf.String()
	for _, want := range []string{`"op":"ProvisionMigrationContainers"`, `"method":"POST"`, `"host":"` + f.host() + `"`,
		`"path":"/sites/x/_api/site/ProvisionMigrationContainers"`, `"status":429`, `"attempt":2`, `"waited":1000000000`, "sig=REDACTED"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
	var texts []string
	for _, err := range errs {
		if err == nil {
			t.Fatal("expected an error")
		}
		texts = append(texts, err.Error())
	}
	texts = append(texts, logs)
	for _, text := range texts {
		for _, secret := range []string{testToken, testKeyB64, testKeyB64[:20], testSig, string(testKey)} {
			if strings.Contains(text, secret) {
				t.Errorf("secret %q found in %s", secret, text)
			}
		}
		for rest := strings.ToLower(text); ; {
			i := strings.Index(rest, "sig=")
			if i < 0 {
				break
			}
			if !strings.HasPrefix(rest[i+4:], "redacted") {
				t.Errorf("unredacted sig= in %s", text)
			}
			rest = rest[i+4:]
		}
	}
}

package spo

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Secrets the tests look for in logs and errors.
const (
	testToken = "eyTEST-TOKEN-SECRET"
	testSig   = "SIGSECRETabc%2Bdef%3D"
	testWebID = "2f1a3b4c-5d6e-4f70-8192-a3b4c5d6e7f8"
	testJobID = "9e8d7c6b-5a49-4837-a625-140f1e2d3c4b"
)

var (
	testKey    = bytes.Repeat([]byte{0xA5, 0x5A, 0x3C, 0xC3}, 8) // 32 bytes
	testKeyB64 = base64.StdEncoding.EncodeToString(testKey)
	testData   = "https://spoprovwus2.blob.core.windows.net/0-1623-20230512-data?sv=2018-03-28&sr=c&sig=" + testSig + "&st=2023-05-08T00%3A00%3A00Z&se=2023-05-12T00%3A00%3A00Z&sp=rw&spr=https"
	testMeta   = "https://spoprovwus2.blob.core.windows.net:443/0-1623-20230512-meta?sv=2018-03-28&sr=c&sig=" + testSig + "&sp=rw&spr=https"
	testQueue  = "https://spoprovwus2.queue.core.windows.net/0-1623-queue?sv=2018-03-28&sig=" + testSig + "&sp=rap"
)

// staticCredential is a TokenCredential handing out a fixed token.
type staticCredential struct {
	token   string
	expires time.Time
	err     error
	calls   atomic.Int32

	mu     sync.Mutex
	scopes [][]string
}

var _ azcore.TokenCredential = (*staticCredential)(nil)

func (c *staticCredential) GetToken(_ context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.calls.Add(1)
	c.mu.Lock()
	c.scopes = append(c.scopes, opts.Scopes)
	c.mu.Unlock()
	if c.err != nil {
		return azcore.AccessToken{}, c.err
	}
	exp := c.expires
	if exp.IsZero() {
		exp = time.Now().Add(time.Hour)
	}
	return azcore.AccessToken{Token: c.token, ExpiresOn: exp}, nil
}

// fakeSleep records the waits instead of sleeping.
type fakeSleep struct {
	mu    sync.Mutex
	waits []time.Duration
	hook  func(ctx context.Context) error
}

func (s *fakeSleep) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.waits = append(s.waits, d)
	s.mu.Unlock()
	if s.hook != nil {
		return s.hook(ctx)
	}
	return ctx.Err()
}

func (s *fakeSleep) recorded() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.waits...)
}

// recorded is one request the fake SharePoint saw.
type recorded struct {
	Method string
	URI    string // request target as sent
	Header http.Header
	Body   []byte
}

// reply is one answer of the fake SharePoint.
type reply struct {
	status int
	header map[string]string
	body   string
}

// fakeSPO is an httptest TLS server answering with a script of replies (the last one repeats).
type fakeSPO struct {
	srv     *httptest.Server
	mu      sync.Mutex
	reqs    []recorded
	replies []reply
}

func newFakeSPO(t *testing.T, replies ...reply) *fakeSPO {
	t.Helper()
	f := &fakeSPO{replies: replies}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		n := len(f.reqs)
		f.reqs = append(f.reqs, recorded{Method: r.Method, URI: r.RequestURI, Header: r.Header.Clone(), Body: body})
		rep := reply{status: 500, body: `{"error":{"code":"-1, NoScript","message":{"lang":"en-US","value":"no reply scripted"}}}`}
		if len(f.replies) > 0 {
			rep = f.replies[min(n, len(f.replies)-1)]
		}
		f.mu.Unlock()
		for k, v := range rep.header {
			w.Header().Set(k, v)
		}
		if rep.body != "" && w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "application/json;odata=nometadata;charset=utf-8")
		}
		w.WriteHeader(rep.status)
		io.WriteString(w, rep.body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeSPO) host() string { return strings.TrimPrefix(f.srv.URL, "https://") }
func (f *fakeSPO) site() string { return f.srv.URL + "/sites/x" }

func (f *fakeSPO) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

func ok(body string) reply { return reply{status: 200, body: body} }

// newTestClient returns a client of f with a static credential and a recording sleep.
func newTestClient(t *testing.T, f *fakeSPO, mods ...func(*Options)) (*Client, *fakeSleep, *staticCredential) {
	t.Helper()
	cred := &staticCredential{token: testToken}
	sl := &fakeSleep{}
	opts := Options{
		Credential:   cred,
		TenantHost:   f.host(),
		Organisation: "Contoso",
		Version:      "1.2.3",
		HTTPClient:   f.srv.Client(),
		Sleep:        sl.sleep,
	}
	for _, m := range mods {
		m(&opts)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c, sl, cred
}

// jsonEqual compares two JSON texts structurally.
func jsonEqual(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("body %q is not JSON: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want %q is not JSON: %v", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("body = %s, want %s", got, want)
	}
}

func wantIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("err = %v, want %v", err, target)
	}
}

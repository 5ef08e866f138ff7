package provision_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

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

// The app's storage is the package's shared Azurite; SharePoint is one SPO emulator (over its own HTTPS
// Azurite) for the package; Key Vault is an emulator per test.

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	code := azurite.RunMain(m)
	if w := theWorld.w; w != nil {
		w.spo.Close()
		w.storage.Stop()
	}
	return code
}

type world struct {
	ca      *devtls.CA
	storage *azurite.Server
	spo     *spoemu.Emulator
	hosts   []string
}

var theWorld struct {
	once sync.Once
	w    *world
	err  error
}

func getWorld(t *testing.T) *world {
	t.Helper()
	theWorld.once.Do(func() {
		ca, err := devtls.New()
		if err != nil {
			theWorld.err = err
			return
		}
		dir, err := os.MkdirTemp("", "provision-test-tls-")
		if err != nil {
			theWorld.err = err
			return
		}
		cert, key, err := ca.WriteServerCert(dir)
		if err != nil {
			theWorld.err = err
			return
		}
		st, err := azurite.Start(context.Background(), azurite.Options{CertFile: cert, KeyFile: key})
		if err != nil {
			theWorld.err = err
			return
		}
		e, err := spoemu.Start(context.Background(), spoemu.Options{CA: ca, StorageConnectionString: st.ConnectionString(),
			Logger: slog.New(slog.DiscardHandler), QueueDelay: time.Hour})
		if err != nil {
			st.Stop()
			theWorld.err = err
			return
		}
		theWorld.w = &world{ca: ca, storage: st, spo: e, hosts: []string{
			fmt.Sprintf("127.0.0.1:%d", st.BlobPort), fmt.Sprintf("127.0.0.1:%d", st.QueuePort)}}
	})
	if theWorld.err != nil {
		t.Fatalf("test world: %v", theWorld.err)
	}
	return theWorld.w
}

// secrets learns the keys and SAS signatures SharePoint hands out, from its answers.
type secrets struct {
	mu    sync.Mutex
	forms map[string]bool
	calls map[string]int
	next  http.RoundTripper
}

var (
	sigRE = regexp.MustCompile(`(?i)[?&]sig=([^&"'\s\\]+)`)
	keyRE = regexp.MustCompile(`"EncryptionKey"\s*:\s*"([^"]+)"`)
)

func (s *secrets) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range keyRE.FindAllSubmatch(body, -1) {
		if k, err := base64.StdEncoding.DecodeString(string(m[1])); err == nil {
			s.forms[string(k)] = true
			s.forms[string(m[1])] = true
			s.forms[base64.RawURLEncoding.EncodeToString(k)] = true
			s.forms[fmt.Sprintf("%x", k)] = true
		}
	}
	for _, m := range sigRE.FindAllSubmatch(bytes.ReplaceAll(body, []byte(`\u0026`), []byte("&")), -1) {
		s.forms[string(m[1])] = true
		if dec, err := url.QueryUnescape(string(m[1])); err == nil {
			s.forms[dec] = true
		}
	}
	fn := req.URL.Path
	if i := strings.Index(fn, "/_api/"); i >= 0 {
		fn = strings.TrimPrefix(fn[i+len("/_api/"):], "site/")
	}
	s.calls[fn]++
	return resp, nil
}

func (s *secrets) count(fn string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[fn]
}

// leaked reports the secret forms found in text.
func (s *secrets) leaked(text string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for f := range s.forms {
		if len(f) >= 16 && strings.Contains(text, f) {
			out = append(out, "a SharePoint key or SAS signature")
		}
	}
	return out
}

func (s *secrets) learnt() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.forms)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type fixture struct {
	t       *testing.T
	w       *world
	kv      *kvemu.Server
	custody *vault.Custody
	store   *jobs.Store
	spo     *spo.Client
	sec     *secrets
	conn    *storageconn.Conn
	blob    *azblob.Client
	staging string
	site    string
	siteURL string
	host    string
	logs    *syncBuffer
	log     *slog.Logger
	now     time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	w := getWorld(t)
	f := &fixture{t: t, w: w, logs: &syncBuffer{}, now: time.Now().UTC()}
	f.log = slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()

	az := azurite.Shared(t)
	var err error
	f.conn, err = storageconn.ParseConnectionString(az.ConnectionString())
	if err != nil {
		t.Fatal(err)
	}
	f.blob, err = f.conn.BlobClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	f.staging = azurite.UniqueName("staging")
	if _, err := f.blob.CreateContainer(ctx, f.staging, nil); err != nil {
		t.Fatal(err)
	}
	tables, err := aztables.NewServiceClientFromConnectionString(az.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	f.store, err = jobs.New(tables, jobs.Options{Table: "jobs" + strings.ReplaceAll(azurite.UniqueName("t"), "-", ""), Logger: f.log})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.EnsureTable(ctx); err != nil {
		t.Fatal(err)
	}

	f.kv, err = kvemu.Start(kvemu.Options{CA: w.ca, Logger: f.log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.kv.Close() })
	f.custody, err = vault.New(vault.Options{
		VaultURL: f.kv.URL(), Credential: &kvemu.Credential{}, DisableChallengeResourceVerification: true,
		ClientOptions: azcore.ClientOptions{Transport: f.kv.HTTPClient()},
		Retry:         policy.RetryOptions{MaxRetries: 1, RetryDelay: time.Millisecond, MaxRetryDelay: 100 * time.Millisecond},
		Logger:        f.log,
	})
	if err != nil {
		t.Fatal(err)
	}

	f.site = azurite.UniqueName("site")
	f.siteURL = w.spo.SiteURL(f.site)
	u, _ := url.Parse(f.siteURL)
	f.host = u.Host
	f.sec = &secrets{forms: map[string]bool{}, calls: map[string]int{}, next: w.ca.HTTPClient().Transport}
	f.spo, err = spo.New(spo.Options{Credential: &kvemu.Credential{}, TenantHost: f.host, AllowedStorageHosts: w.hosts,
		HTTPClient: &http.Client{Transport: f.sec, Timeout: 30 * time.Second}, RetryBudget: -1, Logger: f.log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if leaks := f.sec.leaked(f.logs.String()); len(leaks) > 0 {
			t.Errorf("secrets in the logs: %v", leaks)
		}
	})
	return f
}

// service builds a Service over the fixture; mutate adjusts its options.
func (f *fixture) service(mutate ...func(*provision.Options)) *provision.Service {
	f.t.Helper()
	opts := provision.Options{
		Jobs: f.store, SPO: f.spo, Vault: f.custody,
		Policy:           provision.Policy{AllowedSiteHosts: []string{f.host}, CallbackAllowedHosts: []string{"hooks.example.com"}},
		Storage:          f.conn,
		StagingContainer: f.staging,
		Logger:           f.log,
	}
	for _, m := range mutate {
		m(&opts)
	}
	s, err := provision.New(opts)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

package provision_test

import (
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/spomig/spomig/internal/dev/kvemu"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/dev/testenv"
	"github.com/spomig/spomig/internal/dev/testenv/capture"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/provision"
	"github.com/spomig/spomig/internal/vault"
)

// The app's storage is the package's shared Azurite; SharePoint is one SPO emulator (over its own HTTPS
// Azurite) for the package; Key Vault is an emulator per test.

func TestMain(m *testing.M) { os.Exit(testenv.RunMain(m)) }

// secrets is what SharePoint answered the fixture's client: the keys and SAS signatures it handed out,
// and the calls.
type secrets struct{ rec *testenv.SPORecorder }

func (s secrets) count(fn string) int { return s.rec.Count(fn) }

// leaked reports the secret forms found in text.
func (s secrets) leaked(text string) []string { return s.rec.Secrets.Find([]byte(text)) }

func (s secrets) learnt() int { return s.rec.Secrets.Len() }

type fixture struct {
	t       *testing.T
	app     *testenv.App
	w       *testenv.SharePoint
	kv      *kvemu.Server
	custody *vault.Custody
	store   *jobs.Store
	sec     secrets
	staging string
	site    string
	siteURL string
	logs    *capture.Buffer
	now     time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	w := testenv.SharedSharePoint(t, spoemu.Options{Logger: slog.New(slog.DiscardHandler), QueueDelay: time.Hour})
	now := time.Now().UTC()
	a := testenv.NewApp(t, testenv.AppOptions{SharePoint: w, VaultRetry: testenv.FastRetry,
		SPOTimeout: 30 * time.Second, SPORetryBudget: -1, CallbackHosts: []string{"hooks.example.com"}})
	f := &fixture{t: t, app: a, w: w, kv: a.KV, custody: a.Custody, store: a.Store, sec: secrets{a.Recorder},
		staging: a.Staging, site: a.Site, siteURL: a.SiteURL, logs: a.Logs, now: now}
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
	return f.app.Provisioner(f.t, mutate...)
}

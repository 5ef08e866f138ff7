package testenv

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/spomig/spomig/internal/dev/azurite"
	"github.com/spomig/spomig/internal/dev/devtls"
	"github.com/spomig/spomig/internal/dev/spoemu"
)

// shared holds the package's shared parts, started on first use and stopped by RunMain.
var shared struct {
	mu      sync.Mutex
	enabled bool
	storage *Storage
	dir     string // the certificate of the shared Storage
	spo     *SharePoint
	err     error
}

// RunMain runs a package's tests; use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.RunMain(m)) }
//
// It is azurite.RunMain (the plain-HTTP Azurite of azurite.Shared) and, after the tests, it closes the
// package's SharedSharePoint and stops the Azurite of its SharedStorage by PID.
func RunMain(m *testing.M) int {
	shared.mu.Lock()
	shared.enabled = true
	shared.mu.Unlock()
	code := azurite.RunMain(m)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.spo != nil {
		shared.spo.Emulator.Close()
		shared.spo = nil
	}
	if shared.storage != nil {
		shared.storage.Server.Stop()
		shared.storage = nil
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
		shared.dir = ""
	}
	return code
}

// Storage is a dev CA and an Azurite serving HTTPS with a leaf of it: SharePoint's storage account behind
// the SPO emulator (so that its SAS carry spr=https), or an app storage reached over HTTPS.
type Storage struct {
	CA     *devtls.CA
	Server *azurite.Server
}

// ConnectionString is the account's explicit connection string (https endpoints).
func (s *Storage) ConnectionString() string { return s.Server.ConnectionString() }

// Hosts are the host:port of the blob and queue endpoints: spo.Options.AllowedStorageHosts.
func (s *Storage) Hosts() []string {
	var out []string
	for _, raw := range []string{s.Server.BlobURL, s.Server.QueueURL} {
		u, _ := url.Parse(raw)
		out = append(out, u.Host)
	}
	return out
}

// ClientOptions are Azure SDK client options whose transport trusts the dev CA.
func (s *Storage) ClientOptions() azcore.ClientOptions {
	return azcore.ClientOptions{Transport: s.CA.HTTPClient()}
}

// StartStorage starts a Storage of the test's own (a new dev CA, a new Azurite), stopped by PID when the
// test ends.
func StartStorage(tb testing.TB) *Storage {
	tb.Helper()
	ca, err := devtls.New()
	if err != nil {
		tb.Fatalf("dev CA: %v", err)
	}
	cert, key, err := ca.WriteServerCert(tb.TempDir())
	if err != nil {
		tb.Fatalf("azurite certificate: %v", err)
	}
	return &Storage{CA: ca, Server: azurite.New(tb, azurite.Options{CertFile: cert, KeyFile: key})}
}

// SharedStorage is the package's Storage, started on first use and stopped by RunMain. Tests isolate
// themselves by their own names (sites, containers, queues, tables).
func SharedStorage(tb testing.TB) *Storage {
	tb.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	return sharedStorage(tb)
}

func sharedStorage(tb testing.TB) *Storage {
	tb.Helper()
	if !shared.enabled {
		tb.Fatal("testenv: the package's TestMain must call testenv.RunMain(m)")
	}
	if shared.storage == nil && shared.err == nil {
		shared.storage, shared.err = startSharedStorage()
	}
	if shared.err != nil {
		tb.Fatalf("test world: %v", shared.err)
	}
	return shared.storage
}

func startSharedStorage() (*Storage, error) {
	ca, err := devtls.New()
	if err != nil {
		return nil, fmt.Errorf("dev CA: %w", err)
	}
	if shared.dir, err = os.MkdirTemp("", "testenv-tls-"); err != nil {
		return nil, err
	}
	cert, key, err := ca.WriteServerCert(shared.dir)
	if err != nil {
		return nil, fmt.Errorf("azurite certificate: %w", err)
	}
	srv, err := azurite.Start(context.Background(), azurite.Options{CertFile: cert, KeyFile: key})
	if err != nil {
		return nil, fmt.Errorf("HTTPS Azurite: %w", err)
	}
	return &Storage{CA: ca, Server: srv}, nil
}

// SharePoint is an SPO emulator and SharePoint's storage account behind it.
type SharePoint struct {
	*Storage
	Emulator *spoemu.Emulator
}

// StartSharePoint starts an SPO emulator for the test on the package's SharedStorage (it sets opts.CA and
// opts.StorageConnectionString) and closes it when the test ends. spoemu.StartTest documents the other
// defaults.
func StartSharePoint(tb testing.TB, opts spoemu.Options) *SharePoint {
	tb.Helper()
	st := SharedStorage(tb)
	opts.CA, opts.StorageConnectionString = st.CA, st.ConnectionString()
	return &SharePoint{Storage: st, Emulator: spoemu.StartTest(tb, opts)}
}

// SharedSharePoint is the package's SPO emulator on SharedStorage, started on first use with the options
// of that call (CA and StorageConnectionString set as by StartSharePoint) and closed by RunMain.
func SharedSharePoint(tb testing.TB, opts spoemu.Options) *SharePoint {
	tb.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.spo != nil {
		return shared.spo
	}
	st := sharedStorage(tb)
	opts.CA, opts.StorageConnectionString = st.CA, st.ConnectionString()
	e, err := spoemu.Start(context.Background(), opts)
	if err != nil {
		tb.Fatalf("test world: SPO emulator: %v", err)
	}
	shared.spo = &SharePoint{Storage: st, Emulator: e}
	return shared.spo
}

// TenantHost is the emulator's host:port, the tenant of spo.Options.
func (sp *SharePoint) TenantHost() string { return strings.TrimPrefix(sp.Emulator.URL(), "https://") }

// NewSite is a site of the emulator of its own: a unique name from prefix, and its URL.
func (sp *SharePoint) NewSite(prefix string) (name, siteURL string) {
	name = azurite.UniqueName(prefix)
	return name, sp.Emulator.SiteURL(name)
}

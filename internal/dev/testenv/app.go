package testenv

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/spomig/spomig/internal/dev/azurite"
	"github.com/spomig/spomig/internal/dev/kvemu"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/dev/testenv/capture"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/provision"
	"github.com/spomig/spomig/internal/spo"
	"github.com/spomig/spomig/internal/storageconn"
	"github.com/spomig/spomig/internal/vault"
)

// FastRetry are retry options for tests that inject faults: one retry, after a millisecond.
var FastRetry = policy.RetryOptions{MaxRetries: 1, RetryDelay: time.Millisecond, MaxRetryDelay: 100 * time.Millisecond}

// AppStorage is the app's storage (AzureWebJobsStorage) as a test reaches it.
type AppStorage struct {
	Conn   *storageconn.Conn // named AzureWebJobsStorage
	Blob   *azblob.Client
	Queue  *azqueue.ServiceClient
	Tables *aztables.ServiceClient
}

// NewAppStorage connects to the app's storage: on is an HTTPS Storage (reached through its CA), or nil
// for the package's shared plain-HTTP Azurite (azurite.Shared, like UseDevelopmentStorage=true; TestMain
// must use RunMain or azurite.RunMain).
func NewAppStorage(tb testing.TB, on *Storage) *AppStorage {
	tb.Helper()
	var cs string
	var co azcore.ClientOptions
	if on != nil {
		cs, co = on.ConnectionString(), on.ClientOptions()
	} else {
		cs = azurite.Shared(tb).ConnectionString()
	}
	conn, err := storageconn.ParseConnectionString(cs)
	if err != nil {
		tb.Fatal(err)
	}
	conn.Name = "AzureWebJobsStorage"
	s := &AppStorage{Conn: conn}
	if s.Blob, err = conn.BlobClient(&azblob.ClientOptions{ClientOptions: co}); err != nil {
		tb.Fatal(err)
	}
	if s.Queue, err = conn.QueueClient(&azqueue.ClientOptions{ClientOptions: co}); err != nil {
		tb.Fatal(err)
	}
	if s.Tables, err = conn.TableClient(&aztables.ClientOptions{ClientOptions: co}); err != nil {
		tb.Fatal(err)
	}
	return s
}

// Container creates a container named uniquely from prefix and answers its name.
func (s *AppStorage) Container(tb testing.TB, prefix string) string {
	tb.Helper()
	name := azurite.UniqueName(prefix)
	if _, err := s.Blob.CreateContainer(context.Background(), name, nil); err != nil {
		tb.Fatalf("create container %s: %v", name, err)
	}
	return name
}

// StoreOptions configure JobStore.
type StoreOptions struct {
	// Tables is the table service. Nil: the package's shared Azurite (azurite.Shared).
	Tables *aztables.ServiceClient
	// TablePrefix starts the table's unique name. Default "jobs".
	TablePrefix string
	// Logger is the store's. Nil: discarded.
	Logger *slog.Logger
}

func (o *StoreOptions) setDefaults(tb testing.TB) {
	tb.Helper()
	if o.Tables == nil {
		o.Tables = NewAppStorage(tb, nil).Tables
	}
	if o.TablePrefix == "" {
		o.TablePrefix = "jobs"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// JobStore is a job store over a new table of its own.
func JobStore(tb testing.TB, opts StoreOptions) *jobs.Store {
	tb.Helper()
	opts.setDefaults(tb)
	s, err := jobs.New(opts.Tables, jobs.Options{
		Table:  opts.TablePrefix + strings.ReplaceAll(azurite.UniqueName("t"), "-", ""),
		Logger: opts.Logger,
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.EnsureTable(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return s
}

// CustodyOptions configure Custody.
type CustodyOptions struct {
	// Credential asks for the tokens. Nil: the emulator's development credential (kvemu.Credential).
	Credential azcore.TokenCredential
	// Retry of the Key Vault client. Zero: azcore's defaults (see FastRetry).
	Retry policy.RetryOptions
	// Logger is the custody's. Nil: vault's default.
	Logger *slog.Logger
}

// Custody is the vault custody over a Key Vault emulator (e.g. kvemu.StartTest).
func Custody(tb testing.TB, kv *kvemu.Server, opts CustodyOptions) *vault.Custody {
	tb.Helper()
	if opts.Credential == nil {
		opts.Credential = &kvemu.Credential{}
	}
	c, err := vault.New(vault.Options{
		VaultURL: kv.URL(), Credential: opts.Credential, DisableChallengeResourceVerification: true,
		ClientOptions: azcore.ClientOptions{Transport: kv.HTTPClient()},
		Retry:         opts.Retry,
		Logger:        opts.Logger,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// ClientOptions configure SharePoint.Client.
type ClientOptions struct {
	// Credential asks for the tokens. Nil: kvemu.Credential (unsigned tokens the emulator accepts unless
	// spoemu.Options.CheckAudience).
	Credential azcore.TokenCredential
	// Wrap, when set, wraps the transport that trusts the dev CA (to record or count requests).
	Wrap func(http.RoundTripper) http.RoundTripper
	// Timeout of one request. Zero: the dev CA client's.
	Timeout time.Duration
	// RetryBudget, Organisation, Version and Logger are spo.Options'.
	RetryBudget           time.Duration
	Organisation, Version string
	Logger                *slog.Logger
}

// Client is an spo.Client for the emulator, allowed its storage account's hosts.
func (sp *SharePoint) Client(tb testing.TB, opts ClientOptions) *spo.Client {
	tb.Helper()
	if opts.Credential == nil {
		opts.Credential = &kvemu.Credential{}
	}
	hc := sp.CA.HTTPClient()
	if opts.Wrap != nil {
		hc.Transport = opts.Wrap(hc.Transport)
	}
	if opts.Timeout != 0 {
		hc.Timeout = opts.Timeout
	}
	c, err := spo.New(spo.Options{
		Credential: opts.Credential, TenantHost: sp.TenantHost(), AllowedStorageHosts: sp.Hosts(),
		HTTPClient: hc, RetryBudget: opts.RetryBudget, Organisation: opts.Organisation, Version: opts.Version,
		Logger: opts.Logger,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// App is one test's application side: a Key Vault emulator of its own and the custody over it, a job
// table and a staging container on the app's storage, a site of the SPO emulator and an spo.Client for it
// whose transport learns every secret SharePoint answers (Recorder). Everything logs to Logs.
type App struct {
	SharePoint *SharePoint
	Storage    *AppStorage
	KV         *kvemu.Server
	Custody    *vault.Custody
	Store      *jobs.Store
	SPO        *spo.Client
	Recorder   *SPORecorder
	Staging    string // the staging container
	Site       string // the site's name (for the emulator's WebID, SetFaults …)
	SiteURL    string
	Host       string // the site's host, the tenant
	Logs       *capture.Buffer
	Log        *slog.Logger // JSON, every level, to Logs

	callbackHosts []string
}

// AppOptions configure NewApp.
type AppOptions struct {
	// SharePoint is the emulator. Nil: SharedSharePoint with zero options.
	SharePoint *SharePoint
	// Storage is the app's storage. Nil: NewAppStorage(tb, nil), the package's shared Azurite.
	Storage *AppStorage
	// Logs receives the log of every part. Nil: a new Buffer.
	Logs *capture.Buffer
	// KV configures the Key Vault emulator; its CA defaults to the SharePoint's, its Logger to Logs.
	KV kvemu.Options
	// VaultRetry is the custody's retry. Zero: azcore's defaults (see FastRetry).
	VaultRetry policy.RetryOptions
	// Secrets learns the keys and SAS signatures SharePoint answers. Nil: a new set.
	Secrets *capture.Secrets
	// SPOTimeout, SPORetryBudget: ClientOptions' Timeout and RetryBudget.
	SPOTimeout, SPORetryBudget time.Duration
	// StoreLogger is the job store's. Nil: to Logs.
	StoreLogger *slog.Logger
	// SitePrefix, TablePrefix, StagingPrefix start the unique names. Defaults "site", "jobs", "staging".
	SitePrefix, TablePrefix, StagingPrefix string
	// CallbackHosts are the callback hosts of Provisioner's policy. Default none.
	CallbackHosts []string
}

func (o *AppOptions) setDefaults(tb testing.TB) {
	tb.Helper()
	if o.SharePoint == nil {
		o.SharePoint = SharedSharePoint(tb, spoemu.Options{})
	}
	if o.Storage == nil {
		o.Storage = NewAppStorage(tb, nil)
	}
	if o.Logs == nil {
		o.Logs = &capture.Buffer{}
	}
	if o.KV.CA == nil {
		o.KV.CA = o.SharePoint.CA
	}
	if o.Secrets == nil {
		o.Secrets = &capture.Secrets{}
	}
	if o.StoreLogger == nil {
		o.StoreLogger = o.Logs.Logger()
	}
	if o.SitePrefix == "" {
		o.SitePrefix = "site"
	}
	if o.StagingPrefix == "" {
		o.StagingPrefix = "staging"
	}
}

// NewApp builds an App; its Key Vault emulator is closed when the test ends.
func NewApp(tb testing.TB, opts AppOptions) *App {
	tb.Helper()
	opts.setDefaults(tb)
	sp := opts.SharePoint
	a := &App{SharePoint: sp, Storage: opts.Storage, Logs: opts.Logs, Log: opts.Logs.Logger(),
		callbackHosts: opts.CallbackHosts}
	a.Staging = a.Storage.Container(tb, opts.StagingPrefix)
	a.Store = JobStore(tb, StoreOptions{Tables: a.Storage.Tables, TablePrefix: opts.TablePrefix, Logger: opts.StoreLogger})
	if opts.KV.Logger == nil {
		opts.KV.Logger = a.Log
	}
	a.KV = kvemu.StartTest(tb, opts.KV)
	a.Custody = Custody(tb, a.KV, CustodyOptions{Retry: opts.VaultRetry, Logger: a.Log})
	a.Site, a.SiteURL = sp.NewSite(opts.SitePrefix)
	a.Host = sp.TenantHost()
	a.Recorder = &SPORecorder{Secrets: opts.Secrets}
	a.SPO = sp.Client(tb, ClientOptions{
		Wrap:    func(next http.RoundTripper) http.RoundTripper { a.Recorder.Next = next; return a.Recorder },
		Timeout: opts.SPOTimeout, RetryBudget: opts.SPORetryBudget, Logger: a.Log,
	})
	return a
}

// ProvisionOptions are the options of a provision service over the app: its job store, custody and spo
// client; its site host and the CallbackHosts allowed; its storage and staging container; its log.
func (a *App) ProvisionOptions() provision.Options {
	return provision.Options{
		Jobs: a.Store, SPO: a.SPO, Vault: a.Custody,
		Policy:           provision.Policy{AllowedSiteHosts: []string{a.Host}, CallbackAllowedHosts: a.callbackHosts},
		Storage:          a.Storage.Conn,
		StagingContainer: a.Staging,
		Logger:           a.Log,
	}
}

// Provisioner is a provision service over the app (ProvisionOptions); mutate adjusts its options.
func (a *App) Provisioner(tb testing.TB, mutate ...func(*provision.Options)) *provision.Service {
	tb.Helper()
	opts := a.ProvisionOptions()
	for _, m := range mutate {
		m(&opts)
	}
	s, err := provision.New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

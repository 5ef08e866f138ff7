// Package stack starts the whole local world of spomig and stops it again: Azurite for the app's
// storage, a second Azurite over HTTPS as SharePoint's storage account, the Key Vault emulator, the SPO
// emulator, the managed-identity token endpoint, and the local Functions host running the real handler.
// `make demo`, `make dev` and the end-to-end tests use it.
//
// Ports: with Options.Fixed the stack listens where local.settings.json expects it (Azurite 10000-10002,
// SharePoint's Azurite 10100-10102, Key Vault 10443, SPO 10444, identity 10445, Functions 7071), so that
// `func start` can be pointed at it; otherwise every port is free-picked and the handler gets matching
// settings (a demo or a test never collides with a running dev stack).
package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spomig/spomig/internal/dev/azurite"
	"github.com/spomig/spomig/internal/dev/devtls"
	"github.com/spomig/spomig/internal/dev/funchost"
	"github.com/spomig/spomig/internal/dev/identity"
	"github.com/spomig/spomig/internal/dev/kvemu"
	"github.com/spomig/spomig/internal/dev/spoemu"
)

// Fixed ports of the local stack (local.settings.json).
const (
	AppBlobPort, AppQueuePort, AppTablePort = 10000, 10001, 10002
	SPOBlobPort, SPOQueuePort, SPOTablePort = 10100, 10101, 10102
	KeyVaultPort                            = 10443
	SPOPort                                 = 10444
	IdentityPort                            = 10445
	FunctionsPort                           = 7071
	IdentityHeader                          = "spomig-local-identity"
)

// Options configures Start.
type Options struct {
	// AppDir is the Functions app root (host.json, function folders, handler binary). Required.
	AppDir string
	// Dir keeps the stack's state: tls/ (the dev CA, kept across runs), and data folders. Required.
	Dir string
	// Fixed listens on the fixed ports of local.settings.json; otherwise ports are free-picked.
	Fixed bool
	// Fresh wipes the data folders (not the CA) before starting.
	Fresh bool
	// Settings override app settings of the handler (after the stack's own).
	Settings map[string]string
	// SPO tunes the SPO emulator (Addr, CA, StorageConnectionString, DataDir are set by the stack).
	SPO spoemu.Options
	// Log receives every part's log lines. Nil: discarded.
	Log io.Writer
	// HandlerCommand overrides the handler executable (tests: a freshly built binary).
	HandlerCommand []string
	// MaxBlobSize of the local host's blob trigger payload. Default 4 GiB (the local host streams it).
	MaxBlobSize int64
	// NoHost starts everything but the local Functions host (and so the handler): for `func start`,
	// which reads local.settings.json (use it with Fixed).
	NoHost bool
}

// Stack is a running local world.
type Stack struct {
	CA          *devtls.CA
	AppStorage  *azurite.Server
	SPOStorage  *azurite.Server
	KeyVault    *kvemu.Server
	SPO         *spoemu.Emulator
	Host        *funchost.Host
	IdentityURL string
	Settings    map[string]string // what the handler was given on top of local.settings.json
	Dir         string

	identitySrv *http.Server
	closers     []func() error
}

// Start brings the stack up; on error everything started so far is stopped.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	if o.AppDir == "" || o.Dir == "" {
		return nil, errors.New("stack: AppDir and Dir are required")
	}
	if o.MaxBlobSize == 0 {
		o.MaxBlobSize = 4 << 30
	}
	logw := o.Log
	if logw == nil {
		logw = io.Discard
	}
	logger := func(part string) *slog.Logger {
		return slog.New(slog.NewTextHandler(prefixWriter(logw, part), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	s := &Stack{Dir: o.Dir}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	dataDir := filepath.Join(o.Dir, "data")
	if o.Fresh {
		if err := os.RemoveAll(dataDir); err != nil {
			return nil, err
		}
	}
	if s.CA, err = devtls.LoadOrCreate(filepath.Join(o.Dir, "tls")); err != nil {
		return nil, fmt.Errorf("dev CA: %w", err)
	}
	port := func(fixed int) int {
		if o.Fixed {
			return fixed
		}
		return 0
	}
	addr := func(fixed int) string { return fmt.Sprintf("127.0.0.1:%d", port(fixed)) }

	// The app's storage (UseDevelopmentStorage=true with fixed ports).
	if s.AppStorage, err = azurite.Start(ctx, azurite.Options{Dir: mkdir(dataDir, "azurite-app"), Log: prefixWriter(logw, "azurite"),
		BlobPort: port(AppBlobPort), QueuePort: port(AppQueuePort), TablePort: port(AppTablePort)}); err != nil {
		return nil, fmt.Errorf("azurite (app storage): %w", err)
	}
	s.closers = append(s.closers, s.AppStorage.Stop)

	// SharePoint's storage account: HTTPS, so that SAS carry spr=https as SharePoint's do.
	cert, key, err := s.CA.WriteServerCert(filepath.Join(o.Dir, "tls", "azurite"))
	if err != nil {
		return nil, err
	}
	if s.SPOStorage, err = azurite.Start(ctx, azurite.Options{Dir: mkdir(dataDir, "azurite-spo"), Log: prefixWriter(logw, "azurite-spo"),
		CertFile: cert, KeyFile: key,
		BlobPort: port(SPOBlobPort), QueuePort: port(SPOQueuePort), TablePort: port(SPOTablePort)}); err != nil {
		return nil, fmt.Errorf("azurite (SharePoint's storage): %w", err)
	}
	s.closers = append(s.closers, s.SPOStorage.Stop)

	// Key Vault.
	if s.KeyVault, err = kvemu.Start(kvemu.Options{Addr: addr(KeyVaultPort), CA: s.CA, DataDir: mkdir(dataDir, "keyvault"), Logger: logger("keyvault")}); err != nil {
		return nil, fmt.Errorf("key vault emulator: %w", err)
	}
	s.closers = append(s.closers, s.KeyVault.Close)

	// Managed-identity token endpoint.
	mux := http.NewServeMux()
	mux.Handle("/msi/token", identity.Handler(identity.Options{Header: IdentityHeader}))
	ln, err := net.Listen("tcp", addr(IdentityPort))
	if err != nil {
		return nil, fmt.Errorf("identity endpoint: %w", err)
	}
	s.identitySrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go s.identitySrv.Serve(ln)
	s.IdentityURL = "http://" + ln.Addr().String() + "/msi/token"
	s.closers = append(s.closers, func() error { return s.identitySrv.Close() })

	// SharePoint Online.
	spo := o.SPO
	spo.Addr, spo.CA, spo.StorageConnectionString = addr(SPOPort), s.CA, s.SPOStorage.ConnectionString()
	if spo.DataDir == "" {
		spo.DataDir = mkdir(dataDir, "sharepoint")
	}
	if spo.Logger == nil {
		spo.Logger = logger("spo")
	}
	if s.SPO, err = spoemu.Start(ctx, spo); err != nil {
		return nil, fmt.Errorf("SPO emulator: %w", err)
	}
	s.closers = append(s.closers, s.SPO.Close)

	// The handler's settings: the stack's endpoints, on top of local.settings.json.
	spoHost := strings.TrimPrefix(s.SPO.URL(), "https://")
	spoStorageHosts := []string{hostOf(s.SPOStorage.BlobURL), hostOf(s.SPOStorage.QueueURL)}
	s.Settings = map[string]string{
		"AzureWebJobsStorage":  s.AppStorage.ConnectionString(),
		"SPOMIG_KEYVAULT_URL":  s.KeyVault.URL(),
		"SPOMIG_KEYVAULT_AUTH": "managedidentity",
		"SPOMIG_KEYVAULT_DISABLE_CHALLENGE_RESOURCE_VERIFICATION": "true",
		"SPOMIG_TENANT_HOST":           spoHost,
		"SPOMIG_SPO_AUTH":              "managedidentity",
		"SPOMIG_ALLOWED_STORAGE_HOSTS": strings.Join(spoStorageHosts, ","),
		"IDENTITY_ENDPOINT":            s.IdentityURL,
		"IDENTITY_HEADER":              IdentityHeader,
		"SSL_CERT_FILE":                s.CA.BundlePath(),
	}
	if o.Fixed {
		s.Settings["AzureWebJobsStorage"] = "UseDevelopmentStorage=true"
	}
	for k, v := range o.Settings {
		s.Settings[k] = v
	}
	if o.NoHost {
		return s, nil
	}
	if s.Host, err = funchost.New(funchost.Options{
		AppDir: o.AppDir, Settings: s.Settings, HTTPAddr: addr(FunctionsPort), Logger: logger("host"),
		HandlerCommand: o.HandlerCommand, MaxBlobSize: o.MaxBlobSize,
		KeysFile: filepath.Join(o.Dir, "funchost-keys.json"),
	}); err != nil {
		return nil, fmt.Errorf("functions host: %w", err)
	}
	if err = s.Host.Start(ctx); err != nil {
		return nil, fmt.Errorf("functions host: %w", err)
	}
	s.closers = append(s.closers, s.Host.Stop)
	return s, nil
}

// Stop stops every part, the last started first (the handler before the services it uses).
func (s *Stack) Stop() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		if err := s.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	s.closers = nil
	return errors.Join(errs...)
}

// APIBase is the API's base URL (…/api): the local host's, or with NoHost where `func start` listens
// by default.
func (s *Stack) APIBase() string {
	if s.Host == nil {
		return fmt.Sprintf("http://127.0.0.1:%d/api", FunctionsPort)
	}
	return s.Host.URL() + "/api"
}

// SiteURL is a site of the SPO emulator.
func (s *Stack) SiteURL(name string) string { return s.SPO.SiteURL(name) }

func mkdir(parts ...string) string {
	p := filepath.Join(parts...)
	_ = os.MkdirAll(p, 0o755)
	return p
}

func hostOf(u string) string {
	u = strings.TrimPrefix(strings.TrimPrefix(u, "https://"), "http://")
	if i := strings.IndexByte(u, '/'); i >= 0 {
		u = u[:i]
	}
	return u
}

// prefixWriter prefixes every line with "[part] ".
func prefixWriter(w io.Writer, part string) io.Writer {
	if w == io.Discard {
		return w
	}
	return &prefixed{w: w, prefix: []byte("[" + part + "] ")}
}

type prefixed struct {
	w      io.Writer
	prefix []byte
	mid    bool
}

func (p *prefixed) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		if !p.mid {
			if _, err := p.w.Write(p.prefix); err != nil {
				return 0, err
			}
		}
		i := strings.IndexByte(string(b), '\n')
		if i < 0 {
			p.mid = true
			_, err := p.w.Write(b)
			return n, err
		}
		if _, err := p.w.Write(b[:i+1]); err != nil {
			return 0, err
		}
		p.mid = false
		b = b[i+1:]
	}
	return n, nil
}

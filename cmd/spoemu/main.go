// Command spoemu runs the SharePoint Online Migration API emulator (internal/dev/spoemu) as a process:
// HTTPS with a leaf of the dev CA, backed by a storage account given as a connection string, or by an
// HTTPS Azurite it starts itself (-start-azurite). It prints its base URL on stdout and stops cleanly
// on SIGINT/SIGTERM, stopping the Azurite it started by PID.
//
//	spoemu -addr 127.0.0.1:0 -data ./.dev/spoemu -tls-dir ./.dev/tls -start-azurite
//	spoemu -storage-connection-string "DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…;BlobEndpoint=…;QueueEndpoint=…"
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spomig/spomig/internal/dev/azurite"
	"github.com/spomig/spomig/internal/dev/devtls"
	"github.com/spomig/spomig/internal/dev/spoemu"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "spoemu:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		addr         = flag.String("addr", spoemu.DefaultAddr, "listen address")
		dataDir      = flag.String("data", "spoemu-data", "folder for imported files, job summaries and (with -start-azurite) Azurite's data")
		tlsDir       = flag.String("tls-dir", "", "dev CA folder (created if needed); default <data>/tls")
		storage      = flag.String("storage-connection-string", os.Getenv("SPOEMU_STORAGE_CONNECTION_STRING"), "SharePoint's storage account (explicit connection string); default $SPOEMU_STORAGE_CONNECTION_STRING")
		startAzurite = flag.Bool("start-azurite", false, "start an HTTPS Azurite (dev CA leaf) as SharePoint's storage account")
		tenant       = flag.String("tenant", spoemu.DefaultTenantID, "tenant GUID (401 realm, SubscriptionId)")
		sites        = flag.String("sites", "", "comma-separated allow-list of sites (/sites/x, /teams/y, /); empty: every site exists")
		queueDelay   = flag.Duration("queue-delay", 3*time.Second, "time a job stays Queued before pickup")
		itemDelay    = flag.Duration("item-delay", 0, "delay per SPObject processed")
		maxJobs      = flag.Int("max-jobs", spoemu.DefaultMaxJobs, "jobs processed at once")
		progEvery    = flag.Int("progress-every", spoemu.DefaultProgressEvery, "JobProgress every N objects")
		pageSize     = flag.Int("page-size", spoemu.DefaultProgressPageSize, "events per GetMigrationJobProgress page")
		sasValidity  = flag.Duration("sas-validity", spoemu.DefaultSASValidity, "container SAS lifetime")
		retention    = flag.Duration("retention", spoemu.DefaultJobRetention, "how long job status and events stay readable after the end")
		checkAud     = flag.Bool("check-audience", false, "require JWT bearer tokens to carry an aud naming this host or -audience")
		audiences    = flag.String("audience", "", "comma-separated extra accepted JWT audiences (with -check-audience)")
		manifestSnap = flag.Bool("require-manifest-snapshots", false, "fail jobs whose package XMLs have no snapshot")
		endAfter     = flag.Bool("job-end-after-fatal", false, "emit JobEnd after JobFatalError")
		logLevel     = flag.String("log-level", "info", "debug, info, warn or error")
	)
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if *tlsDir == "" {
		*tlsDir = filepath.Join(*dataDir, "tls")
	}
	ca, err := devtls.LoadOrCreate(*tlsDir)
	if err != nil {
		return fmt.Errorf("dev CA: %w", err)
	}

	var az *azurite.Server
	switch {
	case *startAzurite && *storage != "":
		return errors.New("use either -start-azurite or -storage-connection-string")
	case *startAzurite:
		azDir := filepath.Join(*dataDir, "azurite")
		if err := os.MkdirAll(azDir, 0o755); err != nil {
			return err
		}
		cert, key, err := ca.WriteServerCert(filepath.Join(*dataDir, "azurite-tls"))
		if err != nil {
			return fmt.Errorf("azurite certificate: %w", err)
		}
		az, err = azurite.Start(ctx, azurite.Options{Dir: azDir, CertFile: cert, KeyFile: key})
		if err != nil {
			return fmt.Errorf("start azurite: %w", err)
		}
		defer az.Stop()
		log.Info("azurite started", "pid", az.PID(), "blob", az.BlobURL, "queue", az.QueueURL)
		*storage = az.ConnectionString()
	case *storage == "":
		return errors.New("no storage account: pass -storage-connection-string or -start-azurite")
	}

	opts := spoemu.Options{
		Addr: *addr, CA: ca, StorageConnectionString: *storage, DataDir: *dataDir, TenantID: *tenant,
		QueueDelay: *queueDelay, ItemDelay: *itemDelay, MaxJobs: *maxJobs, ProgressEvery: *progEvery,
		ProgressPageSize: *pageSize, SASValidity: *sasValidity, JobRetention: *retention,
		CheckAudience: *checkAud, RequireManifestSnapshots: *manifestSnap, JobEndAfterFatal: *endAfter,
		Logger: log,
	}
	opts.Sites = splitList(*sites)
	opts.Audiences = splitList(*audiences)
	e, err := spoemu.Start(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Println(e.URL())
	log.Info("spoemu ready", "url", e.URL(), "ca", filepath.Join(ca.Dir(), devtls.CACertFile), "data", *dataDir)

	<-ctx.Done()
	log.Info("stopping")
	if err := e.Close(); err != nil {
		log.Warn("close", "err", err)
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

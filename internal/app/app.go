// Package app is the composition root: it turns the configuration into clients (storage, Key Vault,
// SharePoint) and domain services, lazily, on the first invocation that needs them. Nothing here runs
// before the handler answers the host's first GET /.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/spomig/spomig/functions"
	"github.com/spomig/spomig/internal/api"
	"github.com/spomig/spomig/internal/config"
	"github.com/spomig/spomig/internal/intake"
	"github.com/spomig/spomig/internal/migpkg"
	"github.com/spomig/spomig/internal/monitor"
	"github.com/spomig/spomig/internal/provision"
	"github.com/spomig/spomig/internal/stage"
	"github.com/spomig/spomig/internal/submit"
)

// Version is the handler's version, reported in GET / and in the SharePoint User-Agent.
var Version = "0.1.0"

// Lazy builds the services on first use and caches them; a failed build is retried on the next call.
type Lazy struct {
	getenv config.Getenv
	log    *slog.Logger

	mu  sync.Mutex
	cfg *config.Config
	svc *services
}

var _ functions.Services = (*Lazy)(nil)

// NewLazy returns a Lazy that reads settings through getenv.
func NewLazy(getenv config.Getenv, log *slog.Logger) *Lazy { return &Lazy{getenv: getenv, log: log} }

// build loads the configuration and the services once; it holds l.mu.
func (l *Lazy) build(ctx context.Context) (*services, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.svc != nil {
		return l.svc, nil
	}
	if l.cfg == nil {
		cfg, err := config.Load(l.getenv)
		if err != nil {
			return nil, err
		}
		l.cfg = cfg
	}
	svc, err := newServices(ctx, l.cfg, l.log)
	if err != nil {
		return nil, err
	}
	l.svc = svc
	return svc, nil
}

// API implements functions.Services.
func (l *Lazy) API(ctx context.Context) (http.Handler, error) {
	s, err := l.build(ctx)
	if err != nil {
		return nil, err
	}
	if s.api == nil {
		return nil, fmt.Errorf("the migration API is not available")
	}
	return s.api, nil
}

// Intake implements functions.Services.
func (l *Lazy) Intake(ctx context.Context) (functions.Intake, error) {
	s, err := l.build(ctx)
	if err != nil {
		return nil, err
	}
	if s.intake == nil {
		return nil, fmt.Errorf("package intake is not available")
	}
	return s.intake, nil
}

// Submitter implements functions.Services.
func (l *Lazy) Submitter(ctx context.Context) (functions.Submitter, error) {
	s, err := l.build(ctx)
	if err != nil {
		return nil, err
	}
	if s.submitter == nil {
		return nil, fmt.Errorf("job submission is not available")
	}
	return s.submitter, nil
}

// Monitor implements functions.Services.
func (l *Lazy) Monitor(ctx context.Context) (functions.Monitor, error) {
	s, err := l.build(ctx)
	if err != nil {
		return nil, err
	}
	if s.monitor == nil {
		return nil, fmt.Errorf("job monitoring is not available")
	}
	return s.monitor, nil
}

type services struct {
	api       http.Handler
	intake    functions.Intake
	submitter functions.Submitter
	monitor   functions.Monitor
}

func newServices(ctx context.Context, cfg *config.Config, log *slog.Logger) (*services, error) {
	c, err := newClients(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	prov, err := provision.New(provision.Options{
		Jobs: c.jobs, SPO: c.spo, Vault: c.vault,
		Policy:           provision.Policy{AllowedSiteHosts: cfg.AllowedSiteHosts, CallbackAllowedHosts: cfg.CallbackAllowedHosts},
		Storage:          cfg.Storage,
		StagingContainer: cfg.StagingContainer,
		UploadURLTTL:     cfg.UploadURLTTL,
		RenewBefore:      cfg.SASRenewBefore,
		Logger:           log.With("component", "provision"),
	})
	if err != nil {
		return nil, err
	}
	reports := c.blob.ServiceClient().NewContainerClient(cfg.ReportsContainer)
	apiHandler := api.New(api.Options{
		Jobs: c.jobs, Provisioner: prov, SPO: c.spo,
		Reports:          api.NewBlobReports(reports),
		ReportsContainer: cfg.ReportsContainer,
		Version:          Version,
		BaseURL:          cfg.PublicBaseURL,
		Logger:           log.With("component", "api"),
	})
	uploader := stage.NewUploader(stage.Options{
		BlockSize:   cfg.UploadBlockSize,
		Concurrency: cfg.UploadConcurrency,
		Logger:      log.With("component", "stage"),
	})
	in, err := intake.New(intake.Options{
		Jobs: c.jobs, Vault: c.vault, Provisioner: prov, Uploader: uploader,
		Staging:     c.blob.ServiceClient().NewContainerClient(cfg.StagingContainer),
		SubmitQueue: c.queue.NewQueueClient(cfg.SubmitQueue),
		Reports:     reports,
		Package: migpkg.Options{
			MaxTotalSize:        cfg.MaxPackageSize,
			MaxEntries:          cfg.MaxEntries,
			MaxCompressionRatio: int64(cfg.MaxCompressionRatio),
		},
		SASRenewBefore: cfg.SASRenewBefore,
		Logger:         log.With("component", "intake"),
	})
	if err != nil {
		return nil, err
	}
	sub, err := submit.New(submit.Options{
		Jobs: c.jobs, Vault: c.vault, SPO: c.spo,
		Lease:           cfg.SubmitLease,
		MaxDequeueCount: int64(cfg.MaxDequeueCount),
		Logger:          log.With("component", "submit"),
	})
	if err != nil {
		return nil, err
	}
	mon, err := monitor.New(monitor.Options{
		Jobs: c.jobs, Vault: c.vault, SPO: c.spo,
		Storage:              monitor.Storage{Blob: c.blob, Queue: c.queue},
		ReportsContainer:     cfg.ReportsContainer,
		PoisonQueue:          cfg.SubmitQueue + "-poison",
		Sources:              cfg.MonitorSources,
		Budget:               cfg.MonitorBudget,
		StuckAfter:           cfg.StuckAfter,
		UnknownMessageMaxAge: cfg.UnknownMessageMaxAge,
		Retention:            cfg.Retention,
		MaxDequeueCount:      cfg.MaxDequeueCount,
		CallbackAllowedHosts: cfg.CallbackAllowedHosts,
		Logger:               log.With("component", "monitor"),
	})
	if err != nil {
		return nil, err
	}
	return &services{api: apiHandler, intake: in, submitter: sub, monitor: mon}, nil
}

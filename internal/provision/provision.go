package provision

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/spo"
	"github.com/spomig/spomig/internal/storageconn"
	"github.com/spomig/spomig/internal/vault"
)

// SPO is the part of the SharePoint client provisioning uses (*spo.Client).
type SPO interface {
	WebID(ctx context.Context, siteURL string) (string, error)
	ProvisionMigrationContainers(ctx context.Context, siteURL string) (spo.Containers, error)
	ProvisionMigrationQueue(ctx context.Context, siteURL string) (spo.Queue, error)
}

// Vault is the key custody provisioning uses (*vault.Custody).
type Vault interface {
	PutJob(ctx context.Context, jobID, site string, s vault.JobSecret) (version string, err error)
	GetJob(ctx context.Context, jobID string) (*vault.JobSecret, error)
	GetQueue(ctx context.Context, site string) (string, error)
	PutQueue(ctx context.Context, site, queueURI string, expires time.Time) error
}

// Jobs is the job store provisioning uses (*jobs.Store).
type Jobs interface {
	Get(ctx context.Context, id string) (*jobs.Job, error)
	CreateOrGet(ctx context.Context, j *jobs.Job) (*jobs.Job, bool, error)
	Update(ctx context.Context, id string, mutate func(*jobs.Job) error) (*jobs.Job, error)
}

var (
	_ SPO   = (*spo.Client)(nil)
	_ Vault = (*vault.Custody)(nil)
	_ Jobs  = (*jobs.Store)(nil)
)

// Defaults of Options.
const (
	DefaultStagingContainer = "migration-staging"
	DefaultUploadURLTTL     = time.Hour
	DefaultRenewBefore      = 12 * time.Hour
	// DefaultContainerLifetime is assumed when a container SAS carries no expiry (se): SharePoint's
	// container SAS are valid for about 3 days.
	DefaultContainerLifetime = 72 * time.Hour
	// DefaultDelegationKeyLifetime is how much longer than the SAS it signs a user delegation key is asked
	// for, so that one key serves many upload URLs.
	DefaultDelegationKeyLifetime = 24 * time.Hour
)

// Options configures New.
type Options struct {
	// Jobs, SPO and Vault are required.
	Jobs  Jobs
	SPO   SPO
	Vault Vault

	// Policy is what requests may name (site and callback hosts).
	Policy Policy

	// Storage is the app's storage connection (AzureWebJobsStorage), used to sign upload URLs: with its
	// account key, or else a user delegation key obtained with its identity. Nil, or a SAS connection
	// string: UploadURL fails with ErrUploadURLUnavailable.
	Storage *storageconn.Conn
	// BlobClientOptions configure the blob client of the user delegation path (transport, retries).
	BlobClientOptions *azblob.ClientOptions
	// StagingContainer receives the packages. Default DefaultStagingContainer.
	StagingContainer string
	// UploadURLTTL is the lifetime of an upload URL. Default DefaultUploadURLTTL (1h).
	UploadURLTTL time.Duration
	// RenewBefore: a site queue SAS (or a secret found on a retried Create) is reused only while it stays
	// valid this long. Default DefaultRenewBefore (12h), like SPOMIG_SAS_RENEW_BEFORE.
	RenewBefore time.Duration
	// DelegationKeyLifetime: see DefaultDelegationKeyLifetime.
	DelegationKeyLifetime time.Duration

	// Logger receives one line per job provisioned (ids, site, times; never a key or SAS). Default
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// NewID makes the id of a job created without Request.JobID. Default NewJobID.
	NewID func() string
}

func (o *Options) setDefaults() {
	if o.StagingContainer == "" {
		o.StagingContainer = DefaultStagingContainer
	}
	if o.UploadURLTTL <= 0 {
		o.UploadURLTTL = DefaultUploadURLTTL
	}
	if o.RenewBefore <= 0 {
		o.RenewBefore = DefaultRenewBefore
	}
	if o.DelegationKeyLifetime <= 0 {
		o.DelegationKeyLifetime = DefaultDelegationKeyLifetime
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.NewID == nil {
		o.NewID = NewJobID
	}
}

// Request asks for a new migration job.
type Request struct {
	SiteURL string // destination site collection, https on an allowed host (required)
	WebID   string // destination web (GUID); empty: the site's root web, looked up
	Label   string // free text for people
	// CallbackURL is notified when the job ends (optional; https on an allowed host, no user information or
	// fragment). A signed URL (sig=) is a credential: the job's Key Vault secret keeps it whole, the record
	// (and so the API) keeps it without its query. An unsigned URL is kept in the record only.
	CallbackURL string
	// Source is how the package arrives: jobs.SourceAPI (default) or jobs.SourceDrop.
	Source jobs.Source
	// JobID makes Create idempotent: a Create with the JobID of an existing job returns that job. Empty:
	// a new id (NewJobID). The drop path uses DropJobID.
	JobID string
	// StagingBlob is where the package is (drop) or will be uploaded (api). Empty: {StagingContainer,
	// "<id>.zip"}.
	StagingBlob jobs.BlobRef
}

// Service creates and re-provisions migration jobs and mints their upload URLs. It is safe for
// concurrent use.
type Service struct {
	opts   Options
	signer signer
}

// New returns a Service. It does no I/O.
func New(opts Options) (*Service, error) {
	opts.setDefaults()
	if opts.Jobs == nil || opts.SPO == nil || opts.Vault == nil {
		return nil, errors.New("provision: Jobs, SPO and Vault are required")
	}
	sg, err := newSigner(opts.Storage, opts.BlobClientOptions, opts.DelegationKeyLifetime)
	if err != nil {
		return nil, fmt.Errorf("provision: %w", err)
	}
	return &Service{opts: opts, signer: sg}, nil
}

// Policy returns the service's request policy.
func (s *Service) Policy() Policy { return s.opts.Policy }

// Create provisions a job (see the package documentation for the steps and their order) and returns its
// record, in state AwaitingPackage. With a JobID that already has a record, it returns that record and
// provisions nothing (ErrJobIDInUse if it is for another site).
//
// Errors: *FieldError (ErrInvalid, or ErrSiteNotAllowed), and the errors of the spo client (e.g.
// *spo.ThrottledError, spo.IsAccessDenied), of the vault (*vault.ThrottledError, …) and of the store,
// wrapped.
func (s *Service) Create(ctx context.Context, req Request) (*jobs.Job, error) {
	req, err := s.opts.Policy.Validate(req)
	if err != nil {
		return nil, err
	}
	log := s.opts.Logger
	retried := req.JobID != ""
	id := req.JobID
	if id == "" {
		id = s.opts.NewID()
	}
	if retried {
		existing, err := s.opts.Jobs.Get(ctx, id)
		switch {
		case err == nil:
			if vault.NormalizeSite(existing.SiteURL) != vault.NormalizeSite(req.SiteURL) {
				return nil, fmt.Errorf("create job %s: %w", id, ErrJobIDInUse)
			}
			log.InfoContext(ctx, "job already provisioned", "job_id", id, "state", string(existing.State))
			return existing, nil
		case !errors.Is(err, jobs.ErrNotFound):
			return nil, fmt.Errorf("create job %s: %w", id, err)
		}
	}
	if req.WebID == "" {
		web, err := s.opts.SPO.WebID(ctx, req.SiteURL)
		if err != nil {
			return nil, fmt.Errorf("create job %s: look up the web id: %w", id, err)
		}
		if !IsGUID(web) {
			return nil, fmt.Errorf("create job %s: look up the web id: %w", id, spo.ErrBadAnswer)
		}
		req.WebID = web
	}

	recordCallback, secretCallback := splitCallback(req.CallbackURL)
	now := s.opts.Now().UTC()
	var expires time.Time
	reused := false
	if retried { // a crash after PutJob left the secret without its record: reuse it
		if sec, err := s.opts.Vault.GetJob(ctx, id); err == nil {
			if sec.ExpiresAt.After(now.Add(s.opts.RenewBefore)) {
				expires, reused = sec.ExpiresAt, true
				if sec.CallbackURL != secretCallback { // the retry names another callback: keep this one
					sec.CallbackURL = secretCallback
					if _, err := s.opts.Vault.PutJob(ctx, id, req.SiteURL, *sec); err != nil {
						return nil, fmt.Errorf("create job %s: keep the job secret: %w", id, err)
					}
				}
			}
		} else if !errors.Is(err, vault.ErrNotFound) {
			return nil, fmt.Errorf("create job %s: %w", id, err)
		}
	}
	if !reused {
		expires, err = s.provisionSecret(ctx, id, req.SiteURL, "", secretCallback)
		if err != nil {
			return nil, fmt.Errorf("create job %s: %w", id, err)
		}
	}

	blob := req.StagingBlob
	if blob.Container == "" {
		blob.Container = s.opts.StagingContainer
	}
	if blob.Name == "" {
		blob.Name = id + ".zip"
	}
	rec := &jobs.Job{
		ID:                 id,
		Label:              req.Label,
		SiteURL:            req.SiteURL,
		WebID:              req.WebID,
		SecretName:         vault.JobSecretName(id),
		StagingBlob:        blob,
		Source:             req.Source,
		CallbackURL:        recordCallback,
		State:              jobs.StateAwaitingPackage,
		ContainersExpireAt: expires,
	}
	got, created, err := s.opts.Jobs.CreateOrGet(ctx, rec)
	if err != nil {
		return nil, fmt.Errorf("create job %s: %w", id, err)
	}
	if created {
		log.InfoContext(ctx, "job provisioned", "job_id", id, "site", req.SiteURL, "source", string(req.Source),
			"containers_expire_at", expires, "reused_secret", reused, "signed_callback", secretCallback != "")
	} else {
		log.InfoContext(ctx, "job created concurrently; returning the existing record", "job_id", id)
	}
	return got, nil
}

// provisionSecret provisions containers and a key for the job, finds the site's queue (queueURI when
// still valid, else the site's), and keeps all of it in the job's secret, with the signed callback URL
// (if any). It returns when the containers expire.
func (s *Service) provisionSecret(ctx context.Context, id, site, queueURI, callbackURL string) (time.Time, error) {
	c, err := s.opts.SPO.ProvisionMigrationContainers(ctx, site)
	if err != nil {
		return time.Time{}, fmt.Errorf("provision containers: %w", err)
	}
	defer clear(c.EncryptionKey)
	now := s.opts.Now().UTC()
	expires := minTime(sasExpiry(c.DataContainerURI), sasExpiry(c.MetadataContainerURI))
	if expires.IsZero() {
		expires = now.Add(DefaultContainerLifetime)
	}
	if queueURI == "" || !sasValid(queueURI, now.Add(s.opts.RenewBefore)) {
		queueURI, err = s.siteQueue(ctx, site, now)
		if err != nil {
			return time.Time{}, err
		}
	}
	_, err = s.opts.Vault.PutJob(ctx, id, site, vault.JobSecret{
		Key:                  c.EncryptionKey,
		DataContainerURI:     c.DataContainerURI,
		MetadataContainerURI: c.MetadataContainerURI,
		QueueURI:             queueURI,
		CallbackURL:          callbackURL,
		ProvisionedAt:        now,
		ExpiresAt:            expires,
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("keep the job secret: %w", err)
	}
	return expires, nil
}

// siteQueue returns the site's report queue URI: the one in Key Vault while its SAS stays valid for
// RenewBefore, else a new one from SharePoint, which it keeps.
func (s *Service) siteQueue(ctx context.Context, site string, now time.Time) (string, error) {
	uri, err := s.opts.Vault.GetQueue(ctx, site)
	switch {
	case err == nil && sasValid(uri, now.Add(s.opts.RenewBefore)):
		return uri, nil
	case err != nil && !errors.Is(err, vault.ErrNotFound):
		return "", fmt.Errorf("read the site queue: %w", err)
	}
	q, err := s.opts.SPO.ProvisionMigrationQueue(ctx, site)
	if err != nil {
		return "", fmt.Errorf("provision the site queue: %w", err)
	}
	if err := s.opts.Vault.PutQueue(ctx, site, q.JobQueueURI, sasExpiry(q.JobQueueURI)); err != nil {
		return "", fmt.Errorf("keep the site queue: %w", err)
	}
	return q.JobQueueURI, nil
}

// Reprovision gives a job that is not staged yet (AwaitingPackage or Encrypting) new containers and a new
// key, replacing its secret (a new version) and the record's ContainersExpireAt. Whatever was staged in
// the old containers is abandoned: the caller stages the package again. The job's queue is kept while its
// SAS stays valid, and its signed callback URL always. A job past Encrypting is ErrNotReprovisionable.
func (s *Service) Reprovision(ctx context.Context, jobID string) (*jobs.Job, error) {
	j, err := s.opts.Jobs.Get(ctx, jobID)
	if err != nil {
		return nil, fmt.Errorf("reprovision job %s: %w", jobID, err)
	}
	if err := reprovisionable(j); err != nil {
		return nil, err
	}
	queueURI, callbackURL := "", ""
	if sec, err := s.opts.Vault.GetJob(ctx, jobID); err == nil {
		queueURI, callbackURL = sec.QueueURI, sec.CallbackURL
	} else if !errors.Is(err, vault.ErrNotFound) {
		return nil, fmt.Errorf("reprovision job %s: %w", jobID, err)
	}
	expires, err := s.provisionSecret(ctx, jobID, j.SiteURL, queueURI, callbackURL)
	if err != nil {
		return nil, fmt.Errorf("reprovision job %s: %w", jobID, err)
	}
	got, err := s.opts.Jobs.Update(ctx, jobID, func(j *jobs.Job) error {
		if err := reprovisionable(j); err != nil {
			return err
		}
		j.ContainersExpireAt = expires
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reprovision job %s: %w", jobID, err)
	}
	s.opts.Logger.InfoContext(ctx, "job reprovisioned", "job_id", jobID, "containers_expire_at", expires)
	return got, nil
}

func reprovisionable(j *jobs.Job) error {
	switch j.State {
	case jobs.StateAwaitingPackage, jobs.StateEncrypting:
		return nil
	}
	return fmt.Errorf("reprovision job %s in state %s: %w", j.ID, j.State, ErrNotReprovisionable)
}

// UploadURL mints the URL the caller uploads the job's package to: a SAS URL of the job's staging blob
// with create and write permissions only, valid for Options.UploadURLTTL. Upload with a single
// PUT and "x-ms-blob-type: BlockBlob" (up to 5000 MiB), or in blocks (Put Block, Put Block List). Only
// a job awaiting its package gets one (ErrNotAwaitingPackage).
//
// The URL is a credential: hand it to the caller and nowhere else (never log it).
func (s *Service) UploadURL(ctx context.Context, jobID string) (string, time.Time, error) {
	if s.signer == nil {
		return "", time.Time{}, ErrUploadURLUnavailable
	}
	j, err := s.opts.Jobs.Get(ctx, jobID)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("upload URL of job %s: %w", jobID, err)
	}
	if j.State != jobs.StateAwaitingPackage {
		return "", time.Time{}, fmt.Errorf("upload URL of job %s in state %s: %w", jobID, j.State, ErrNotAwaitingPackage)
	}
	blob := j.StagingBlob
	if blob.Container == "" {
		blob.Container = s.opts.StagingContainer
	}
	if blob.Name == "" {
		blob.Name = j.ID + ".zip"
	}
	now := s.opts.Now().UTC()
	expires := now.Add(s.opts.UploadURLTTL).Truncate(time.Second)
	u, err := s.signer.sign(ctx, blob.Container, blob.Name, now.Add(-clockSkew), expires)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("upload URL of job %s: %w", jobID, err)
	}
	return u, expires, nil
}

// sasExpiry reads the se (signed expiry) of a SAS URI; zero when it has none.
func sasExpiry(uri string) time.Time {
	u, err := url.Parse(uri)
	if err != nil {
		return time.Time{}
	}
	se := u.Query().Get("se")
	if se == "" {
		return time.Time{}
	}
	for _, layout := range []string{sas.TimeFormat, time.RFC3339Nano, "2006-01-02T15:04Z", "2006-01-02"} {
		if t, err := time.Parse(layout, se); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

// sasValid reports whether the SAS URI stays valid until at least t (a SAS without se counts as valid).
func sasValid(uri string, t time.Time) bool {
	exp := sasExpiry(uri)
	return exp.IsZero() || exp.After(t)
}

func minTime(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

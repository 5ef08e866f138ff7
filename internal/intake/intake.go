package intake

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"path"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/migpkg"
	"github.com/spomig/spomig/internal/provision"
	"github.com/spomig/spomig/internal/spo"
	"github.com/spomig/spomig/internal/stage"
	"github.com/spomig/spomig/internal/submit"
	"github.com/spomig/spomig/internal/vault"
)

// ---- what the intake consumes ----

// Jobs is the part of the job store (*jobs.Store) the intake uses.
type Jobs interface {
	Get(ctx context.Context, id string) (*jobs.Job, error)
	Create(ctx context.Context, j *jobs.Job) error
	Update(ctx context.Context, id string, mutate func(*jobs.Job) error) (*jobs.Job, error)
}

// Vault is the part of key custody (*vault.Custody) the intake uses.
type Vault interface {
	GetJob(ctx context.Context, jobID string) (*vault.JobSecret, error)
}

// Provisioner creates jobs and renews their containers (*provision.Service).
type Provisioner interface {
	// Create provisions containers and a key for a new job, keeps them in Key Vault and creates the
	// record (AwaitingPackage). With the JobID of an existing record it returns that record and
	// provisions nothing.
	Create(ctx context.Context, req provision.Request) (*jobs.Job, error)
	// Reprovision gives a job that is not staged yet new containers and a new key (a new version of its
	// Key Vault secret, the record's ContainersExpireAt).
	Reprovision(ctx context.Context, jobID string) (*jobs.Job, error)
}

// Uploader encrypts and uploads items, each with a fresh IV in its metadata, and snapshots each blob
// after its upload (*stage.Uploader). A 403 of a container is an error matching stage.ErrSASExpired.
type Uploader interface {
	UploadAll(ctx context.Context, dst stage.Destination, items []stage.Item) ([]stage.ItemResult, error)
}

var (
	_ Jobs        = (*jobs.Store)(nil)
	_ Vault       = (*vault.Custody)(nil)
	_ Provisioner = (*provision.Service)(nil)
	_ Uploader    = (*stage.Uploader)(nil)
)

// ---- options ----

// Defaults of Options.
const (
	DefaultSASRenewBefore = 12 * time.Hour
	DefaultProgressEvery  = 15 * time.Second
	DefaultLeaseDuration  = 60 * time.Second
)

// Options configures New. Jobs, Vault, Provisioner, Uploader, Staging and SubmitQueue are required.
type Options struct {
	Jobs        Jobs
	Vault       Vault
	Provisioner Provisioner
	Uploader    Uploader
	// Staging is the migration-staging container: the packages are read from it, and the trigger's
	// container must be it.
	Staging *container.Client
	// SubmitQueue is migration-submit: a staged job's message goes there (see EncodeMessage).
	SubmitQueue *azqueue.QueueClient
	// Reports, when set, receives the full problem list of a rejected package as
	// <job id>/package-problems.txt, and the record's LogsBlobPrefix points there. The record itself keeps
	// the first problems only (FailureReason, FirstErrors).
	Reports *container.Client

	// Package bounds what a package may be (zip safety limits, problems recorded); zero fields take
	// migpkg's defaults. Memory: see migpkg.Options.
	Package migpkg.Options
	// Reader configures the ranged reads of the staging blob. Memory: Reader.ChunkSize × Reader.CacheChunks.
	Reader ReaderOptions

	// SASRenewBefore: when the containers' SAS expire sooner than this (record ContainersExpireAt or the
	// SAS se= parameter), new containers and a new key are provisioned before uploading. Default 12h.
	SASRenewBefore time.Duration
	// ProgressEvery is the interval of the progress updates of the record while uploading. Default 15s.
	ProgressEvery time.Duration
	// LeaseDuration is the lease taken on the staging blob while it is processed, renewed every third
	// of it; 15s to 60s (default 60s). After a crash the blob is free again within this time.
	LeaseDuration time.Duration

	// EncodeMessage makes the migration-submit message text of a job. Default submit.EncodeQueueMessage
	// (base64 of {"jobId":"<id>"}, as the queue trigger decodes it with the host's messageEncoding base64).
	EncodeMessage func(jobID string) string
	// IsSASExpired, when set, adds to the recognition of an expired container SAS in an upload error
	// (stage.ErrSASExpired, or a 403 AuthenticationFailed / AuthorizationFailure from the SPO storage).
	IsSASExpired func(error) bool

	// Logger receives the intake's logs; never a key or a SAS. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.SASRenewBefore <= 0 {
		o.SASRenewBefore = DefaultSASRenewBefore
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = DefaultProgressEvery
	}
	if o.LeaseDuration <= 0 {
		o.LeaseDuration = DefaultLeaseDuration
	}
	o.LeaseDuration = min(max(o.LeaseDuration, 15*time.Second), 60*time.Second).Truncate(time.Second)
	if o.EncodeMessage == nil {
		o.EncodeMessage = submit.EncodeQueueMessage
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Reader.setDefaults()
}

// Intake is EncryptBlobTrigger's domain: see the package documentation. It is safe for concurrent use.
type Intake struct {
	opts      Options
	container string // name of the staging container
	reports   string // name of the reports container, or ""
	log       *slog.Logger
}

// New checks opts and returns an Intake. It does no I/O.
func New(opts Options) (*Intake, error) {
	var missing []string
	for _, m := range []struct {
		name string
		nil  bool
	}{
		{"Jobs", opts.Jobs == nil}, {"Vault", opts.Vault == nil}, {"Provisioner", opts.Provisioner == nil},
		{"Uploader", opts.Uploader == nil}, {"Staging", opts.Staging == nil}, {"SubmitQueue", opts.SubmitQueue == nil},
	} {
		if m.nil {
			missing = append(missing, m.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("intake: missing %s", strings.Join(missing, ", "))
	}
	opts.setDefaults()
	in := &Intake{opts: opts, log: opts.Logger}
	var err error
	if in.container, err = containerName(opts.Staging.URL()); err != nil {
		return nil, fmt.Errorf("intake: staging container: %w", err)
	}
	if opts.Reports != nil {
		if in.reports, err = containerName(opts.Reports.URL()); err != nil {
			return nil, fmt.Errorf("intake: reports container: %w", err)
		}
	}
	return in, nil
}

func containerName(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", errors.New("container URL does not parse")
	}
	name := path.Base(strings.TrimRight(u.Path, "/"))
	if name == "" || name == "." || name == "/" {
		return "", errors.New("container URL names no container")
	}
	return name, nil
}

// ---- the trigger ----

// blobInfo is what the intake knows of the staging blob.
type blobInfo struct {
	container, name string
	etag            string // the version being processed (unquoted): the trigger's, else the current one
	current         string // the blob's current ETag (unquoted)
	size            int64
	metadata        map[string]string
	folder          bool // an HNS directory (metadata hdi_isfolder=true)
}

// ProcessBlob deals with the blob container/name, version etag (quoted or not; empty means the
// current version), that appeared in the staging container. It returns nil when the blob was dealt
// with — staged, recorded as rejected (the job says why), or deliberately ignored (logged) — and an
// error when the trigger should be retried: storage, Key Vault or SharePoint unavailable or throttled,
// another invocation processing the same blob (ErrBusy), the blob changed while being read.
func (in *Intake) ProcessBlob(ctx context.Context, containerName, name, etag string) error {
	if containerName == "" {
		containerName = in.container
	}
	log := in.log.With("container", containerName, "blob", name, "etag", normETag(etag))
	if containerName != in.container {
		return fmt.Errorf("intake: blob %q is in container %q, not in the staging container %q", name, containerName, in.container)
	}
	if name == "" || strings.HasSuffix(name, "/") {
		log.InfoContext(ctx, "folder marker ignored")
		return nil
	}
	b, err := in.stat(ctx, name, etag)
	if errors.Is(err, errGone) {
		log.InfoContext(ctx, "blob no longer exists; nothing to do")
		return nil
	}
	if err != nil {
		return err
	}
	if b.folder {
		log.InfoContext(ctx, "directory ignored")
		return nil
	}

	jobID, api, job, err := in.resolve(ctx, b)
	if err != nil {
		return err
	}
	log = log.With("job", jobID)
	if job != nil {
		if done, err := in.settled(ctx, log, job, b); done {
			return err
		}
	}
	if b.etag != b.current {
		log.InfoContext(ctx, "blob replaced since the trigger; the new version has its own trigger", "current_etag", b.current)
		return nil
	}
	if b.size == 0 {
		log.WarnContext(ctx, "zero-length blob ignored: an upload placeholder, its content triggers again")
		return nil
	}

	l, wctx, err := acquireLease(ctx, in.opts.Staging.NewBlobClient(name), b.etag, in.opts.LeaseDuration, log)
	switch {
	case errors.Is(err, errSuperseded), errors.Is(err, errGone):
		log.InfoContext(ctx, "blob replaced or deleted since the trigger; nothing to do")
		return nil
	case errors.Is(err, ErrBusy):
		log.InfoContext(ctx, "blob is being processed by another invocation; retry later")
		return fmt.Errorf("blob %s: %w", name, ErrBusy)
	case err != nil:
		return err
	}
	defer l.release(ctx)
	err = in.process(wctx, log, b, jobID, api)
	if err != nil && errors.Is(context.Cause(wctx), errLeaseLost) {
		err = fmt.Errorf("%w: %w", errLeaseLost, err)
	}
	return err
}

// stat reads the blob's properties.
func (in *Intake) stat(ctx context.Context, name, etag string) (*blobInfo, error) {
	props, err := in.opts.Staging.NewBlobClient(name).GetProperties(ctx, nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound) {
			return nil, errGone
		}
		return nil, fmt.Errorf("get properties of staging blob %s: %w", name, err)
	}
	b := &blobInfo{container: in.container, name: name, metadata: map[string]string{}}
	if props.ETag != nil {
		b.current = normETag(string(*props.ETag))
	}
	b.etag = normETag(etag)
	if b.etag == "" {
		b.etag = b.current
	}
	if props.ContentLength != nil {
		b.size = *props.ContentLength
	}
	for k, v := range props.Metadata {
		if v != nil {
			b.metadata[k] = *v
		}
	}
	if v, ok := lookupFold(b.metadata, "hdi_isfolder"); ok && strings.EqualFold(v, "true") {
		b.folder = true
	}
	return b, nil
}

// resolve finds the job of a blob: {id}.zip at the container root names an API job whose record
// expects that blob; any other blob is a self-service drop with id DropJobID. job is nil when the
// drop's record does not exist yet.
func (in *Intake) resolve(ctx context.Context, b *blobInfo) (id string, api bool, job *jobs.Job, err error) {
	if base, ok := strings.CutSuffix(b.name, ".zip"); ok && !strings.Contains(b.name, "/") && jobs.ValidID(base) {
		j, err := in.opts.Jobs.Get(ctx, base)
		switch {
		case err == nil && (j.StagingBlob.Name == "" || j.StagingBlob.Name == b.name) &&
			(j.StagingBlob.Container == "" || j.StagingBlob.Container == b.container):
			return base, true, j, nil
		case err == nil, errors.Is(err, jobs.ErrNotFound):
		default:
			return "", false, nil, fmt.Errorf("get job %s: %w", base, err)
		}
	}
	id = DropJobID(b.container, b.name, b.etag)
	j, err := in.getJob(ctx, id)
	return id, false, j, err
}

// getJob returns the record, or nil when there is none.
func (in *Intake) getJob(ctx context.Context, id string) (*jobs.Job, error) {
	j, err := in.opts.Jobs.Get(ctx, id)
	if errors.Is(err, jobs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	return j, nil
}

// settled handles a job that needs no (more) staging: a Staged job gets its submit message again (the
// submitter is idempotent; the previous attempt may have failed to enqueue), a job past Staged is left
// alone. done is false for a job still waiting for (or in) staging.
func (in *Intake) settled(ctx context.Context, log *slog.Logger, job *jobs.Job, b *blobInfo) (done bool, err error) {
	switch job.State {
	case jobs.StateAwaitingPackage, jobs.StateEncrypting:
		return false, nil
	case jobs.StateStaged:
		if job.StagingETag != "" && job.StagingETag != b.etag {
			log.WarnContext(ctx, "job already staged from another version of the blob; this version is ignored", "staged_etag", job.StagingETag)
		} else {
			log.InfoContext(ctx, "job already staged; submit message sent again")
		}
		return true, in.enqueue(ctx, job.ID)
	default:
		log.InfoContext(ctx, "job is past staging; blob ignored", "state", job.State)
		return true, nil
	}
}

// process runs under the lease.
func (in *Intake) process(ctx context.Context, log *slog.Logger, b *blobInfo, jobID string, api bool) error {
	// Another invocation may have finished while this one waited for the lease.
	job, err := in.getJob(ctx, jobID)
	if err != nil {
		return err
	}
	if job != nil {
		if done, err := in.settled(ctx, log, job, b); done {
			return err
		}
	} else if api {
		log.WarnContext(ctx, "job record vanished; blob ignored")
		return nil
	}
	ra := NewBlobReaderAt(ctx, in.opts.Staging.NewBlobClient(b.name), b.etag, b.size, in.opts.Reader)
	defer ra.Close()
	if job == nil {
		return in.newDrop(ctx, log, b, jobID, ra)
	}
	pkg, err := in.openPackage(ctx, ra, b.size, job.WebID)
	if ve := validationError(err); ve != nil {
		return in.reject(ctx, log, job.ID, b, ve)
	}
	if err != nil {
		return err
	}
	return in.encrypt(ctx, log, job, pkg, b)
}

func validationError(err error) *migpkg.ValidationError {
	var ve *migpkg.ValidationError
	if errors.As(err, &ve) {
		return ve
	}
	return nil
}

// openPackage runs zip safety and package validation, including that every object belongs to the job's
// target web (webID; SharePoint would fail each object that does not). Nothing is uploaded before it
// succeeds.
func (in *Intake) openPackage(ctx context.Context, ra io.ReaderAt, size int64, webID string) (*migpkg.Package, error) {
	opts := in.opts.Package
	opts.WebID = webID
	pkg, err := migpkg.Open(ra, size, opts)
	if err != nil {
		return nil, err
	}
	if err := pkg.Validate(ctx); err != nil {
		return nil, err
	}
	return pkg, nil
}

// ---- self-service drops ----

// newDrop creates the job of a drop seen for the first time: validated first (nothing is provisioned
// for a package that cannot be staged), then provisioned for its target, then staged.
func (in *Intake) newDrop(ctx context.Context, log *slog.Logger, b *blobInfo, jobID string, ra *BlobReaderAt) error {
	target, hasTarget, terr := TargetFromMetadata(b.metadata)
	pkg, err := migpkg.Open(ra, b.size, in.opts.Package)
	ve := validationError(err)
	if err != nil && ve == nil {
		return err
	}
	if ve == nil && !hasTarget {
		target, hasTarget, terr, err = readDropConfig(ra, b.size)
		if err != nil {
			return err
		}
	}
	if ve == nil {
		if err := pkg.Validate(ctx); err != nil {
			if ve = validationError(err); ve == nil {
				return err
			}
		}
	}
	if terr != nil {
		target = DropTarget{}
	}
	switch {
	case ve != nil:
		return in.recordDrop(ctx, log, jobID, b, target, packageReason(ve), ve)
	case terr != nil:
		return in.recordDrop(ctx, log, jobID, b, target, terr.Error(), nil)
	case !hasTarget:
		return in.recordDrop(ctx, log, jobID, b, target, "no target for this self-service drop: set the blob metadata "+
			"siteurl (optionally webid and label), or put a "+DropConfigName+` {"siteUrl": "https://…"} at the zip root`, nil)
	}
	label := target.Label
	if label == "" {
		label = b.name
	}
	log.InfoContext(ctx, "self-service drop: provisioning", "site", target.SiteURL, "target_from", target.From)
	job, err := in.opts.Provisioner.Create(ctx, provision.Request{
		SiteURL: target.SiteURL, WebID: target.WebID, Label: truncateUTF8(label, maxLabelBytes), Source: jobs.SourceDrop,
		JobID: jobID, StagingBlob: jobs.BlobRef{Container: b.container, Name: b.name},
	})
	if err != nil {
		if permanentProvisionError(err) {
			return in.recordDrop(ctx, log, jobID, b, target, fmt.Sprintf("cannot provision containers for %s: %v", target.SiteURL, err), nil)
		}
		return fmt.Errorf("provision job %s: %w", jobID, err)
	}
	if job == nil {
		if job, err = in.getJob(ctx, jobID); err != nil {
			return err
		}
		if job == nil {
			return fmt.Errorf("provision job %s: no record after provisioning", jobID)
		}
	}
	if done, err := in.settled(ctx, log, job, b); done {
		return err
	}
	return in.encrypt(ctx, log, job, pkg, b)
}

// readDropConfig looks for spomig.json at the root of a zip that migpkg.Open accepted (so its directory
// is within the package limits). err is an I/O error; terr is a problem with the document.
func readDropConfig(ra io.ReaderAt, size int64) (t DropTarget, found bool, terr, err error) {
	zr, zerr := zip.NewReader(ra, size)
	if zerr != nil && !errors.Is(zerr, zip.ErrInsecurePath) { // migpkg.Open judged the names already
		if isFormatError(zerr) {
			return DropTarget{}, false, nil, nil
		}
		return DropTarget{}, false, nil, zerr
	}
	for _, f := range zr.File {
		if !strings.EqualFold(f.Name, DropConfigName) {
			continue
		}
		if f.UncompressedSize64 > MaxDropConfigSize {
			return DropTarget{}, true, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadTarget, DropConfigName, MaxDropConfigSize), nil
		}
		rc, oerr := f.Open()
		if oerr != nil {
			if isFormatError(oerr) {
				return DropTarget{}, true, fmt.Errorf("%w: %s cannot be read: %v", ErrBadTarget, DropConfigName, oerr), nil
			}
			return DropTarget{}, true, nil, oerr
		}
		defer rc.Close()
		t, perr := ParseDropConfig(rc)
		switch {
		case perr == nil:
			return t, true, nil, nil
		case errors.Is(perr, ErrBadTarget):
			return DropTarget{}, true, perr, nil
		case isFormatError(perr):
			return DropTarget{}, true, fmt.Errorf("%w: %s cannot be read: %v", ErrBadTarget, DropConfigName, perr), nil
		default:
			return DropTarget{}, true, nil, perr
		}
	}
	return DropTarget{}, false, nil, nil
}

// isFormatError tells a broken zip from a failing read of the blob.
func isFormatError(err error) bool {
	var ce flate.CorruptInputError
	return errors.Is(err, zip.ErrFormat) || errors.Is(err, zip.ErrChecksum) || errors.Is(err, zip.ErrAlgorithm) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ce)
}

// permanentProvisionError reports a provisioning failure that retrying cannot fix: the target is not
// allowed, does not exist, or refuses us.
func permanentProvisionError(err error) bool {
	var p interface{ Permanent() bool }
	if errors.As(err, &p) {
		return p.Permanent()
	}
	if errors.Is(err, provision.ErrInvalid) || errors.Is(err, provision.ErrSiteNotAllowed) || errors.Is(err, provision.ErrJobIDInUse) ||
		errors.Is(err, spo.ErrSiteNotHTTPS) || errors.Is(err, spo.ErrSiteNotAllowed) || errors.Is(err, spo.ErrBadID) ||
		errors.Is(err, jobs.ErrInvalid) || errors.Is(err, jobs.ErrSecret) {
		return true
	}
	if spo.IsThrottled(err) {
		return false
	}
	if spo.IsAccessDenied(err) {
		return true
	}
	var se *spo.Error
	if errors.As(err, &se) {
		switch se.StatusCode {
		case 400, 403, 404:
			return true
		}
	}
	return false
}

// recordDrop creates the Failed record of a drop that will not be staged, so that it is never silently
// ignored. A re-delivered trigger finds the record (same DropJobID).
func (in *Intake) recordDrop(ctx context.Context, log *slog.Logger, jobID string, b *blobInfo, t DropTarget, reason string, ve *migpkg.ValidationError) error {
	now := in.opts.Now()
	prefix, err := in.writeReport(ctx, jobID, reason, ve)
	if err != nil {
		return err
	}
	label := t.Label
	if label == "" {
		label = b.name
	}
	build := func(withTarget bool) *jobs.Job {
		j := &jobs.Job{
			ID: jobID, Label: truncateUTF8(label, maxLabelBytes), Source: jobs.SourceDrop,
			StagingBlob: jobs.BlobRef{Container: b.container, Name: b.name}, StagingETag: b.etag,
			SecretName: "", LogsBlobPrefix: prefix, State: jobs.StateAwaitingPackage,
			History: []jobs.Transition{{State: jobs.StateAwaitingPackage, At: now, Reason: "self-service drop"}},
		}
		if withTarget {
			j.SiteURL, j.WebID = t.SiteURL, t.WebID
		} else {
			j.Label = ""
		}
		applyFailure(j, now, reason, ve)
		return j
	}
	err = in.opts.Jobs.Create(ctx, build(true))
	if errors.Is(err, jobs.ErrInvalid) || errors.Is(err, jobs.ErrSecret) {
		err = in.opts.Jobs.Create(ctx, build(false)) // a target the record cannot hold: keep the reason at least
	}
	if errors.Is(err, jobs.ErrExists) {
		_, err = in.opts.Jobs.Update(ctx, jobID, func(j *jobs.Job) error {
			if j.Terminal() {
				return nil
			}
			if prefix != "" {
				j.LogsBlobPrefix = prefix
			}
			applyFailure(j, now, reason, ve)
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("record rejected drop %s: %w", jobID, err)
	}
	log.WarnContext(ctx, "self-service drop rejected", "reason", reason)
	return nil
}

// ---- rejection ----

// reject records an invalid package on its job: Failed, with every problem (FailureReason, FirstErrors
// and, with Options.Reports, the full list). The staged zip is kept; nothing was uploaded.
func (in *Intake) reject(ctx context.Context, log *slog.Logger, jobID string, b *blobInfo, ve *migpkg.ValidationError) error {
	now := in.opts.Now()
	reason := packageReason(ve)
	prefix, err := in.writeReport(ctx, jobID, reason, ve)
	if err != nil {
		return err
	}
	_, err = in.opts.Jobs.Update(ctx, jobID, func(j *jobs.Job) error {
		if j.State != jobs.StateAwaitingPackage && j.State != jobs.StateEncrypting {
			return nil // cancelled (or failed) meanwhile
		}
		j.StagingBlob = jobs.BlobRef{Container: b.container, Name: b.name}
		j.StagingETag = b.etag
		if prefix != "" {
			j.LogsBlobPrefix = prefix
		}
		applyFailure(j, now, reason, ve)
		return nil
	})
	if err != nil {
		return fmt.Errorf("record invalid package of job %s: %w", jobID, err)
	}
	for i, p := range ve.Problems {
		if i == 100 {
			log.WarnContext(ctx, "more package problems not logged", "count", len(ve.Problems)-i)
			break
		}
		log.WarnContext(ctx, "package problem", "code", p.Code, "entry", p.Entry, "message", p.Message)
	}
	log.WarnContext(ctx, "package rejected; job failed", "problems", len(ve.Problems))
	return nil
}

// applyFailure moves j to Failed with reason and keeps the first problems as item failures.
func applyFailure(j *jobs.Job, now time.Time, reason string, ve *migpkg.ValidationError) {
	if err := j.Transition(jobs.StateFailed, now, reason); err != nil {
		return
	}
	if ve == nil {
		return
	}
	j.FirstErrors = j.FirstErrors[:0]
	for _, p := range ve.Problems {
		ot := "PackageFile"
		if p.Entry == "" {
			ot = "Package"
		}
		if !j.AddItemFailure(jobs.ItemFailure{Kind: jobs.ItemError, ObjectType: ot, URL: p.Entry, ErrorCode: p.Code, Message: p.Message}) {
			break
		}
	}
}

// packageReason summarizes the problems in at most about 480 bytes (the record keeps 512): as many
// as fit, then how many more there are.
func packageReason(ve *migpkg.ValidationError) string {
	const budget = 480
	n := len(ve.Problems)
	more := func(k int) string { return fmt.Sprintf("; … %d more", k) }
	var b strings.Builder
	fmt.Fprintf(&b, "invalid package: %d problem", n)
	if n != 1 {
		b.WriteString("s")
	}
	for i, p := range ve.Problems {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		s := sep + p.String()
		tail := ""
		if rest := n - i - 1; rest > 0 {
			tail = more(rest)
		}
		if b.Len()+len(s)+len(tail) <= budget {
			b.WriteString(s)
			continue
		}
		if i == 0 { // always show (the start of) the first problem
			b.WriteString(truncateUTF8(s, max(budget-b.Len()-len(tail), 0)))
			b.WriteString(tail)
			break
		}
		b.WriteString(more(n - i))
		break
	}
	return b.String()
}

// writeReport uploads the full problem list (when Options.Reports is set) and returns LogsBlobPrefix.
func (in *Intake) writeReport(ctx context.Context, jobID, reason string, ve *migpkg.ValidationError) (string, error) {
	if in.opts.Reports == nil {
		return "", nil
	}
	var b bytes.Buffer
	b.WriteString(reason + "\n")
	if ve != nil {
		b.WriteString("\n")
		for _, p := range ve.Problems {
			b.WriteString(p.String() + "\n")
		}
	}
	name := jobID + "/package-problems.txt"
	_, err := in.opts.Reports.NewBlockBlobClient(name).UploadBuffer(ctx, b.Bytes(), &blockblob.UploadBufferOptions{
		HTTPHeaders: &blob.HTTPHeaders{BlobContentType: ptr("text/plain; charset=utf-8")},
	})
	if err != nil {
		return "", fmt.Errorf("write package report %s: %w", name, err)
	}
	return in.reports + "/" + jobID + "/", nil
}

// ---- staging ----

// errJobLeft reports a job that left Encrypting while it was being staged (cancelled, failed).
var errJobLeft = errors.New("job is no longer being staged")

// notClaimable reports a job that cannot enter Encrypting.
type notClaimable struct{ state jobs.State }

func (e *notClaimable) Error() string { return fmt.Sprintf("job is %s", e.state) }

// encrypt stages a validated package: Encrypting, upload of every item (re-provisioning when the SAS
// is expiring or expired), Staged, submit message.
func (in *Intake) encrypt(ctx context.Context, log *slog.Logger, job *jobs.Job, pkg *migpkg.Package, b *blobInfo) error {
	all, err := pkg.Items()
	if err != nil {
		return err
	}
	items := uploadItems(all, pkg.Warnings)
	var files, size int64
	for _, it := range items {
		if it.Container == migpkg.Data {
			files++
			size += it.Size
		}
	}
	now := in.opts.Now()
	jobID := job.ID
	job, err = in.opts.Jobs.Update(ctx, jobID, func(j *jobs.Job) error {
		if j.State != jobs.StateAwaitingPackage && j.State != jobs.StateEncrypting {
			return &notClaimable{j.State}
		}
		if err := j.Transition(jobs.StateEncrypting, now, "package version "+b.etag); err != nil {
			return err
		}
		j.StagingBlob = jobs.BlobRef{Container: b.container, Name: b.name}
		j.StagingETag = b.etag
		j.FilesTotal, j.BytesTotal, j.ObjectsTotal = files, size, int64(pkg.Totals().SPObjects)
		j.FilesDone, j.BytesDone = 0, 0
		return nil
	})
	var nc *notClaimable
	if errors.As(err, &nc) {
		log.InfoContext(ctx, "job left the intake meanwhile; nothing staged", "state", nc.state)
		return nil
	}
	if err != nil {
		return fmt.Errorf("claim job %s: %w", jobID, err)
	}
	for _, w := range pkg.Warnings {
		log.InfoContext(ctx, "package warning", "code", w.Code, "entry", w.Entry, "message", w.Message)
	}
	log.InfoContext(ctx, "staging package", "blobs", len(items), "content_files", files, "content_bytes", size)

	renewed := false
	for {
		dst, didRenew, err := in.destination(ctx, log, job.ID, !renewed)
		if err != nil {
			return err
		}
		renewed = renewed || didRenew
		err = in.upload(ctx, job.ID, b.etag, dst, items)
		clear(dst.Key)
		if err == nil {
			break
		}
		if errors.Is(err, errJobLeft) {
			log.InfoContext(ctx, "job was cancelled or failed while staging; stopped")
			return nil
		}
		if ve := validationError(err); ve != nil {
			return in.reject(ctx, log, job.ID, b, ve) // entry data failed its checks while streaming
		}
		if in.sasExpired(err) && !renewed {
			log.WarnContext(ctx, "container SAS no longer accepted; provisioning new containers and key", "error", errText(err))
			if err := in.reprovision(ctx, job.ID); err != nil {
				return err
			}
			renewed = true
			continue
		}
		return fmt.Errorf("stage package of job %s: %w", job.ID, err)
	}

	_, err = in.opts.Jobs.Update(ctx, job.ID, func(j *jobs.Job) error {
		if j.State != jobs.StateEncrypting || j.StagingETag != b.etag {
			return errJobLeft
		}
		if err := j.Transition(jobs.StateStaged, in.opts.Now(), fmt.Sprintf("%d blobs encrypted and snapshotted", len(items))); err != nil {
			return err
		}
		j.FilesDone, j.BytesDone = j.FilesTotal, j.BytesTotal
		return nil
	})
	if errors.Is(err, errJobLeft) {
		log.InfoContext(ctx, "job was cancelled or failed while staging; not submitted")
		return nil
	}
	if err != nil {
		return fmt.Errorf("mark job %s staged: %w", job.ID, err)
	}
	log.InfoContext(ctx, "package staged")
	return in.enqueue(ctx, job.ID)
}

// uploadItems leaves spomig.json out when it is only the drop's control file (no FileValue refers to it).
func uploadItems(items []migpkg.Item, warnings []migpkg.Problem) []migpkg.Item {
	control := false
	for _, w := range warnings {
		if w.Code == migpkg.CodePackageUnreferencedContent && strings.EqualFold(w.Entry, DropConfigName) {
			control = true
		}
	}
	if !control {
		return items
	}
	out := make([]migpkg.Item, 0, len(items))
	for _, it := range items {
		if it.Container == migpkg.Data && strings.EqualFold(it.Name, DropConfigName) {
			continue
		}
		out = append(out, it)
	}
	return out
}

// destination reads the job's key and containers from Key Vault. When mayRenew, it first provisions
// new containers if the SAS expire within SASRenewBefore or the secret is missing. The caller clears
// dst.Key after use.
func (in *Intake) destination(ctx context.Context, log *slog.Logger, jobID string, mayRenew bool) (dst stage.Destination, renewed bool, err error) {
	for {
		job, err := in.opts.Jobs.Get(ctx, jobID)
		if err != nil {
			return stage.Destination{}, renewed, fmt.Errorf("get job %s: %w", jobID, err)
		}
		sec, err := in.opts.Vault.GetJob(ctx, jobID)
		if errors.Is(err, vault.ErrNotFound) && mayRenew && !renewed {
			log.WarnContext(ctx, "job has no Key Vault secret; provisioning new containers and key")
			if err := in.reprovision(ctx, jobID); err != nil {
				return stage.Destination{}, renewed, err
			}
			renewed = true
			continue
		}
		if err != nil {
			return stage.Destination{}, renewed, fmt.Errorf("get key of job %s: %w", jobID, err)
		}
		exp := containersExpiry(job, sec)
		if left := exp.Sub(in.opts.Now()); !exp.IsZero() && left < in.opts.SASRenewBefore {
			if mayRenew && !renewed {
				clear(sec.Key)
				log.InfoContext(ctx, "container SAS expire soon; provisioning new containers and key", "expires_at", exp, "renew_before", in.opts.SASRenewBefore)
				if err := in.reprovision(ctx, jobID); err != nil {
					return stage.Destination{}, renewed, err
				}
				renewed = true
				continue
			}
			if left <= 0 {
				clear(sec.Key)
				return stage.Destination{}, renewed, fmt.Errorf("job %s: containers expired at %s even after provisioning new ones", jobID, exp.Format(time.RFC3339))
			}
			log.WarnContext(ctx, "container SAS expire within the renewal window; using them", "expires_at", exp)
		}
		return stage.Destination{DataContainerURI: sec.DataContainerURI, MetadataContainerURI: sec.MetadataContainerURI, Key: sec.Key}, renewed, nil
	}
}

func (in *Intake) reprovision(ctx context.Context, jobID string) error {
	if _, err := in.opts.Provisioner.Reprovision(ctx, jobID); err != nil {
		return fmt.Errorf("provision new containers for job %s: %w", jobID, err)
	}
	return nil
}

// containersExpiry is the earliest of the record's ContainersExpireAt and the se= of both SAS URIs.
func containersExpiry(job *jobs.Job, sec *vault.JobSecret) time.Time {
	exp := job.ContainersExpireAt
	for _, u := range []string{sec.DataContainerURI, sec.MetadataContainerURI} {
		if t, ok := sasExpiry(u); ok && (exp.IsZero() || t.Before(exp)) {
			exp = t
		}
	}
	return exp
}

// sasExpiry reads the se= (signed expiry) of a SAS URI.
func sasExpiry(raw string) (time.Time, bool) {
	u, err := url.Parse(raw)
	if err != nil {
		return time.Time{}, false
	}
	se := u.Query().Get("se")
	if se == "" {
		return time.Time{}, false
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04Z", "2006-01-02"} {
		if t, err := time.Parse(layout, se); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// stagingError marks a failure to read the staging blob, so that an app-storage 403 is not taken for an
// expired SPO container SAS.
type stagingError struct{ err error }

func (e *stagingError) Error() string { return e.err.Error() }
func (e *stagingError) Unwrap() error { return e.err }

// sasExpired recognizes an upload error caused by the SPO containers' SAS.
func (in *Intake) sasExpired(err error) bool {
	var se *stagingError
	if errors.As(err, &se) {
		return false
	}
	if errors.Is(err, stage.ErrSASExpired) || (in.opts.IsSASExpired != nil && in.opts.IsSASExpired(err)) {
		return true
	}
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == 403 &&
		(re.ErrorCode == string(bloberror.AuthenticationFailed) || re.ErrorCode == string(bloberror.AuthorizationFailure))
}

// upload runs the Uploader with progress counting, and updates the record's counters every
// ProgressEvery. It stops early (errJobLeft) when the job leaves Encrypting (cancelled).
func (in *Intake) upload(ctx context.Context, jobID, etag string, dst stage.Destination, items []migpkg.Item) error {
	uctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var prog progress
	wrapped := make([]stage.Item, len(items))
	for i, it := range items {
		counter := &prog
		if it.Container != migpkg.Data {
			counter = nil
		}
		wrapped[i] = stage.Item{Name: it.Name, Metadata: it.Container == migpkg.Metadata, Size: it.Size,
			Open: func() (io.ReadCloser, error) {
				rc, err := it.Open()
				if err != nil {
					return nil, markStaging(err)
				}
				return &stagingReader{rc: rc, prog: counter}, nil
			}}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(in.opts.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-uctx.Done():
				return
			case <-t.C:
			}
			// Also without progress: the update is the check that the job is still wanted (an unchanged
			// record costs a read, no write).
			cur := [2]int64{prog.files.Load(), prog.bytes.Load()}
			_, err := in.opts.Jobs.Update(uctx, jobID, func(j *jobs.Job) error {
				if j.State != jobs.StateEncrypting || j.StagingETag != etag {
					return errJobLeft
				}
				j.FilesDone, j.BytesDone = min(cur[0], j.FilesTotal), min(cur[1], j.BytesTotal)
				return nil
			})
			switch {
			case errors.Is(err, errJobLeft):
				cancel(errJobLeft)
				return
			case err != nil:
				if uctx.Err() == nil {
					in.log.WarnContext(uctx, "progress update failed", "job", jobID, "error", errText(err))
				}
			}
		}
	}()
	_, err := in.opts.Uploader.UploadAll(uctx, dst, wrapped)
	close(stop)
	wg.Wait()
	if errors.Is(context.Cause(uctx), errJobLeft) {
		return errJobLeft
	}
	return err
}

// progress counts the content staged so far (bytes read from the package; a file counts when fully read).
type progress struct {
	files, bytes atomic.Int64
}

// stagingReader counts progress and marks read failures of the staging blob.
type stagingReader struct {
	rc   io.ReadCloser
	prog *progress
	eof  bool
}

func (r *stagingReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if r.prog != nil {
		r.prog.bytes.Add(int64(n))
		if err == io.EOF && !r.eof {
			r.eof = true
			r.prog.files.Add(1)
		}
	}
	if err != nil && err != io.EOF {
		err = markStaging(err)
	}
	return n, err
}

func (r *stagingReader) Close() error { return r.rc.Close() }

// markStaging wraps read failures of the staging blob (not validation errors, which stay recognizable).
func markStaging(err error) error {
	if validationError(err) != nil {
		return err
	}
	return &stagingError{err: err}
}

// enqueue sends the job's migration-submit message.
func (in *Intake) enqueue(ctx context.Context, jobID string) error {
	if _, err := in.opts.SubmitQueue.EnqueueMessage(ctx, in.opts.EncodeMessage(jobID), nil); err != nil {
		return fmt.Errorf("enqueue submit message of job %s: %w", jobID, err)
	}
	return nil
}

// ---- helpers ----

func ptr[T any](v T) *T { return &v }

func azcoreETag(etag string) azcore.ETag { return azcore.ETag(quoteETag(etag)) }

// errText is an error's text for logs: storage errors as status and code only (their full text
// carries the request URL).
func errText(err error) string {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return fmt.Sprintf("HTTP %d %s", re.StatusCode, re.ErrorCode)
	}
	return redactSig(err.Error())
}

var sigRE = regexp.MustCompile(`(?i)\b(sig|accountkey)=[^&\s"'<>;]*`)

// redactSig replaces the values of sig= and AccountKey= in s.
func redactSig(s string) string {
	return sigRE.ReplaceAllStringFunc(s, func(m string) string { return m[:strings.IndexByte(m, '=')+1] + "REDACTED" })
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

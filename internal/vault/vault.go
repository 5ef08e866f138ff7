package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

// Content types of the secrets this package writes.
const (
	JobContentType   = "application/vnd.spomig.job-secret+json"
	QueueContentType = "application/vnd.spomig.queue-secret+json"
)

// KeySize is the size of a job key: AES-256.
const KeySize = 32

// maxTagValue is Key Vault's limit for a tag value.
const maxTagValue = 256

// Options configures New.
type Options struct {
	// VaultURL, e.g. https://myvault.vault.azure.net. Required, https.
	VaultURL string
	// Credential for Key Vault (see internal/azauth). Required: azsecrets would otherwise send every
	// request unauthenticated.
	Credential azcore.TokenCredential
	// DisableChallengeResourceVerification lets the vault's authentication challenge name a resource
	// (https://vault.azure.net) whose host is not a suffix of the vault URL's host. Needed when the vault
	// URL is not a *.vault.azure.net name: the local emulator (https://127.0.0.1:port), or a private
	// endpoint reached through another DNS alias. Leave it off for real vaults: the check stops a
	// look-alike URL from obtaining a Key Vault token.
	DisableChallengeResourceVerification bool
	// ClientOptions of the azsecrets client: Transport (e.g. an *http.Client trusting a private CA),
	// Cloud, Telemetry, Logging. Logging.IncludeBody is always turned off (bodies carry the secrets), and
	// ClientOptions.Retry is replaced by Retry below.
	ClientOptions azcore.ClientOptions
	// Logger receives one line per operation (never a secret value). Nil: slog.Default().
	Logger *slog.Logger
	// Retry configures azcore's retry policy, which retries 408, 429, 500, 502, 503 and 504 and transport
	// errors, honouring Retry-After. Zero fields take ClientOptions.Retry's, then these defaults:
	// MaxRetries 4, RetryDelay 1s (exponential with jitter when the service gives no Retry-After),
	// MaxRetryDelay 60s (a Retry-After longer than that is not waited for: the call fails at once with a
	// *ThrottledError), TryTimeout 60s per attempt.
	Retry policy.RetryOptions
	// PurgeWait bounds how long PurgeJob keeps retrying a purge that the service refuses because the
	// delete is still in progress (409 ObjectIsBeingDeleted: Key Vault deletes asynchronously, usually for
	// a few seconds). Default 2 minutes.
	PurgeWait time.Duration
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	r, c := &o.Retry, o.ClientOptions.Retry
	if r.MaxRetries == 0 {
		r.MaxRetries = c.MaxRetries
	}
	if r.MaxRetries == 0 {
		r.MaxRetries = 4
	}
	if r.RetryDelay == 0 {
		r.RetryDelay = c.RetryDelay
	}
	if r.RetryDelay == 0 {
		r.RetryDelay = time.Second
	}
	if r.MaxRetryDelay == 0 {
		r.MaxRetryDelay = c.MaxRetryDelay
	}
	if r.MaxRetryDelay == 0 {
		r.MaxRetryDelay = 60 * time.Second
	}
	if r.TryTimeout == 0 {
		r.TryTimeout = c.TryTimeout
	}
	if r.TryTimeout == 0 {
		r.TryTimeout = 60 * time.Second
	}
	if r.StatusCodes == nil {
		r.StatusCodes = c.StatusCodes
	}
	if r.ShouldRetry == nil {
		r.ShouldRetry = c.ShouldRetry
	}
	if o.PurgeWait <= 0 {
		o.PurgeWait = 2 * time.Minute
	}
}

// Custody keeps job keys and SAS URIs in Key Vault. It is safe for concurrent use.
type Custody struct {
	client    *azsecrets.Client
	log       *slog.Logger
	purgeWait time.Duration
}

// New creates the azsecrets client. It does not contact the vault.
func New(opts Options) (*Custody, error) {
	if opts.VaultURL == "" {
		return nil, errors.New("vault: VaultURL is required")
	}
	u, err := url.Parse(opts.VaultURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		// The URL holds no secret, but its parse error is not needed either.
		return nil, fmt.Errorf("vault: VaultURL %q is not an https URL", opts.VaultURL)
	}
	if opts.Credential == nil {
		return nil, errors.New("vault: Credential is required")
	}
	opts.setDefaults()
	co := opts.ClientOptions
	co.Retry = opts.Retry
	co.Logging.IncludeBody = false
	client, err := azsecrets.NewClient(opts.VaultURL, opts.Credential, &azsecrets.ClientOptions{
		ClientOptions:                        co,
		DisableChallengeResourceVerification: opts.DisableChallengeResourceVerification,
	})
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	return &Custody{client: client, log: opts.Logger, purgeWait: opts.PurgeWait}, nil
}

// JobSecret is what a migration job needs to keep: the AES-256 key SPO handed out and the SAS URIs of
// the containers (and, optionally, of the queue and a signed callback URL). Its String, GoString, LogValue
// and MarshalJSON redact the key and the signatures (sig=); only this package serialises it in full, into
// the vault.
type JobSecret struct {
	Key                  []byte    // AES-256 key, KeySize bytes
	DataContainerURI     string    // SAS URI of the data (content) container
	MetadataContainerURI string    // SAS URI of the metadata (manifest) container
	QueueURI             string    // SAS URI of the job's report queue (optional)
	CallbackURL          string    // signed callback URL (sig=: Power Automate, Logic Apps), which the record refuses (optional)
	ProvisionedAt        time.Time // when ProvisionMigrationContainers returned
	ExpiresAt            time.Time // when the containers go away (the secret's exp); zero: no exp
}

var (
	_ fmt.Stringer   = JobSecret{}
	_ fmt.GoStringer = JobSecret{}
	_ slog.LogValuer = JobSecret{}
	_ json.Marshaler = JobSecret{}
)

// String implements fmt.Stringer without the secrets.
func (s JobSecret) String() string {
	return fmt.Sprintf("JobSecret{Key:[%d bytes redacted] Data:%s Metadata:%s Queue:%s Callback:%s ProvisionedAt:%s ExpiresAt:%s}",
		len(s.Key), RedactURL(s.DataContainerURI), RedactURL(s.MetadataContainerURI), RedactURL(s.QueueURI), RedactURL(s.CallbackURL),
		s.ProvisionedAt.Format(time.RFC3339), s.ExpiresAt.Format(time.RFC3339))
}

// GoString implements fmt.GoStringer (%#v) without the secrets.
func (s JobSecret) GoString() string { return s.String() }

// LogValue implements slog.LogValuer without the secrets.
func (s JobSecret) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int("keyBytes", len(s.Key)),
		slog.String("data", RedactURL(s.DataContainerURI)),
		slog.String("metadata", RedactURL(s.MetadataContainerURI)),
		slog.String("queue", RedactURL(s.QueueURI)),
		slog.String("callback", RedactURL(s.CallbackURL)),
		slog.Time("provisionedAt", s.ProvisionedAt),
		slog.Time("expiresAt", s.ExpiresAt),
	)
}

// MarshalJSON writes the redacted form, so a JobSecret cannot leak into a record or an HTTP response.
func (s JobSecret) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Key                  string    `json:"key"`
		DataContainerURI     string    `json:"dataContainerUri"`
		MetadataContainerURI string    `json:"metadataContainerUri"`
		QueueURI             string    `json:"queueUri,omitempty"`
		CallbackURL          string    `json:"callbackUrl,omitempty"`
		ProvisionedAt        time.Time `json:"provisionedAt"`
		ExpiresAt            time.Time `json:"expiresAt"`
	}{"REDACTED", RedactURL(s.DataContainerURI), RedactURL(s.MetadataContainerURI), RedactURL(s.QueueURI), RedactURL(s.CallbackURL),
		s.ProvisionedAt, s.ExpiresAt})
}

// RedactURL replaces the value of every query parameter named sig (any case) with REDACTED. A string that
// does not parse as a URL is replaced entirely.
func RedactURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "REDACTED"
	}
	if u.RawQuery == "" {
		return u.String()
	}
	parts := strings.Split(u.RawQuery, "&")
	for i, p := range parts {
		k, _, _ := strings.Cut(p, "=")
		if strings.EqualFold(k, "sig") {
			parts[i] = k + "=REDACTED"
		}
	}
	u.RawQuery = strings.Join(parts, "&")
	return u.String()
}

// jobWire is the stored form of a JobSecret (schema 1). Key is base64 (encoding/json's []byte).
type jobWire struct {
	Schema               int       `json:"schema"`
	JobID                string    `json:"jobId"`
	Site                 string    `json:"site,omitempty"`
	Key                  []byte    `json:"key"`
	DataContainerURI     string    `json:"dataContainerUri"`
	MetadataContainerURI string    `json:"metadataContainerUri"`
	QueueURI             string    `json:"queueUri,omitempty"`
	CallbackURL          string    `json:"callbackUrl,omitempty"`
	ProvisionedAt        time.Time `json:"provisionedAt"`
	ExpiresAt            time.Time `json:"expiresAt,omitzero"`
}

type queueWire struct {
	Schema   int    `json:"schema"`
	Site     string `json:"site"`
	QueueURI string `json:"queueUri"`
}

func validURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

func tagValue(s string) *string {
	if len(s) > maxTagValue {
		s = s[:maxTagValue]
	}
	return to.Ptr(s)
}

func expPtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return to.Ptr(t.UTC().Truncate(time.Second))
}

// PutJob stores s as the job's secret (a new version) and returns the version.
func (c *Custody) PutJob(ctx context.Context, jobID, site string, s JobSecret) (version string, err error) {
	name := JobSecretName(jobID)
	const op = "put job secret"
	switch {
	case jobID == "":
		return "", &Error{Op: op, Secret: name, kind: errors.New("job id is empty")}
	case len(s.Key) != KeySize:
		return "", &Error{Op: op, Secret: name, kind: fmt.Errorf("key must be %d bytes, got %d", KeySize, len(s.Key))}
	case !validURL(s.DataContainerURI) || !validURL(s.MetadataContainerURI):
		// Never print the URIs: they carry SAS signatures.
		return "", &Error{Op: op, Secret: name, kind: errors.New("data and metadata container URIs must be http(s) URLs")}
	case s.QueueURI != "" && !validURL(s.QueueURI):
		return "", &Error{Op: op, Secret: name, kind: errors.New("queue URI must be an http(s) URL")}
	case s.CallbackURL != "" && !validURL(s.CallbackURL):
		return "", &Error{Op: op, Secret: name, kind: errors.New("callback URL must be an http(s) URL")}
	}
	value, err := json.Marshal(jobWire{Schema: 1, JobID: jobID, Site: site, Key: s.Key, DataContainerURI: s.DataContainerURI,
		MetadataContainerURI: s.MetadataContainerURI, QueueURI: s.QueueURI, CallbackURL: s.CallbackURL, ProvisionedAt: s.ProvisionedAt.UTC(),
		ExpiresAt: s.ExpiresAt.UTC()})
	if err != nil {
		return "", &Error{Op: op, Secret: name, kind: errors.New("cannot encode the job secret")}
	}
	tags := map[string]*string{"jobId": tagValue(jobID)}
	if site != "" {
		tags["site"] = tagValue(site)
	}
	return c.set(ctx, op, name, string(value), JobContentType, tags, s.ExpiresAt)
}

func (c *Custody) set(ctx context.Context, op, name, value, contentType string, tags map[string]*string, exp time.Time) (string, error) {
	start := time.Now()
	resp, err := c.client.SetSecret(ctx, name, azsecrets.SetSecretParameters{
		Value:            &value,
		ContentType:      &contentType,
		Tags:             tags,
		SecretAttributes: &azsecrets.SecretAttributes{Enabled: to.Ptr(true), Expires: expPtr(exp)},
	}, nil)
	if err != nil {
		return "", c.fail(ctx, op, name, start, err)
	}
	version := ""
	if resp.ID != nil {
		version = resp.ID.Version()
	}
	c.log.InfoContext(ctx, "vault: "+op, "secret", name, "version", version, "expires", exp, "ms", time.Since(start).Milliseconds())
	return version, nil
}

func (c *Custody) fail(ctx context.Context, op, name string, start time.Time, err error) error {
	err = mapError(op, name, err)
	level := slog.LevelWarn
	if errors.Is(err, ErrNotFound) {
		level = slog.LevelInfo
	}
	c.log.Log(ctx, level, "vault: "+op+" failed", "secret", name, "err", err.Error(), "ms", time.Since(start).Milliseconds())
	return err
}

// get reads the latest version of a secret and checks its content type.
func (c *Custody) get(ctx context.Context, op, name, contentType string) (string, time.Time, error) {
	start := time.Now()
	resp, err := c.client.GetSecret(ctx, name, "", nil)
	if err != nil {
		return "", start, c.fail(ctx, op, name, start, err)
	}
	if resp.Value == nil || resp.ContentType == nil || *resp.ContentType != contentType {
		return "", start, c.fail(ctx, op, name, start, &Error{Op: op, Secret: name, kind: fmt.Errorf("%w: content type is not %s", ErrForeign, contentType)})
	}
	version := ""
	if resp.ID != nil {
		version = resp.ID.Version()
	}
	c.log.InfoContext(ctx, "vault: "+op, "secret", name, "version", version, "ms", time.Since(start).Milliseconds())
	return *resp.Value, start, nil
}

// GetJob reads the job's secret (latest version). A missing secret is ErrNotFound.
func (c *Custody) GetJob(ctx context.Context, jobID string) (*JobSecret, error) {
	const op = "get job secret"
	name := JobSecretName(jobID)
	value, start, err := c.get(ctx, op, name, JobContentType)
	if err != nil {
		return nil, err
	}
	var w jobWire
	if err := json.Unmarshal([]byte(value), &w); err != nil {
		// json errors may quote the input: do not wrap.
		return nil, c.fail(ctx, op, name, start, &Error{Op: op, Secret: name, kind: fmt.Errorf("%w: value is not a job secret", ErrForeign)})
	}
	if w.JobID != jobID {
		return nil, c.fail(ctx, op, name, start, &Error{Op: op, Secret: name, kind: fmt.Errorf("%w: it holds job %q", ErrForeign, w.JobID)})
	}
	if len(w.Key) != KeySize {
		return nil, c.fail(ctx, op, name, start, &Error{Op: op, Secret: name, kind: fmt.Errorf("%w: stored key is %d bytes", ErrForeign, len(w.Key))})
	}
	return &JobSecret{Key: w.Key, DataContainerURI: w.DataContainerURI, MetadataContainerURI: w.MetadataContainerURI,
		QueueURI: w.QueueURI, CallbackURL: w.CallbackURL, ProvisionedAt: w.ProvisionedAt, ExpiresAt: w.ExpiresAt}, nil
}

// GetJobCallbackURL returns the signed callback URL kept in the job's secret: "" when the secret holds
// none or does not exist (a job provisioned without one, or already cleaned up). It is a credential:
// never log it (RedactURL).
func (c *Custody) GetJobCallbackURL(ctx context.Context, jobID string) (string, error) {
	s, err := c.GetJob(ctx, jobID)
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return s.CallbackURL, nil
}

// DeleteJob soft-deletes the job's secret (all versions); it stays recoverable for the vault's retention
// period. Deleting a secret that does not exist (or is already deleted) is not an error.
func (c *Custody) DeleteJob(ctx context.Context, jobID string) error {
	_, err := c.delete(ctx, JobSecretName(jobID))
	return err
}

func (c *Custody) delete(ctx context.Context, name string) (deleted bool, err error) {
	const op = "delete job secret"
	start := time.Now()
	_, err = c.client.DeleteSecret(ctx, name, nil)
	if err != nil {
		err = mapError(op, name, err)
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) {
			c.log.InfoContext(ctx, "vault: "+op+": nothing to delete", "secret", name, "ms", time.Since(start).Milliseconds())
			return false, nil
		}
		return false, c.fail(ctx, op, name, start, err)
	}
	c.log.InfoContext(ctx, "vault: "+op, "secret", name, "ms", time.Since(start).Milliseconds())
	return true, nil
}

// PurgeJob removes the job's secret for good: it soft-deletes it if needed, then purges it, retrying for
// up to Options.PurgeWait while the service reports the delete still in progress. A secret that is
// neither present nor deleted is not an error. Needs the purge permission (see the package documentation).
func (c *Custody) PurgeJob(ctx context.Context, jobID string) error {
	const op = "purge job secret"
	name := JobSecretName(jobID)
	justDeleted, err := c.delete(ctx, name)
	if err != nil {
		return err
	}
	start := time.Now()
	deadline := start.Add(c.purgeWait)
	delay := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		_, err := c.client.PurgeDeletedSecret(ctx, name, nil)
		if err == nil {
			c.log.InfoContext(ctx, "vault: "+op, "secret", name, "attempts", attempt, "ms", time.Since(start).Milliseconds())
			return nil
		}
		err = mapError(op, name, err)
		// 409 ObjectIsBeingDeleted while the delete completes; right after our own delete the deleted
		// secret may also not be visible yet (404).
		inProgress := errors.Is(err, ErrConflict) || (justDeleted && attempt < 5 && errors.Is(err, ErrNotFound))
		if !inProgress {
			if errors.Is(err, ErrNotFound) && !justDeleted {
				c.log.InfoContext(ctx, "vault: "+op+": nothing to purge", "secret", name)
				return nil
			}
			return c.fail(ctx, op, name, start, err)
		}
		if time.Now().Add(delay).After(deadline) {
			return c.fail(ctx, op, name, start, err)
		}
		c.log.DebugContext(ctx, "vault: "+op+": delete still in progress, retrying", "secret", name, "attempt", attempt, "delay", delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return c.fail(ctx, op, name, start, ctx.Err())
		}
		delay = min(delay*2, 8*time.Second)
	}
}

// RecoverJob undoes DeleteJob while the secret is still recoverable. The real service recovers
// asynchronously: a GetJob right after may still answer ErrNotFound for a few seconds.
func (c *Custody) RecoverJob(ctx context.Context, jobID string) error {
	const op = "recover job secret"
	name := JobSecretName(jobID)
	start := time.Now()
	if _, err := c.client.RecoverDeletedSecret(ctx, name, nil); err != nil {
		return c.fail(ctx, op, name, start, err)
	}
	c.log.InfoContext(ctx, "vault: "+op, "secret", name, "ms", time.Since(start).Milliseconds())
	return nil
}

// DeletedSecret describes a soft-deleted secret (no value).
type DeletedSecret struct {
	Name             string
	DeletedAt        time.Time
	ScheduledPurgeAt time.Time
	RecoveryID       string // URL of the deleted secret
}

// DeletedJob describes the job's soft-deleted secret; ErrNotFound when there is none.
func (c *Custody) DeletedJob(ctx context.Context, jobID string) (*DeletedSecret, error) {
	const op = "get deleted job secret"
	name := JobSecretName(jobID)
	start := time.Now()
	resp, err := c.client.GetDeletedSecret(ctx, name, nil)
	if err != nil {
		return nil, c.fail(ctx, op, name, start, err)
	}
	d := &DeletedSecret{Name: name}
	if resp.DeletedDate != nil {
		d.DeletedAt = *resp.DeletedDate
	}
	if resp.ScheduledPurgeDate != nil {
		d.ScheduledPurgeAt = *resp.ScheduledPurgeDate
	}
	if resp.RecoveryID != nil {
		d.RecoveryID = *resp.RecoveryID
	}
	return d, nil
}

// PutQueue stores the SAS URI of the site's migration queue (ProvisionMigrationQueue), with exp = expires
// (zero: none).
func (c *Custody) PutQueue(ctx context.Context, site, queueURI string, expires time.Time) error {
	const op = "put queue secret"
	name := QueueSecretName(site)
	if NormalizeSite(site) == "" {
		return &Error{Op: op, Secret: name, kind: errors.New("site is empty")}
	}
	if !validURL(queueURI) {
		return &Error{Op: op, Secret: name, kind: errors.New("queue URI must be an http(s) URL")}
	}
	value, err := json.Marshal(queueWire{Schema: 1, Site: NormalizeSite(site), QueueURI: queueURI})
	if err != nil {
		return &Error{Op: op, Secret: name, kind: errors.New("cannot encode the queue secret")}
	}
	_, err = c.set(ctx, op, name, string(value), QueueContentType, map[string]*string{"site": tagValue(NormalizeSite(site))}, expires)
	return err
}

// GetQueue returns the SAS URI of the site's migration queue; ErrNotFound when none is stored.
func (c *Custody) GetQueue(ctx context.Context, site string) (string, error) {
	const op = "get queue secret"
	name := QueueSecretName(site)
	value, start, err := c.get(ctx, op, name, QueueContentType)
	if err != nil {
		return "", err
	}
	var w queueWire
	if err := json.Unmarshal([]byte(value), &w); err != nil {
		return "", c.fail(ctx, op, name, start, &Error{Op: op, Secret: name, kind: fmt.Errorf("%w: value is not a queue secret", ErrForeign)})
	}
	if w.Site != NormalizeSite(site) {
		return "", c.fail(ctx, op, name, start, &Error{Op: op, Secret: name, kind: fmt.Errorf("%w: it holds site %q", ErrForeign, w.Site)})
	}
	return w.QueueURI, nil
}

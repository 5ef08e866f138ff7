package spoemu

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spomig/spomig/internal/dev/devtls"
)

// Defaults of Options.
const (
	DefaultAddr             = "127.0.0.1:0"
	DefaultTenantID         = "5c2e3a7f-0d1b-4b8e-9a61-3f0d2c7b9e41"
	DefaultSASValidity      = 72 * time.Hour
	DefaultSASStartSkew     = 5 * time.Minute
	DefaultQueueSASValidity = 72 * time.Hour
	DefaultMaxJobs          = 2
	DefaultProgressEvery    = 25
	DefaultProgressPageSize = 100
	DefaultJobRetention     = 5 * 24 * time.Hour
	DefaultMaxRecorded      = 1000
)

// Phase names a point of a job's life where Options.Gate is called.
type Phase string

const (
	// PhaseQueued: the job is Queued (2), after Options.QueueDelay and any postponement, before it
	// takes a worker.
	PhaseQueued Phase = "queued"
	// PhaseProcessing: the job is Processing (4), after JobLogFileCreate and JobStart, before the
	// package is read.
	PhaseProcessing Phase = "processing"
)

// Options configures an Emulator. StorageConnectionString is required; every other zero field takes
// the default documented on it (setDefaults).
type Options struct {
	// Addr is the listen address of Start (default 127.0.0.1:0, a free port).
	Addr string
	// CA is the development CA. Start serves HTTPS with a leaf it issues for 127.0.0.1, ::1 and
	// localhost unless TLSConfig is set; the storage client trusts it unless StorageClient is set.
	CA *devtls.CA
	// TLSConfig is the server TLS configuration. Nil: a leaf of CA. Start fails when both are nil (the
	// real service is HTTPS only).
	TLSConfig *tls.Config

	// StorageConnectionString is "SharePoint's storage account": the account the emulator provisions
	// containers and queues in and signs SAS with, in the explicit form (AccountName, AccountKey,
	// BlobEndpoint, QueueEndpoint; or DefaultEndpointsProtocol + EndpointSuffix). Use a separate Azurite
	// over HTTPS (azurite.Options{CertFile, KeyFile}) so that the SAS can carry spr=https. Required.
	StorageConnectionString string
	// StorageClient is the HTTP client for storage calls. Nil: CA.HTTPClient() when CA is set, else
	// http.DefaultClient.
	StorageClient *http.Client

	// DataDir receives what a person would look at in SharePoint: imported files under
	// <DataDir>/sites/<site>/<library>/<folder>/<file> (older versions under <DataDir>/sites/<site>/_versions/…)
	// and one summary per job in <DataDir>/jobs/<job id>.json. Empty: files are decrypted and checked
	// but not kept, and no summary is written.
	DataDir string

	// TenantID is the tenant GUID shown in the 401 challenge (realm) and as SubscriptionId in events
	// (default DefaultTenantID). It also seeds the per-site queue names.
	TenantID string
	// Sites, when not empty, is the allow-list of site collections ("/sites/x", "sites/x", "x" for
	// /sites/x, "/teams/y", "/" for the root). Other sites answer 404 File Not Found. Empty: every
	// /sites/<name> and /teams/<name>, and the root, exist.
	Sites []string
	// CheckAudience makes JWT bearer tokens carry an aud naming this host (https://<host>,
	// 00000003-0000-0ff1-ce00-000000000000/<host>@<tenant>) or one of Audiences. Default false: any
	// non-empty bearer token is accepted (an expired JWT is refused either way).
	CheckAudience bool
	// Audiences are extra accepted aud values (e.g. "https://contoso.sharepoint.com") when CheckAudience.
	Audiences []string

	// SASValidity is the lifetime of container SAS from ProvisionMigrationContainers (default 72h, the
	// documented "3 days"). A negative value issues already expired SAS (for tests).
	SASValidity time.Duration
	// SASStartSkew is how far st is set back from now (default 5m).
	SASStartSkew time.Duration
	// QueueSASValidity is the lifetime of the queue SAS from ProvisionMigrationQueue (default 72h).
	QueueSASValidity time.Duration

	// MaxJobs bounds the jobs processed at once (default 2); the others stay Queued (2). Memory: each
	// running job holds a 64 KiB decrypt buffer, a listing index of both containers (about 200 bytes per
	// blob) and the bookkeeping of its events.
	MaxJobs int
	// QueueDelay is how long a new job stays Queued before it may be picked up (default 0). Real jobs
	// wait from seconds to minutes.
	QueueDelay time.Duration
	// ItemDelay is added per SPObject processed (default 0), to make processing observable.
	ItemDelay time.Duration
	// ProgressEvery emits JobProgress after every so many SPObjects (default 25).
	ProgressEvery int
	// ProgressPageSize is the most events GetMigrationJobProgress returns per call (default 100).
	ProgressPageSize int
	// JobRetention is how long after a job ends its status and events stay readable; afterwards
	// GetMigrationJobProgress answers -2147213146 "Job status expired" (default 5 days). Memory: every
	// event of every retained job is kept (a few hundred bytes each).
	JobRetention time.Duration
	// RequireManifestSnapshots makes a package XML without a snapshot a JobFatalError. Default false:
	// package XMLs are read from their latest snapshot, else from the base blob (see DEVIATIONS).
	RequireManifestSnapshots bool
	// JobEndAfterFatal also emits JobEnd (with the counters so far) after a JobFatalError. Default
	// false: JobFatalError is the job's last event.
	JobEndAfterFatal bool
	// MaxRecorded bounds the errors and warnings kept in a job's summary (default 1000; counters stay
	// exact). Memory: a few hundred bytes each.
	MaxRecorded int

	// Faults applies to every site until SetFaults or the admin endpoint replaces a site's faults.
	Faults Faults
	// Gate, when set, is called at each Phase of every job; the job waits until it returns. An error
	// (or the emulator closing) ends the job with JobFatalError. Tests use it to observe the states
	// deterministically.
	Gate func(ctx context.Context, jobID string, phase Phase) error

	// Logger receives the emulator's own logs (default slog.Default()). Secrets never appear in them.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if o.TenantID == "" {
		o.TenantID = DefaultTenantID
	}
	if o.SASValidity == 0 {
		o.SASValidity = DefaultSASValidity
	}
	if o.SASStartSkew == 0 {
		o.SASStartSkew = DefaultSASStartSkew
	}
	if o.QueueSASValidity == 0 {
		o.QueueSASValidity = DefaultQueueSASValidity
	}
	if o.MaxJobs <= 0 {
		o.MaxJobs = DefaultMaxJobs
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = DefaultProgressEvery
	}
	if o.ProgressPageSize <= 0 {
		o.ProgressPageSize = DefaultProgressPageSize
	}
	if o.JobRetention <= 0 {
		o.JobRetention = DefaultJobRetention
	}
	if o.MaxRecorded <= 0 {
		o.MaxRecorded = DefaultMaxRecorded
	}
	if o.StorageClient == nil {
		if o.CA != nil {
			o.StorageClient = o.CA.HTTPClient()
		} else {
			o.StorageClient = http.DefaultClient
		}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Faults are failures injected into one site (SetFaults, POST /_emulator/sites/<name>/faults) or every
// site (Options.Faults). Counts are consumed as the faults fire.
type Faults struct {
	// Throttle answers the next Count REST calls of the site with Status (429 or 503) and Retry-After.
	Throttle *Throttle `json:"throttle,omitempty"`
	// Postpone emits JobPostponed Count times for each new job, waiting Delay each time.
	Postpone *Postpone `json:"postpone,omitempty"`
	// SlowItem adds this delay per SPObject processed (on top of Options.ItemDelay).
	SlowItem Duration `json:"slowItem,omitempty"`
	// Fatal ends the next Count jobs with JobFatalError right after JobStart.
	Fatal *Fatal `json:"fatal,omitempty"`
	// ItemError fails the files whose web-relative URL contains Match with a JobError each (the job goes
	// on): SharePoint refuses items for reasons a package check cannot see (locked files, quotas, blocked
	// file types, policies).
	ItemError *ItemError `json:"itemError,omitempty"`
}

// ItemError is a per-item fault.
type ItemError struct {
	// Match is a substring of the file URLs to fail (required).
	Match string `json:"match"`
	// ErrorCode (default "-2147024891", access denied) and Message (default "Injected item error").
	ErrorCode string `json:"errorCode,omitempty"`
	Message   string `json:"message,omitempty"`
}

// Throttle is a throttling fault.
type Throttle struct {
	// Count is how many calls are refused.
	Count int `json:"count"`
	// Status is 429 (default) or 503.
	Status int `json:"status,omitempty"`
	// RetryAfter is the Retry-After value in seconds (default 1).
	RetryAfter int `json:"retryAfter,omitempty"`
	// RateLimitReset, when > 0, also sends the beta RateLimit-Limit/-Remaining/-Reset headers with this
	// Reset (seconds), so a client can be checked to take the larger of the two.
	RateLimitReset int `json:"rateLimitReset,omitempty"`
	// Methods limits the fault to these function names (e.g. "GetMigrationJobProgress", "web");
	// empty: every REST call of the site.
	Methods []string `json:"methods,omitempty"`
}

// Postpone is a postponement fault.
type Postpone struct {
	// Count is how many JobPostponed events each job gets (default 1).
	Count int `json:"count"`
	// Delay is the wait after each JobPostponed; NextPickupTime is now+Delay.
	Delay Duration `json:"delay,omitempty"`
	// Reason is the postpone reason (default "JobInQueue:Resource").
	Reason string `json:"reason,omitempty"`
	// Jobs is how many jobs get postponed (0: every job while the fault is set).
	Jobs int `json:"jobs,omitempty"`
}

// Fatal is a fatal-error fault.
type Fatal struct {
	// Count is how many jobs fail (default 1).
	Count int `json:"count"`
	// ErrorCode (default "-2147213196") and Message (default "Injected fatal error") of JobFatalError.
	ErrorCode string `json:"errorCode,omitempty"`
	Message   string `json:"message,omitempty"`
}

// Duration is a time.Duration that reads and writes JSON as a Go duration string ("250ms") or a
// number of milliseconds.
type Duration time.Duration

// MarshalJSON writes the duration as a string such as "1.5s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

// UnmarshalJSON reads "1.5s" or 1500 (milliseconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "null" {
		return nil
	}
	if strings.HasPrefix(s, `"`) {
		v, err := time.ParseDuration(strings.Trim(s, `"`))
		if err != nil {
			return fmt.Errorf("spoemu: duration: %w", err)
		}
		*d = Duration(v)
		return nil
	}
	var ms float64
	if _, err := fmt.Sscanf(s, "%g", &ms); err != nil {
		return errors.New("spoemu: duration: want a string like \"250ms\" or milliseconds")
	}
	*d = Duration(time.Duration(ms * float64(time.Millisecond)))
	return nil
}

// storageAccount is the parsed StorageConnectionString.
type storageAccount struct {
	name, key         string
	blobURL, queueURL *url.URL // without trailing slash
}

// parseConnectionString reads the explicit connection string form.
func parseConnectionString(cs string) (storageAccount, error) {
	kv := map[string]string{}
	for part := range strings.SplitSeq(cs, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return storageAccount{}, errors.New("spoemu: storage connection string: a part is not key=value")
		}
		kv[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	a := storageAccount{name: kv["accountname"], key: kv["accountkey"]}
	if a.name == "" || a.key == "" {
		return a, errors.New("spoemu: storage connection string needs AccountName and AccountKey (shared key)")
	}
	proto := kv["defaultendpointsprotocol"]
	if proto == "" {
		proto = "https"
	}
	suffix := kv["endpointsuffix"]
	if suffix == "" {
		suffix = "core.windows.net"
	}
	endpoint := func(key, svc string) (*url.URL, error) {
		raw := kv[key]
		if raw == "" {
			raw = fmt.Sprintf("%s://%s.%s.%s", proto, a.name, svc, suffix)
		}
		u, err := url.Parse(strings.TrimRight(raw, "/"))
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("spoemu: storage connection string: %s is not an http(s) URL", key)
		}
		u.RawQuery, u.Fragment = "", ""
		return u, nil
	}
	var err error
	if a.blobURL, err = endpoint("blobendpoint", "blob"); err != nil {
		return a, err
	}
	if a.queueURL, err = endpoint("queueendpoint", "queue"); err != nil {
		return a, err
	}
	return a, nil
}

// Package config reads every setting of the app from the environment (app settings in Azure, the Values of
// local.settings.json locally) and validates them in one place. Load reports every missing or invalid
// setting in one error, naming each.
//
// The handler must answer the host's GET / within milliseconds of starting, so it reads only the port at
// start (Port); everything else is loaded and validated lazily, on the first invocation that needs it.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spomig/spomig/internal/storageconn"
)

// Getenv reads a setting; os.Getenv fits.
type Getenv func(string) string

// Shared names (see docs/CONTRIBUTING.md).
const (
	DefaultStagingContainer = "migration-staging"
	DefaultReportsContainer = "migration-reports"
	DefaultSubmitQueue      = "migration-submit"
	DefaultJobsTable        = "migrationjobs"
)

// Config is the app's configuration. Field docs give the setting name and default; the README's table is
// generated from the same list (Settings).
type Config struct {
	Port int // FUNCTIONS_CUSTOMHANDLER_PORT

	Storage *storageconn.Conn // AzureWebJobsStorage (connection string, UseDevelopmentStorage=true, or identity)

	StagingContainer string // SPOMIG_STAGING_CONTAINER
	ReportsContainer string // SPOMIG_REPORTS_CONTAINER
	SubmitQueue      string // SPOMIG_SUBMIT_QUEUE
	JobsTable        string // SPOMIG_JOBS_TABLE

	KeyVaultURL                          string // SPOMIG_KEYVAULT_URL
	KeyVaultAuth                         Auth   // SPOMIG_KEYVAULT_AUTH, SPOMIG_KEYVAULT_CLIENT_ID
	KeyVaultDisableChallengeVerification bool   // SPOMIG_KEYVAULT_DISABLE_CHALLENGE_RESOURCE_VERIFICATION

	TenantHost          string        // SPOMIG_TENANT_HOST
	AllowedSiteHosts    []string      // SPOMIG_ALLOWED_SITE_HOSTS
	SPOAuth             Auth          // SPOMIG_SPO_AUTH, SPOMIG_SPO_CLIENT_ID, SPOMIG_SPO_TENANT_ID, SPOMIG_SPO_CERTIFICATE_PATH, SPOMIG_SPO_CERTIFICATE_PASSWORD
	Organisation        string        // SPOMIG_ORGANISATION
	SPORetryBudget      time.Duration // SPOMIG_SPO_RETRY_BUDGET
	AllowedStorageHosts []string      // SPOMIG_ALLOWED_STORAGE_HOSTS (development only)

	UploadConcurrency   int           // SPOMIG_UPLOAD_CONCURRENCY
	UploadBlockSize     int64         // SPOMIG_UPLOAD_BLOCK_SIZE
	UploadURLTTL        time.Duration // SPOMIG_UPLOAD_URL_TTL
	MaxPackageSize      int64         // SPOMIG_MAX_PACKAGE_SIZE
	MaxEntries          int           // SPOMIG_MAX_ENTRIES
	MaxCompressionRatio int           // SPOMIG_MAX_COMPRESSION_RATIO
	SASRenewBefore      time.Duration // SPOMIG_SAS_RENEW_BEFORE

	MonitorSources       []string      // SPOMIG_MONITOR_SOURCES
	MonitorBudget        time.Duration // SPOMIG_MONITOR_BUDGET
	StuckAfter           time.Duration // SPOMIG_STUCK_AFTER
	UnknownMessageMaxAge time.Duration // SPOMIG_UNKNOWN_MESSAGE_MAX_AGE
	Retention            time.Duration // SPOMIG_RETENTION
	SubmitLease          time.Duration // SPOMIG_SUBMIT_LEASE
	CallbackAllowedHosts []string      // SPOMIG_CALLBACK_ALLOWED_HOSTS
	LogLevel             string        // SPOMIG_LOG_LEVEL
	PublicBaseURL        string        // SPOMIG_PUBLIC_BASE_URL (default https://$WEBSITE_HOSTNAME)
	MaxDequeueCount      int           // host.json extensions.queues.maxDequeueCount (or its AzureFunctionsJobHost__ override)
}

// Auth selects how the app gets tokens for an outside service.
type Auth struct {
	Kind                string // "default" | "managedidentity" | "certificate"
	ClientID            string
	TenantID            string
	CertificatePath     string
	CertificatePassword string
}

// Setting documents one setting.
type Setting struct {
	Name, Meaning, Default, Example string
}

// Settings lists every setting the app reads, for the README and for `handler -settings`.
var Settings = []Setting{
	{"FUNCTIONS_CUSTOMHANDLER_PORT", "Port the handler listens on (set by the Functions host).", "(required)", "34567"},
	{"AzureWebJobsStorage", "Storage for the staging and reports containers, the submit queue and the job table: a connection string, UseDevelopmentStorage=true (Azurite), or an identity-based connection (AzureWebJobsStorage__blobServiceUri, __queueServiceUri, __tableServiceUri, __credential=managedidentity, __clientId).", "(required)", "UseDevelopmentStorage=true"},
	{"SPOMIG_STAGING_CONTAINER", "Container where packages are dropped (must match EncryptBlobTrigger's path).", DefaultStagingContainer, ""},
	{"SPOMIG_REPORTS_CONTAINER", "Container for decrypted import logs and error CSVs.", DefaultReportsContainer, ""},
	{"SPOMIG_SUBMIT_QUEUE", "Queue of staged jobs to submit (must match SubmitQueueTrigger's queueName).", DefaultSubmitQueue, ""},
	{"SPOMIG_JOBS_TABLE", "Table of job records.", DefaultJobsTable, ""},
	{"SPOMIG_KEYVAULT_URL", "Key Vault that keeps each job's AES key and container SAS URIs.", "(required)", "https://contoso-spomig.vault.azure.net"},
	{"SPOMIG_KEYVAULT_AUTH", "Credential for Key Vault: default (DefaultAzureCredential), managedidentity, certificate.", "default", "managedidentity"},
	{"SPOMIG_KEYVAULT_CLIENT_ID", "Client id of a user-assigned managed identity (or of the app, with certificate) for Key Vault.", "", ""},
	{"SPOMIG_KEYVAULT_TENANT_ID", "Entra tenant id, with SPOMIG_KEYVAULT_AUTH=certificate.", "", ""},
	{"SPOMIG_KEYVAULT_CERTIFICATE_PATH", "Certificate (PEM or PFX), with SPOMIG_KEYVAULT_AUTH=certificate.", "", ""},
	{"SPOMIG_KEYVAULT_CERTIFICATE_PASSWORD", "Password of that PFX file.", "", ""},
	{"SPOMIG_KEYVAULT_DISABLE_CHALLENGE_RESOURCE_VERIFICATION", "Accept a Key Vault whose host is not under vault.azure.net (private aliases, the local emulator).", "false", "true"},
	{"SPOMIG_TENANT_HOST", "SharePoint Online tenant host.", "(required)", "contoso.sharepoint.com"},
	{"SPOMIG_ALLOWED_SITE_HOSTS", "Comma-separated hosts that site URLs may use; SharePoint tokens are only ever sent there.", "the tenant host", "contoso.sharepoint.com,contoso-my.sharepoint.com"},
	{"SPOMIG_SPO_AUTH", "Credential for SharePoint: certificate (app-only needs one), managedidentity, default.", "certificate", "certificate"},
	{"SPOMIG_SPO_CLIENT_ID", "Entra app (client) id for SharePoint, or a user-assigned identity's client id.", "", "00000000-0000-0000-0000-000000000000"},
	{"SPOMIG_SPO_TENANT_ID", "Entra tenant id (certificate auth).", "", "00000000-0000-0000-0000-000000000000"},
	{"SPOMIG_SPO_CERTIFICATE_PATH", "PEM (unencrypted key) or PFX file of the app's certificate.", "", "/home/site/certs/spomig.pem"},
	{"SPOMIG_SPO_CERTIFICATE_PASSWORD", "Password of the PFX file.", "", ""},
	{"SPOMIG_ORGANISATION", "Organisation in the User-Agent NONISV|<organisation>|spomig/<version> SharePoint asks for.", "spomig", "Contoso"},
	{"SPOMIG_SPO_RETRY_BUDGET", "Longest total wait on SharePoint's Retry-After within one invocation.", "2m", "5m"},
	{"SPOMIG_ALLOWED_STORAGE_HOSTS", "Development only: extra storage hosts (host:port) accepted for SharePoint container and queue URIs.", "", "127.0.0.1:10100"},
	{"SPOMIG_UPLOAD_CONCURRENCY", "Files encrypted and uploaded in parallel. Memory: concurrency x block size.", "2", "4"},
	{"SPOMIG_UPLOAD_BLOCK_SIZE", "Block size of the encrypted uploads, in bytes (1 MiB..100 MiB).", "4194304", "8388608"},
	{"SPOMIG_UPLOAD_URL_TTL", "Lifetime of the staging upload SAS URL handed to callers.", "1h", "30m"},
	{"SPOMIG_MAX_PACKAGE_SIZE", "Largest total uncompressed package size, in bytes.", "274877906944", "16106127360"},
	{"SPOMIG_MAX_ENTRIES", "Most zip entries in one package. Memory: each entry's directory record is held while the package is processed.", "50000", ""},
	{"SPOMIG_MAX_COMPRESSION_RATIO", "Highest compression ratio of one zip entry (zip-bomb guard).", "100", ""},
	{"SPOMIG_SAS_RENEW_BEFORE", "Re-provision containers when their SAS expires sooner than this.", "12h", ""},
	{"SPOMIG_MONITOR_SOURCES", "Event sources of the monitor: queue, progress, or both.", "queue,progress", "progress"},
	{"SPOMIG_MONITOR_BUDGET", "Time budget of one monitor run (well below functionTimeout).", "45s", ""},
	{"SPOMIG_STUCK_AFTER", "Ask GetMigrationJobStatus after this long without an event.", "6h", ""},
	{"SPOMIG_UNKNOWN_MESSAGE_MAX_AGE", "Delete report-queue messages of jobs we do not know once older than this.", "72h", ""},
	{"SPOMIG_RETENTION", "After a job ends, delete its Key Vault secret (and on success its staged zip) after this long.", "168h", ""},
	{"SPOMIG_SUBMIT_LEASE", "How long a submission claim holds before another attempt may take it over.", "5m", ""},
	{"SPOMIG_CALLBACK_ALLOWED_HOSTS", "Comma-separated hosts that job callbackUrl may use (https only).", "", "prod-00.westeurope.logic.azure.com"},
	{"SPOMIG_LOG_LEVEL", "debug, info, warn or error.", "info", "debug"},
	{"SPOMIG_PUBLIC_BASE_URL", "Public base URL of the app, for the absolute Location and nextLink URLs of the API.", "https://$WEBSITE_HOSTNAME in Azure; else taken from the request", "https://spomig.contoso.com"},
}

// Port reads FUNCTIONS_CUSTOMHANDLER_PORT (the only setting needed to start serving).
func Port(getenv Getenv) (int, error) {
	v := strings.TrimSpace(getenv("FUNCTIONS_CUSTOMHANDLER_PORT"))
	if v == "" {
		return 0, errors.New("FUNCTIONS_CUSTOMHANDLER_PORT is missing: the Functions host sets it; set it yourself to run the handler alone")
	}
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("FUNCTIONS_CUSTOMHANDLER_PORT: %q is not a port number (1-65535)", v)
	}
	return p, nil
}

// Load reads and validates every setting. The error names every missing or invalid setting.
func Load(getenv Getenv) (*Config, error) {
	r := reader{getenv: getenv}
	c := &Config{}
	if p, err := Port(getenv); err != nil {
		r.errs = append(r.errs, err)
	} else {
		c.Port = p
	}
	if conn, err := storageconn.Parse("AzureWebJobsStorage", storageconn.Getenv(getenv)); err != nil {
		r.errs = append(r.errs, err)
	} else {
		c.Storage = conn
	}
	c.StagingContainer = r.name("SPOMIG_STAGING_CONTAINER", DefaultStagingContainer, false)
	c.ReportsContainer = r.name("SPOMIG_REPORTS_CONTAINER", DefaultReportsContainer, false)
	c.SubmitQueue = r.name("SPOMIG_SUBMIT_QUEUE", DefaultSubmitQueue, false)
	c.JobsTable = r.name("SPOMIG_JOBS_TABLE", DefaultJobsTable, true)

	c.KeyVaultURL = r.httpsURL("SPOMIG_KEYVAULT_URL")
	c.KeyVaultAuth = r.auth("SPOMIG_KEYVAULT", "default")
	c.KeyVaultDisableChallengeVerification = r.boolean("SPOMIG_KEYVAULT_DISABLE_CHALLENGE_RESOURCE_VERIFICATION", false)

	c.TenantHost = r.host("SPOMIG_TENANT_HOST", true)
	c.AllowedSiteHosts = r.hosts("SPOMIG_ALLOWED_SITE_HOSTS")
	if len(c.AllowedSiteHosts) == 0 && c.TenantHost != "" {
		c.AllowedSiteHosts = []string{c.TenantHost}
	}
	c.SPOAuth = r.auth("SPOMIG_SPO", "certificate")
	c.Organisation = r.str("SPOMIG_ORGANISATION", "spomig")
	if strings.ContainsAny(c.Organisation, "|\r\n") {
		r.bad("SPOMIG_ORGANISATION", "must not contain '|' or line breaks (it goes into the User-Agent)")
	}
	c.SPORetryBudget = r.duration("SPOMIG_SPO_RETRY_BUDGET", 2*time.Minute)
	c.AllowedStorageHosts = r.hosts("SPOMIG_ALLOWED_STORAGE_HOSTS")

	c.UploadConcurrency = int(r.integer("SPOMIG_UPLOAD_CONCURRENCY", 2, 1, 64))
	c.UploadBlockSize = r.integer("SPOMIG_UPLOAD_BLOCK_SIZE", 4<<20, 1<<20, 100<<20)
	c.UploadURLTTL = r.duration("SPOMIG_UPLOAD_URL_TTL", time.Hour)
	c.MaxPackageSize = r.integer("SPOMIG_MAX_PACKAGE_SIZE", 256<<30, 1, 1<<50)
	c.MaxEntries = int(r.integer("SPOMIG_MAX_ENTRIES", 50_000, 1, 10_000_000))
	c.MaxCompressionRatio = int(r.integer("SPOMIG_MAX_COMPRESSION_RATIO", 100, 1, 1<<20))
	c.MaxDequeueCount = r.maxDequeueCount()
	c.SASRenewBefore = r.duration("SPOMIG_SAS_RENEW_BEFORE", 12*time.Hour)

	c.MonitorSources = r.list("SPOMIG_MONITOR_SOURCES", []string{"queue", "progress"}, []string{"queue", "progress"})
	c.MonitorBudget = r.duration("SPOMIG_MONITOR_BUDGET", 45*time.Second)
	c.StuckAfter = r.duration("SPOMIG_STUCK_AFTER", 6*time.Hour)
	c.UnknownMessageMaxAge = r.duration("SPOMIG_UNKNOWN_MESSAGE_MAX_AGE", 72*time.Hour)
	c.Retention = r.duration("SPOMIG_RETENTION", 7*24*time.Hour)
	c.SubmitLease = r.duration("SPOMIG_SUBMIT_LEASE", 5*time.Minute)
	c.CallbackAllowedHosts = r.hosts("SPOMIG_CALLBACK_ALLOWED_HOSTS")
	c.LogLevel = strings.ToLower(r.str("SPOMIG_LOG_LEVEL", "info"))
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		r.bad("SPOMIG_LOG_LEVEL", fmt.Sprintf("%q is not one of debug, info, warn, error", c.LogLevel))
	}
	c.PublicBaseURL = strings.TrimRight(r.get("SPOMIG_PUBLIC_BASE_URL"), "/")
	if c.PublicBaseURL == "" {
		if h := r.get("WEBSITE_HOSTNAME"); h != "" {
			c.PublicBaseURL = "https://" + h
		}
	} else if u, err := url.Parse(c.PublicBaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		r.bad("SPOMIG_PUBLIC_BASE_URL", fmt.Sprintf("%q is not an absolute http(s) URL", c.PublicBaseURL))
	}
	if len(r.errs) > 0 {
		return nil, &Error{Problems: r.errs}
	}
	return c, nil
}

// Error lists every setting problem found by Load.
type Error struct{ Problems []error }

func (e *Error) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Error()
	}
	return fmt.Sprintf("invalid configuration (%d problems): %s", len(msgs), strings.Join(msgs, "; "))
}

// Unwrap gives errors.Is/As access to each problem.
func (e *Error) Unwrap() []error { return e.Problems }

type reader struct {
	getenv Getenv
	errs   []error
}

func (r *reader) get(name string) string { return strings.TrimSpace(r.getenv(name)) }

func (r *reader) bad(name, why string) { r.errs = append(r.errs, fmt.Errorf("%s: %s", name, why)) }

func (r *reader) missing(name, why string) {
	r.errs = append(r.errs, fmt.Errorf("%s is missing: %s", name, why))
}

func (r *reader) str(name, def string) string {
	if v := r.get(name); v != "" {
		return v
	}
	return def
}

// name reads a container, queue or table name.
func (r *reader) name(name, def string, table bool) string {
	v := r.str(name, def)
	ok := len(v) >= 3 && len(v) <= 63
	for i, ch := range v {
		switch {
		case ch >= 'a' && ch <= 'z', ch >= '0' && ch <= '9':
		case ch >= 'A' && ch <= 'Z' && table:
		case ch == '-' && !table && i > 0 && i < len(v)-1 && v[i-1] != '-':
		default:
			ok = false
		}
	}
	if !ok {
		kind := "3-63 lower-case letters, digits and single hyphens"
		if table {
			kind = "3-63 letters and digits"
		}
		r.bad(name, fmt.Sprintf("%q is not a valid name (%s)", v, kind))
	}
	return v
}

func (r *reader) httpsURL(name string) string {
	v := r.get(name)
	if v == "" {
		r.missing(name, "set it to the vault URL, e.g. https://contoso-spomig.vault.azure.net")
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		r.bad(name, fmt.Sprintf("%q is not an https URL", v))
		return ""
	}
	return strings.TrimRight(v, "/")
}

func (r *reader) host(name string, required bool) string {
	v := strings.ToLower(r.get(name))
	if v == "" {
		if required {
			r.missing(name, "set it to the tenant host, e.g. contoso.sharepoint.com")
		}
		return ""
	}
	if strings.Contains(v, "://") || strings.ContainsAny(v, "/?#@ ") {
		r.bad(name, fmt.Sprintf("%q is not a host name (give host or host:port, without scheme or path)", v))
		return ""
	}
	return v
}

func (r *reader) hosts(name string) []string {
	v := r.get(name)
	if v == "" {
		return nil
	}
	var out []string
	for _, h := range strings.Split(v, ",") {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" {
			continue
		}
		if strings.Contains(h, "://") || strings.ContainsAny(h, "/?#@ ") {
			r.bad(name, fmt.Sprintf("%q is not a host name (give host or host:port, without scheme or path)", h))
			continue
		}
		out = append(out, h)
	}
	return out
}

func (r *reader) list(name string, def, allowed []string) []string {
	v := r.get(name)
	if v == "" {
		return def
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		s = strings.ToLower(strings.TrimSpace(s))
		if s == "" {
			continue
		}
		ok := false
		for _, a := range allowed {
			ok = ok || a == s
		}
		if !ok {
			r.bad(name, fmt.Sprintf("%q is not one of %s", s, strings.Join(allowed, ", ")))
			continue
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		r.bad(name, "names no source")
	}
	return out
}

func (r *reader) boolean(name string, def bool) bool {
	v := r.get(name)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.bad(name, fmt.Sprintf("%q is not true or false", v))
	}
	return b
}

func (r *reader) integer(name string, def, min, max int64) int64 {
	v := r.get(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < min || n > max {
		r.bad(name, fmt.Sprintf("%q is not a whole number from %d to %d", v, min, max))
		return def
	}
	return n
}

func (r *reader) duration(name string, def time.Duration) time.Duration {
	v := r.get(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		r.bad(name, fmt.Sprintf("%q is not a positive duration such as 90s, 45m or 6h", v))
		return def
	}
	return d
}

// maxDequeueCount is the host's maxDequeueCount, which the submitter and the monitor must know: the
// AzureFunctionsJobHost__extensions__queues__maxDequeueCount override, else host.json in the app root
// (FUNCTIONS_APP_ROOT_PATH, else the working directory), else the host's default 5.
func (r *reader) maxDequeueCount() int {
	const name = "AzureFunctionsJobHost__extensions__queues__maxDequeueCount"
	if r.get(name) != "" {
		return int(r.integer(name, 5, 1, 1000))
	}
	root := r.get("FUNCTIONS_APP_ROOT_PATH")
	b, err := os.ReadFile(filepath.Join(root, "host.json"))
	if err != nil {
		return 5
	}
	var hj struct {
		Extensions struct {
			Queues struct {
				MaxDequeueCount int `json:"maxDequeueCount"`
			} `json:"queues"`
		} `json:"extensions"`
	}
	if err := json.Unmarshal(b, &hj); err != nil || hj.Extensions.Queues.MaxDequeueCount <= 0 {
		return 5
	}
	return hj.Extensions.Queues.MaxDequeueCount
}

func (r *reader) auth(prefix, def string) Auth {
	a := Auth{
		Kind:                strings.ToLower(r.str(prefix+"_AUTH", def)),
		ClientID:            r.get(prefix + "_CLIENT_ID"),
		TenantID:            r.get(prefix + "_TENANT_ID"),
		CertificatePath:     r.get(prefix + "_CERTIFICATE_PATH"),
		CertificatePassword: r.getenv(prefix + "_CERTIFICATE_PASSWORD"),
	}
	switch a.Kind {
	case "default":
		if a.ClientID != "" {
			r.bad(prefix+"_CLIENT_ID", "is set but "+prefix+"_AUTH is default (DefaultAzureCredential reads AZURE_CLIENT_ID); use managedidentity or certificate, or unset it")
		}
	case "managedidentity":
	case "certificate":
		if a.ClientID == "" {
			r.missing(prefix+"_CLIENT_ID", "certificate auth needs the app (client) id")
		}
		if a.TenantID == "" {
			r.missing(prefix+"_TENANT_ID", "certificate auth needs the tenant id")
		}
		if a.CertificatePath == "" {
			r.missing(prefix+"_CERTIFICATE_PATH", "certificate auth needs a PEM or PFX file")
		}
	default:
		r.bad(prefix+"_AUTH", fmt.Sprintf("unknown credential kind %q (want default, managedidentity or certificate)", a.Kind))
	}
	return a
}

// SettingsMarkdown renders Settings as the README's configuration table.
func SettingsMarkdown() string {
	var b strings.Builder
	b.WriteString("| setting | meaning | default | example |\n|---|---|---|---|\n")
	esc := func(v string) string { return strings.ReplaceAll(v, "|", "\\|") }
	code := func(v string) string {
		if v == "" || strings.HasPrefix(v, "(") || strings.HasPrefix(v, "the ") {
			return esc(v)
		}
		return "`" + esc(v) + "`"
	}
	for _, s := range Settings {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", s.Name, esc(s.Meaning), code(s.Default), code(s.Example))
	}
	return b.String()
}

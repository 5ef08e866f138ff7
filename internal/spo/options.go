package spo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// Defaults applied by Options.setDefaults.
const (
	DefaultOrganisation = "spomig"
	DefaultVersion      = "dev"
	DefaultRetryBudget  = 2 * time.Minute
	DefaultMaxRetries   = 10
	// DefaultRetryAfter is the fixed wait after a 503 (or 429) that carries neither Retry-After nor
	// RateLimit-Reset. It is fixed, never grown between attempts.
	DefaultRetryAfter = 5 * time.Second
	// DefaultHTTPTimeout bounds one HTTP exchange of the default HTTP client.
	DefaultHTTPTimeout = 60 * time.Second
)

// maxRetryAfter caps what we believe of Retry-After / RateLimit-Reset, so absurd values cannot overflow.
const maxRetryAfter = 24 * time.Hour

// Options configures a Client. The zero value of every field but Credential and TenantHost is usable.
type Options struct {
	// Credential issues the bearer tokens. Required. Tokens are requested for the scope
	// "https://<site host>/.default" and cached until shortly before they expire.
	Credential azcore.TokenCredential

	// TenantHost is the tenant's SharePoint host, e.g. "contoso.sharepoint.com". A ":port" is allowed
	// for local development ("127.0.0.1:8443"). Required.
	TenantHost string

	// AllowedSiteHosts are the hosts site URLs may name (compared case-insensitively, ":443" ignored).
	// Default: []string{TenantHost}.
	AllowedSiteHosts []string

	// Organisation names us in the User-Agent "NONISV|<Organisation>|spomig/<Version>". Default "spomig".
	// It must not contain '|' or control characters.
	Organisation string

	// Version is our version in the User-Agent. Default "dev". It must not contain '|' or control
	// characters.
	Version string

	// RetryBudget is the total time one call may spend waiting on Retry-After. Default 2m. A negative
	// value disables waiting: every throttled answer becomes a *ThrottledError.
	RetryBudget time.Duration

	// MaxRetries is the most retries (after throttled answers) of one call. Default 10. A negative value
	// disables retries.
	MaxRetries int

	// AllowedStorageHosts are extra hosts ("127.0.0.1:10000") accepted for container and queue URIs,
	// over http or https, for local development only. Compared case-insensitively, port included.
	// Default: none, only Azure Storage hosts are accepted.
	AllowedStorageHosts []string

	// HTTPClient sends the requests, e.g. one that trusts a development CA. Default: a client with
	// DefaultHTTPTimeout and a clone of http.DefaultTransport. The client is copied and its copy never
	// follows redirects.
	HTTPClient *http.Client

	// Logger receives one debug record per request. Default: discard.
	Logger *slog.Logger

	// Sleep waits d or until ctx is done, returning ctx.Err() then. It exists for tests, which record
	// waits instead of sleeping. Default: a timer-based wait.
	Sleep func(ctx context.Context, d time.Duration) error

	// Now is the clock used for token expiry and Retry-After dates. Default: time.Now.
	Now func() time.Time
}

// setDefaults fills in the documented defaults.
func (o *Options) setDefaults() {
	if len(o.AllowedSiteHosts) == 0 && o.TenantHost != "" {
		o.AllowedSiteHosts = []string{o.TenantHost}
	}
	if o.Organisation == "" {
		o.Organisation = DefaultOrganisation
	}
	if o.Version == "" {
		o.Version = DefaultVersion
	}
	if o.RetryBudget == 0 {
		o.RetryBudget = DefaultRetryBudget
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = DefaultMaxRetries
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{
			Timeout:   DefaultHTTPTimeout,
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Sleep == nil {
		o.Sleep = sleepContext
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// validate checks the options after setDefaults.
func (o *Options) validate() error {
	if o.Credential == nil {
		return errors.New("spo: options: Credential is required")
	}
	if o.TenantHost == "" {
		return errors.New("spo: options: TenantHost is required")
	}
	if _, err := normalizeHost(o.TenantHost); err != nil {
		return fmt.Errorf("spo: options: TenantHost: %w", err)
	}
	for _, h := range o.AllowedSiteHosts {
		if _, err := normalizeHost(h); err != nil {
			return fmt.Errorf("spo: options: AllowedSiteHosts: %w", err)
		}
	}
	for _, h := range o.AllowedStorageHosts {
		if _, err := normalizeHost(h); err != nil {
			return fmt.Errorf("spo: options: AllowedStorageHosts: %w", err)
		}
	}
	if !userAgentSafe(o.Organisation) {
		return errors.New("spo: options: Organisation must not contain '|' or control characters")
	}
	if !userAgentSafe(o.Version) {
		return errors.New("spo: options: Version must not contain '|' or control characters")
	}
	return nil
}

// normalizeHost lower-cases a "host[:port]" and drops an explicit ":443".
func normalizeHost(h string) (string, error) {
	h = strings.ToLower(strings.TrimSpace(h))
	if h == "" || strings.ContainsAny(h, "/@?#\\ ") {
		return "", fmt.Errorf("host %q is not of the form host[:port]", h)
	}
	u, err := url.Parse("https://" + h)
	if err != nil || u.Host != h || u.Hostname() == "" {
		return "", fmt.Errorf("host %q is not of the form host[:port]", h)
	}
	return stripPort(h, "443"), nil
}

// stripPort removes ":port" from host when it is the given (default) port.
func stripPort(host, port string) string {
	h, p, err := net.SplitHostPort(host)
	if err != nil || p != port {
		return host
	}
	if strings.Contains(h, ":") {
		return "[" + h + "]"
	}
	return h
}

func userAgentSafe(s string) bool {
	for _, r := range s {
		if r == '|' || r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// sleepContext waits d or until ctx is done.
func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

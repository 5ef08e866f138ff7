package provision

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/spomig/spomig/internal/jobs"
)

// Errors of the Service. Test with errors.Is.
var (
	// ErrInvalid reports a request that cannot become a job (matched by every *FieldError).
	ErrInvalid = errors.New("invalid request")
	// ErrSiteNotAllowed reports a site URL whose host is not in Policy.AllowedSiteHosts.
	ErrSiteNotAllowed = errors.New("site host not allowed")
	// ErrNotAwaitingPackage reports an upload URL asked for a job that is no longer waiting for its package.
	ErrNotAwaitingPackage = errors.New("job is not awaiting its package")
	// ErrNotReprovisionable reports a Reprovision of a job whose package is already staged (or that ended).
	ErrNotReprovisionable = errors.New("job can no longer get new containers")
	// ErrJobIDInUse reports a Create with the JobID of an existing job for another site.
	ErrJobIDInUse = errors.New("job id already used for another site")
	// ErrUploadURLUnavailable reports that the storage connection can sign no SAS (a SAS connection string).
	ErrUploadURLUnavailable = errors.New("upload URLs cannot be signed with this storage connection")
)

// Field size limits, in bytes (they fit the job record's).
const (
	MaxURLBytes   = 2048
	MaxLabelBytes = 1024
)

// FieldError is a request field that is missing or malformed. Its text names the field (by its JSON name)
// and why, never the value: it is safe to show to the caller.
type FieldError struct {
	Field  string // siteUrl, webId, label, callbackUrl, jobId
	Reason string
	// Forbidden marks a well-formed value that policy refuses (a site host outside the allow-list).
	Forbidden bool
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Is makes errors.Is(err, ErrInvalid) true, and errors.Is(err, ErrSiteNotAllowed) for a forbidden site.
func (e *FieldError) Is(target error) bool {
	if e.Forbidden {
		return target == ErrSiteNotAllowed
	}
	return target == ErrInvalid
}

// Policy is what a request may name. The zero value refuses every site and every callback.
type Policy struct {
	// AllowedSiteHosts are the hosts site URLs may use (case-insensitive, ":443" ignored); SharePoint
	// tokens are only ever sent there (the spo client checks again).
	AllowedSiteHosts []string
	// CallbackAllowedHosts are the hosts callback URLs may use. Empty: no callback URL is accepted.
	CallbackAllowedHosts []string
}

// Validate checks r and returns it normalized: site URL with lower-case host, no default port and no
// trailing slash; web id lower case; label and callback trimmed (a signed callback URL keeps its sig=:
// Create keeps it in the job's secret, see Request.CallbackURL). Errors are *FieldError (400; 403 for a
// site host outside the allow-list).
func (p Policy) Validate(r Request) (Request, error) {
	site, err := p.normalizeSite(r.SiteURL)
	if err != nil {
		return r, err
	}
	r.SiteURL = site
	r.WebID = strings.TrimSpace(r.WebID)
	if r.WebID != "" {
		if !IsGUID(r.WebID) {
			return r, &FieldError{Field: "webId", Reason: "is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"}
		}
		r.WebID = strings.ToLower(r.WebID)
	}
	r.Label = strings.TrimSpace(r.Label)
	if len(r.Label) > MaxLabelBytes {
		return r, &FieldError{Field: "label", Reason: fmt.Sprintf("is longer than %d bytes", MaxLabelBytes)}
	}
	if !printable(r.Label) {
		return r, &FieldError{Field: "label", Reason: "is not valid UTF-8 text without control characters"}
	}
	r.CallbackURL = strings.TrimSpace(r.CallbackURL)
	if r.CallbackURL != "" {
		cb, err := p.checkCallback(r.CallbackURL)
		if err != nil {
			return r, err
		}
		r.CallbackURL = cb
	}
	if r.JobID != "" && !jobs.ValidID(r.JobID) {
		return r, &FieldError{Field: "jobId", Reason: "is not 1 to 128 letters, digits, '-', '_' or '.'"}
	}
	switch r.Source {
	case "":
		r.Source = jobs.SourceAPI
	case jobs.SourceAPI, jobs.SourceDrop:
	default:
		return r, &FieldError{Field: "source", Reason: "is neither api nor drop"}
	}
	return r, nil
}

func (p Policy) normalizeSite(raw string) (string, error) {
	bad := func(reason string) error { return &FieldError{Field: "siteUrl", Reason: reason} }
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", bad("is required")
	}
	if len(raw) > MaxURLBytes {
		return "", bad(fmt.Sprintf("is longer than %d bytes", MaxURLBytes))
	}
	if !printable(raw) {
		return "", bad("contains control characters or invalid UTF-8")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", bad("is not a URL")
	}
	if !strings.EqualFold(u.Scheme, "https") {
		return "", bad("must be an https URL")
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return "", bad("has no host")
	}
	if u.User != nil {
		return "", bad("must not carry user information")
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawFragment != "" {
		return "", bad("must not have a query or a fragment")
	}
	for seg := range strings.SplitSeq(u.Path, "/") {
		if strings.HasPrefix(seg, "_") || seg == "." || seg == ".." {
			return "", bad("must be the URL of a site, not of a page or an API (no /_api, /_layouts, …)")
		}
	}
	host := normHost(u.Host)
	if !hostIn(host, p.AllowedSiteHosts) {
		return "", &FieldError{Field: "siteUrl", Reason: fmt.Sprintf("host %q is not an allowed SharePoint host", truncate(host, 64)), Forbidden: true}
	}
	return "https://" + host + strings.TrimRight(u.EscapedPath(), "/"), nil
}

func (p Policy) checkCallback(raw string) (string, error) {
	bad := func(reason string) error { return &FieldError{Field: "callbackUrl", Reason: reason} }
	if len(raw) > MaxURLBytes {
		return "", bad(fmt.Sprintf("is longer than %d bytes", MaxURLBytes))
	}
	if !printable(raw) {
		return "", bad("contains control characters or invalid UTF-8")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.Hostname() == "" {
		return "", bad("is not an absolute URL")
	}
	if !strings.EqualFold(u.Scheme, "https") {
		return "", bad("must be an https URL")
	}
	if u.User != nil || u.Fragment != "" {
		return "", bad("must not carry user information or a fragment")
	}
	host := normHost(u.Host)
	if len(p.CallbackAllowedHosts) == 0 {
		return "", bad("is not accepted: no callback host is allowed (SPOMIG_CALLBACK_ALLOWED_HOSTS is empty)")
	}
	if !hostIn(host, p.CallbackAllowedHosts) {
		return "", bad(fmt.Sprintf("host %q is not an allowed callback host", truncate(host, 64)))
	}
	u.Scheme, u.Host = "https", host
	return u.String(), nil
}

// splitCallback divides a validated callback URL between the job record and the job's Key Vault secret.
// A signed URL (a query parameter sig, in any case or escaping: Power Automate's "When an HTTP request is
// received", Logic Apps; or any query the record would refuse) is a credential: the secret keeps it whole
// and the record keeps it without its query, which still shows where the callback goes (the record
// refuses any sig=, even a redacted one). An unsigned URL goes to the record only, as it is.
func splitCallback(cb string) (record, secret string) {
	u, err := url.Parse(cb)
	if err != nil || !signed(u) {
		return cb, ""
	}
	u.RawQuery, u.ForceQuery = "", false
	return u.String(), cb
}

// recordSecretRE is what the job record refuses as a secret (jobs' sigRE): a query matching it cannot be
// kept in the record either.
var recordSecretRE = regexp.MustCompile(`(?i)\b(sig|accountkey)=`)

func signed(u *url.URL) bool {
	if recordSecretRE.MatchString(u.RawQuery) {
		return true
	}
	for p := range strings.SplitSeq(u.RawQuery, "&") {
		k, _, _ := strings.Cut(p, "=")
		if k, err := url.QueryUnescape(k); err == nil && strings.EqualFold(k, "sig") {
			return true
		}
	}
	return false
}

// IsGUID reports whether s is a GUID in its 8-4-4-4-12 hexadecimal form (either case, no braces).
func IsGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

func normHost(h string) string {
	h = strings.ToLower(h)
	return strings.TrimSuffix(h, ":443")
}

func hostIn(host string, list []string) bool {
	for _, a := range list {
		if normHost(strings.TrimSpace(a)) == host {
			return true
		}
	}
	return false
}

func printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

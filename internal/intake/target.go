package intake

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spomig/spomig/internal/provision"
)

// Self-service drops name their target in blob metadata or in a spomig.json at the zip root.
const (
	// MetaSiteURL, MetaWebID and MetaLabel are the blob metadata keys of a drop's target, looked up
	// case-insensitively (the Go SDK returns "Siteurl" or "siteurl" for a key written as "SiteUrl").
	MetaSiteURL = "siteurl"
	MetaWebID   = "webid"
	MetaLabel   = "label"
	// DropConfigName is the zip-root file that names a drop's target when the blob metadata does not.
	DropConfigName = "spomig.json"
	// MaxDropConfigSize bounds spomig.json: a larger one is refused (it is read whole into memory).
	MaxDropConfigSize = 64 << 10
)

// Bounds of the target fields (those of the job record).
const (
	maxSiteURLBytes = 2048
	maxLabelBytes   = 1024
)

// ErrBadTarget is matched (errors.Is) by every error of TargetFromMetadata and ParseDropConfig about
// the target itself (as opposed to its absence).
var ErrBadTarget = errors.New("invalid drop target")

// DropTarget is the destination of a self-service drop.
type DropTarget struct {
	// SiteURL is the absolute https URL of the destination site collection, without query, fragment or
	// trailing slash.
	SiteURL string
	// WebID is the destination web's id as a lower-case GUID, or empty (provisioning then asks SharePoint
	// for the site's root web).
	WebID string
	// Label is the job's label (free text, at most 1,024 bytes, no control characters); may be empty.
	Label string
	// From tells where the target came from: "metadata" or DropConfigName.
	From string
}

// dropConfig is the JSON shape of spomig.json. encoding/json matches keys case-insensitively, so
// "siteurl" and "SiteUrl" work as well as "siteUrl".
type dropConfig struct {
	SiteURL *string `json:"siteUrl"`
	WebID   *string `json:"webId"`
	Label   *string `json:"label"`
}

// TargetFromMetadata reads a drop's target from blob metadata: siteurl (required for a target),
// webid and label (optional), keys compared case-insensitively. ok is false when there is no siteurl
// key at all; err (ErrBadTarget) reports a target that is present but unusable.
func TargetFromMetadata(md map[string]string) (t DropTarget, ok bool, err error) {
	site, hasSite := lookupFold(md, MetaSiteURL)
	web, _ := lookupFold(md, MetaWebID)
	label, _ := lookupFold(md, MetaLabel)
	if !hasSite {
		return DropTarget{}, false, nil
	}
	// Metadata values are ASCII on the wire; a label may be percent-encoded to carry other characters.
	if l, uerr := url.PathUnescape(label); uerr == nil {
		label = l
	}
	t, err = newTarget(site, web, label, "metadata")
	return t, true, err
}

// ParseDropConfig reads a spomig.json document: {"siteUrl": "...", "webId": "...", "label": "..."}
// (webId and label optional; unknown keys ignored). At most MaxDropConfigSize bytes are read.
func ParseDropConfig(r io.Reader) (DropTarget, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxDropConfigSize+1))
	if err != nil {
		return DropTarget{}, err
	}
	if len(b) > MaxDropConfigSize {
		return DropTarget{}, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadTarget, DropConfigName, MaxDropConfigSize)
	}
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")) // a BOM, as Windows editors write
	var c dropConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&c); err != nil {
		return DropTarget{}, fmt.Errorf("%w: %s is not a JSON object: %v", ErrBadTarget, DropConfigName, jsonErrText(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return DropTarget{}, fmt.Errorf("%w: %s has data after its JSON object", ErrBadTarget, DropConfigName)
	}
	if c.SiteURL == nil {
		return DropTarget{}, fmt.Errorf("%w: %s has no siteUrl", ErrBadTarget, DropConfigName)
	}
	return newTarget(*c.SiteURL, deref(c.WebID), deref(c.Label), DropConfigName)
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// jsonErrText keeps json's message short and free of the document's content.
func jsonErrText(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%s must be a string", te.Field)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "unexpected end of document"
	}
	return "malformed"
}

// newTarget checks and normalizes the three fields.
func newTarget(site, web, label, from string) (DropTarget, error) {
	bad := func(format string, a ...any) (DropTarget, error) {
		return DropTarget{}, fmt.Errorf("%w (%s): %s", ErrBadTarget, from, fmt.Sprintf(format, a...))
	}
	site = strings.TrimSpace(site)
	if site == "" {
		return bad("siteUrl is empty")
	}
	if len(site) > maxSiteURLBytes || !utf8.ValidString(site) || hasControl(site) {
		return bad("siteUrl is not a URL of at most %d bytes", maxSiteURLBytes)
	}
	u, err := url.Parse(site)
	switch {
	case err != nil:
		return bad("siteUrl does not parse as a URL")
	case !strings.EqualFold(u.Scheme, "https"):
		return bad("siteUrl must be an https URL")
	case u.Host == "" || u.Opaque != "":
		return bad("siteUrl has no host")
	case u.User != nil:
		return bad("siteUrl must not carry user information")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(site, "?#"):
		return bad("siteUrl must not have a query or a fragment")
	case strings.Contains(strings.ToLower(u.Path), "/_api"):
		return bad("siteUrl must name a site, not an API path")
	}
	u.Scheme = "https"
	u.Host = strings.ToLower(u.Host)
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	t := DropTarget{SiteURL: u.String(), From: from}
	if len(t.SiteURL) > maxSiteURLBytes {
		return bad("siteUrl is longer than %d bytes", maxSiteURLBytes)
	}
	if web = strings.TrimSpace(web); web != "" {
		g, ok := canonicalGUID(web)
		if !ok {
			return bad("webId is not a GUID")
		}
		t.WebID = g
	}
	label = strings.TrimSpace(label)
	if !utf8.ValidString(label) || hasControl(label) {
		return bad("label must be UTF-8 text without control characters")
	}
	if len(label) > maxLabelBytes {
		return bad("label is longer than %d bytes", maxLabelBytes)
	}
	t.Label = label
	return t, nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) })
}

// canonicalGUID accepts a GUID with or without braces or dashes, in any case, and returns it as
// lower-case 8-4-4-4-12.
func canonicalGUID(s string) (string, bool) {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 32 || (len(s) != 32 && len(s) != 36) {
		return "", false
	}
	if len(s) == 36 && (s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-') {
		return "", false
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", false
	}
	h = strings.ToLower(h)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], true
}

func lookupFold(md map[string]string, key string) (string, bool) {
	if v, ok := md[key]; ok {
		return v, true
	}
	for k, v := range md {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return "", false
}

// DropJobID is the job id of a self-service drop: provision.DropJobID of the container, the blob name
// and the ETag without its quotes (the host and the SDK disagree on them). Every delivery of one version
// of one blob maps to the same job, so a re-delivered or retried trigger finds the job its first delivery
// created; a new version (new ETag) of the same name is a new drop and a new job.
func DropJobID(container, name, etag string) string {
	return provision.DropJobID(container, name, normETag(etag))
}

// normETag removes the quotes (and a weak prefix) from an ETag: the host and the SDK disagree on them.
func normETag(etag string) string {
	etag = strings.TrimSpace(etag)
	etag = strings.TrimPrefix(etag, "W/")
	return strings.Trim(etag, `"`)
}

// quoteETag is the form sent in If-Match.
func quoteETag(etag string) string { return `"` + normETag(etag) + `"` }

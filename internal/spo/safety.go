package spo

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// site is a checked site URL.
type site struct {
	base  string // "https://host/escaped/path", no trailing slash
	host  string // normalized host, for logs
	path  string // escaped path, no trailing slash, for logs
	scope string // token scope "https://host/.default"
}

// parseSite checks a site URL: https, no user info, no query or fragment, host allowed, no API path.
// Its errors name the host at most, never the whole URL.
func (c *Client) parseSite(raw string) (*site, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("spo: site URL does not parse: %w", ErrSiteNotAllowed)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("spo: site URL scheme %q: %w", u.Scheme, ErrSiteNotHTTPS)
	}
	if u.User != nil {
		return nil, fmt.Errorf("spo: site URL carries user info: %w", ErrSiteNotAllowed)
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return nil, fmt.Errorf("spo: site URL has no host: %w", ErrSiteNotAllowed)
	}
	host := stripPort(strings.ToLower(u.Host), "443")
	if !c.siteHosts[host] {
		return nil, fmt.Errorf("spo: site host %q: %w", host, ErrSiteNotAllowed)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawFragment != "" {
		return nil, fmt.Errorf("spo: site URL has a query or fragment: %w", ErrSiteNotAllowed)
	}
	for seg := range strings.SplitSeq(u.Path, "/") {
		switch strings.ToLower(seg) {
		case ".", "..", "_api", "_vti_bin":
			return nil, fmt.Errorf("spo: site URL path segment %q: %w", seg, ErrSiteNotAllowed)
		}
	}
	path := strings.TrimRight(u.EscapedPath(), "/")
	return &site{
		base:  "https://" + host + path,
		host:  host,
		path:  path,
		scope: "https://" + host + "/.default",
	}, nil
}

// storageKind is what a storage URI must name.
type storageKind int

const (
	blobContainer storageKind = iota
	storageQueue
)

func (k storageKind) String() string {
	if k == storageQueue {
		return "queue"
	}
	return "container"
}

// Azure Storage endpoint suffixes (public, US Government, China) by kind.
var storageSuffixes = map[storageKind][]string{
	blobContainer: {".blob.core.windows.net", ".blob.core.usgovcloudapi.net", ".blob.core.chinacloudapi.cn"},
	storageQueue:  {".queue.core.windows.net", ".queue.core.usgovcloudapi.net", ".queue.core.chinacloudapi.cn"},
}

// checkStorageURI accepts an https URI of one container (or queue) on an Azure Storage host, an explicit
// ":443" tolerated, or any http(s) URI with a path on a host of Options.AllowedStorageHosts. It returns
// an identity of the container (host and path, lower-cased host, no SAS) for comparisons. Its errors
// carry the URI redacted.
func (c *Client) checkStorageURI(raw string, kind storageKind) (string, error) {
	refuse := func(why string) (string, error) {
		return "", fmt.Errorf("spo: %s URI %s: %s: %w", kind, RedactURL(raw), why, ErrStorageHostNotAllowed)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("spo: %s URI does not parse: %w", kind, ErrStorageHostNotAllowed)
	}
	if u.User != nil {
		return "", fmt.Errorf("spo: %s URI carries user info: %w", kind, ErrStorageHostNotAllowed)
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return refuse("no host")
	}
	if u.Fragment != "" || u.RawFragment != "" {
		return refuse("has a fragment")
	}
	path := strings.TrimRight(u.EscapedPath(), "/")
	host := strings.ToLower(u.Host)
	if c.storageHosts[host] {
		if u.Scheme != "https" && u.Scheme != "http" {
			return refuse("scheme is not http(s)")
		}
		if path == "" {
			return refuse("no " + kind.String() + " in the path")
		}
		return host + path, nil
	}
	if u.Scheme != "https" {
		return refuse("not https")
	}
	if p := u.Port(); p != "" && p != "443" {
		return refuse("not an Azure Storage host")
	}
	if !isAzureStorageHost(strings.ToLower(u.Hostname()), kind) {
		return refuse("not an Azure Storage host")
	}
	name := strings.TrimPrefix(path, "/")
	if name == "" || strings.Contains(name, "/") || name == "." || name == ".." {
		return refuse("path is not one " + kind.String())
	}
	return strings.ToLower(u.Hostname()) + path, nil
}

// isAzureStorageHost reports whether host is "<account>.<kind suffix>" with a valid account name
// (3–24 lower-case letters and digits).
func isAzureStorageHost(host string, kind storageKind) bool {
	for _, suffix := range storageSuffixes[kind] {
		account, ok := strings.CutSuffix(host, suffix)
		if !ok {
			continue
		}
		if len(account) < 3 || len(account) > 24 {
			return false
		}
		for _, r := range account {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
				return false
			}
		}
		return true
	}
	return false
}

// sigPattern matches a SAS signature ("sig=…", also percent-encoded "sig%3D…") up to the next
// parameter. It deliberately over-matches: any "sig=" is treated as a secret.
var sigPattern = regexp.MustCompile(`(?i)(sig(?:=|%3d))[^&#\s"'<>]*`)

// RedactURL returns u with the value of every sig= parameter (the SAS signature) replaced by
// "REDACTED"; everything else is kept as it is. Use it wherever a URI reaches a log or an error.
func RedactURL(u string) string {
	return redactText(u)
}

// redactText replaces every sig= value in free text.
func redactText(s string) string {
	return sigPattern.ReplaceAllString(s, "${1}REDACTED")
}

// parseGUID validates a GUID ("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", braces allowed) and returns it in
// lower case without braces.
func parseGUID(s string) (string, bool) {
	if len(s) == 38 && s[0] == '{' && s[37] == '}' {
		s = s[1:37]
	}
	if len(s) != 36 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", false
			}
		default:
			if !isHex(c) {
				return "", false
			}
		}
	}
	return strings.ToLower(s), true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

const emptyGUID = "00000000-0000-0000-0000-000000000000"

// checkID validates a job or web id passed by the caller.
func checkID(what, id string) (string, error) {
	g, ok := parseGUID(id)
	if !ok {
		return "", fmt.Errorf("spo: %s %q: %w", what, truncate(id, 64), ErrBadID)
	}
	return g, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

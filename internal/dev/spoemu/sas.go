package spoemu

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// sasInfo is what the emulator reads from a SAS query string (it never verifies the signature itself:
// storage does, when the URI is used).
type sasInfo struct {
	perms    string // sp
	resource string // sr
	protocol string // spr
	start    time.Time
	expiry   time.Time
	hasSig   bool
}

func (s sasInfo) has(p byte) bool { return strings.IndexByte(s.perms, p) >= 0 }

// permSet reports whether sp holds exactly the letters of want, in any order.
func (s sasInfo) permSet(want string) bool {
	if len(s.perms) != len(want) {
		return false
	}
	for i := 0; i < len(want); i++ {
		if !s.has(want[i]) {
			return false
		}
	}
	return true
}

// sasTimeLayouts are the ISO 8601 forms storage accepts for st and se.
var sasTimeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04Z07:00", "2006-01-02"}

func parseSASTime(s string) (time.Time, error) {
	for _, l := range sasTimeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("not an ISO 8601 time")
}

// parseSAS reads the SAS parameters of q. It fails when there is no signature or a time is malformed.
func parseSAS(q url.Values) (sasInfo, error) {
	s := sasInfo{perms: q.Get("sp"), resource: q.Get("sr"), protocol: q.Get("spr"), hasSig: q.Get("sig") != ""}
	if !s.hasSig {
		return s, errors.New("the URI has no SAS signature")
	}
	if v := q.Get("st"); v != "" {
		t, err := parseSASTime(v)
		if err != nil {
			return s, errors.New("the SAS start time (st) is malformed")
		}
		s.start = t
	}
	v := q.Get("se")
	if v == "" {
		return s, errors.New("the SAS has no expiry time (se)")
	}
	t, err := parseSASTime(v)
	if err != nil {
		return s, errors.New("the SAS expiry time (se) is malformed")
	}
	s.expiry = t
	return s, nil
}

// checkTimes rejects a SAS that has expired or is not valid yet.
func (s sasInfo) checkTimes(now time.Time) error {
	if !s.expiry.After(now) {
		return errors.New("the SAS has expired")
	}
	if !s.start.IsZero() && s.start.After(now) {
		return errors.New("the SAS start time is in the future; it must be at or before the job submission")
	}
	return nil
}

// storageRef is a container or queue URI given by a client, split into its parts.
type storageRef struct {
	raw  string   // as given, with the SAS: a secret, never logged or echoed
	base *url.URL // without the query, default port dropped
	name string   // container or queue name
	ours bool     // in the emulator's storage account
	sas  sasInfo
}

// redacted is the URI without its query string, safe for logs and messages.
func (r storageRef) redacted() string { return r.base.String() }

var nameRE = regexp.MustCompile(`^[a-z0-9](?:-?[a-z0-9])*$`)

// normalizeHost drops the default port of the scheme (clients may send :443, as the docs' sample does).
func normalizeHost(u *url.URL) string {
	h := strings.ToLower(u.Host)
	if (u.Scheme == "https" && strings.HasSuffix(h, ":443")) || (u.Scheme == "http" && strings.HasSuffix(h, ":80")) {
		h = h[:strings.LastIndexByte(h, ':')]
	}
	return h
}

// parseStorageRef splits a container or queue SAS URI and decides whether it lies in the account
// whose endpoint is ours.
func parseStorageRef(raw string, ours *url.URL) (storageRef, error) {
	ref := storageRef{raw: raw}
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || !u.IsAbs() || u.Host == "" {
		return ref, errors.New("invalid URI: the format of the URI could not be determined")
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return ref, errors.New("invalid URI: the scheme must be https")
	}
	sas, err := parseSAS(u.Query())
	if err != nil {
		return ref, err
	}
	ref.sas = sas
	base := *u
	base.RawQuery, base.Fragment = "", ""
	base.Host = normalizeHost(u)
	base.Path = strings.TrimRight(base.Path, "/")
	base.RawPath = ""
	ref.base = &base
	i := strings.LastIndexByte(base.Path, '/')
	if i < 0 {
		return ref, errors.New("invalid URI: no container or queue name")
	}
	ref.name = base.Path[i+1:]
	if len(ref.name) < 3 || len(ref.name) > 63 || !nameRE.MatchString(ref.name) {
		return ref, errors.New("invalid URI: the container or queue name is not valid")
	}
	ref.ours = base.Scheme == ours.Scheme && base.Host == normalizeHost(ours) &&
		base.Path[:i] == strings.TrimRight(ours.Path, "/")
	return ref, nil
}

// sentence turns an error into a SharePoint-style message: capitalised, ending with a period.
func sentence(err error) string {
	s := err.Error()
	if s == "" {
		return s
	}
	s = strings.ToUpper(s[:1]) + s[1:]
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

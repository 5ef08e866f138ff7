package spo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Refusals. Each is returned (wrapped) before any request is sent, or, for URIs and keys SharePoint
// returned, instead of handing them to the caller.
var (
	// ErrSiteNotHTTPS refuses a site URL whose scheme is not https.
	ErrSiteNotHTTPS = errors.New("spo: site URL is not https")
	// ErrSiteNotAllowed refuses a site URL that does not parse, carries user info, a query or a
	// fragment, names an API path, or whose host is not in Options.AllowedSiteHosts.
	ErrSiteNotAllowed = errors.New("spo: site URL not allowed")
	// ErrStorageHostNotAllowed refuses a container or queue URI that is not an https URI of one
	// container or queue on an Azure Storage host (or a host in Options.AllowedStorageHosts).
	ErrStorageHostNotAllowed = errors.New("spo: storage URI not allowed")
	// ErrSameContainer refuses a job whose data and metadata containers are the same.
	ErrSameContainer = errors.New("spo: data and metadata containers are the same")
	// ErrBadKey refuses a key that is not 32 bytes (AES-256), or an answer whose key is not.
	ErrBadKey = errors.New("spo: encryption key is not 32 bytes of base64")
	// ErrBadID refuses a job or web id that is not a GUID.
	ErrBadID = errors.New("spo: id is not a GUID")
	// ErrJobNotCreated reports a CreateMigrationJobEncrypted answer of null or the empty GUID.
	ErrJobNotCreated = errors.New("spo: job not created")
	// ErrBadAnswer reports a successful answer we cannot decode.
	ErrBadAnswer = errors.New("spo: unexpected answer")
)

// SharePoint error codes the callers act on.
const (
	CodeJobNotFound   int64 = -2147213145 // "Job not found"
	CodeStatusExpired int64 = -2147213146 // "Job status expired" (kept less than 5 days)
	CodeAccessDenied  int64 = -2147024891 // E_ACCESSDENIED
)

// Bounds of what an Error keeps of SharePoint's text.
const (
	maxMessageLen = 1024
	maxTypeLen    = 256
)

// Error is a non-throttling error answer of SharePoint. Its text never includes the answer body.
type Error struct {
	StatusCode int    // HTTP status
	Code       int64  // SharePoint error code from the "code" prefix, e.g. -2147213145; 0 if none
	Type       string // exception type after the code, e.g. "Microsoft.SharePoint.SPException"
	Message    string // SharePoint's message, sig= values redacted, control characters removed, ≤1 KiB
	Method     string // the API function called, e.g. "GetMigrationJobProgress"
}

var _ error = (*Error)(nil)

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "spo: %s: HTTP %d", e.Method, e.StatusCode)
	if e.Code != 0 {
		fmt.Fprintf(&b, ": %d", e.Code)
	}
	if e.Type != "" {
		if e.Code == 0 {
			b.WriteString(":")
		}
		b.WriteString(" " + e.Type)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	return b.String()
}

// ThrottledError reports a 429 or 503 that we did not (or no longer) wait for: the next wait did not
// fit in the retry budget, the retries or the context's deadline, or the context was made by
// WithoutThrottleRetry. Answer the caller with RetryAfter.
type ThrottledError struct {
	Method     string
	StatusCode int           // 429 or 503
	RetryAfter time.Duration // the wait SharePoint asked for last
}

var _ error = (*ThrottledError)(nil)

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("spo: %s: throttled (HTTP %d), retry after %s", e.Method, e.StatusCode, e.RetryAfter)
}

// RetryAfterSeconds is RetryAfter rounded up to whole seconds, at least 1: the value of a Retry-After
// header.
func (e *ThrottledError) RetryAfterSeconds() int {
	s := int((e.RetryAfter + time.Second - 1) / time.Second)
	return max(s, 1)
}

// IsJobNotFound reports whether err is SharePoint's "Job not found" (-2147213145).
func IsJobNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == CodeJobNotFound
}

// IsStatusExpired reports whether err is SharePoint's "Job status expired" (-2147213146).
func IsStatusExpired(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == CodeStatusExpired
}

// IsAccessDenied reports whether err is a 403 or SharePoint's E_ACCESSDENIED (-2147024891).
func IsAccessDenied(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.StatusCode == 403 || e.Code == CodeAccessDenied)
}

// IsThrottled reports whether err is a *ThrottledError (429/503 past the budget).
func IsThrottled(err error) bool {
	var e *ThrottledError
	return errors.As(err, &e)
}

// parseError turns an error answer into an *Error. Both SharePoint shapes are understood:
//
//	{"error":{"code":"-2147213145, Microsoft.SharePoint.SPException","message":{"lang":"en-US","value":"…"}}}
//	{"odata.error":{"code":"-1, System.InvalidOperationException","message":{"lang":"en-US","value":"…"}}}
//
// and "message" may also be a plain string (OData v4). Anything else yields an *Error with only the
// status. The inner error (stack trace) is dropped. Every occurrence of a secret is replaced by
// "REDACTED" in the text kept.
func parseError(status int, body []byte, method string, secrets ...string) *Error {
	e := &Error{StatusCode: status, Method: method}
	var env map[string]json.RawMessage
	if json.Unmarshal(bytes.TrimSpace(body), &env) != nil {
		return e
	}
	inner, ok := env["error"]
	if !ok {
		inner, ok = env["odata.error"]
	}
	if !ok {
		var desc string
		if json.Unmarshal(env["error_description"], &desc) == nil {
			e.Message = cleanText(desc, maxMessageLen, secrets)
		}
		return e
	}
	var detail struct {
		Code    json.RawMessage `json:"code"`
		Message json.RawMessage `json:"message"`
	}
	if json.Unmarshal(inner, &detail) != nil {
		var s string
		if json.Unmarshal(inner, &s) == nil {
			e.Type = cleanText(s, maxTypeLen, secrets)
		}
		return e
	}
	e.Code, e.Type = splitCode(jsonText(detail.Code))
	e.Type = cleanText(e.Type, maxTypeLen, secrets)
	msg := jsonText(detail.Message)
	if msg == "" {
		var m struct {
			Value json.RawMessage `json:"value"`
		}
		if json.Unmarshal(detail.Message, &m) == nil {
			msg = jsonText(m.Value)
		}
	}
	e.Message = cleanText(msg, maxMessageLen, secrets)
	return e
}

// jsonText is a JSON string's text or a JSON number's literal; "" for anything else.
func jsonText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

// splitCode splits "-2147213145, Microsoft.SharePoint.SPException" into its number and type.
func splitCode(s string) (int64, string) {
	s = strings.TrimSpace(s)
	head, rest, found := strings.Cut(s, ",")
	n, err := strconv.ParseInt(strings.TrimSpace(head), 10, 64)
	if err != nil {
		return 0, s
	}
	if !found {
		return n, ""
	}
	return n, strings.TrimSpace(rest)
}

// cleanText makes outside text safe for an error string: secrets and sig= values redacted, valid
// UTF-8, no control characters, at most max bytes.
func cleanText(s string, max int, secrets []string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "REDACTED")
		}
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, s)
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return redactText(strings.TrimSpace(s))
}

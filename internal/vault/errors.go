package vault

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrNotFound: the secret (or the deleted secret) does not exist (404 SecretNotFound).
	ErrNotFound = errors.New("secret not found")
	// ErrConflict: the name is soft-deleted (recover or purge it first) or a delete/purge is still in progress (409).
	ErrConflict = errors.New("secret is deleted or being deleted")
	// ErrDisabled: the secret is disabled (403 SecretDisabled).
	ErrDisabled = errors.New("secret is disabled")
	// ErrUnauthorized: the service did not accept the token (401 after the challenge).
	ErrUnauthorized = errors.New("token not accepted")
	// ErrForeign: the secret holds another job's or site's data (a name collision); it is not returned.
	ErrForeign = errors.New("secret belongs to another job or site")
)

// Error is a failed vault operation. Its text never contains secret values.
type Error struct {
	Op         string // e.g. "get job secret"
	Secret     string // secret name
	StatusCode int    // HTTP status; 0 when no response was received
	Code       string // service error code (error.code), e.g. "SecretNotFound"
	InnerCode  string // service inner error code (error.innererror.code), e.g. "ObjectIsBeingDeleted"
	Message    string // service error message

	kind  error // sentinel, may be nil
	cause error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "vault: %s %s: ", e.Op, e.Secret)
	switch {
	case e.StatusCode != 0:
		fmt.Fprintf(&b, "%d", e.StatusCode)
		if e.Code != "" {
			b.WriteString(" " + e.Code)
		}
		if e.InnerCode != "" {
			b.WriteString("/" + e.InnerCode)
		}
		if e.Message != "" {
			b.WriteString(": " + e.Message)
		}
	case e.kind != nil && e.cause == nil:
		b.WriteString(e.kind.Error())
	case e.cause != nil:
		b.WriteString(e.cause.Error())
	}
	return b.String()
}

// Unwrap gives the sentinel (ErrNotFound, …) and the underlying error (*azcore.ResponseError or a transport error).
func (e *Error) Unwrap() []error {
	var out []error
	if e.kind != nil {
		out = append(out, e.kind)
	}
	if e.cause != nil {
		out = append(out, e.cause)
	}
	return out
}

// ForbiddenError is a 403 other than a disabled secret: the identity lacks the permission (access policy:
// ForbiddenByPolicy; RBAC: ForbiddenByRbac), or purge protection forbids the purge.
type ForbiddenError struct {
	Op, Secret string
	// Identity the service refused, as it printed it ("appid=…;oid=…;iss=…"); empty when the message
	// does not name one. Never a token.
	Identity  string
	InnerCode string // ForbiddenByPolicy, ForbiddenByRbac, …
	Message   string // the service's message

	cause error
}

func (e *ForbiddenError) Error() string {
	if e.Identity == "" {
		// Not about an identity (e.g. purge protection): the service's message says what.
		s := fmt.Sprintf("vault: %s %s: 403 forbidden", e.Op, e.Secret)
		if e.InnerCode != "" {
			s += " (" + e.InnerCode + ")"
		}
		if e.Message != "" {
			s += ": " + e.Message
		}
		return s
	}
	s := fmt.Sprintf("vault: %s %s: 403 forbidden for %s", e.Op, e.Secret, e.Identity)
	if e.InnerCode != "" {
		s += " (" + e.InnerCode + ")"
	}
	return s + ": grant it Key Vault Secrets Officer on the vault (RBAC) or the needed secret permissions (access policy)"
}

func (e *ForbiddenError) Unwrap() error { return e.cause }

// ThrottledError is a 429 or 503 that outlasted the retries.
type ThrottledError struct {
	Op, Secret string
	StatusCode int
	// RetryAfter is what the last response asked the caller to wait (Retry-After, retry-after-ms or
	// x-ms-retry-after-ms); 0 when it did not say.
	RetryAfter time.Duration

	cause error
}

func (e *ThrottledError) Error() string {
	s := fmt.Sprintf("vault: %s %s: %d %s after retries", e.Op, e.Secret, e.StatusCode, http.StatusText(e.StatusCode))
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return s
}

func (e *ThrottledError) Unwrap() error { return e.cause }

// serviceError is the body of a Key Vault error response.
type serviceError struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError *struct {
			Code string `json:"code"`
		} `json:"innererror"`
	} `json:"error"`
}

// Identity patterns of the real messages:
//
//	access policy: The user, group or application 'appid=…;oid=…;iss=…' does not have secrets get permission …
//	RBAC:          Caller is not authorized to perform action on resource.\r\n…Caller: appid=…;oid=…;iss=…\r\n…
var (
	identityPolicyRE = regexp.MustCompile(`(?i)application '([^']+)'`)
	identityRbacRE   = regexp.MustCompile(`(?i)Caller: ?([^\s]+)`)
	oidRE            = regexp.MustCompile(`(?i)\boid=([0-9a-f-]{8,})`)
)

func identityFrom(msg string) string {
	if m := identityPolicyRE.FindStringSubmatch(msg); m != nil {
		return m[1]
	}
	if m := identityRbacRE.FindStringSubmatch(msg); m != nil {
		return m[1]
	}
	if m := oidRE.FindStringSubmatch(msg); m != nil {
		return "oid=" + m[1]
	}
	return ""
}

// mapError turns an azsecrets error into one of this package's errors.
func mapError(op, secret string, err error) error {
	if err == nil {
		return nil
	}
	var (
		own *Error
		fe  *ForbiddenError
		te  *ThrottledError
	)
	if errors.As(err, &own) || errors.As(err, &fe) || errors.As(err, &te) {
		return err // already mapped
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		// Transport, context or credential errors. Their text holds the request URL (path and api-version)
		// at most; azsecrets never puts a secret value in a URL.
		return &Error{Op: op, Secret: secret, cause: err}
	}
	e := &Error{Op: op, Secret: secret, StatusCode: re.StatusCode, Code: re.ErrorCode, cause: err}
	if re.RawResponse != nil {
		if body, rerr := runtime.Payload(re.RawResponse); rerr == nil {
			var se serviceError
			if json.Unmarshal(body, &se) == nil {
				if se.Error.Code != "" {
					e.Code = se.Error.Code
				}
				e.Message = se.Error.Message
				if se.Error.InnerError != nil {
					e.InnerCode = se.Error.InnerError.Code
				}
			}
		}
	}
	switch re.StatusCode {
	case http.StatusNotFound:
		e.kind = ErrNotFound
	case http.StatusConflict:
		e.kind = ErrConflict
	case http.StatusUnauthorized:
		e.kind = ErrUnauthorized
	case http.StatusForbidden:
		if e.InnerCode == "SecretDisabled" {
			e.kind = ErrDisabled
			break
		}
		return &ForbiddenError{Op: op, Secret: secret, Identity: identityFrom(e.Message), InnerCode: e.InnerCode, Message: e.Message, cause: err}
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return &ThrottledError{Op: op, Secret: secret, StatusCode: re.StatusCode, RetryAfter: retryAfter(re.RawResponse), cause: err}
	}
	return e
}

// retryAfter reads the headers azcore honours, in its order of preference.
func retryAfter(resp *http.Response) time.Duration {
	if resp == nil {
		return 0
	}
	for _, h := range []string{"retry-after-ms", "x-ms-retry-after-ms"} {
		if v := resp.Header.Get(h); v != "" {
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms > 0 {
				return time.Duration(ms) * time.Millisecond
			}
		}
	}
	v := resp.Header.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

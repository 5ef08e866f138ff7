package stage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"syscall"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// Sentinel errors; errors returned by this package wrap them (test with errors.Is).
var (
	// ErrSASExpired reports that a container refused its SAS (403): expired, revoked, or lacking a
	// permission. The containers must be provisioned again; retrying cannot help. The error is a
	// *SASError.
	ErrSASExpired = errors.New("container SAS rejected")
	// ErrSizeMismatch reports a source whose length differs from the declared plaintext size. Nothing
	// was committed.
	ErrSizeMismatch = errors.New("source size differs from the declared size")
	// ErrBlobName reports a blob name the service would reject or mangle.
	ErrBlobName = errors.New("invalid blob name")
)

// SASError is returned when a container answers 403 to a request signed by its SAS. It matches
// ErrSASExpired with errors.Is and unwraps to the *azcore.ResponseError. Its message holds the blob
// name, the status and the service's error code, never the SAS.
type SASError struct {
	Op         string // e.g. "put block list"
	Blob       string
	StatusCode int    // 403
	Code       string // AuthorizationFailure (Azurite, expired), AuthenticationFailed (Azure, expired), AuthorizationPermissionMismatch…
	Err        error
}

func (e *SASError) Error() string {
	return fmt.Sprintf("stage: %s %q: container SAS rejected (%d %s): provision new containers", e.Op, e.Blob, e.StatusCode, e.Code)
}

// Unwrap returns ErrSASExpired and the underlying error.
func (e *SASError) Unwrap() []error { return []error{ErrSASExpired, e.Err} }

// SourceError wraps an error of the source reader (or of Item.Open), as opposed to the storage side.
type SourceError struct {
	Blob string
	Err  error
}

func (e *SourceError) Error() string {
	return fmt.Sprintf("stage: read source of %q: %v", e.Blob, e.Err)
}
func (e *SourceError) Unwrap() error { return e.Err }

// storageError is a storage call's *azcore.ResponseError with a one-line message (azcore's own is a
// multi-line dump of the response).
type storageError struct {
	op, blob string
	status   int
	code     string
	err      *azcore.ResponseError
}

func (e *storageError) Error() string {
	code := e.code
	if code == "" {
		code = http.StatusText(e.status)
	}
	return fmt.Sprintf("stage: %s %q: %d %s", e.op, e.blob, e.status, code)
}

func (e *storageError) Unwrap() error { return e.err }

// redactedError replaces an error whose text holds a URL with a SAS (net/http's *url.Error carries
// the full request URL): the message is redacted and the chain continues below the *url.Error.
type redactedError struct {
	msg   string
	cause error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.cause }

var sigRE = regexp.MustCompile(`(?i)(sig=)[^&\s"']*`)

// redact replaces the value of every sig= in s by REDACTED.
func redact(s string) string { return sigRE.ReplaceAllString(s, "${1}REDACTED") }

// storageErr turns an error of a storage call into this package's shape: a *SASError for a 403, a
// *storageError for other service errors, a redacted error for transport errors.
func storageErr(op, blob string, err error) error {
	if err == nil {
		return nil
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		if re.StatusCode == http.StatusForbidden {
			return &SASError{Op: op, Blob: blob, StatusCode: re.StatusCode, Code: re.ErrorCode, Err: re}
		}
		return &storageError{op: op, blob: blob, status: re.StatusCode, code: re.ErrorCode, err: re}
	}
	return fmt.Errorf("stage: %s %q: %w", op, blob, sanitize(err))
}

// sanitize removes SAS signatures from err's message: a *url.Error in the chain is replaced by its
// cause, under a redacted message. Other errors are returned unchanged.
func sanitize(err error) error {
	var ue *url.Error
	if err == nil || !errors.As(err, &ue) {
		return err
	}
	return &redactedError{msg: redact(err.Error()), cause: ue.Err}
}

// retryableCodes are the service error codes worth another attempt whatever the status.
var retryableCodes = map[string]bool{"ServerBusy": true, "OperationTimedOut": true, "InternalError": true}

// retryableStatus are the HTTP statuses worth another attempt.
var retryableStatus = map[int]bool{
	http.StatusRequestTimeout: true, http.StatusTooManyRequests: true, http.StatusInternalServerError: true,
	http.StatusBadGateway: true, http.StatusServiceUnavailable: true, http.StatusGatewayTimeout: true,
}

// shouldRetry reports whether an upload that failed with err is worth running again from a fresh
// reader. It is the only retry classifier of the package:
//   - never for context cancellation or deadline, nor for a *SASError (403: provision new containers);
//   - for an *azcore.ResponseError (storage or source): codes ServerBusy, OperationTimedOut,
//     InternalError and statuses 408, 429, 500, 502, 503, 504;
//   - for network errors (net.Error, connection reset or refused, broken pipe, unexpected EOF);
//   - never otherwise (size mismatch, bad key, invalid name, a corrupt source).
func shouldRetry(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var se *SASError
	if errors.As(err, &se) {
		return false
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return retryableCodes[re.ErrorCode] || retryableStatus[re.StatusCode]
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}

var (
	_ error = (*SASError)(nil)
	_ error = (*SourceError)(nil)
	_ error = (*storageError)(nil)
	_ error = (*redactedError)(nil)
)

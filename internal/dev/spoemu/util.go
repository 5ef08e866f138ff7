package spoemu

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

var sigRE = regexp.MustCompile(`(?i)(sig=)[^&\s"']*`)

// redact removes SAS signatures from text.
func redact(s string) string { return sigRE.ReplaceAllString(s, "${1}REDACTED") }

// redactErr describes an error without secrets: a storage error by its status and code only.
func redactErr(err error) string {
	if err == nil {
		return ""
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return fmt.Sprintf("storage answered %d %s", re.StatusCode, re.ErrorCode)
	}
	return redact(err.Error())
}

// storageStatus returns the HTTP status and error code of a storage error (0, "" otherwise).
func storageStatus(err error) (int, string) {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode, re.ErrorCode
	}
	return 0, ""
}

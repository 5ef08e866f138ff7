package spo

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParseError(t *testing.T) {
	tests := []struct {
		desc string
		body string
		want Error
	}{
		{"verbose", `{"error":{"code":"-2147213145, Microsoft.SharePoint.SPException","innererror":{"message":"Job not found","stacktrace":"at Secret.Stack()"},"message":{"lang":"en-US","value":"Job not found"}}}`,
			Error{Code: -2147213145, Type: "Microsoft.SharePoint.SPException", Message: "Job not found"}},
		{"light", `{"odata.error":{"code":"-1, System.InvalidOperationException","message":{"lang":"en-US","value":"Operation is not valid."}}}`,
			Error{Code: -1, Type: "System.InvalidOperationException", Message: "Operation is not valid."}},
		{"odata v4 string message", `{"error":{"code":"-2147024891, System.UnauthorizedAccessException","message":"Access denied."}}`,
			Error{Code: -2147024891, Type: "System.UnauthorizedAccessException", Message: "Access denied."}},
		{"code only", `{"error":{"code":"-2147213146","message":{"value":"Job status expired"}}}`,
			Error{Code: -2147213146, Message: "Job status expired"}},
		{"numeric code", `{"error":{"code":-2147213146,"message":{"value":"Job status expired"}}}`,
			Error{Code: -2147213146, Message: "Job status expired"}},
		{"type only", `{"error":{"code":"Microsoft.SharePoint.Client.InvalidClientQueryException","message":{"value":"bad"}}}`,
			Error{Type: "Microsoft.SharePoint.Client.InvalidClientQueryException", Message: "bad"}},
		{"sig redacted", `{"error":{"code":"-1, X","message":{"value":"cannot connect the Queue https://a.queue.core.windows.net/q?sv=1&sig=` + testSig + `&sp=raup"}}}`,
			Error{Code: -1, Type: "X", Message: "cannot connect the Queue https://a.queue.core.windows.net/q?sv=1&sig=REDACTED&sp=raup"}},
		{"control characters", `{"error":{"code":"-1, X","message":{"value":"line1\r\nline2\u0000"}}}`,
			Error{Code: -1, Type: "X", Message: "line1  line2"}},
		{"oauth", `{"error_description":"Invalid issuer or signature."}`, Error{Message: "Invalid issuer or signature."}},
		{"oauth error string", `{"error":"invalid_request","error_description":"x"}`, Error{Type: "invalid_request"}},
		{"html", `<html><body>Service Unavailable</body></html>`, Error{}},
		{"empty", ``, Error{}},
		{"array", `[{"error":1}]`, Error{}},
		{"error not an object", `{"error":[1]}`, Error{}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			got := parseError(500, []byte(tt.body), "M")
			tt.want.StatusCode, tt.want.Method = 500, "M"
			if *got != tt.want {
				t.Errorf("parseError = %+v, want %+v", *got, tt.want)
			}
			if s := got.Error(); strings.Contains(s, "stacktrace") || strings.Contains(s, "Secret.Stack") || strings.Contains(s, testSig) {
				t.Errorf("Error() = %q", s)
			}
		})
	}
	t.Run("long message truncated", func(t *testing.T) {
		long := strings.Repeat("é", 2000)
		got := parseError(400, []byte(`{"error":{"code":"-1, X","message":{"value":"`+long+`"}}}`), "M")
		if len(got.Message) > maxMessageLen+len("…") || !strings.HasSuffix(got.Message, "…") {
			t.Errorf("message of %d bytes", len(got.Message))
		}
	})
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{Error{StatusCode: 500, Code: -2147213145, Type: "Microsoft.SharePoint.SPException", Message: "Job not found", Method: "GetMigrationJobProgress"},
			"spo: GetMigrationJobProgress: HTTP 500: -2147213145 Microsoft.SharePoint.SPException: Job not found"},
		{Error{StatusCode: 404, Method: "WebID"}, "spo: WebID: HTTP 404"},
		{Error{StatusCode: 400, Type: "T", Method: "M"}, "spo: M: HTTP 400: T"},
		{Error{StatusCode: 400, Message: "m", Method: "M"}, "spo: M: HTTP 400: m"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	te := &ThrottledError{Method: "M", StatusCode: 429, RetryAfter: 1500 * time.Millisecond}
	if got, want := te.Error(), "spo: M: throttled (HTTP 429), retry after 1.5s"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got := te.RetryAfterSeconds(); got != 2 {
		t.Errorf("RetryAfterSeconds = %d, want 2", got)
	}
	if got := (&ThrottledError{}).RetryAfterSeconds(); got != 1 {
		t.Errorf("RetryAfterSeconds of 0 = %d, want 1", got)
	}
}

// TestErrorAnswers checks each error shape from a server becomes the typed error and its helpers.
func TestErrorAnswers(t *testing.T) {
	verbose := func(code int64, typ, msg string) string {
		return fmt.Sprintf(`{"error":{"code":"%d, %s","message":{"lang":"en-US","value":"%s"}}}`, code, typ, msg)
	}
	light := func(code int64, typ, msg string) string {
		return fmt.Sprintf(`{"odata.error":{"code":"%d, %s","message":{"lang":"en-US","value":"%s"}}}`, code, typ, msg)
	}
	tests := []struct {
		desc   string
		status int
		body   string
		code   int64
		is     func(error) bool
	}{
		{"job not found", 500, verbose(CodeJobNotFound, "Microsoft.SharePoint.SPException", "Job not found"), CodeJobNotFound, IsJobNotFound},
		{"job not found light", 500, light(CodeJobNotFound, "Microsoft.SharePoint.SPException", "Job not found"), CodeJobNotFound, IsJobNotFound},
		{"status expired", 500, verbose(CodeStatusExpired, "Microsoft.SharePoint.SPException", "Job status expired"), CodeStatusExpired, IsStatusExpired},
		{"403", 403, light(-2147024891, "System.UnauthorizedAccessException", "Access denied."), CodeAccessDenied, IsAccessDenied},
		{"403 without body", 403, ``, 0, IsAccessDenied},
		{"E_ACCESSDENIED on 401", 401, verbose(CodeAccessDenied, "System.UnauthorizedAccessException", "Access denied."), CodeAccessDenied, IsAccessDenied},
		{"bad request", 400, light(-1, "System.InvalidOperationException", "Operation is not valid."), -1,
			func(err error) bool { return !IsJobNotFound(err) && !IsAccessDenied(err) && !IsThrottled(err) }},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			f := newFakeSPO(t, reply{status: tt.status, body: tt.body})
			c, sl, _ := newTestClient(t, f)
			_, err := c.GetMigrationJobProgress(t.Context(), f.site(), testJobID, "")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if e.StatusCode != tt.status || e.Code != tt.code || e.Method != "GetMigrationJobProgress" {
				t.Errorf("error = %+v", e)
			}
			if !tt.is(err) {
				t.Errorf("helper false for %v", err)
			}
			if n := len(f.requests()); n != 1 {
				t.Errorf("server saw %d requests, want 1 (no retry)", n)
			}
			if len(sl.recorded()) != 0 {
				t.Errorf("waited %v", sl.recorded())
			}
		})
	}
}

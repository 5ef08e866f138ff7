// Package functions speaks the Azure Functions custom-handler protocol: it decodes the invocation
// requests the Functions host sends (quirks included), runs one adapter per function, and answers with the
// response envelope the host accepts. Adapters translate trigger payloads into calls on the domain services
// and domain errors into invocation results; they hold no business logic.
//
// What the host sends, in short (../shared/reference/functions-custom-handler.md §3–4):
//   - POST /<FunctionName> with {"Data": {...}, "Metadata": {...}}, body chunked, Content-Type JSON.
//   - Strings arrive double-encoded ("\"abc\""), numbers as strings ("4"), dates as ISO strings, objects as
//     objects, bytes (dataType: binary) as base64 strings; keys ending in "trigger" are dropped; Metadata.sys
//     is always present.
//   - The answer must be 2xx with Content-Type application/json and {"Outputs":{},"Logs":[],"ReturnValue":…};
//     any non-2xx answer fails the invocation, so the host retries (queue) or counts a poison attempt (blob).
package functions

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// InvokeRequest is the body the host POSTs to /<FunctionName>.
type InvokeRequest struct {
	Data     map[string]json.RawMessage `json:"Data"`
	Metadata map[string]json.RawMessage `json:"Metadata"`
}

// InvokeResponse is the body the handler answers with.
type InvokeResponse struct {
	Outputs     map[string]any `json:"Outputs"`
	Logs        []string       `json:"Logs"`
	ReturnValue any            `json:"ReturnValue"`
}

// Sys is Metadata.sys.
type Sys struct {
	MethodName string `json:"MethodName"`
	UtcNow     string `json:"UtcNow"`
	RandGuid   string `json:"RandGuid"`
}

// RetryContext is Metadata.RetryContext, present while a function-level retry policy is active.
type RetryContext struct {
	RetryCount    int64           `json:"RetryCount"`
	MaxRetryCount int64           `json:"MaxRetryCount"`
	Exception     json.RawMessage `json:"Exception,omitempty"`
}

// ErrBadPayload marks a request the handler cannot decode (answered 400, never retried usefully).
var ErrBadPayload = errors.New("bad invocation payload")

// DecodeInvokeRequest parses an invocation body. It rejects non-JSON, a body that is not an object, and a
// body without Data.
func DecodeInvokeRequest(body []byte) (*InvokeRequest, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, fmt.Errorf("%w: empty body", ErrBadPayload)
	}
	if body[0] != '{' {
		return nil, fmt.Errorf("%w: the body is not a JSON object", ErrBadPayload)
	}
	var req InvokeRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	if req.Data == nil {
		return nil, fmt.Errorf("%w: no Data member", ErrBadPayload)
	}
	if req.Metadata == nil {
		req.Metadata = map[string]json.RawMessage{}
	}
	return &req, nil
}

// Binding returns Data[name], or an error naming the missing binding.
func (r *InvokeRequest) Binding(name string) (json.RawMessage, error) {
	v, ok := r.Data[name]
	if !ok || isNull(v) {
		return nil, fmt.Errorf("%w: Data has no binding %q", ErrBadPayload, name)
	}
	return v, nil
}

// MetaString returns Metadata[key] as a string (decoding double encoding); "" when absent.
func (r *InvokeRequest) MetaString(key string) (string, error) {
	v, ok := r.Metadata[key]
	if !ok || isNull(v) {
		return "", nil
	}
	s, err := DecodeString(v)
	if err != nil {
		return "", fmt.Errorf("%w: Metadata.%s: %v", ErrBadPayload, key, err)
	}
	return s, nil
}

// MetaInt returns Metadata[key] as an integer ("4" or 4); 0 when absent.
func (r *InvokeRequest) MetaInt(key string) (int64, error) {
	v, ok := r.Metadata[key]
	if !ok || isNull(v) {
		return 0, nil
	}
	n, err := DecodeInt(v)
	if err != nil {
		return 0, fmt.Errorf("%w: Metadata.%s: %v", ErrBadPayload, key, err)
	}
	return n, nil
}

// MetaTime returns Metadata[key] as a time; zero when absent.
func (r *InvokeRequest) MetaTime(key string) (time.Time, error) {
	s, err := r.MetaString(key)
	if err != nil || s == "" {
		return time.Time{}, err
	}
	t, err := ParseTime(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: Metadata.%s: %v", ErrBadPayload, key, err)
	}
	return t, nil
}

// MetaObject decodes Metadata[key] (an object) into v; false when absent.
func (r *InvokeRequest) MetaObject(key string, v any) (bool, error) {
	raw, ok := r.Metadata[key]
	if !ok || isNull(raw) {
		return false, nil
	}
	// An object may itself arrive as a JSON string holding the object's text.
	if len(raw) > 0 && raw[0] == '"' {
		s, err := DecodeString(raw)
		if err != nil {
			return false, fmt.Errorf("%w: Metadata.%s: %v", ErrBadPayload, key, err)
		}
		raw = json.RawMessage(s)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("%w: Metadata.%s: %v", ErrBadPayload, key, err)
	}
	return true, nil
}

// Sys returns Metadata.sys (zero when absent).
func (r *InvokeRequest) Sys() Sys {
	var s Sys
	_, _ = r.MetaObject("sys", &s)
	return s
}

// RetryContext returns Metadata.RetryContext, or nil.
func (r *InvokeRequest) RetryContext() *RetryContext {
	var rc RetryContext
	if ok, err := r.MetaObject("RetryContext", &rc); !ok || err != nil {
		return nil
	}
	return &rc
}

// DecodeString turns a JSON value into a Go string: a JSON string, unwrapped once more when its content
// is itself a JSON-encoded string (the host's double encoding); a number or boolean as its text.
func DecodeString(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", errors.New("empty value")
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", err
		}
		if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
			var inner string
			if err := json.Unmarshal([]byte(s), &inner); err == nil {
				return inner, nil
			}
		}
		return s, nil
	case '{', '[':
		return "", errors.New("want a string, got a JSON object or array")
	case 'n':
		return "", errors.New("want a string, got null")
	default: // number, true, false
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return "", err
		}
		return string(raw), nil
	}
}

// DecodeInt turns 4, "4" or "\"4\"" into 4.
func DecodeInt(raw json.RawMessage) (int64, error) {
	s, err := DecodeString(raw)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a whole number", s)
	}
	return n, nil
}

// DecodeBytes turns a base64 JSON string (dataType: binary) into bytes.
func DecodeBytes(raw json.RawMessage) ([]byte, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, errors.New("want a base64 JSON string")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not base64: %v", err)
	}
	return b, nil
}

// ParseTime reads the host's ISO-8601 times ("2026-12-04T10:00:00+00:00", "...Z", with or without fractions).
func ParseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.9999999", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not an ISO-8601 time", s)
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

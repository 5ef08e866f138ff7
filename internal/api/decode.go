package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// CreateRequest is the body of POST /api/migrations.
type CreateRequest struct {
	SiteURL     string `json:"siteUrl"`
	WebID       string `json:"webId,omitempty"`
	Label       string `json:"label,omitempty"`
	CallbackURL string `json:"callbackUrl,omitempty"`
}

// RequestError is a request body that is not a valid CreateRequest. Its text is safe to show the caller
// (it quotes at most a bounded field name).
type RequestError struct {
	Title  string // e.g. "Malformed JSON"
	Detail string
	slug   string
}

func (e *RequestError) Error() string { return e.Title + ": " + e.Detail }

// maxFieldNameBytes bounds the unknown field name quoted in an error.
const maxFieldNameBytes = 64

// DecodeCreateRequest reads a CreateRequest from a JSON body, strictly: one JSON object, field names
// exactly as documented (case-sensitive; unknown or repeated fields refused), every value a string (null or
// "" mean absent), valid UTF-8, nothing after the object. It checks the shape only; Policy.Validate checks
// the values. Errors are *RequestError. The body is read whole: bound it first (http.MaxBytesReader).
func DecodeCreateRequest(r io.Reader) (CreateRequest, error) {
	var req CreateRequest
	body, err := io.ReadAll(r)
	if err != nil {
		return req, err // a read error (e.g. *http.MaxBytesError) is the caller's to classify
	}
	malformed := func(format string, a ...any) error {
		return &RequestError{Title: "Malformed JSON", Detail: fmt.Sprintf(format, a...), slug: "invalid-json"}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return req, malformed("the body is empty; send a JSON object such as {\"siteUrl\": \"https://contoso.sharepoint.com/sites/hr\"}")
	}
	if !utf8.Valid(body) {
		return req, malformed("the body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	syntax := func(err error) error {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return malformed("invalid JSON at byte %d: %s", se.Offset, se.Error())
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return malformed("the JSON ends too early")
		}
		return malformed("invalid JSON")
	}
	tok, err := dec.Token()
	if err != nil {
		return req, syntax(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return req, malformed("the body must be a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return req, syntax(err)
		}
		name, _ := tok.(string)
		var dst *string
		switch name {
		case "siteUrl":
			dst = &req.SiteURL
		case "webId":
			dst = &req.WebID
		case "label":
			dst = &req.Label
		case "callbackUrl":
			dst = &req.CallbackURL
		default:
			if len(name) > maxFieldNameBytes {
				name = name[:maxFieldNameBytes] + "…"
			}
			return req, &RequestError{Title: "Unknown field", slug: "unknown-field",
				Detail: fmt.Sprintf("unknown field %q; the fields are siteUrl, webId, label and callbackUrl", name)}
		}
		if seen[name] {
			return req, &RequestError{Title: "Repeated field", slug: "repeated-field", Detail: fmt.Sprintf("field %q appears twice", name)}
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return req, syntax(err)
		}
		if string(raw) == "null" {
			continue
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return req, &RequestError{Title: "Invalid field type", slug: "invalid-field-type", Detail: fmt.Sprintf("field %q must be a string", name)}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return req, syntax(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, malformed("unexpected data after the JSON object")
	}
	if req.SiteURL == "" {
		return req, &RequestError{Title: "Missing field", slug: "missing-field", Detail: "siteUrl is required"}
	}
	return req, nil
}

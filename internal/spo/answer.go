package spo

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// decodeAnswer returns the payload of a successful answer of the function method, whichever OData
// flavour SharePoint used:
//
//	nometadata       {"value": <v>}                       or the object's properties at top level
//	minimalmetadata  {"@odata.context": …, "value": <v>}  or {"@odata.context": …, <properties>}
//	verbose          {"d": {"<method>": <v>}}             or {"d": {"__metadata": …, <properties>}}
//
// Verbose collections {"results": [...]} are unwrapped too. Annotations ("__metadata", "@…", "odata.…",
// "…@odata.…") are ignored when deciding whether an object is a wrapper. A method of "" skips the
// {"<method>": v} rule. The payload is returned as it is, so objects may still carry annotations.
//
// Errors wrap ErrBadAnswer and never quote the body (a provision answer holds the key).
func decodeAnswer(body []byte, method string) (json.RawMessage, error) {
	body = bytes.TrimPrefix(bytes.TrimSpace(body), []byte("\xef\xbb\xbf"))
	if len(body) == 0 {
		return nil, fmt.Errorf("empty answer: %w", ErrBadAnswer)
	}
	if !json.Valid(body) {
		return nil, fmt.Errorf("answer is not JSON: %w", ErrBadAnswer)
	}
	v := json.RawMessage(body)
	if inner, ok := soleMember(v, "d"); ok {
		v = inner
	}
	if method != "" {
		if inner, ok := soleMember(v, method); ok {
			v = inner
		}
	}
	if inner, ok := soleMember(v, "value"); ok {
		v = inner
	}
	if inner, ok := soleMember(v, "results"); ok {
		v = inner
	}
	return bytes.TrimSpace(v), nil
}

// object is a decoded JSON object with case-insensitive member lookup.
type object map[string]json.RawMessage

// asObject decodes raw when it is a JSON object.
func asObject(raw json.RawMessage) (object, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return nil, false
	}
	return object(m), true
}

// get returns the member name, matched exactly first, then case-insensitively (annotations excluded).
func (o object) get(name string) (json.RawMessage, bool) {
	if v, ok := o[name]; ok {
		return v, true
	}
	for k, v := range o {
		if !isAnnotation(k) && strings.EqualFold(k, name) {
			return v, true
		}
	}
	return nil, false
}

// soleMember returns the value of name when raw is an object whose only member, annotations apart, is
// name (case-insensitively).
func soleMember(raw json.RawMessage, name string) (json.RawMessage, bool) {
	obj, ok := asObject(raw)
	if !ok {
		return nil, false
	}
	var found json.RawMessage
	n := 0
	for k, v := range obj {
		if isAnnotation(k) {
			continue
		}
		n++
		if strings.EqualFold(k, name) {
			found = v
		}
	}
	return found, n == 1 && found != nil
}

// isAnnotation reports whether an object member is OData metadata rather than data.
func isAnnotation(k string) bool {
	return k == "__metadata" || k == "__deferred" || strings.HasPrefix(k, "@") ||
		strings.HasPrefix(k, "odata.") || strings.Contains(k, "@")
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

// decodeString decodes a JSON string; what names the field in errors.
func decodeString(raw json.RawMessage, what string) (string, error) {
	var s string
	if len(raw) == 0 || isNull(raw) || json.Unmarshal(raw, &s) != nil {
		return "", fmt.Errorf("%s is not a string: %w", what, ErrBadAnswer)
	}
	return s, nil
}

// unwrapCSOM strips the CSOM JSON wrapper "/<kind>(…)/" (written "\/Guid(…)\/" in JSON).
func unwrapCSOM(s, kind string) string {
	if inner, ok := strings.CutPrefix(s, "/"+kind+"("); ok {
		if inner, ok := strings.CutSuffix(inner, ")/"); ok {
			return inner
		}
	}
	return s
}

// decodeGUID decodes a GUID given as a plain string or as CSOM "\/Guid(…)\/". It returns "" without
// error for null.
func decodeGUID(raw json.RawMessage, what string) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	s, err := decodeString(raw, what)
	if err != nil {
		return "", err
	}
	g, ok := parseGUID(strings.TrimSpace(unwrapCSOM(s, "Guid")))
	if !ok {
		return "", fmt.Errorf("%s is not a GUID: %w", what, ErrBadAnswer)
	}
	return g, nil
}

// decodeBinary decodes an Edm.Binary given as base64 or as CSOM "\/Base64Binary(…)\/". Its errors never
// quote the value.
func decodeBinary(raw json.RawMessage, what string) ([]byte, error) {
	s, err := decodeString(raw, what)
	if err != nil {
		return nil, err
	}
	s = strings.TrimSpace(unwrapCSOM(s, "Base64Binary"))
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(s)
	}
	if err != nil {
		return nil, fmt.Errorf("%s is not base64: %w", what, ErrBadAnswer)
	}
	return b, nil
}

// decodeInt decodes an integer given as a JSON number or a numeric string (verbose Int64).
func decodeInt(raw json.RawMessage, what string) (int64, error) {
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil && !isNull(raw) {
		if i, err := strconv.ParseInt(n.String(), 10, 64); err == nil {
			return i, nil
		}
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if i, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
			return i, nil
		}
	}
	return 0, fmt.Errorf("%s is not an integer: %w", what, ErrBadAnswer)
}

// decodeBool decodes a boolean given as JSON true/false or as the strings "true"/"false".
func decodeBool(raw json.RawMessage, what string) (bool, error) {
	var b bool
	if !isNull(raw) && json.Unmarshal(raw, &b) == nil {
		return b, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if b, err := strconv.ParseBool(strings.TrimSpace(s)); err == nil {
			return b, nil
		}
	}
	return false, fmt.Errorf("%s is not a boolean: %w", what, ErrBadAnswer)
}

// decodeToken decodes a NextToken given as a string or a number.
func decodeToken(raw json.RawMessage) (string, error) {
	var s string
	if !isNull(raw) && json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var n json.Number
	if !isNull(raw) && json.Unmarshal(raw, &n) == nil {
		return n.String(), nil
	}
	return "", fmt.Errorf("NextToken is not a string: %w", ErrBadAnswer)
}

// decodeEvents decodes the Logs of a progress page: an array (or verbose {"results": [...]}) whose
// entries are JSON strings holding one event's JSON each. Each event is returned as its JSON text; an
// entry that is already an object is kept; an entry whose text is not JSON is kept as a JSON string so
// the caller can report it; null entries are skipped.
func decodeEvents(raw json.RawMessage) ([]json.RawMessage, error) {
	if len(raw) == 0 || isNull(raw) {
		return nil, nil
	}
	if inner, ok := soleMember(raw, "results"); ok {
		raw = inner
	}
	var entries []json.RawMessage
	if json.Unmarshal(raw, &entries) != nil {
		return nil, fmt.Errorf("Logs is not an array: %w", ErrBadAnswer)
	}
	events := make([]json.RawMessage, 0, len(entries))
	for _, e := range entries {
		e = bytes.TrimSpace(e)
		if isNull(e) {
			continue
		}
		var text string
		if json.Unmarshal(e, &text) != nil {
			events = append(events, e)
			continue
		}
		inner := bytes.TrimSpace([]byte(text))
		if len(inner) > 0 && json.Valid(inner) {
			events = append(events, json.RawMessage(inner))
			continue
		}
		events = append(events, e)
	}
	return events, nil
}

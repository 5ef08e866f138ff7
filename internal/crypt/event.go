package crypt

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Names of the events SPO reports on the queue and through GetMigrationJobProgress.
const (
	EventJobQueued                = "JobQueued"
	EventJobPostponed             = "JobPostponed"
	EventJobLogFileCreate         = "JobLogFileCreate" // deprecated by SPO, still sent
	EventJobStart                 = "JobStart"
	EventJobProgress              = "JobProgress"
	EventJobError                 = "JobError"
	EventJobWarning               = "JobWarning"
	EventJobFatalError            = "JobFatalError"
	EventJobEnd                   = "JobEnd"
	EventJobCancelled             = "JobCancelled"
	EventJobDeleted               = "JobDeleted"
	EventFinishManifestFileUpload = "FinishManifestFileUpload" // AMR (export) only
)

// ErrMalformedEvent reports event JSON that is not a JSON object with a non-empty "Event" member.
var ErrMalformedEvent = errors.New("malformed event")

// EventTimeLayout is the layout of the Time member of SPO events (MM/dd/yyyy HH:mm:ss.fff, UTC).
const EventTimeLayout = "01/02/2006 15:04:05.000"

// Event is one SPO migration job event. Every member of the JSON object is kept, as text, in Fields
// (values that are JSON strings are unquoted; numbers, booleans, objects and arrays keep their compact
// JSON text; null is ""), so unknown events and unknown fields are never lost; Raw is the JSON exactly
// as received. Read values with String, Int, Bool, TimeField and JSON, or through View.
type Event struct {
	// Name is the "Event" member, e.g. "JobProgress".
	Name string `json:"Event"`
	// JobID is the "JobId" member (a GUID in its received spelling).
	JobID string `json:"JobId"`
	// Time is TimeRaw parsed as UTC (see ParseEventTime); zero when TimeRaw is absent or unrecognised.
	Time time.Time `json:"-"`
	// TimeRaw is the "Time" member as received.
	TimeRaw string `json:"Time"`
	// Fields holds every member of the event, including Event, JobId and Time.
	Fields map[string]string `json:"-"`
	// Raw is the event JSON as received.
	Raw json.RawMessage `json:"-"`
}

// ParseEvent parses one event JSON object: a queue message after OpenMessage's decoding, or one
// entry of GetMigrationJobProgress's Logs. It is liberal: values may be strings, numbers, booleans or
// nested JSON, member names are matched case-insensitively when the exact name is absent, and an
// unparseable Time leaves Event.Time zero. It fails (ErrMalformedEvent) only when data is not a JSON
// object or has no "Event" name. Errors never quote the input.
func ParseEvent(data []byte) (Event, error) {
	fields, err := parseFields(data)
	if err != nil {
		return Event{}, fmt.Errorf("crypt: parse event: %w", err)
	}
	return eventFromFields(data, fields)
}

func eventFromFields(data []byte, fields map[string]string) (Event, error) {
	name, _ := lookup(fields, "Event")
	if strings.TrimSpace(name) == "" {
		return Event{}, fmt.Errorf("crypt: parse event: %w: no Event name", ErrMalformedEvent)
	}
	ev := Event{Name: name, Fields: fields, Raw: bytes.Clone(data)}
	ev.JobID, _ = lookup(fields, "JobId")
	ev.TimeRaw, _ = lookup(fields, "Time")
	if t, err := ParseEventTime(ev.TimeRaw); err == nil {
		ev.Time = t
	}
	return ev, nil
}

// parseFields decodes a JSON object into its members as text (see Event.Fields).
func parseFields(data []byte) (map[string]string, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, jsonError(err)
	}
	if m == nil {
		return nil, fmt.Errorf("%w: not a JSON object", ErrMalformedEvent)
	}
	fields := make(map[string]string, len(m))
	for k, v := range m {
		fields[k] = flatten(v)
	}
	return fields, nil
}

// jsonError describes a decoding error without quoting the input.
func jsonError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("%w: invalid JSON at offset %d", ErrMalformedEvent, se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("%w: not a JSON object", ErrMalformedEvent)
	}
	return fmt.Errorf("%w: invalid JSON", ErrMalformedEvent)
}

// flatten returns a member value as text: strings unquoted, null empty, anything else compact JSON.
func flatten(v json.RawMessage) string {
	v = bytes.TrimSpace(v)
	switch {
	case len(v) == 0 || string(v) == "null":
		return ""
	case v[0] == '"':
		var s string
		if json.Unmarshal(v, &s) == nil {
			return s
		}
	}
	var b bytes.Buffer
	if json.Compact(&b, v) == nil {
		return b.String()
	}
	return string(v)
}

// lookup returns the field name, or else the first field (in sorted order) equal to it ignoring case.
func lookup(fields map[string]string, name string) (string, bool) {
	if v, ok := fields[name]; ok {
		return v, true
	}
	var match string
	found := false
	for k := range fields {
		if strings.EqualFold(k, name) && (!found || k < match) {
			match, found = k, true
		}
	}
	if !found {
		return "", false
	}
	return fields[match], true
}

// String returns the text of field name (exact name, else matched ignoring case) and whether it is
// present.
func (e Event) String(name string) (string, bool) {
	return lookup(e.Fields, name)
}

// Int returns field name as an integer. It accepts surrounding white space and integral decimal or
// exponent forms ("12", "12.0", "1.2e1"); it reports false when the field is absent, empty or not an
// integer.
func (e Event) Int(name string) (int64, bool) {
	s, ok := e.String(name)
	if !ok {
		return 0, false
	}
	return parseInt(s)
}

func parseInt(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, false
	}
	return int64(f), true
}

// Bool returns field name as a boolean ("true", "False", "1", …); it reports false when the field is
// absent or not a boolean.
func (e Event) Bool(name string) (bool, bool) {
	s, ok := e.String(name)
	if !ok {
		return false, false
	}
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	return b, err == nil
}

// TimeField returns field name (such as NextPickupTime) parsed with ParseEventTime.
func (e Event) TimeField(name string) (time.Time, bool) {
	s, ok := e.String(name)
	if !ok {
		return time.Time{}, false
	}
	t, err := ParseEventTime(s)
	return t, err == nil
}

// JSON decodes field name, which holds nested JSON (such as ObjectsStatsByType), into v.
func (e Event) JSON(name string, v any) error {
	s, ok := e.String(name)
	if !ok {
		return fmt.Errorf("crypt: event field %s: absent", name)
	}
	if err := json.Unmarshal([]byte(s), v); err != nil {
		return fmt.Errorf("crypt: event field %s: %w", name, jsonError(err))
	}
	return nil
}

// MarshalJSON returns Raw when set, else the SharePoint shape of Name, JobID, TimeRaw (or Time) and
// Fields (see MarshalEvent).
func (e Event) MarshalJSON() ([]byte, error) {
	if len(e.Raw) > 0 && json.Valid(e.Raw) {
		return bytes.Clone(e.Raw), nil
	}
	tm := e.TimeRaw
	if tm == "" && !e.Time.IsZero() {
		tm = FormatEventTime(e.Time)
	}
	return marshalEvent(e.Name, e.JobID, tm, e.Fields)
}

// UnmarshalJSON parses an event with ParseEvent.
func (e *Event) UnmarshalJSON(data []byte) error {
	ev, err := ParseEvent(data)
	if err != nil {
		return err
	}
	*e = ev
	return nil
}

// eventTimeLayouts are tried in order; Go accepts a fractional second after the seconds even when the
// layout has none, and one- or two-digit month, day and hour with these layouts.
var eventTimeLayouts = []string{
	"1/2/2006 15:04:05",   // MM/dd/yyyy HH:mm:ss.fff, the import events
	"2006-01-02T15:04:05", // ISO without zone, the AMR samples
	time.RFC3339Nano,      // ISO with zone
	"1/2/2006 3:04:05 PM", // .NET en-US general format
	"2006-01-02 15:04:05", // SQL style
}

// ParseEventTime parses an SPO event time: MM/dd/yyyy HH:mm:ss.fff (any number of fraction digits or
// none), ISO 8601 with or without a zone, or the .NET en-US "M/d/yyyy h:mm:ss tt" form. Times without
// a zone are UTC; the result is in UTC.
func ParseEventTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, layout := range eventTimeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("crypt: event time: %w: unrecognised format", ErrMalformedEvent)
}

// FormatEventTime formats t (converted to UTC) as SPO does: MM/dd/yyyy HH:mm:ss.fff.
func FormatEventTime(t time.Time) string {
	return t.UTC().Format(EventTimeLayout)
}

// MarshalEvent returns event JSON in the SharePoint shape: an object whose members are Event, JobId,
// Time (FormatEventTime(t)) and then fields in sorted order, every value a JSON string. Members of
// fields named Event, JobId or Time are ignored in favour of the arguments. name must not be empty.
func MarshalEvent(name, jobID string, t time.Time, fields map[string]string) ([]byte, error) {
	return marshalEvent(name, jobID, FormatEventTime(t), fields)
}

func marshalEvent(name, jobID, tm string, fields map[string]string) ([]byte, error) {
	if name == "" {
		return nil, fmt.Errorf("crypt: marshal event: %w: no Event name", ErrMalformedEvent)
	}
	var b bytes.Buffer
	b.WriteByte('{')
	member := func(k, v string) {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		kj, _ := json.Marshal(k) // strings always marshal
		vj, _ := json.Marshal(v)
		b.Write(kj)
		b.WriteByte(':')
		b.Write(vj)
	}
	member("Event", name)
	member("JobId", jobID)
	member("Time", tm)
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if k == "Event" || k == "JobId" || k == "Time" {
			continue
		}
		member(k, fields[k])
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// DedupKey returns a stable identity for the event, so that one event read from both the report
// queue and GetMigrationJobProgress is applied once. It is
//
//	<job id>|<time>|<event name>|<hash>
//
// where the job id is lower-cased without braces, the time is Time as 20060102T150405.000Z (or
// "notime"), and the hash is 32 hex digits of SHA-256 over every other field name and value (sorted,
// length-prefixed), so the key does not depend on member order, white space or whether numbers arrived
// quoted. Events differing in any field get different keys. Keys sort by job, then time. They contain
// only letters, digits and "-._|", so they fit an Azure Table PartitionKey/RowKey (at most 140 bytes).
func (e Event) DedupKey() string {
	h := sha256.New()
	var n [8]byte
	put := func(s string) {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	put(e.Name)
	put(normalizeJobID(e.JobID))
	put(e.TimeRaw)
	for _, k := range slices.Sorted(maps.Keys(e.Fields)) {
		if k == "Event" || k == "JobId" || k == "Time" {
			continue
		}
		put(k)
		put(e.Fields[k])
	}
	tm := "notime"
	if !e.Time.IsZero() {
		tm = e.Time.UTC().Format("20060102T150405.000Z")
	}
	return safeKey(normalizeJobID(e.JobID), 40) + "|" + tm + "|" + safeKey(e.Name, 40) + "|" +
		hex.EncodeToString(h.Sum(nil)[:16])
}

func normalizeJobID(id string) string {
	return strings.ToLower(strings.Trim(strings.TrimSpace(id), "{}"))
}

// safeKey keeps letters, digits, '-', '.' and '_' (others become '_'), at most max bytes.
func safeKey(s string, max int) string {
	b := make([]byte, 0, min(len(s), max))
	for i := 0; i < len(s) && len(b) < max; i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_':
			b = append(b, c)
		default:
			b = append(b, '_')
		}
	}
	return string(b)
}

package funchost

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// The invocation body is {"Data":{...},"Metadata":{...}}. Every value goes through the host's
// GetHttpScriptInvocationContextValue (reference §3.3); the helpers below produce exactly those shapes:
//
//	byte[]                 → one base64 JSON string                          (encBytes / streamBase64)
//	DateTime(Offset)       → one ISO string without fractions, "+00:00"      (encTime)
//	POCO / dictionary      → a JSON object                                   (json.RawMessage)
//	string, number, Uri... → JsonConvert.SerializeObject(v) sent as a string (encString / encNumber): double-encoded
//
// Strings are escaped as Newtonsoft.Json does by default (only '"', '\\', control characters and U+0085/U+2028/
// U+2029; '<', '>', '&' and non-ASCII stay as they are), not as encoding/json does.

// appendNSEscapeRune appends r escaped as inside a Newtonsoft JSON string.
func appendNSEscapeRune(dst []byte, r rune) []byte {
	switch r {
	case '"':
		return append(dst, '\\', '"')
	case '\\':
		return append(dst, '\\', '\\')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	case 0x85, 0x2028, 0x2029:
		return fmt.Appendf(dst, `\u%04x`, r)
	}
	if r < 0x20 {
		return fmt.Appendf(dst, `\u%04x`, r)
	}
	return utf8.AppendRune(dst, r)
}

// nsQuote is JsonConvert.SerializeObject(string): the JSON text of s. Invalid UTF-8 becomes U+FFFD, as .NET's
// UTF-8 decoding does.
func nsQuote(s string) string {
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	for _, r := range s { // range yields U+FFFD for invalid bytes
		b = appendNSEscapeRune(b, r)
	}
	return string(append(b, '"'))
}

// encString is a string value as the host sends it: the JSON text of the string, sent as a JSON string.
func encString(s string) json.RawMessage { return json.RawMessage(nsQuote(nsQuote(s))) }

// encNumber is a number value (e.g. DequeueCount): its JSON text sent as a string, "1".
func encNumber(n int64) json.RawMessage { return json.RawMessage(nsQuote(fmt.Sprint(n))) }

// encTime is a DateTime/DateTimeOffset value: an ISO string without fractional seconds.
func encTime(t time.Time) json.RawMessage {
	return json.RawMessage(nsQuote(t.Format("2006-01-02T15:04:05-07:00")))
}

// encBytes is a byte[] value: a single base64 string.
func encBytes(b []byte) json.RawMessage {
	return json.RawMessage(`"` + base64.StdEncoding.EncodeToString(b) + `"`)
}

// newtonsoftTime formats a DateTime inside an object (JObject.FromObject): ISO 8601 with up to 7 fractional
// digits, trailing zeros dropped.
func newtonsoftTime(t time.Time) string {
	if t.Location() == time.UTC {
		return t.Format("2006-01-02T15:04:05.9999999Z")
	}
	return t.Format("2006-01-02T15:04:05.9999999-07:00")
}

// newGUID returns a random (version 4) GUID in the lower-case "D" format.
func newGUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// newTraceparent returns a W3C trace context header value for a new root span.
func newTraceparent() string {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-00"
}

// sysMetadata is Metadata.sys.
func sysMetadata(function string, now time.Time) json.RawMessage {
	return json.RawMessage(`{"MethodName":` + nsQuote(function) + `,"UtcNow":` + nsQuote(newtonsoftTime(now.UTC())) +
		`,"RandGuid":` + nsQuote(newGUID()) + `}`)
}

// field is one member of Data or Metadata: either a ready JSON value or a streamed one.
type field struct {
	name   string
	raw    json.RawMessage
	stream func(w io.Writer) error
}

// orderedFields keeps insertion order, with case-insensitive replacement (binding data dictionaries ignore case:
// a later "id" replaces the value of "Id" and keeps the first spelling).
type orderedFields []field

func (o *orderedFields) set(name string, raw json.RawMessage) {
	for i := range *o {
		if strings.EqualFold((*o)[i].name, name) {
			(*o)[i].raw, (*o)[i].stream = raw, nil
			return
		}
	}
	*o = append(*o, field{name: name, raw: raw})
}

func writeFields(w io.Writer, fs []field) error {
	if _, err := io.WriteString(w, "{"); err != nil {
		return err
	}
	for i, f := range fs {
		sep := ""
		if i > 0 {
			sep = ","
		}
		if _, err := io.WriteString(w, sep+nsQuote(f.name)+":"); err != nil {
			return err
		}
		var err error
		switch {
		case f.stream != nil:
			err = f.stream(w)
		case f.raw == nil:
			_, err = io.WriteString(w, "null")
		default:
			_, err = w.Write(f.raw)
		}
		if err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "}")
	return err
}

// writeEnvelope writes {"Data":{...},"Metadata":{...}}.
func writeEnvelope(w io.Writer, data, meta []field) error {
	bw := bufio.NewWriterSize(w, 32<<10)
	if _, err := io.WriteString(bw, `{"Data":`); err != nil {
		return err
	}
	if err := writeFields(bw, data); err != nil {
		return err
	}
	if _, err := io.WriteString(bw, `,"Metadata":`); err != nil {
		return err
	}
	if err := writeFields(bw, meta); err != nil {
		return err
	}
	if _, err := io.WriteString(bw, "}"); err != nil {
		return err
	}
	return bw.Flush()
}

// streamBase64 writes r as one base64 JSON string without holding it in memory.
func streamBase64(r io.Reader) func(io.Writer) error {
	return func(w io.Writer) error {
		if _, err := io.WriteString(w, `"`); err != nil {
			return err
		}
		enc := base64.NewEncoder(base64.StdEncoding, w)
		if _, err := io.Copy(enc, r); err != nil {
			return err
		}
		if err := enc.Close(); err != nil {
			return err
		}
		_, err := io.WriteString(w, `"`)
		return err
	}
}

// streamDoubleEncoded writes the text of r (UTF-8, BOM dropped, invalid bytes as U+FFFD, as .NET's StreamReader
// reads a blob into a string) as a double-encoded string, without holding it in memory.
func streamDoubleEncoded(r io.Reader) func(io.Writer) error {
	return func(w io.Writer) error {
		br := bufio.NewReaderSize(r, 32<<10)
		if b, err := br.Peek(3); err == nil && bytes.Equal(b, []byte("\xef\xbb\xbf")) {
			_, _ = br.Discard(3)
		}
		bw := bufio.NewWriterSize(w, 32<<10)
		if _, err := bw.WriteString(`"\"`); err != nil {
			return err
		}
		var inner, outer []byte
		for {
			rr, _, err := br.ReadRune()
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			inner = appendNSEscapeRune(inner[:0], rr)
			outer = outer[:0]
			for _, c := range string(inner) {
				outer = appendNSEscapeRune(outer, c)
			}
			if _, err := bw.Write(outer); err != nil {
				return err
			}
		}
		if _, err := bw.WriteString(`\""`); err != nil {
			return err
		}
		return bw.Flush()
	}
}

// isJSONText is Utility.IsJson: trimmed text that starts and ends like an object or an array.
func isJSONText(s string) bool {
	s = strings.TrimSpace(s)
	return len(s) >= 2 && ((s[0] == '{' && s[len(s)-1] == '}') || (s[0] == '[' && s[len(s)-1] == ']'))
}

// spreadJSONObject is Utility.ApplyBindingData: when the trigger value is a JSON object, each top-level property
// that is not an array is added to the binding data; objects stay objects, everything else becomes its string
// form (numbers "3", booleans "True"), which is then sent double-encoded.
func spreadJSONObject(text string, meta *orderedFields, bd bindingData) {
	if !isJSONText(text) {
		return
	}
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return
	}
	type prop struct {
		name string
		raw  json.RawMessage
	}
	var props []prop
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return
		}
		k, _ := kt.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return
		}
		props = append(props, prop{k, raw})
	}
	for _, p := range props {
		raw := bytes.TrimSpace(p.raw)
		if len(raw) == 0 {
			continue
		}
		switch raw[0] {
		case '[':
			continue
		case '{':
			meta.set(p.name, raw)
			var v any
			_ = json.Unmarshal(raw, &v)
			bd.set(p.name, v)
		case 'n': // null is skipped
			continue
		case '"':
			var s string
			if json.Unmarshal(raw, &s) == nil {
				meta.set(p.name, encString(s))
				bd.set(p.name, s)
			}
		case 't':
			meta.set(p.name, encString("True"))
			bd.set(p.name, "True")
		case 'f':
			meta.set(p.name, encString("False"))
			bd.set(p.name, "False")
		default:
			meta.set(p.name, encString(string(raw)))
			bd.set(p.name, string(raw))
		}
	}
}

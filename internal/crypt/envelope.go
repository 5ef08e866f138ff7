package crypt

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// LabelEncrypted is the Label of an encrypted queue message envelope.
const LabelEncrypted = "Encrypted"

// ErrMalformedMessage reports a report-queue message that is neither base64 of an envelope nor base64
// of an event.
var ErrMalformedMessage = errors.New("malformed queue message")

// Envelope is the JSON object SPO puts on the report queue of an encrypted job: Content is the base64
// AES-256-CBC ciphertext (job key, IV, PKCS#7) of the event JSON.
type Envelope struct {
	Label   string `json:"Label"`   // LabelEncrypted
	JobID   string `json:"JobId"`   // selects the key
	IV      string `json:"IV"`      // base64 of the 16-byte IV
	Content string `json:"Content"` // base64 of the ciphertext
}

// SealEvent encrypts eventJSON (see MarshalEvent) for the job's report queue as SPO does: a fresh IV,
// AES-256-CBC with key, the Envelope as JSON, and base64 of it, which is the queue message text.
func SealEvent(eventJSON []byte, jobID string, key []byte) (messageText string, err error) {
	if !json.Valid(eventJSON) {
		return "", fmt.Errorf("crypt: seal event: %w: invalid JSON", ErrMalformedEvent)
	}
	iv, err := NewIV()
	if err != nil {
		return "", err
	}
	ct, err := EncryptBytes(eventJSON, key, iv)
	if err != nil {
		return "", err
	}
	env, err := json.Marshal(Envelope{Label: LabelEncrypted, JobID: jobID,
		IV: base64.StdEncoding.EncodeToString(iv), Content: base64.StdEncoding.EncodeToString(ct)})
	if err != nil {
		return "", fmt.Errorf("crypt: seal event: %w", err)
	}
	return base64.StdEncoding.EncodeToString(env), nil
}

// PlainMessage returns the queue message text of an unencrypted job's event: base64 of eventJSON.
func PlainMessage(eventJSON []byte) string {
	return base64.StdEncoding.EncodeToString(eventJSON)
}

// OpenMessage reads a report-queue message text: it decodes the base64 (text that already starts with
// "{" is taken as JSON), and when the object is an Envelope with Label "Encrypted" it asks keyFor for
// the job's key and decrypts Content; otherwise the object is the event itself. The event is parsed
// with ParseEvent; an encrypted event without a JobId gets the envelope's. Errors wrap
// ErrMalformedMessage, ErrMalformedEvent, ErrBase64, ErrIVSize, ErrKeySize, ErrNotBlockMultiple,
// ErrBadPadding (the usual result of a wrong key) or keyFor's error; they name the job id but never
// contain key material or message content.
func OpenMessage(messageText string, keyFor func(jobID string) ([]byte, error)) (Event, error) {
	text := strings.TrimSpace(messageText)
	var raw []byte
	if strings.HasPrefix(text, "{") {
		raw = []byte(text)
	} else {
		b, err := decodeBase64(text)
		if err != nil {
			return Event{}, fmt.Errorf("crypt: open message: %w: %w", ErrMalformedMessage, err)
		}
		raw = bytes.TrimSpace(b)
	}
	fields, err := parseFields(raw)
	if err != nil {
		return Event{}, fmt.Errorf("crypt: open message: %w: %w", ErrMalformedMessage, err)
	}
	if label, _ := lookup(fields, "Label"); !strings.EqualFold(strings.TrimSpace(label), LabelEncrypted) {
		ev, err := eventFromFields(raw, fields)
		if err != nil {
			return Event{}, fmt.Errorf("crypt: open message: %w", err)
		}
		return ev, nil
	}
	env := Envelope{Label: LabelEncrypted}
	env.JobID, _ = lookup(fields, "JobId")
	env.IV, _ = lookup(fields, "IV")
	env.Content, _ = lookup(fields, "Content")
	ev, err := env.Open(keyFor)
	if err != nil {
		return Event{}, err
	}
	return ev, nil
}

// Open decrypts the envelope with the key keyFor returns for its JobID and parses the event. An event
// without a JobId gets the envelope's.
func (env *Envelope) Open(keyFor func(jobID string) ([]byte, error)) (Event, error) {
	jobID := strings.TrimSpace(env.JobID)
	if jobID == "" {
		return Event{}, fmt.Errorf("crypt: open message: %w: encrypted envelope without JobId", ErrMalformedMessage)
	}
	ctx := fmt.Sprintf("crypt: open message of job %q", safeKey(jobID, 64))
	if keyFor == nil {
		return Event{}, fmt.Errorf("%s: no key source", ctx)
	}
	key, err := keyFor(jobID)
	if err != nil {
		return Event{}, fmt.Errorf("%s: key: %w", ctx, err)
	}
	iv, err := ParseIV(env.IV)
	if err != nil {
		return Event{}, fmt.Errorf("%s: %w", ctx, err)
	}
	ct, err := decodeBase64(env.Content)
	if err != nil {
		return Event{}, fmt.Errorf("%s: content: %w", ctx, err)
	}
	plain, err := DecryptBytes(ct, key, iv)
	if err != nil {
		return Event{}, fmt.Errorf("%s: %w", ctx, err)
	}
	ev, err := ParseEvent(plain)
	if err != nil {
		return Event{}, fmt.Errorf("%s: %w", ctx, err)
	}
	if ev.JobID == "" {
		ev.JobID = jobID
	}
	return ev, nil
}

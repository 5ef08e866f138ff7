package submit

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spomig/spomig/internal/jobs"
)

// DefaultQueue is the queue of submit messages; the Functions host moves a message that failed
// MaxDequeueCount times to DefaultPoisonQueue.
const (
	DefaultQueue       = "migration-submit"
	DefaultPoisonQueue = DefaultQueue + "-poison"
)

// maxMessageBytes bounds the message text ParseMessage reads; a job id is at most 128 bytes.
const maxMessageBytes = 4 << 10

// ErrBadMessage reports a message text that is not a submit message.
var ErrBadMessage = errors.New("not a migration-submit message")

// Message is the content of a migration-submit message: it names the staged job to submit.
type Message struct {
	JobID string `json:"jobId"`
}

// EncodeMessage returns the message text that names jobID: {"jobId":"<id>"}. The queue trigger reads
// base64 (the host's messageEncoding), so whoever enqueues it with an SDK that does not encode (Go's
// azqueue) enqueues EncodeQueueMessage(jobID) instead.
func EncodeMessage(jobID string) string {
	b, _ := json.Marshal(Message{JobID: jobID}) // a struct of one string always marshals
	return string(b)
}

// EncodeQueueMessage returns the queue message text for jobID as the host expects it with its default
// messageEncoding base64: base64 of EncodeMessage(jobID).
func EncodeQueueMessage(jobID string) string {
	return base64.StdEncoding.EncodeToString([]byte(EncodeMessage(jobID)))
}

// ParseMessage reads a message text: the JSON object {"jobId":"<id>"} (what the trigger hands over after
// the host decoded the base64), or base64 of it (what the poison queue holds: the host moves the
// message text as it was enqueued). The job id must be a valid job id (jobs.ValidID). Errors wrap
// ErrBadMessage and never quote the text.
func ParseMessage(text string) (Message, error) {
	if len(text) > maxMessageBytes {
		return Message{}, fmt.Errorf("%w: longer than %d bytes", ErrBadMessage, maxMessageBytes)
	}
	raw := []byte(strings.TrimSpace(text))
	if len(raw) > 0 && raw[0] != '{' {
		b, err := base64.StdEncoding.DecodeString(string(raw))
		if err != nil {
			return Message{}, fmt.Errorf("%w: neither a JSON object nor base64", ErrBadMessage)
		}
		raw = bytes.TrimSpace(b)
	}
	var m Message
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&m); err != nil {
		return Message{}, fmt.Errorf("%w: not a JSON object with a jobId", ErrBadMessage)
	}
	if dec.More() {
		return Message{}, fmt.Errorf("%w: trailing data after the JSON object", ErrBadMessage)
	}
	m.JobID = strings.TrimSpace(m.JobID)
	if !jobs.ValidID(m.JobID) {
		return Message{}, fmt.Errorf("%w: jobId is missing or not a valid job id", ErrBadMessage)
	}
	return m, nil
}

package functions

import (
	"context"
	"encoding/base64"
	"fmt"
	"time"
)

// SubmitQueueTrigger: a staged job is ready for CreateMigrationJobEncrypted.

// SubmitQueueBinding is the trigger binding name of SubmitQueueTrigger/function.json.
const SubmitQueueBinding = "message"

// QueueTrigger is a decoded queue-trigger invocation.
type QueueTrigger struct {
	Text           string
	ID, PopReceipt string
	DequeueCount   int64
	InsertionTime  time.Time
	ExpirationTime time.Time
}

// DecodeQueueTrigger reads Data.<binding> (a double-encoded string, or base64 with dataType binary) and the
// queue metadata.
func DecodeQueueTrigger(req *InvokeRequest, binding string, binary bool) (*QueueTrigger, error) {
	raw, err := req.Binding(binding)
	if err != nil {
		return nil, err
	}
	q := &QueueTrigger{}
	if binary {
		b, err := DecodeBytes(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: Data.%s: %v", ErrBadPayload, binding, err)
		}
		q.Text = string(b)
	} else if q.Text, err = DecodeString(raw); err != nil {
		// A JSON message may also arrive as the object itself.
		if len(raw) > 0 && (raw[0] == '{' || raw[0] == '[') {
			q.Text = string(raw)
		} else {
			return nil, fmt.Errorf("%w: Data.%s: %v", ErrBadPayload, binding, err)
		}
	}
	if q.ID, err = req.MetaString("Id"); err != nil {
		return nil, err
	}
	if q.PopReceipt, err = req.MetaString("PopReceipt"); err != nil {
		return nil, err
	}
	if q.DequeueCount, err = req.MetaInt("DequeueCount"); err != nil {
		return nil, err
	}
	if q.InsertionTime, err = req.MetaTime("InsertionTime"); err != nil {
		return nil, err
	}
	if q.ExpirationTime, err = req.MetaTime("ExpirationTime"); err != nil {
		return nil, err
	}
	return q, nil
}

func (s *server) submitQueue(ctx context.Context, inv *Invocation) (*Result, error) {
	q, err := DecodeQueueTrigger(inv.Request, SubmitQueueBinding, false)
	if err != nil {
		return nil, err
	}
	sub, err := s.opts.Services.Submitter(ctx)
	if err != nil {
		return nil, err
	}
	inv.Log.InfoContext(ctx, "submit message", "message_id", q.ID, "dequeue_count", q.DequeueCount)
	if err := sub.Submit(ctx, q.Text, q.DequeueCount); err != nil {
		return nil, err
	}
	return &Result{}, nil
}

// EncodeQueueMessage encodes a message text the way the queue trigger expects it with the host's default
// messageEncoding (base64).
func EncodeQueueMessage(text string) string { return base64.StdEncoding.EncodeToString([]byte(text)) }

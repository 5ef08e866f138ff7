package monitor

import (
	"context"
	"errors"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"

	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/submit"
)

// maxPoisonBatches bounds the poison-queue batches read per run.
const maxPoisonBatches = 10

// resolvePoison reads the submit poison queue: a message there means the host gave up on a submission
// after MaxDequeueCount deliveries. Its job must not silently stay Staged: submit.ResolvePoisoned fails
// it with the last error recorded on it (or as "outcome unknown" when an attempt called SharePoint and
// vanished). The message is deleted once the record says so; it is left while an attempt still holds a
// live lease (it reappears after the visibility timeout and is looked at again).
func (r *run) resolvePoison(ctx context.Context) {
	q := r.m.opts.Storage.Queue.NewQueueClient(r.m.opts.PoisonQueue)
	n, vt := int32(32), int32(r.m.opts.VisibilityTimeout.Seconds())
	for batch := 0; batch < maxPoisonBatches && r.before(0.15); batch++ {
		resp, err := q.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: &n, VisibilityTimeout: &vt})
		if err != nil {
			if !queueerror.HasCode(err, queueerror.QueueNotFound) {
				r.log.WarnContext(ctx, "cannot read the submit poison queue", "queue", r.m.opts.PoisonQueue, "err", errText(err))
			}
			return
		}
		if len(resp.Messages) == 0 {
			return
		}
		for _, msg := range resp.Messages {
			if msg == nil || msg.MessageID == nil || msg.PopReceipt == nil {
				continue
			}
			if r.poisonMessage(ctx, deref(msg.MessageText)) {
				if _, err := q.DeleteMessage(ctx, *msg.MessageID, *msg.PopReceipt, nil); err != nil && storageStatus(err) != 404 {
					r.log.WarnContext(ctx, "cannot delete a poison message", "err", errText(err))
				}
			}
		}
	}
}

// poisonMessage resolves one poison message and reports whether it may be deleted.
func (r *run) poisonMessage(ctx context.Context, text string) bool {
	msg, err := submit.ParseMessage(text)
	if err != nil {
		// It names no job: nothing can be failed. Kept in the logs, then dropped.
		r.log.ErrorContext(ctx, "poisoned submit message names no job: dropped", "err", err.Error())
		return true
	}
	var done bool
	j, err := r.update(ctx, msg.JobID, func(j *jobs.Job) error {
		done = submit.ResolvePoisoned(j, r.now(), r.m.opts.MaxDequeueCount)
		return nil
	})
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		r.log.WarnContext(ctx, "poisoned submit message of an unknown job: dropped", "job_id", msg.JobID)
		return true
	case err != nil:
		r.log.WarnContext(ctx, "cannot resolve a poisoned submit message", "job_id", msg.JobID, "err", err.Error())
		return false
	case !done:
		r.log.InfoContext(ctx, "poisoned submit message left: an attempt still holds the lease", "job_id", msg.JobID)
		return false
	}
	r.stats.poison++
	r.log.InfoContext(ctx, "poisoned submit message resolved", "job_id", j.ID, "state", string(j.State), "reason", j.FailureReason)
	return true
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

package intake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"
)

// ErrBusy reports that another invocation holds the staging blob's lease (it is processing the same
// blob): the trigger is retried later, when that invocation has finished or its lease has expired.
var ErrBusy = errors.New("staging blob is being processed by another invocation")

// errLeaseLost cancels the work when the lease could not be renewed in time.
var errLeaseLost = errors.New("lease on the staging blob lost")

// errSuperseded and errGone end an invocation without error: the version it was triggered for is no
// longer the blob's current one.
var (
	errSuperseded = errors.New("staging blob was replaced by a newer version")
	errGone       = errors.New("staging blob no longer exists")
)

// blobLease holds a lease on the staging blob for the length of one invocation and renews it in the
// background. While it is held no other invocation can process the blob, and the blob cannot be
// overwritten (a client's upload fails with 412 LeaseIdMissing until the lease is released).
type blobLease struct {
	lc     *lease.BlobClient
	dur    time.Duration
	log    *slog.Logger
	stop   context.CancelFunc
	done   chan struct{}
	cancel context.CancelCauseFunc
}

// acquireLease takes a lease of dur (15 to 60 s) on the blob, on the condition that it still has etag,
// and returns a context cancelled (cause errLeaseLost) if the lease cannot be renewed in time.
func acquireLease(ctx context.Context, bc *blob.Client, etag string, dur time.Duration, log *slog.Logger) (*blobLease, context.Context, error) {
	lc, err := lease.NewBlobClient(bc, nil)
	if err != nil {
		return nil, nil, err
	}
	et := azcoreETag(etag)
	_, err = lc.AcquireLease(ctx, int32(dur/time.Second), &lease.BlobAcquireOptions{
		ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &et},
	})
	switch {
	case err == nil:
	case bloberror.HasCode(err, bloberror.LeaseAlreadyPresent):
		return nil, nil, ErrBusy
	case bloberror.HasCode(err, bloberror.ConditionNotMet):
		return nil, nil, errSuperseded
	case bloberror.HasCode(err, bloberror.BlobNotFound):
		return nil, nil, errGone
	default:
		return nil, nil, fmt.Errorf("lease staging blob: %w", err)
	}
	l, workCtx := keepLease(ctx, lc, dur, log)
	return l, workCtx, nil
}

// keepLease starts renewing an acquired lease of duration dur and returns the work context.
func keepLease(ctx context.Context, lc *lease.BlobClient, dur time.Duration, log *slog.Logger) (*blobLease, context.Context) {
	workCtx, cancel := context.WithCancelCause(ctx)
	keepCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	l := &blobLease{lc: lc, dur: dur, log: log, stop: stop, done: make(chan struct{}), cancel: cancel}
	go l.keep(keepCtx)
	return l, workCtx
}

// keep renews the lease every third of its duration; when no renewal has succeeded for two thirds of
// it, the work is cancelled (another invocation may take the blob over once the lease expires).
func (l *blobLease) keep(ctx context.Context) {
	defer close(l.done)
	every := l.dur / 3
	t := time.NewTicker(every)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, every)
		_, err := l.lc.RenewLease(rctx, nil)
		cancel()
		if err == nil {
			last = time.Now()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		l.log.WarnContext(ctx, "renew lease on staging blob", "error", shortStorageError(err))
		if time.Since(last) >= 2*l.dur/3 || bloberror.HasCode(err, bloberror.LeaseIDMismatchWithLeaseOperation, bloberror.LeaseNotPresentWithLeaseOperation, bloberror.LeaseIsBrokenAndCannotBeRenewed, bloberror.BlobNotFound) {
			l.cancel(errLeaseLost)
			return
		}
	}
}

// release stops the renewals and releases the lease, also when ctx is already cancelled.
func (l *blobLease) release(ctx context.Context) {
	l.stop()
	<-l.done
	l.cancel(nil)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if _, err := l.lc.ReleaseLease(rctx, nil); err != nil && !bloberror.HasCode(err, bloberror.LeaseIDMismatchWithLeaseOperation, bloberror.LeaseNotPresentWithLeaseOperation, bloberror.BlobNotFound) {
		// It expires by itself within its duration.
		l.log.WarnContext(ctx, "release lease on staging blob", "error", shortStorageError(err))
	}
}

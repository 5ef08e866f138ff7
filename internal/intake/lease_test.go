package intake

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"
)

func TestLeaseRenewedThenLost(t *testing.T) {
	cc, etag := blobFixture(t, []byte("package"))
	ctx := context.Background()
	bc := cc.NewBlobClient("b.bin")
	log := slog.New(slog.DiscardHandler)

	// Acquisition is conditional on the ETag and exclusive.
	if _, _, err := acquireLease(ctx, bc, `"0x1"`, 15*time.Second, log); !errors.Is(err, errSuperseded) {
		t.Fatalf("stale ETag: %v", err)
	}
	l, _, err := acquireLease(ctx, bc, etag, 15*time.Second, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := acquireLease(ctx, bc, etag, 15*time.Second, log); !errors.Is(err, ErrBusy) {
		t.Fatalf("second acquisition: %v", err)
	}
	l.release(ctx)

	// Renewal: a keeper with a short period renews the (15 s) lease several times, then loses it when
	// the lease is broken, and cancels the work.
	lc, err := lease.NewBlobClient(bc, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.AcquireLease(ctx, 15, nil); err != nil {
		t.Fatal(err)
	}
	k, work := keepLease(ctx, lc, 600*time.Millisecond, log)
	defer k.release(ctx)
	time.Sleep(time.Second) // a few renewals
	if work.Err() != nil {
		t.Fatalf("work cancelled while the lease was renewed: %v", context.Cause(work))
	}
	other, _ := lease.NewBlobClient(bc, nil)
	if _, err := other.BreakLease(ctx, &lease.BlobBreakOptions{BreakPeriod: to.Ptr(int32(0))}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-work.Done():
		if !errors.Is(context.Cause(work), errLeaseLost) {
			t.Errorf("cause %v", context.Cause(work))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the work was not cancelled after the lease was lost")
	}
}

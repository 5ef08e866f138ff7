package stage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/spomig/spomig/internal/crypt"
)

// Destination is the pair of containers ProvisionMigrationContainers returned, and the job key.
type Destination struct {
	// DataContainerURI and MetadataContainerURI are the container URLs with their SAS (sp=rw).
	DataContainerURI, MetadataContainerURI string
	// Key is the 32-byte AES-256 key of the job, used for both containers.
	Key []byte
}

// Item is one file to stage.
type Item struct {
	// Name is the blob name (for content, the FileValue of Manifest.xml; for manifests, the file
	// name at the root of the metadata container).
	Name string
	// Metadata selects the metadata (manifest) container instead of the data container.
	Metadata bool
	// Size is the plaintext length Open's reader delivers; negative means unknown.
	Size int64
	// Open returns a new reader of the plaintext from the start. It is called again for every
	// attempt; the reader is closed after each attempt.
	Open func() (io.ReadCloser, error)
}

// ItemResult is the outcome of one Item, at the same index as the Item.
type ItemResult struct {
	Name     string
	Metadata bool
	// Result is filled when the item was committed and snapshotted (Result.Snapshot != "").
	Result
	// Attempts is how many times the item was run (0 if it never started).
	Attempts int
}

// Done reports whether the item was committed and snapshotted.
func (r ItemResult) Done() bool { return r.Snapshot != "" }

// UploadAll uploads items into dst with Options.Concurrency files in flight, each through the same
// pipeline as UploadOne into the data or the metadata container, retrying an item from a fresh
// reader at most MaxAttempts times when shouldRetry allows. The first error cancels the others;
// UploadAll waits for every started upload to stop before it returns. It then returns that error
// (a source's error in preference to a storage error) together with the results, where the items
// completed before the failure are Done: persist them, they need not be uploaded again.
func (u *Uploader) UploadAll(ctx context.Context, dst Destination, items []Item) ([]ItemResult, error) {
	if len(dst.Key) != crypt.KeySize {
		return nil, fmt.Errorf("stage: upload all: %w", crypt.ErrKeySize)
	}
	if err := checkItems(items); err != nil {
		return nil, err
	}
	var dataCC, metaCC *container.Client
	for _, it := range items {
		var err error
		if it.Metadata && metaCC == nil {
			if metaCC, err = u.containerClient(dst.MetadataContainerURI); err != nil {
				return nil, fmt.Errorf("stage: metadata container: %w", err)
			}
		} else if !it.Metadata && dataCC == nil {
			if dataCC, err = u.containerClient(dst.DataContainerURI); err != nil {
				return nil, fmt.Errorf("stage: data container: %w", err)
			}
		}
	}

	results := make([]ItemResult, len(items))
	var total int64
	for i, it := range items {
		results[i] = ItemResult{Name: it.Name, Metadata: it.Metadata}
		if cs := cipherSizeOf(it.Size); cs >= 0 && total >= 0 {
			total += cs
		} else {
			total = -1
		}
	}
	tr := u.newTracker(len(items), total)

	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu               sync.Mutex
		srcErr, stageErr error
	)
	record := func(err error) {
		var se *SourceError
		mu.Lock()
		switch {
		case errors.As(err, &se) || errors.Is(err, ErrSizeMismatch):
			if srcErr == nil {
				srcErr = err
			}
		case wctx.Err() != nil && errors.Is(err, context.Canceled):
			// cancelled by an earlier failure or by the caller
		default:
			if stageErr == nil {
				stageErr = err
			}
		}
		mu.Unlock()
		cancel(err)
	}

	next := make(chan int)
	var wg sync.WaitGroup
	for range min(u.opts.Concurrency, len(items)) {
		wg.Go(func() {
			for i := range next {
				it := items[i]
				cc := dataCC
				if it.Metadata {
					cc = metaCC
				}
				res, attempts, err := u.uploadItem(wctx, cc, it, dst.Key, tr)
				results[i].Attempts = attempts
				if err != nil {
					record(err)
					continue
				}
				results[i].Result = res
				tr.fileDone(it.Name)
			}
		})
	}
feed:
	for i := range items {
		select {
		case next <- i:
		case <-wctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	tr.finish("")

	switch {
	case srcErr != nil:
		return results, srcErr
	case stageErr != nil:
		return results, stageErr
	case ctx.Err() != nil:
		return results, fmt.Errorf("stage: upload all: %w", ctx.Err())
	}
	return results, nil
}

// checkItems validates names and sources before anything is sent: two items with the same blob
// name in the same container would race.
func checkItems(items []Item) error {
	type key struct {
		meta bool
		name string
	}
	seen := make(map[key]bool, len(items))
	for _, it := range items {
		if err := validateName(it.Name); err != nil {
			return err
		}
		if it.Open == nil {
			return fmt.Errorf("stage: item %q has no Open", it.Name)
		}
		k := key{it.Metadata, it.Name}
		if seen[k] {
			return fmt.Errorf("stage: %w: %q appears twice in the same container", ErrBlobName, it.Name)
		}
		seen[k] = true
	}
	return nil
}

// uploadItem runs an item, retrying transient failures from a fresh reader.
func (u *Uploader) uploadItem(ctx context.Context, cc *container.Client, it Item, key []byte, tr *tracker) (Result, int, error) {
	delay := u.opts.RetryDelay
	for attempt := 1; ; attempt++ {
		res, err := u.uploadFrom(ctx, cc, it, key, tr)
		if err == nil {
			return res, attempt, nil
		}
		if attempt >= u.opts.MaxAttempts || !shouldRetry(err) || ctx.Err() != nil {
			return Result{}, attempt, err
		}
		wait := jitter(delay)
		u.opts.Logger.LogAttrs(ctx, slog.LevelWarn, "stage: retrying blob upload",
			slog.String("container", containerName(cc)), slog.String("blob", it.Name),
			slog.Int("attempt", attempt), slog.Duration("wait", wait), slog.String("error", err.Error()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Result{}, attempt, err
		case <-t.C:
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// jitter spreads d by ±25%.
func jitter(d time.Duration) time.Duration {
	return d*3/4 + rand.N(d/2+1)
}

// uploadFrom opens the item's source and uploads it once.
func (u *Uploader) uploadFrom(ctx context.Context, cc *container.Client, it Item, key []byte, tr *tracker) (Result, error) {
	rc, err := it.Open()
	if err != nil {
		return Result{}, &SourceError{Blob: it.Name, Err: err}
	}
	defer rc.Close()
	return u.upload(ctx, cc, it.Name, rc, it.Size, key, tr)
}

// tracker paces Progress for one UploadOne or UploadAll call. A nil tracker does nothing.
type tracker struct {
	fn        func(ProgressUpdate)
	every     int64
	interval  time.Duration
	mu        sync.Mutex
	upd       ProgressUpdate
	lastBytes int64
	last      time.Time
}

func (u *Uploader) newTracker(files int, bytes int64) *tracker {
	if u.opts.Progress == nil {
		return nil
	}
	return &tracker{fn: u.opts.Progress, every: u.opts.ProgressBytes, interval: u.opts.ProgressInterval,
		upd: ProgressUpdate{Files: files, Bytes: bytes}, last: time.Now()}
}

// add counts n staged bytes of blob (negative when a failed attempt is taken back).
func (t *tracker) add(blob string, n int64) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.upd.BytesDone += n
	t.upd.Blob = blob
	if t.upd.BytesDone-t.lastBytes >= t.every || time.Since(t.last) >= t.interval {
		t.emit()
	}
}

func (t *tracker) fileDone(blob string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.upd.FilesDone++
	t.upd.Blob = blob
	if time.Since(t.last) >= t.interval {
		t.emit()
	}
}

func (t *tracker) finish(blob string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if blob != "" {
		t.upd.Blob = blob
	}
	t.upd.Done = true
	t.emit()
}

func (t *tracker) emit() {
	t.lastBytes, t.last = t.upd.BytesDone, time.Now()
	t.fn(t.upd)
}

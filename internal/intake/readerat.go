package intake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
)

// ErrBlobChanged reports that the staging blob no longer has the ETag the intake is reading (it was
// replaced or deleted): the read is abandoned and the trigger retried; the new version has a trigger of
// its own.
var ErrBlobChanged = errors.New("staging blob changed while being read")

// Defaults of ReaderOptions.
const (
	DefaultChunkSize   = 1 << 20
	DefaultCacheChunks = 8
)

// ReaderOptions configures a BlobReaderAt.
type ReaderOptions struct {
	// ChunkSize is the unit of the ranged reads and of the cache (default 1 MiB). Small reads (the zip
	// directory, XML tokens, 64 KiB decrypt buffers) are served from whole chunks, so a zip directory or a
	// sequentially read entry costs one request per chunk. Memory: ChunkSize × CacheChunks, plus one
	// chunk per concurrent miss.
	ChunkSize int64
	// CacheChunks is how many chunks are kept, least recently used evicted first (default 8: two
	// sequential streams with read-ahead, plus the directory).
	CacheChunks int
	// NoReadAhead turns off the read-ahead: when a miss follows its chunk's predecessor (a sequential
	// read), the next chunk is fetched in the background. Read-ahead needs CacheChunks ≥ 3.
	NoReadAhead bool
}

func (o *ReaderOptions) setDefaults() {
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.CacheChunks <= 0 {
		o.CacheChunks = DefaultCacheChunks
	}
}

// ReaderStats counts what a BlobReaderAt fetched from storage.
type ReaderStats struct {
	Requests  int64 // ranged GET requests
	BytesRead int64 // bytes received
}

// BlobReaderAt is an io.ReaderAt over one version of a blob: every read is a ranged GET pinned to the
// ETag (If-Match), so a replaced blob fails the read with ErrBlobChanged instead of mixing two versions.
// Small reads go through a cache of aligned chunks; a read of two chunks or more goes straight to
// storage. It is safe for concurrent use. Close it to stop read-ahead in flight.
type BlobReaderAt struct {
	client *blob.Client
	etag   azcore.ETag
	size   int64
	opts   ReaderOptions
	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	cache map[int64]*chunk
	tick  uint64

	requests atomic.Int64
	bytes    atomic.Int64
}

type chunk struct {
	ready chan struct{}
	data  []byte
	err   error
	used  uint64 // tick of the last use, under BlobReaderAt.mu
}

var _ io.ReaderAt = (*BlobReaderAt)(nil)

// NewBlobReaderAt returns a reader of size bytes of the blob version etag. ctx bounds every read (an
// io.ReaderAt has no context of its own).
func NewBlobReaderAt(ctx context.Context, client *blob.Client, etag string, size int64, opts ReaderOptions) *BlobReaderAt {
	opts.setDefaults()
	ctx, cancel := context.WithCancel(ctx)
	return &BlobReaderAt{
		client: client, etag: azcore.ETag(quoteETag(etag)), size: size, opts: opts,
		ctx: ctx, cancel: cancel, cache: map[int64]*chunk{},
	}
}

// Size is the blob's size.
func (r *BlobReaderAt) Size() int64 { return r.size }

// Stats returns the requests made and bytes fetched so far.
func (r *BlobReaderAt) Stats() ReaderStats {
	return ReaderStats{Requests: r.requests.Load(), BytesRead: r.bytes.Load()}
}

// Close cancels reads in flight and drops the cache. Later reads fail.
func (r *BlobReaderAt) Close() error {
	r.cancel()
	r.mu.Lock()
	clear(r.cache)
	r.mu.Unlock()
	return nil
}

// ReadAt implements io.ReaderAt.
func (r *BlobReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("intake: negative offset")
	}
	if off >= r.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := p
	if rest := r.size - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	var n int
	var err error
	if int64(len(want)) >= 2*r.opts.ChunkSize {
		n, err = r.fetch(r.ctx, want, off)
	} else {
		n, err = r.cached(want, off)
	}
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

// cached serves p from chunks.
func (r *BlobReaderAt) cached(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		idx := (off + int64(n)) / r.opts.ChunkSize
		c, err := r.chunk(idx)
		if err != nil {
			return n, err
		}
		start := off + int64(n) - idx*r.opts.ChunkSize
		if start >= int64(len(c.data)) {
			return n, io.ErrUnexpectedEOF
		}
		n += copy(p[n:], c.data[start:])
	}
	return n, nil
}

// chunk returns chunk idx, loading it (and reading ahead) on a miss.
func (r *BlobReaderAt) chunk(idx int64) (*chunk, error) {
	r.mu.Lock()
	r.tick++
	c, hit := r.cache[idx]
	if hit {
		c.used = r.tick
	} else {
		c = r.insertLocked(idx)
	}
	var ahead *chunk
	if !hit && !r.opts.NoReadAhead && r.opts.CacheChunks >= 3 {
		if _, seq := r.cache[idx-1]; seq && (idx+1)*r.opts.ChunkSize < r.size {
			if _, have := r.cache[idx+1]; !have {
				ahead = r.insertLocked(idx + 1)
			}
		}
	}
	r.mu.Unlock()

	if !hit {
		r.load(idx, c)
	}
	if ahead != nil {
		go r.load(idx+1, ahead)
	}
	select {
	case <-c.ready:
	case <-r.ctx.Done():
		return nil, r.ctx.Err()
	}
	if c.err != nil {
		r.mu.Lock()
		if r.cache[idx] == c {
			delete(r.cache, idx) // the next read tries again
		}
		r.mu.Unlock()
		return nil, c.err
	}
	return c, nil
}

// insertLocked adds an empty chunk and evicts the least recently used ones beyond the budget.
func (r *BlobReaderAt) insertLocked(idx int64) *chunk {
	c := &chunk{ready: make(chan struct{}), used: r.tick}
	r.cache[idx] = c
	for len(r.cache) > r.opts.CacheChunks {
		var oldest int64
		var min uint64 = ^uint64(0)
		for i, e := range r.cache {
			if e != c && e.used < min {
				oldest, min = i, e.used
			}
		}
		delete(r.cache, oldest) // readers waiting on it keep their pointer
	}
	return c
}

func (r *BlobReaderAt) load(idx int64, c *chunk) {
	defer close(c.ready)
	off := idx * r.opts.ChunkSize
	n := min(r.opts.ChunkSize, r.size-off)
	buf := make([]byte, n)
	got, err := r.fetch(r.ctx, buf, off)
	if err == nil && int64(got) != n {
		err = fmt.Errorf("intake: read %d of %d bytes at %d: %w", got, n, off, io.ErrUnexpectedEOF)
	}
	c.data, c.err = buf[:got], err
}

// fetch reads len(p) bytes at off with one ranged GET, If-Match the ETag.
func (r *BlobReaderAt) fetch(ctx context.Context, p []byte, off int64) (int, error) {
	r.requests.Add(1)
	resp, err := r.client.DownloadStream(ctx, &blob.DownloadStreamOptions{
		Range: blob.HTTPRange{Offset: off, Count: int64(len(p))},
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{
			IfMatch: &r.etag,
		}},
	})
	if err != nil {
		if bloberror.HasCode(err, bloberror.ConditionNotMet, bloberror.BlobNotFound) {
			return 0, fmt.Errorf("%w: %s", ErrBlobChanged, shortStorageError(err))
		}
		return 0, fmt.Errorf("read staging blob at %d: %w", off, err)
	}
	body := resp.NewRetryReader(ctx, &blob.RetryReaderOptions{MaxRetries: 3})
	defer body.Close()
	n, err := io.ReadFull(body, p)
	r.bytes.Add(int64(n))
	if err != nil {
		return n, fmt.Errorf("read staging blob at %d: %w", off, err)
	}
	return n, nil
}

// shortStorageError is the status and code of a storage error, without the request URL or body.
func shortStorageError(err error) string {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return fmt.Sprintf("HTTP %d %s", re.StatusCode, re.ErrorCode)
	}
	return err.Error()
}

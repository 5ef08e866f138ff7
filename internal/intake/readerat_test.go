package intake

import (
	"bytes"
	"context"
	"errors"
	"io"
	mrand "math/rand/v2"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/spomig/spomig/internal/dev/azurite"
	"github.com/spomig/spomig/internal/migpkg"
)

// blobFixture is a container of the shared Azurite with one blob.
func blobFixture(t *testing.T, data []byte) (*container.Client, string) {
	t.Helper()
	ctx := context.Background()
	c, err := azblob.NewClientFromConnectionString(azurite.Shared(t).ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	name := azurite.UniqueName("ra")
	if _, err := c.CreateContainer(ctx, name, nil); err != nil {
		t.Fatal(err)
	}
	cc := c.ServiceClient().NewContainerClient(name)
	resp, err := cc.NewBlockBlobClient("b.bin").UploadStream(ctx, bytes.NewReader(data), &blockblob.UploadStreamOptions{BlockSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return cc, string(*resp.ETag)
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := mrand.NewChaCha8([32]byte{byte(seed), byte(n), byte(n >> 8), byte(n >> 16)})
	_, _ = r.Read(b)
	return b
}

func TestBlobReaderAtReads(t *testing.T) {
	const chunk = 64 << 10
	data := randomBytes(5*chunk+12345, 1)
	cc, etag := blobFixture(t, data)
	for _, opts := range []ReaderOptions{
		{ChunkSize: chunk, CacheChunks: 3},
		{ChunkSize: chunk, CacheChunks: 1},
		{ChunkSize: chunk, CacheChunks: 4, NoReadAhead: true},
		{}, // defaults: one chunk holds the whole blob
	} {
		ra := NewBlobReaderAt(context.Background(), cc.NewBlobClient("b.bin"), etag, int64(len(data)), opts)
		// Sequential reads of every size, through the io.Reader contract.
		if err := iotest.TestReader(io.NewSectionReader(ra, 0, int64(len(data))), data); err != nil {
			t.Fatalf("%+v: %v", opts, err)
		}
		// Random ranges, chunk boundaries, large direct reads and the end.
		r := mrand.New(mrand.NewPCG(1, 2))
		check := func(off int64, n int) {
			p := make([]byte, n)
			got, err := ra.ReadAt(p, off)
			want := max(0, min(int64(n), int64(len(data))-off))
			if int64(got) != want || !bytes.Equal(p[:got], data[off:off+want]) {
				t.Fatalf("%+v: ReadAt(%d, %d) = %d, %v", opts, n, off, got, err)
			}
			if (want < int64(n)) != (err == io.EOF) || (err != nil && err != io.EOF) {
				t.Fatalf("%+v: ReadAt(%d, %d): err %v with %d of %d bytes", opts, n, off, err, got, n)
			}
		}
		for range 200 {
			off := r.Int64N(int64(len(data)))
			check(off, r.IntN(3*chunk))
		}
		check(chunk-1, 2)
		check(0, len(data))
		check(int64(len(data))-10, 100)
		check(int64(len(data)), 1)
		check(3, 0)

		// Concurrent readers (the uploader reads entries in parallel).
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := mrand.New(mrand.NewPCG(uint64(g), 9))
				for range 50 {
					off := r.Int64N(int64(len(data)))
					p := make([]byte, r.IntN(chunk))
					n, err := ra.ReadAt(p, off)
					if (err != nil && err != io.EOF) || !bytes.Equal(p[:n], data[off:off+int64(n)]) {
						t.Errorf("concurrent ReadAt(%d): %d %v", off, n, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		ra.Close()
	}
}

func TestBlobReaderAtPinnedToETag(t *testing.T) {
	data := randomBytes(300<<10, 2)
	cc, etag := blobFixture(t, data)
	ra := NewBlobReaderAt(context.Background(), cc.NewBlobClient("b.bin"), etag, int64(len(data)), ReaderOptions{ChunkSize: 64 << 10, CacheChunks: 2, NoReadAhead: true})
	defer ra.Close()
	p := make([]byte, 10)
	if _, err := ra.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	// The blob is replaced: reads not served from the cache fail, they never mix the versions.
	if _, err := cc.NewBlockBlobClient("b.bin").UploadBuffer(context.Background(), randomBytes(len(data), 3), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ra.ReadAt(p, 200<<10); !errors.Is(err, ErrBlobChanged) {
		t.Errorf("read after replacement: %v, want ErrBlobChanged", err)
	}
	if _, err := ra.ReadAt(make([]byte, 200<<10), 0); !errors.Is(err, ErrBlobChanged) {
		t.Errorf("direct read after replacement: %v, want ErrBlobChanged", err)
	}
	// A deleted blob, likewise.
	if _, err := cc.NewBlobClient("b.bin").Delete(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ra.ReadAt(p, 100<<10); !errors.Is(err, ErrBlobChanged) {
		t.Errorf("read after deletion: %v, want ErrBlobChanged", err)
	}
}

// TestBlobReaderAtReadsOnlyWhatItNeeds validates a package holding one big file: zip safety and
// package validation read the directory and the package XML, never the big entry's data.
func TestBlobReaderAtReadsOnlyWhatItNeeds(t *testing.T) {
	const big = 48 << 20
	b := migpkg.NewBuilder(migpkg.BuilderOptions{})
	if err := b.AddFile(migpkg.BuildFile{Path: "video.mp4", Size: big}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := b.Write(&buf); err != nil {
		t.Fatal(err)
	}
	cc, etag := blobFixture(t, buf.Bytes())
	size := int64(buf.Len())
	buf = bytes.Buffer{}

	ra := NewBlobReaderAt(context.Background(), cc.NewBlobClient("b.bin"), etag, size, ReaderOptions{})
	defer ra.Close()
	pkg, err := migpkg.Open(ra, size, migpkg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pkg.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := ra.Stats()
	t.Logf("validated a %d-byte package with %d requests, %d bytes", size, st.Requests, st.BytesRead)
	if st.BytesRead > 3*DefaultChunkSize || st.Requests > 6 {
		t.Errorf("validation read %d bytes in %d requests of a package whose metadata is a few KiB", st.BytesRead, st.Requests)
	}

	// Reading the big entry afterwards streams it once, chunk by chunk.
	items, err := pkg.Items()
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Name == "video.mp4" || it.Size == big {
			rc, err := it.Open()
			if err != nil {
				t.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, rc); err != nil || n != big {
				t.Fatalf("read %d, %v", n, err)
			}
			rc.Close()
		}
	}
	if st2 := ra.Stats(); st2.BytesRead-st.BytesRead > big+2*DefaultChunkSize {
		t.Errorf("streaming the entry read %d bytes for %d", st2.BytesRead-st.BytesRead, big)
	}
}

package stage

import (
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// heapPeak samples HeapInuse every few milliseconds until stop is called, and returns the peak.
func heapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() uint64 { close(done); wg.Wait(); return peak.Load() }
}

// TestMemoryBounded streams 256 MiB of generated data (no whole-file buffer anywhere) to the
// in-process discarding server and checks that the heap grows by about Concurrency ×
// BlockConcurrency × BlockSize, not by the stream's size.
func TestMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 256 MiB per case")
	}
	const total = 256 << 20
	key := newKey(t)
	for _, tc := range []struct {
		name  string
		opts  Options
		files int
	}{
		{"1 file, defaults", Options{BlockSize: DefaultBlockSize}, 1},
		{"2 files, defaults", Options{BlockSize: DefaultBlockSize}, 2},
		{"4 files, Concurrency 4, BlockConcurrency 3, 2 MiB", Options{Concurrency: 4, BlockConcurrency: 3, BlockSize: 2 << 20}, 4},
		{"2 files, BlockSize 16 MiB", Options{BlockSize: 16 << 20}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeBlob(t)
			opts := tc.opts
			opts.ClientOptions = noRetry()
			u := testUploader(opts)
			o := u.Options()
			var items []Item
			per := int64(total / tc.files)
			for i := range tc.files {
				items = append(items, Item{Name: fmt.Sprintf("big/%d.bin", i), Size: per,
					Open: func() (io.ReadCloser, error) { return io.NopCloser(&patternReader{n: per}), nil }})
			}
			runtime.GC()
			runtime.GC() // twice: sync.Pool keeps a victim generation
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			stop := heapPeak()
			res, err := u.UploadAll(t.Context(), Destination{DataContainerURI: f.containerURL("data"), MetadataContainerURI: f.containerURL("meta"), Key: key}, items)
			peak := stop()
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				if !r.Done() {
					t.Fatalf("not done: %+v", r)
				}
			}
			if got := f.bytes.Load(); got < total {
				t.Fatalf("server received %d bytes, want ≥ %d", got, total)
			}
			growth := int64(peak) - int64(before.HeapInuse)
			cost := o.MemoryCost()
			limit := 2*cost + 16<<20 // = 4 × Concurrency × BlockSize + 16 MiB with the default BlockConcurrency 2
			t.Logf("%d MiB in %d file(s): peak HeapInuse growth %.1f MiB; MemoryCost %.1f MiB (%d × %d × %d MiB); limit %.1f MiB",
				total>>20, tc.files, mib(growth), mib(cost), o.Concurrency, o.BlockConcurrency, o.BlockSize>>20, mib(limit))
			if growth > limit {
				t.Errorf("heap grew by %.1f MiB, limit %.1f MiB", mib(growth), mib(limit))
			}
		})
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

package stage

import (
	"archive/zip"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"io"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

const benchFileSize = 128 << 20

// benchZip is a zip of two 128 MiB entries stored (no compression), as a package would carry
// already-compressed Office files; the pipeline reads them through archive/zip (CRC-32 checked).
var benchZip = sync.OnceValues(func() ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(2*benchFileSize + 1<<20)
	zw := zip.NewWriter(&buf)
	for i := range 2 {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("Content/file%d.bin", i), Method: zip.Store})
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(w, &patternReader{n: benchFileSize, off: i * 4096}); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
})

func benchEntries(b *testing.B) []*zip.File {
	b.Helper()
	data, err := benchZip()
	if err != nil {
		b.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		b.Fatal(err)
	}
	return zr.File
}

// BenchmarkPipelineVsRawCBC compares, in one run, zip entry → encrypt → upload (Put Block with MD5,
// whole-blob MD5, Put Block List, Snapshot) to an in-process server that discards the bodies, with
// single-core raw CBC (CryptBlocks) over the same bytes, on 2 cores:
//
//	ratio_one_file          one file's pipeline throughput / raw CBC throughput
//	ratio_two_files_vs_one  aggregate throughput of two files in parallel / one file's
//	ratio_two_vs_one_core   the same, against one file with GOMAXPROCS 1 (scaling with cores)
//
// The sub-benchmarks run the default options and DisableBlockMD5 (one MD5 pass fewer).
func BenchmarkPipelineVsRawCBC(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"blockMD5", Options{}},
		{"noBlockMD5", Options{DisableBlockMD5: true}},
	} {
		b.Run(tc.name, func(b *testing.B) { benchPipeline(b, tc.opts) })
	}
}

func benchPipeline(b *testing.B, opts Options) {
	files := benchEntries(b)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	f := newFakeBlob(b)
	key := newKey(b)
	opts.ClientOptions = noRetry()
	opts.BlockSize = DefaultBlockSize // the default, not the tests' 1 MiB
	u := testUploader(opts)
	dst := Destination{DataContainerURI: f.containerURL("data"), MetadataContainerURI: f.containerURL("meta"), Key: key}

	// Raw CBC over the same plaintext, in memory.
	plain := make([]byte, benchFileSize)
	rc, err := files[0].Open()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(rc, plain); err != nil {
		b.Fatal(err)
	}
	rc.Close()
	blk, _ := aes.NewCipher(key)
	iv := make([]byte, 16)

	item := func(zf *zip.File) Item {
		return Item{Name: "Shared Documents/" + zf.Name, Size: int64(zf.UncompressedSize64),
			Open: func() (io.ReadCloser, error) { return zf.Open() }}
	}
	// measure runs fn and adds its wall time and the process's CPU time (user + system).
	measure := func(wall, cpu *time.Duration, fn func()) {
		runtime.GC()
		c0, t0 := cpuTime(), time.Now()
		fn()
		*wall += time.Since(t0)
		*cpu += cpuTime() - c0
	}
	upload := func(items ...Item) func() {
		return func() {
			if _, err := u.UploadAll(b.Context(), dst, items); err != nil {
				b.Fatal(err)
			}
		}
	}
	var tRaw, tOne, tTwo, tOneCore, cRaw, cOne, cTwo, cOneCore time.Duration
	b.ResetTimer()
	for b.Loop() {
		measure(&tRaw, &cRaw, func() { cipher.NewCBCEncrypter(blk, iv).CryptBlocks(plain, plain) })
		measure(&tOne, &cOne, upload(item(files[0])))
		measure(&tTwo, &cTwo, upload(item(files[0]), item(files[1])))
		runtime.GOMAXPROCS(1)
		measure(&tOneCore, &cOneCore, upload(item(files[0])))
		runtime.GOMAXPROCS(2)
	}
	b.StopTimer()
	rate := func(bytes int64, d time.Duration) float64 {
		return float64(bytes) / (1 << 20) / (d.Seconds() / float64(b.N))
	}
	raw, one, two, oneCore := rate(benchFileSize, tRaw), rate(benchFileSize, tOne), rate(2*benchFileSize, tTwo), rate(benchFileSize, tOneCore)
	b.ReportMetric(raw, "raw_cbc_MiB/s")
	b.ReportMetric(one, "one_file_MiB/s")
	b.ReportMetric(two, "two_files_MiB/s")
	b.ReportMetric(oneCore, "one_file_1core_MiB/s")
	b.ReportMetric(one/raw, "ratio_one_file")
	b.ReportMetric(two/one, "ratio_two_files_vs_one")
	b.ReportMetric(two/oneCore, "ratio_two_vs_one_core")
	// Contention-independent figures: CPU seconds spent per file relative to raw CBC, and cores used.
	b.ReportMetric(cRaw.Seconds()/cOne.Seconds(), "cpu_raw_over_one_file")
	b.ReportMetric(cOne.Seconds()/tOne.Seconds(), "cores_used_one_file")
	b.ReportMetric(cTwo.Seconds()/tTwo.Seconds(), "cores_used_two_files")
	if used := cTwo.Seconds() / tTwo.Seconds(); used < 1.8 {
		b.Logf("two files used only %.2f of 2 cores: other processes competed for the CPU, the ratios are not meaningful", used)
	}
}

// cpuTime is the CPU time (user + system) of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAzuriteEncryptVsPlainUpload compares, in one run, this package's encrypt + upload +
// snapshot into Azurite through a container SAS with a plain azblob UploadStream of the same
// plaintext, with the same block size (4 MiB) and per-file concurrency (2):
//
//	ratio               defaults (a transactional MD5 on every Put Block) / plain UploadStream
//	ratio_no_block_md5  DisableBlockMD5 (as UploadStream, which sends none) / plain UploadStream
func BenchmarkAzuriteEncryptVsPlainUpload(b *testing.B) {
	const size = 64 << 20
	w := newWorld(b)
	key := newKey(b)
	u := w.uploader(Options{BlockSize: DefaultBlockSize})
	uNoMD5 := w.uploader(Options{BlockSize: DefaultBlockSize, DisableBlockMD5: true})
	cc, err := container.NewClientWithNoCredential(w.dataSAS, nil)
	if err != nil {
		b.Fatal(err)
	}
	encrypted := func(u *Uploader, prefix string) func(int) {
		return func(i int) {
			if _, err := u.UploadOne(b.Context(), w.dataSAS, fmt.Sprintf("bench/%s %d.bin", prefix, i), &patternReader{n: size}, size, key); err != nil {
				b.Fatal(err)
			}
		}
	}
	plain := func(i int) {
		if _, err := cc.NewBlockBlobClient(fmt.Sprintf("bench/plain %d.bin", i)).UploadStream(b.Context(), &patternReader{n: size},
			&blockblob.UploadStreamOptions{BlockSize: DefaultBlockSize, Concurrency: DefaultBlockConcurrency}); err != nil {
			b.Fatal(err)
		}
	}
	runs := []struct {
		fn func(int)
		d  time.Duration
	}{{fn: encrypted(u, "encrypted")}, {fn: encrypted(uNoMD5, "encrypted-nomd5")}, {fn: plain}}
	for i := 0; b.Loop(); i++ {
		for k := range runs { // rotate the order, so that none always runs on a fresher Azurite
			r := &runs[(i+k)%len(runs)]
			start := time.Now()
			r.fn(i)
			r.d += time.Since(start)
		}
	}
	rate := func(d time.Duration) float64 { return float64(size) / (1 << 20) / (d.Seconds() / float64(b.N)) }
	ours, oursNoMD5, plainRate := rate(runs[0].d), rate(runs[1].d), rate(runs[2].d)
	b.ReportMetric(ours, "encrypted_MiB/s")
	b.ReportMetric(oursNoMD5, "encrypted_no_block_md5_MiB/s")
	b.ReportMetric(plainRate, "plain_MiB/s")
	b.ReportMetric(ours/plainRate, "ratio")
	b.ReportMetric(oursNoMD5/plainRate, "ratio_no_block_md5")
}

package stage

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
)

// Limits and defaults of Options.
const (
	// DefaultBlockSize is the default Options.BlockSize (4 MiB, as rclone and azblob use).
	DefaultBlockSize = 4 << 20
	// MinBlockSize and MaxBlockSize bound Options.BlockSize.
	MinBlockSize = 1 << 20
	MaxBlockSize = 100 << 20
	// DefaultConcurrency is the default Options.Concurrency (files in parallel).
	DefaultConcurrency = 2
	// DefaultBlockConcurrency is the default Options.BlockConcurrency (block buffers per file).
	DefaultBlockConcurrency = 2
	// DefaultMaxAttempts is the default Options.MaxAttempts.
	DefaultMaxAttempts = 3

	// maxBlocks is the service's limit of committed blocks per block blob.
	maxBlocks = 50_000
	// maxStageBlockSize is the service's limit of one Put Block body (4000 MiB).
	maxStageBlockSize = 4000 << 20
)

// Options configures an Uploader. The zero value is usable: setDefaults fills every zero field.
type Options struct {
	// BlockSize is the ciphertext size of every staged block but the last, and the largest blob sent
	// as a single Put Blob. Default 4 MiB; it is clamped to [1 MiB, 100 MiB]. Memory: each block in
	// flight is one buffer of BlockSize bytes (see the package doc's table).
	BlockSize int64

	// Concurrency is how many files an Uploader encrypts and uploads at the same time (UploadAll's
	// parallelism, and a bound shared by concurrent UploadOne calls). Default 2. Memory: multiplies
	// the per-file cost, BlockConcurrency × BlockSize + 64 KiB.
	Concurrency int

	// BlockConcurrency is how many block buffers one file uses: while one is being filled by the
	// encryption the others are staged in parallel (like azblob's UploadStreamOptions.Concurrency).
	// Default 2: encryption of block n+1 overlaps the upload of block n. Memory: BlockConcurrency ×
	// BlockSize per file.
	BlockConcurrency int

	// DisableBlockMD5 skips the transactional MD5 of every Put Block (the service checks it against the
	// bytes received). It saves one MD5 pass over the ciphertext, about the CPU cost of the encryption
	// itself (MD5 runs at about 760 MiB/s per core, CBC at about 600 MiB/s). The whole-blob MD5
	// (x-ms-blob-content-md5) is always computed and set, and a single-block blob always carries its
	// Content-MD5.
	DisableBlockMD5 bool

	// MaxAttempts bounds how many times UploadAll runs one item (opening its source again each time)
	// when the error is transient. Default 3; 1 disables item retries. azcore retries each HTTP
	// request on its own before that (ClientOptions.Retry).
	MaxAttempts int

	// RetryDelay is the pause before the second attempt of an item; it doubles for every further
	// attempt, up to 30 s, with ±25% jitter. Default 2 s.
	RetryDelay time.Duration

	// SnapshotTimeout bounds the CreateSnapshot that follows a successful commit. It runs even when
	// the upload's context is cancelled in between, to keep "committed but not snapshotted" rare.
	// Default 30 s.
	SnapshotTimeout time.Duration

	// ClientOptions configures the container clients built from the SAS URLs (HTTP transport,
	// azcore retry policy, telemetry). Nil: azcore's defaults.
	ClientOptions *azblob.ClientOptions

	// Logger receives one debug record per blob and a warning per retried item. It never receives a
	// SAS, a key or an IV. Nil: slog.Default().
	Logger *slog.Logger

	// Progress, if set, is called with the running totals at most every ProgressBytes bytes or
	// ProgressInterval (whichever comes first, checked when a block completes), and once at the end
	// of every UploadOne and UploadAll. Calls are serialised per UploadOne or UploadAll call;
	// Progress must not block for long.
	Progress func(ProgressUpdate)

	// ProgressBytes and ProgressInterval set the pace of Progress. Defaults 32 MiB and 2 s.
	ProgressBytes    int64
	ProgressInterval time.Duration
}

// ProgressUpdate reports the progress of an UploadOne or UploadAll call. Byte counts are ciphertext
// bytes staged (acknowledged by the service), totals are the expected ciphertext sizes (crypt.EncryptedSize
// of the declared plaintext sizes; -1 when a size is unknown).
type ProgressUpdate struct {
	// Blob is the blob whose progress triggered the update.
	Blob string
	// Files is the number of files of the call (1 for UploadOne), FilesDone how many are committed and
	// snapshotted.
	Files, FilesDone int
	// Bytes is the expected ciphertext total of the call, BytesDone how much of it is staged.
	Bytes, BytesDone int64
	// Done is set on the final update of the call.
	Done bool
}

func (o *Options) setDefaults() {
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	o.BlockSize = min(max(o.BlockSize, MinBlockSize), MaxBlockSize)
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.BlockConcurrency <= 0 {
		o.BlockConcurrency = DefaultBlockConcurrency
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 2 * time.Second
	}
	if o.SnapshotTimeout <= 0 {
		o.SnapshotTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ProgressBytes <= 0 {
		o.ProgressBytes = 32 << 20
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 2 * time.Second
	}
}

// MemoryCost returns the most memory the block buffers of an Uploader with these options hold:
// Concurrency × BlockConcurrency × BlockSize, plus one 64 KiB encryption buffer per file.
func (o Options) MemoryCost() int64 {
	o.setDefaults()
	return int64(o.Concurrency) * (int64(o.BlockConcurrency)*o.BlockSize + 64<<10)
}

// String describes the options without secrets, for logs.
func (o Options) String() string {
	o.setDefaults()
	return fmt.Sprintf("block size %d MiB, %d files × %d blocks in flight, ~%d MiB of buffers",
		o.BlockSize>>20, o.Concurrency, o.BlockConcurrency, o.MemoryCost()>>20)
}

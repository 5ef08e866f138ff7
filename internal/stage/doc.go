// Package stage encrypts migration package files and uploads them, with a snapshot, into the two
// containers SharePoint Online provisions for a migration job (ProvisionMigrationContainers).
//
// The containers are reached only through their container SAS URIs. Those carry sp=rw and no List
// permission, so nothing here ever lists a container: every blob is addressed by name, and the
// snapshot timestamps CreateSnapshot returns are handed back to the caller (Result.Snapshot,
// ItemResult) to persist.
//
// # What one upload does
//
// UploadOne draws a fresh IV (crypt.NewIV), streams the source through crypt.NewEncryptReader
// (AES-256-CBC, PKCS#7) and writes the ciphertext as a block blob:
//
//   - A blob of at most one block (BlockSize bytes of ciphertext) is one Put Blob carrying the
//     transactional Content-MD5, x-ms-blob-content-md5 and the metadata IV.
//   - A larger blob is cut into blocks of exactly BlockSize ciphertext bytes (the last one shorter).
//     Two hashers trail the encryption in 256 KiB chunks, one computing the MD5 of the whole
//     ciphertext (in order), one the MD5 of the current block; each block is then staged (Put Block)
//     with its transactional MD5 while the next one is being encrypted. Put Block List commits the
//     blocks with x-ms-blob-content-md5 (the whole-blob MD5) and the metadata IV.
//   - The metadata key is written exactly "IV", value base64 (standard, padded) of the 16 IV bytes.
//     It comes back as "Iv" from GetProperties (Go canonicalises header names) and "iv" from listings;
//     this package always looks it up case-insensitively.
//   - CreateSnapshot follows the commit. The snapshot is what SharePoint imports (it takes the latest
//     snapshot of every blob).
//
// Block IDs are fixed-length base64 of a random 16-byte upload prefix and a big-endian 32-bit block
// number, as azblob and rclone do, so the blocks of a retried upload never mix with the uncommitted
// blocks of an earlier attempt; Put Block List discards the blocks it does not name.
//
// The plaintext read from the source is counted and must equal the declared size (when it is not
// negative), so a short or long source fails before the commit instead of committing a wrong blob.
//
// # Memory
//
// Each file in flight holds at most BlockConcurrency ciphertext buffers of BlockSize bytes (one being
// filled by the encryption, the others being staged), plus the encrypt reader's 64 KiB buffer and a
// few KiB of hashing and HTTP state. At most Concurrency files are in flight per Uploader (UploadOne
// takes a slot too), so the block buffers of an Uploader cost at most
//
//	Concurrency × BlockConcurrency × BlockSize (+ Concurrency × 64 KiB)
//
//	Concurrency  BlockConcurrency  BlockSize  buffers
//	2            2                 4 MiB      16 MiB (the defaults)
//	4            2                 4 MiB      32 MiB
//	2            4                 8 MiB      64 MiB
//	8            4                 4 MiB      128 MiB
//	2            2                 100 MiB    400 MiB
//
// Buffers are recycled through a sync.Pool, so idle Uploaders give them back to the garbage
// collector. Only a file whose ciphertext exceeds 50,000 blocks (about 195 GiB at 4 MiB) uses bigger,
// unpooled blocks of its own (the smallest whole MiB that fits), which raises its share accordingly.
//
// # Crash cases and retries
//
// The invariant kept for every blob is: its latest snapshot carries an IV metadata that decrypts it,
// and the base blob's IV metadata equals that snapshot's IV (SharePoint reports "the encryption IV
// does not match" when a re-upload rewrote the base blob without a fresh snapshot). A crash, a
// cancelled context or an error can stop an upload at any point:
//
//   - Before the commit (blocks staged, Put Block List not sent): the base blob and its snapshots are
//     untouched, and the staged blocks are uncommitted garbage that the service drops after a week
//     or at the next commit of that name. A retry uploads again under a new block-ID prefix and a new
//     IV, commits only its own blocks, and snapshots. A failing source (read error) always ends here.
//   - After the commit, before the snapshot: the base blob is complete and carries its new IV, but
//     the latest snapshot (if any) holds an earlier version with another IV. UploadOne narrows this
//     window by taking the snapshot with a context that ignores cancellation (bounded by
//     SnapshotTimeout). Verify reports it (Verdict.Repair == RepairSnapshot: the base blob is a
//     complete commit of the same item, as Put Block List is atomic and the IV is fresh per upload);
//     Resnapshot fixes it without re-sending the data, and a full re-upload (UploadAll, UploadOne)
//     fixes it too.
//   - After the snapshot, before the caller persisted the result: the blob is consistent but the
//     caller does not know the snapshot timestamp. Verify without a recorded snapshot cannot see
//     snapshots (no List) and asks for RepairSnapshot; Resnapshot then adds one more snapshot of the
//     same content, which is harmless.
//
// UploadAll retries an item from a fresh reader (Item.Open again) at most MaxAttempts times when
// shouldRetry classifies the error as transient (408, 429, 500, 502, 503, 504, ServerBusy,
// OperationTimedOut, InternalError, network errors), after azcore's own per-request retries. A 403
// from a container (expired or revoked SAS) is returned at once as a *SASError matching
// ErrSASExpired, so that the caller provisions new containers; context errors are never retried.
//
// # CPU
//
// Per ciphertext byte an upload costs one AES-256-CBC pass (serial by design, about 700 MiB/s on one
// core of the reference machine), one MD5 pass for the whole-blob MD5 and, unless DisableBlockMD5,
// another for the transactional block MD5 (MD5 runs at about 760 MiB/s per core), plus reading the
// source and sending: about 3.5 times the CPU of raw CBC (2.6 without block MD5). The three passes
// run on different goroutines, so one file uses about 1.8 cores; files in parallel scale with cores.
//
// # Secrets
//
// The container SAS is only ever read from the URL given. Errors and logs name the blob and the
// container (never the query string; a transport error's URL has its sig= redacted), and never
// contain the key.
package stage

// Package intake is EncryptBlobTrigger's domain: it takes a package blob that appeared in the staging
// container, validates it, and stages it — every file and manifest encrypted with the job key and a
// fresh IV, uploaded into the job's SPO-provided containers and snapshotted — then asks for submission.
// It implements functions.Intake: ProcessBlob returns nil when the blob was dealt with (staged,
// rejected with the reason on the job, or deliberately ignored) and an error when the host should retry.
//
// # Which job
//
//   - {id}.zip at the container root, where id is a job created through the API whose record expects
//     that blob: that job.
//   - Any other blob is a self-service drop. Its target is the blob metadata siteurl (optional webid,
//     label; keys case-insensitive, label may be percent-encoded) or, without siteurl metadata, a
//     spomig.json at the zip root ({"siteUrl": …, "webId": …, "label": …}). The job id is DropJobID of
//     (container, name, ETag), a name-based UUID: a re-delivered trigger finds the job its first delivery
//     created. The package is validated before anything is provisioned; a valid drop with a target is
//     provisioned (Provisioner.Create, Source "drop") and staged. A drop that will not be staged — not a
//     zip, an invalid package, no target, an unusable target, a site we may not provision — gets a Failed
//     record (Source "drop", StagingBlob set) whose FailureReason says why. Nothing is silently ignored.
//   - The app writes nothing into the staging container itself (reports go to migration-reports, the
//     encrypted blobs to the SPO containers), so every blob there is a package or a mistake.
//   - Deliberately ignored, with a log line: folder markers (a name ending in "/", or metadata
//     hdi_isfolder=true), zero-length blobs (upload placeholders: tools that create the blob first and
//     write it afterwards trigger again with the content; failing the job on the placeholder would
//     fail an API job before its real upload), and versions superseded by a newer ETag (the new version
//     has its own trigger).
//
// # Reading the package
//
// The bytes the host puts in the invocation are never used (P16: they need not fit in memory). The
// blob is read from storage through BlobReaderAt: ranged GETs pinned to the ETag with If-Match, served
// through a small LRU cache of aligned chunks with read-ahead, so the zip directory and the package XML
// cost a few requests and memory stays bounded (Reader.ChunkSize × Reader.CacheChunks) whatever the
// package size. A replaced blob fails the read (ErrBlobChanged) and the trigger is retried; the retry
// sees the version is superseded and ends.
//
// # States
//
// AwaitingPackage → (validation; invalid → Failed, nothing uploaded, the zip kept) → Encrypting
// (FilesTotal/BytesTotal/ObjectsTotal from the package; FilesDone/BytesDone = content read so far,
// written every ProgressEvery, never per block) → Staged (FilesDone/BytesDone = totals; from Submitted on
// they are SPO's import counters) → the job id is enqueued on migration-submit, after the Staged update
// has committed. A trigger for a Staged job enqueues again (the submitter is idempotent; the previous
// attempt may have failed between the update and the enqueue) and does not re-encrypt; a job past Staged
// is not touched.
//
// # At-least-once delivery
//
// Exclusion: while it works, an invocation holds a lease on the staging blob (LeaseDuration, 15–60 s,
// renewed every third; acquired If-Match the ETag). A second delivery of the same blob gets ErrBusy and
// is retried later; when it runs, it finds the job Staged and only enqueues. After a crash the lease
// expires by itself. While leased the blob cannot be overwritten: a client re-uploading it during
// staging gets 412 LeaseIdMissing (upload under a new name, or after the job is staged). If renewals
// fail for two thirds of the lease, the work is cancelled.
//
// Consistency: a retry of a job found in Encrypting re-uploads every item — fresh IVs, new content,
// new snapshots — rather than trying to reuse what a previous attempt uploaded. A snapshot captures a
// blob's content and metadata at once and uploads commit content and IV metadata together, so every
// snapshot is self-consistent; re-uploading everything makes the latest snapshot of every blob of the
// package one taken by the final attempt, whether the previous attempt finished, half finished (blobs
// uploaded but not snapshotted, snapshots of an older version) or crashed. Reuse was rejected because
// the provisioned SAS have no List permission: the latest snapshot of a blob cannot be found without
// keeping every snapshot time somewhere durable (up to 100,000 per package, too many for the record).
// The cost: a retried invocation redoes the whole package (bounded by the 30-minute functionTimeout,
// about 50–90 GB at storage speed); retries are rare (crashes, timeouts, transient failures).
//
// # Expiring containers
//
// Before uploading, the earliest of the record's ContainersExpireAt and the SAS se= of both container
// URIs is compared with SASRenewBefore; when the SAS expire sooner (or the job has no Key Vault
// secret), Provisioner.Reprovision provisions new containers and a new key, stores them in Key Vault
// and the record, and everything is uploaded into the new containers. The same happens once per
// invocation when an upload fails with an expired SAS (stage.ErrSASExpired, or 403 AuthenticationFailed
// / AuthorizationFailure from the SPO storage — never a failure to read the staging blob).
//
// # Secrets
//
// The key is read from Key Vault per invocation, kept in memory only while the uploader runs and
// cleared afterwards. Destination's String/LogValue redact it and the SAS signatures; logs carry
// storage errors as status and code only.
package intake
